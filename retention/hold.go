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
)

// HoldDir is the root directory of the legal holds, one file per matter.
const HoldDir = "holds"

// Hold is a legal hold: the items its query matched when it was placed
// (IDs), and the query, which later items are matched against too. Held
// items never expire while the hold lasts.
type Hold struct {
	Version int       `json:"version"`
	Matter  string    `json:"matter"`
	Query   string    `json:"query"`
	Created time.Time `json:"created_at"`
	IDs     []string  `json:"ids"`

	match Matcher
}

// Holds reads every hold of the root.
func Holds(root string, compile func(string) (Matcher, error)) ([]*Hold, error) {
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
		if h.match, err = compile(h.Query); err != nil {
			return nil, fmt.Errorf("retention: hold %s: query %q: %w", h.Matter, h.Query, err)
		}
		hs = append(hs, &h)
	}
	return hs, nil
}

// Covers says whether the hold holds this item.
func (h *Hold) Covers(id string, env *archive.Envelope) bool {
	i := sort.SearchStrings(h.IDs, id)
	if i < len(h.IDs) && h.IDs[i] == id {
		return true
	}
	return h.match != nil && env != nil && h.match.Match(id, env)
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

// AddHold places (or widens) the legal hold of a matter on every item the
// query matches now, and on items matching it later; in the bucket, it sets
// Object Lock legal hold on both objects of each matching item there. It
// returns the number of items held.
func AddHold(ctx context.Context, o Options, matter, query string) (int, error) {
	o.defaults()
	if err := validMatter(matter); err != nil {
		return 0, err
	}
	m, err := o.Compile(query)
	if err != nil {
		return 0, fmt.Errorf("retention: query %q: %w", query, err)
	}
	holds, err := Holds(o.Root, o.Compile)
	if err != nil {
		return 0, err
	}
	h := &Hold{Matter: matter, Query: query, Created: o.Now().UTC()}
	for _, old := range holds {
		if old.Matter == matter {
			if old.Query != query {
				return 0, fmt.Errorf("retention: matter %q is held with query %q; remove it first or use another matter name", matter, old.Query)
			}
			h = old
		}
	}
	var remote []*archive.RemoteRecord
	ids := map[string]bool{}
	for _, id := range h.IDs {
		ids[id] = true
	}
	var walkErrs []error
	err = Plan(o, func(e Entry) error {
		env, err := e.item.Envelope()
		if err != nil || !m.Match(e.ID, env) {
			return nil
		}
		ids[e.ID] = true
		if e.rec != nil {
			remote = append(remote, e.rec)
		}
		return nil
	}, func(err error) { walkErrs = append(walkErrs, err) })
	if err != nil {
		return 0, err
	}
	h.IDs = h.IDs[:0]
	for id := range ids {
		h.IDs = append(h.IDs, id)
	}
	// The hold is in force (and recorded) before the bucket is told, so
	// a failure there never leaves an item unheld locally.
	if err := o.Audit.Record(Event{Event: "hold", Matter: matter, Query: query, Items: len(h.IDs)}); err != nil {
		return 0, err
	}
	if err := writeHold(o.Root, h); err != nil {
		return 0, err
	}
	if err := o.setLegalHolds(ctx, remote, true); err != nil {
		return len(h.IDs), err
	}
	return len(h.IDs), errors.Join(walkErrs...)
}

// RemoveHold releases a matter's hold; in the bucket, legal hold is cleared
// on the items no other hold covers.
func RemoveHold(ctx context.Context, o Options, matter string) (int, error) {
	o.defaults()
	if err := validMatter(matter); err != nil {
		return 0, err
	}
	holds, err := Holds(o.Root, o.Compile)
	if err != nil {
		return 0, err
	}
	var h *Hold
	var others []*Hold
	for _, x := range holds {
		if x.Matter == matter {
			h = x
		} else {
			others = append(others, x)
		}
	}
	if h == nil {
		return 0, fmt.Errorf("retention: no hold for matter %q", matter)
	}
	var release []*archive.RemoteRecord
	err = Plan(o, func(e Entry) error {
		if e.rec == nil {
			return nil
		}
		env, err := e.item.Envelope()
		if err != nil || !h.Covers(e.ID, env) {
			return nil
		}
		for _, x := range others {
			if x.Covers(e.ID, env) {
				return nil
			}
		}
		release = append(release, e.rec)
		return nil
	}, func(error) {})
	if err != nil {
		return 0, err
	}
	if err := o.Audit.Record(Event{Event: "release", Matter: matter, Query: h.Query, Items: len(h.IDs)}); err != nil {
		return 0, err
	}
	if err := o.setLegalHolds(ctx, release, false); err != nil {
		return 0, err
	}
	return len(h.IDs), removeHold(o.Root, matter)
}

func (o *Options) setLegalHolds(ctx context.Context, recs []*archive.RemoteRecord, on bool) error {
	if len(recs) == 0 {
		return nil
	}
	b, err := o.bucket(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		if r.LockMode == "" {
			continue // a bucket without Object Lock has no legal hold
		}
		for _, kv := range [][2]string{{r.EMLKey, r.EMLVersion}, {r.JSONKey, r.JSONVersion}} {
			if err := b.SetLegalHold(ctx, kv[0], kv[1], on); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.ID, err))
			}
		}
	}
	return errors.Join(errs...)
}
