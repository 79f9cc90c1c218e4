package sealog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Finding kinds, as verify names them.
const (
	FindAlteredEML  = "altered-eml"       // the .eml differs from its leaf
	FindAlteredJSON = "altered-json"      // the .json differs from its leaf
	FindRemoved     = "removed"           // a leaf with no files and no tombstone
	FindDayRemoved  = "day-removed"       // a sealed day's directory is gone
	FindInserted    = "inserted"          // files in a sealed day with no leaf
	FindLate        = "late"              // logged after its day was sealed
	FindManifest    = "manifest"          // a day MANIFEST missing, altered or off the chain
	FindTruncated   = "truncated"         // the log holds fewer entries than its checkpoint says
	FindRollback    = "rollback"          // a newer checkpoint exists than the log's
	FindRewritten   = "history-rewritten" // consistency fails, or signed by another key
	FindCorrupt     = "log-corrupt"       // a tile or entry that does not decode or match
	FindDamaged     = "damaged"           // an item the read API reports as damaged
)

// Finding is one thing verify (or seal) found wrong.
type Finding struct {
	Kind   string `json:"kind"`
	ID     string `json:"id,omitempty"`
	Day    string `json:"day,omitempty"`
	Path   string `json:"path,omitempty"`
	Leaf   *int64 `json:"leaf,omitempty"`
	Detail string `json:"detail"`
}

func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Kind)
	for _, kv := range [][2]string{{"id", f.ID}, {"day", f.Day}, {"path", f.Path}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	if f.Leaf != nil {
		fmt.Fprintf(&b, " leaf=%d", *f.Leaf)
	}
	return b.String() + ": " + f.Detail
}

func leafRef(i int64) *int64 { return &i }

// VerifyOptions configure Verify.
type VerifyOptions struct {
	Root     string
	Filed    string
	Verifier note.Verifier
	// External is a signed checkpoint kept outside the archive (by the
	// compliance officer, from --publish); optional.
	External []byte
	// Since (YYYY/MM/DD or YYYY-MM-DD) limits the re-hashing of items to
	// those dated that day or later; the tree is always checked whole.
	Since   string
	Workers int
	// Dir is the log directory (default ROOT/log); the audit trail is
	// verified with AuditDir.
	Dir string
}

// Report is the result of Verify.
type Report struct {
	TreeSize    int64     `json:"tree_size"`
	Checkpoints int       `json:"checkpoints_checked"`
	Items       int       `json:"items_checked"`
	Bytes       int64     `json:"bytes_hashed"`
	Days        int       `json:"days_sealed"`
	Unlogged    int       `json:"unlogged"`
	Findings    []Finding `json:"findings"`
	Seconds     float64   `json:"seconds"`
}

// Clean reports whether nothing was found.
func (r *Report) Clean() bool { return len(r.Findings) == 0 }

func (r *Report) add(f Finding) { r.Findings = append(r.Findings, f) }

// treeHashes holds every stored hash of a tree recomputed from its entries.
type treeHashes struct{ h []tlog.Hash }

func (t *treeHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(t.h)) {
			return nil, fmt.Errorf("sealog: hash %d not computed", x)
		}
		out[i] = t.h[x]
	}
	return out, nil
}

// checkedLog is a log directory whose tree was recomputed from its entries.
type checkedLog struct {
	cp      Checkpoint
	leaves  [][]byte
	hashes  *treeHashes
	trusted bool // the checkpoint is signed by the key and matches the entries
}

// verifyTree checks a log directory: its checkpoint's signature, every
// entry against the tiles, the recomputed tree against every stored
// checkpoint and against the external one. It returns what it could read.
func verifyTree(dir string, v note.Verifier, external []byte, rep *Report) (*checkedLog, error) {
	signed, err := os.ReadFile(filepath.Join(dir, checkpointFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if hist, _ := historySizes(dir); len(hist) > 0 {
				rep.add(Finding{Kind: FindTruncated, Path: filepath.Join(filepath.Base(dir), checkpointFile),
					Detail: fmt.Sprintf("the checkpoint is gone; %d older ones are kept", len(hist))})
				return nil, nil
			}
		}
		return nil, fmt.Errorf("sealog: %w", err)
	}
	cl := &checkedLog{}
	cp, err := OpenCheckpoint(signed, v)
	if errors.Is(err, ErrWrongKey) {
		rep.add(Finding{Kind: FindRewritten, Path: filepath.Base(dir) + "/checkpoint",
			Detail: fmt.Sprintf("the checkpoint is not signed by %s: the log was rebuilt or signed by another key", v.Name())})
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cl.cp = cp
	rep.TreeSize = cp.Size
	rep.Checkpoints++
	st := newStore(dir)
	// Entries, bundle by bundle.
	for n := int64(0); n*tileWidth < cp.Size; n++ {
		w := tileWidthAt(cp.Size, 0, n)
		rel := EntriesPath(n, w)
		es, err := st.bundle(n, w)
		if err != nil {
			rep.add(Finding{Kind: FindTruncated, Path: rel, Detail: fmt.Sprintf("the log ends at %d entries, its checkpoint says %d (%v)", n*tileWidth, cp.Size, unwrapPath(err))})
			break
		}
		cl.leaves = append(cl.leaves, es...)
	}
	got := int64(len(cl.leaves))
	cl.hashes = &treeHashes{h: make([]tlog.Hash, 0, tlog.StoredHashCount(got))}
	for i, e := range cl.leaves {
		hs, err := tlog.StoredHashes(int64(i), e, cl.hashes)
		if err != nil {
			return nil, err
		}
		cl.hashes.h = append(cl.hashes.h, hs...)
	}
	if got < cp.Size {
		return cl, nil
	}
	for _, t := range tlog.NewTiles(TileHeight, 0, cp.Size) {
		rel := TilePath(t.L, t.N, t.W)
		want, _ := tlog.ReadTileData(t, cl.hashes)
		have, err := st.readTile(rel, TilePath(t.L, t.N, tileWidth), len(want))
		if err != nil {
			rep.add(Finding{Kind: FindCorrupt, Path: rel, Detail: "hash tile missing: " + unwrapPath(err).Error()})
		} else if !bytes.Equal(have, want) {
			rep.add(Finding{Kind: FindCorrupt, Path: rel, Detail: "hash tile does not match the entries"})
		}
	}
	root, _ := tlog.TreeHash(cp.Size, cl.hashes)
	if root != cp.Root {
		rep.add(Finding{Kind: FindRewritten, Path: filepath.Base(dir) + "/checkpoint",
			Detail: "the tree of the entries does not have the checkpoint's root hash"})
		return cl, nil
	}
	cl.trusted = true
	// Every checkpoint signed before must be a prefix of this tree.
	sizes, err := historySizes(dir)
	if err != nil {
		return nil, fmt.Errorf("sealog: %w", err)
	}
	for _, n := range sizes {
		rel := filepath.Join(historyDir, fmt.Sprint(n))
		data, err := os.ReadFile(filepath.Join(dir, rel))
		if err != nil {
			return nil, fmt.Errorf("sealog: %w", err)
		}
		checkOther(data, rel, v, cl, rep, false)
	}
	if len(external) > 0 {
		checkOther(external, "--checkpoint", v, cl, rep, true)
	}
	return cl, nil
}

// checkOther checks a checkpoint signed earlier against the recomputed
// tree: a larger one means the log was rolled back or truncated; one whose
// root differs at its size means history was rewritten.
func checkOther(signed []byte, name string, v note.Verifier, cl *checkedLog, rep *Report, external bool) {
	rep.Checkpoints++
	old, err := OpenCheckpoint(signed, v)
	if err != nil {
		kind := FindRewritten
		if !errors.Is(err, ErrWrongKey) {
			kind = FindCorrupt
		}
		rep.add(Finding{Kind: kind, Path: name, Detail: err.Error()})
		return
	}
	if old.Origin != cl.cp.Origin {
		rep.add(Finding{Kind: FindRewritten, Path: name, Detail: fmt.Sprintf("origin %q, the log's is %q", old.Origin, cl.cp.Origin)})
		return
	}
	if old.Size > cl.cp.Size {
		what := "a stored"
		if external {
			what = "the given"
		}
		rep.add(Finding{Kind: FindRollback, Path: name, Detail: fmt.Sprintf("%s checkpoint has %d entries, the log's checkpoint only %d: the log was truncated or rolled back", what, old.Size, cl.cp.Size)})
		return
	}
	root, _ := tlog.TreeHash(old.Size, cl.hashes)
	if root != old.Root {
		rep.add(Finding{Kind: FindRewritten, Path: name, Detail: fmt.Sprintf("the log's first %d entries do not have this checkpoint's root: history was rewritten", old.Size)})
		return
	}
	// Root equality at its size is what a consistency proof shows; check
	// one too, so the code that hands proofs out is exercised by verify.
	if old.Size > 0 {
		p, err := tlog.ProveTree(cl.cp.Size, old.Size, cl.hashes)
		if err == nil {
			err = tlog.CheckTree(p, cl.cp.Size, cl.cp.Root, old.Size, old.Root)
		}
		if err != nil {
			rep.add(Finding{Kind: FindRewritten, Path: name, Detail: "consistency proof fails: " + err.Error()})
		}
	}
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Verify checks the item log of an archive and the archive against it.
func Verify(ctx context.Context, o VerifyOptions) (*Report, error) {
	start := time.Now()
	rep := &Report{Findings: []Finding{}}
	if o.Dir == "" {
		o.Dir = LogDir(o.Root)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	rd, err := archive.OpenReader(o.Root, archive.ReaderOptions{Filed: o.Filed})
	if err != nil {
		return nil, err
	}
	cl, err := verifyTree(o.Dir, o.Verifier, o.External, rep)
	if err != nil {
		return nil, err
	}
	if cl == nil {
		rep.Seconds = time.Since(start).Seconds()
		return rep, nil
	}
	since := strings.ReplaceAll(o.Since, "-", "/")

	type logged struct {
		idx  int64
		leaf Leaf
	}
	items := map[string]logged{}
	tombs := map[string]Leaf{}
	var dayLeaves []logged
	for i, e := range cl.leaves {
		l, err := ParseLeaf(e)
		if err != nil {
			rep.add(Finding{Kind: FindCorrupt, Leaf: leafRef(int64(i)), Detail: err.Error()})
			continue
		}
		switch l.Kind {
		case KindItem:
			items[l.ID] = logged{int64(i), l}
		case KindTombstone:
			tombs[l.ID] = l
		case KindDay:
			dayLeaves = append(dayLeaves, logged{int64(i), l})
		}
	}

	// Days: each MANIFEST must hash to its leaf and chain to the previous.
	sealedAt := map[string]int64{}    // day -> leaf index of its seal
	inManifest := map[string]string{} // ID -> day
	presentDays := map[string]bool{}
	days, err := rd.Days()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	for _, d := range days {
		presentDays[filepath.ToSlash(d)] = true
	}
	prev := "-"
	for _, dl := range dayLeaves {
		d := dl.leaf.Day
		sealedAt[d] = dl.idx
		rel := ManifestPath(d)
		data, err := os.ReadFile(filepath.Join(o.Dir, rel))
		sum := sha256.Sum256(data)
		switch {
		case err != nil:
			rep.add(Finding{Kind: FindManifest, Day: d, Path: rel, Leaf: leafRef(dl.idx), Detail: "MANIFEST missing: " + unwrapPath(err).Error()})
		case hex.EncodeToString(sum[:]) != dl.leaf.ManifestSHA256:
			rep.add(Finding{Kind: FindManifest, Day: d, Path: rel, Leaf: leafRef(dl.idx), Detail: "MANIFEST does not match its day leaf"})
		default:
			m, err := parseManifest(data)
			if err != nil || m.day != d || m.prev != prev || len(m.ids) != dl.leaf.Count {
				rep.add(Finding{Kind: FindManifest, Day: d, Path: rel, Leaf: leafRef(dl.idx), Detail: fmt.Sprintf("MANIFEST malformed or off the chain (prev %q, want %q)", m.prev, prev)})
			}
			for id, idx := range m.ids {
				if lg, ok := items[id]; !ok || lg.idx != idx {
					rep.add(Finding{Kind: FindManifest, Day: d, ID: id, Leaf: leafRef(idx), Detail: "MANIFEST names a leaf that is not this item's"})
					continue
				}
				inManifest[id] = d
			}
		}
		prev = d + " " + dl.leaf.ManifestSHA256
		if !presentDays[d] && since <= d {
			rep.add(Finding{Kind: FindDayRemoved, Day: d, Leaf: leafRef(dl.idx), Detail: fmt.Sprintf("the sealed day's directory is gone (%d items)", dl.leaf.Count)})
		}
	}
	rep.Days = len(dayLeaves)

	// Re-hash every logged item (the bulk of the work, in parallel).
	type job struct {
		id string
		lg logged
	}
	jobs := make(chan job, 256)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				fs := checkItem(rd, j.id, j.lg.leaf)
				mu.Lock()
				rep.Items++
				rep.Bytes += j.lg.leaf.EMLSize
				for _, f := range fs {
					if f.Kind == FindRemoved && !presentDays[inManifest[j.id]] && inManifest[j.id] != "" {
						continue // counted in its day-removed
					}
					f.Leaf = leafRef(j.lg.idx)
					rep.add(f)
				}
				mu.Unlock()
			}
		}()
	}
	// Files the log does not know: inserted into a sealed day, or late.
	// It runs beside the re-hashing: listing directories waits on other
	// things than hashing does.
	walkDone := make(chan error, 1)
	go func() {
		walkDone <- rd.Walk(func(it archive.Item) error {
			d := filepath.ToSlash(it.Dir)
			if since != "" && d != "" && d < since {
				return nil
			}
			lg, logged := items[it.ID]
			seal, sealed := sealedAt[d]
			mu.Lock()
			defer mu.Unlock()
			switch {
			case !logged && sealed:
				rep.add(Finding{Kind: FindInserted, ID: it.ID, Day: d, Detail: "item in a sealed day has no leaf"})
			case !logged:
				rep.Unlogged++
			case sealed && lg.idx > seal && inManifest[it.ID] == "":
				rep.add(Finding{Kind: FindLate, ID: it.ID, Day: d, Leaf: leafRef(lg.idx), Detail: fmt.Sprintf("logged after its day was sealed (leaf %d)", seal)})
			}
			return nil
		}, func(p archive.Problem) {
			if _, logged := items[p.ID]; logged && errors.Is(p.Err, archive.ErrMissingMessage) {
				return // the re-hash reports it as removed
			}
			mu.Lock()
			rep.add(Finding{Kind: FindDamaged, ID: p.ID, Path: p.Path, Detail: p.Err.Error()})
			mu.Unlock()
		})
	}()
	ids := make([]string, 0, len(items))
	for id := range items {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		if _, gone := tombs[id]; gone {
			continue
		}
		if since != "" {
			if pid, err := archive.ParseID(id); err == nil && archive.DatedDir(pid.Stamp, false) < since {
				continue
			}
		}
		jobs <- job{id, items[id]}
	}
	close(jobs)
	wg.Wait()
	if err := <-walkDone; err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// The audit trail: the same checks of its tree and history.
	adir := AuditDir(o.Root)
	if _, err := os.Stat(filepath.Join(adir, checkpointFile)); err == nil && o.Dir == LogDir(o.Root) {
		arep := &Report{}
		acl, err := verifyTree(adir, o.Verifier, nil, arep)
		if err != nil {
			return nil, fmt.Errorf("sealog: audit trail: %w", err)
		}
		if acl != nil {
			for i, e := range acl.leaves {
				if _, err := ParseAuditEntry(e); err != nil {
					arep.add(Finding{Kind: FindCorrupt, Leaf: leafRef(int64(i)), Detail: err.Error()})
				}
			}
		}
		for _, f := range arep.Findings {
			f.Path = filepath.Join("audit", f.Path)
			f.Detail = "audit trail: " + f.Detail
			rep.add(f)
		}
		rep.Checkpoints += arep.Checkpoints
	}
	sort.SliceStable(rep.Findings, func(i, j int) bool {
		a, b := rep.Findings[i], rep.Findings[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.ID < b.ID
	})
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

// checkItem re-hashes one logged item.
func checkItem(rd *archive.Reader, id string, l Leaf) []Finding {
	var out []Finding
	for try := 0; try < 2; try++ {
		it, err := rd.Locate(id)
		if err != nil {
			detail := "no files and no tombstone"
			if errors.Is(err, archive.ErrMissingMessage) {
				detail = "the .eml is gone (the .json is there)"
			}
			return []Finding{{Kind: FindRemoved, ID: id, Detail: detail}}
		}
		sum, size, err := HashMessage(it)
		if errors.Is(err, fs.ErrNotExist) {
			continue // the filer moved it: locate again
		}
		if err != nil {
			return []Finding{{Kind: FindDamaged, ID: id, Detail: err.Error()}}
		}
		if sum != l.EMLSHA256 || size != l.EMLSize {
			out = append(out, Finding{Kind: FindAlteredEML, ID: id, Detail: fmt.Sprintf("the .eml has sha256 %s size %d, the leaf %s size %d", sum, size, l.EMLSHA256, l.EMLSize)})
		}
		jdata, err := it.ReadJSON()
		if errors.Is(err, fs.ErrNotExist) {
			out = nil
			continue
		}
		js := sha256.Sum256(jdata)
		if err == nil && hex.EncodeToString(js[:]) != l.JSONSHA256 {
			out = append(out, Finding{Kind: FindAlteredJSON, ID: id, Detail: fmt.Sprintf("the .json has sha256 %x, the leaf %s", js, l.JSONSHA256)})
		}
		return out
	}
	return []Finding{{Kind: FindRemoved, ID: id, Detail: "moving while verified; not found"}}
}

type manifest struct {
	day, prev string
	ids       map[string]int64
}

func parseManifest(data []byte) (manifest, error) {
	m := manifest{ids: map[string]int64{}}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) < 4 || lines[0] != ManifestHeader || !strings.HasPrefix(lines[1], "day ") ||
		!strings.HasPrefix(lines[2], "prev ") || !strings.HasPrefix(lines[3], "items ") {
		return m, errors.New("bad MANIFEST header")
	}
	m.day, m.prev = lines[1][4:], lines[2][5:]
	for _, ln := range lines[4:] {
		var id string
		var idx int64
		if _, err := fmt.Sscanf(ln, "%s %d", &id, &idx); err != nil {
			return m, fmt.Errorf("bad MANIFEST line %q", ln)
		}
		m.ids[id] = idx
	}
	return m, nil
}
