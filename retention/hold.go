package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/audit"
	"github.com/postfix-archive/mailarchive/catalog"
	"github.com/postfix-archive/mailarchive/query"
)

// HoldDir is the root directory of the legal holds, one file per matter.
const HoldDir = "holds"

// Hold is a legal hold: a query (the search language of mailarchive
// search) and the items it matched when the hold was placed (IDs). Items
// that match the query later are held too: the query is evaluated again,
// with the dates it names relative to Created, whenever the holds are.
// Held items never expire while the hold lasts.
type Hold struct {
	Version int       `json:"version"`
	Matter  string    `json:"matter"`
	Query   string    `json:"query"`
	Created time.Time `json:"created_at"`
	IDs     []string  `json:"ids"`

	held map[string]bool // IDs and the query's matches now
}

// Covers says whether the hold holds this item.
func (h *Hold) Covers(id string) bool { return h.held[id] }

// parseHoldQuery parses a hold's query as of its creation.
func parseHoldQuery(q string, created time.Time) (query.Node, error) {
	n, err := query.Parse(q, query.Options{Now: created, Location: time.UTC})
	if err != nil {
		return nil, fmt.Errorf("retention: query %q: %w", q, err)
	}
	return n, nil
}

// ReadHolds reads the holds of the root as written (without evaluating
// their queries).
func ReadHolds(root string) ([]*Hold, error) {
	ents, err := os.ReadDir(filepath.Join(root, HoldDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("retention: %w", err)
	}
	var hs []*Hold
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || validMatter(name) != nil {
			continue // temporary names
		}
		b, err := os.ReadFile(filepath.Join(root, HoldDir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("retention: %w", err)
		}
		var h Hold
		if err := json.Unmarshal(b, &h); err != nil {
			return nil, fmt.Errorf("retention: decode %s/%s: %w", HoldDir, e.Name(), err)
		}
		hs = append(hs, &h)
	}
	return hs, nil
}

// holds reads the holds and evaluates their queries on the catalog,
// brought up to date first: a hold whose query cannot be evaluated is an
// error, never "holds nothing".
func (o *Options) holds(ctx context.Context) ([]*Hold, error) {
	hs, err := ReadHolds(o.Root)
	if err != nil || len(hs) == 0 {
		return hs, err
	}
	c, err := o.catalog(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	for _, h := range hs {
		n, err := parseHoldQuery(h.Query, h.Created)
		if err != nil {
			return nil, fmt.Errorf("hold %s: %w", h.Matter, err)
		}
		ids, err := c.IDs(ctx, n, catalog.SearchOptions{})
		if err != nil {
			return nil, fmt.Errorf("retention: hold %s: %w", h.Matter, err)
		}
		h.held = map[string]bool{}
		for _, id := range append(ids, h.IDs...) {
			h.held[id] = true
		}
	}
	return hs, nil
}

// catalog brings the search catalog up to date and opens it.
func (o *Options) catalog(ctx context.Context) (*catalog.Catalog, error) {
	path := o.Catalog
	if path == "" {
		path = catalog.DefaultPath(o.Root)
	}
	r, err := archive.OpenReader(o.Root, archive.ReaderOptions{})
	if err != nil {
		return nil, err
	}
	if _, err := catalog.Update(ctx, r, path, catalog.UpdateOptions{}); err != nil {
		return nil, fmt.Errorf("retention: the holds' queries need the catalog up to date: %w", err)
	}
	return catalog.OpenRead(path)
}

func validMatter(m string) error {
	if m == "" || len(m) > 100 || m[0] == '.' || m[0] == '-' {
		return fmt.Errorf("matter %q: want 1-100 characters of A-Z a-z 0-9 . _ -, not starting with . or -", m)
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("matter %q: want 1-100 characters of A-Z a-z 0-9 . _ -, not starting with . or -", m)
		}
	}
	return nil
}

// writeHold writes ROOT/holds/MATTER.json durably.
func writeHold(root string, h *Hold) error {
	h.Version = archive.Version
	sort.Strings(h.IDs)
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Join(root, HoldDir)
	if err := os.Mkdir(dir, 0o750); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("retention: %w", err)
	}
	return archive.WriteFileAtomic(dir, h.Matter+".json", append(b, '\n'))
}

func removeHold(root, matter string) error {
	dir := filepath.Join(root, HoldDir)
	if err := os.Remove(filepath.Join(dir, matter+".json")); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("retention: no hold for matter %q", matter)
		}
		return fmt.Errorf("retention: %w", err)
	}
	return archive.SyncDir(dir)
}

// Release is the audit trail's action for the end of a hold.
const Release = "release"

// AddHold places (or renews) the legal hold of a matter on every item the
// query matches now, and on items matching it later; in the bucket, it sets
// Object Lock legal hold on both objects of each matching item there. The
// hold is recorded in the audit trail (with the IDs it holds) before it
// takes effect. It returns the number of items held.
func AddHold(ctx context.Context, o Options, matter, q string) (int, error) {
	o.defaults()
	if err := validMatter(matter); err != nil {
		return 0, err
	}
	holds, err := ReadHolds(o.Root)
	if err != nil {
		return 0, err
	}
	h := &Hold{Matter: matter, Query: q, Created: o.Now().UTC()}
	for _, old := range holds {
		if old.Matter == matter {
			if old.Query != q {
				return 0, fmt.Errorf("retention: matter %q is held with query %q; remove it first or use another matter name", matter, old.Query)
			}
			h = old
		}
	}
	n, err := parseHoldQuery(q, h.Created)
	if err != nil {
		return 0, err
	}
	c, err := o.catalog(ctx)
	if err != nil {
		return 0, err
	}
	ids, err := c.IDs(ctx, n, catalog.SearchOptions{})
	c.Close()
	if err != nil {
		return 0, fmt.Errorf("retention: %w", err)
	}
	set := map[string]bool{}
	for _, id := range append(ids, h.IDs...) {
		set[id] = true
	}
	h.IDs = h.IDs[:0]
	for id := range set {
		h.IDs = append(h.IDs, id)
	}
	sort.Strings(h.IDs)
	if err := audit.Record(o.Root, audit.Hold, "matter="+matter+" "+q, h.IDs); err != nil {
		return 0, err
	}
	if err := writeHold(o.Root, h); err != nil {
		return 0, err
	}
	return len(h.IDs), o.setLegalHolds(ctx, h.IDs, true)
}

// RemoveHold releases a matter's hold (recorded in the audit trail); in
// the bucket, legal hold is cleared on the items no other hold covers.
func RemoveHold(ctx context.Context, o Options, matter string) (int, error) {
	o.defaults()
	if err := validMatter(matter); err != nil {
		return 0, err
	}
	holds, err := o.holds(ctx)
	if err != nil {
		return 0, err
	}
	var h *Hold
	for _, x := range holds {
		if x.Matter == matter {
			h = x
		}
	}
	if h == nil {
		return 0, fmt.Errorf("retention: no hold for matter %q", matter)
	}
	var release []string
	for id := range h.held {
		still := false
		for _, x := range holds {
			if x != h && x.Covers(id) {
				still = true
			}
		}
		if !still {
			release = append(release, id)
		}
	}
	sort.Strings(release)
	if err := audit.Record(o.Root, Release, "matter="+matter+" "+h.Query, release); err != nil {
		return 0, err
	}
	if err := removeHold(o.Root, matter); err != nil {
		return 0, err
	}
	return len(h.held), o.setLegalHolds(ctx, release, false)
}

// setLegalHolds sets or clears Object Lock legal hold on the objects of
// those items that are in the bucket (under Object Lock).
func (o *Options) setLegalHolds(ctx context.Context, ids []string, on bool) error {
	var errs []error
	for _, id := range ids {
		r, err := archive.ReadRemoteRecord(o.Root, id)
		if errors.Is(err, fs.ErrNotExist) || (err == nil && r.LockMode == "") {
			continue // local, or a bucket without Object Lock (no legal hold there)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		b, err := o.bucket(ctx)
		if err != nil {
			return err
		}
		for _, kv := range [][2]string{{r.EMLKey, r.EMLVersion}, {r.JSONKey, r.JSONVersion}} {
			if err := b.SetLegalHold(ctx, kv[0], kv[1], on); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}
