package filer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/postfix-archive/mailarchive/archive"
)

// Local is the local dated tree as a Destination: DEST/YYYY/MM/DD/ID.*, by
// rename within a filesystem and by copy, fsync and later removal of the
// source across filesystems (EXDEV).
type Local struct {
	root      string // the archive root the items come from
	dest      string // the dated tree's root
	localTime bool
	ops       fsOps
	dirs      map[string]bool // dated directories known to exist
	sync      map[string]bool // directories to fsync before sources go
	// pending are source files whose copy at the destination becomes
	// durable with the next flush; they are removed after it, in order.
	pending []string
	changed bool // the source root changed: fsync it at the end
}

var _ Destination = (*Local)(nil)

// NewLocal returns the dated tree under dest (root when empty) for items of
// root, dated in UTC or, with localTime, in local time.
func NewLocal(root, dest string, localTime bool) *Local {
	return newLocal(root, dest, localTime, osOps)
}

func newLocal(root, dest string, localTime bool, ops fsOps) *Local {
	if dest == "" {
		dest = root
	}
	return &Local{root: root, dest: dest, localTime: localTime, ops: ops,
		dirs: map[string]bool{}, sync: map[string]bool{}}
}

// flushEvery bounds the pending removals of a cross-filesystem run.
const flushEvery = 1000

// How a file reached the destination.
type moveKind int

const (
	renamed moveKind = iota + 1 // atomically: it is gone from the source
	copied                      // across filesystems: the source is still there
)

// paths of one item at the source and at its destination.
type paths struct {
	id              string
	dir             string // destination directory
	srcEML, srcJSON string
	dstEML, dstJSON string
	relDir          string // dir relative to the destination root, for messages
}

func (l *Local) paths(it Item) paths {
	rel := archive.DatedDir(it.Stamp, l.localTime)
	dir := filepath.Join(l.dest, rel)
	return paths{
		id:      it.ID,
		dir:     dir,
		relDir:  rel,
		srcEML:  it.EMLPath(),
		srcJSON: it.JSONPath(),
		dstEML:  filepath.Join(dir, it.ID+".eml"),
		dstJSON: filepath.Join(dir, it.ID+".json"),
	}
}

// Put files one item: the .eml first, the .json last, so the item is
// complete at its destination exactly when it is gone from the source.
func (l *Local) Put(ctx context.Context, it Item, t *Tally) {
	l.put(it, t)
	if len(l.pending) >= flushEvery {
		l.Flush(ctx, t)
	}
}

func (l *Local) put(it Item, t *Tally) {
	p := l.paths(it)
	if err := l.ensureDir(p.dir); err != nil {
		t.Problem(fmt.Errorf("%s: %w; left in place", it.ID, err))
		return
	}
	if !it.EML {
		l.finish(p, t)
		return
	}
	how, err := l.place(p.srcEML, p.dstEML)
	switch {
	case errors.Is(err, syscall.EEXIST):
		l.collide(p, t)
		return
	case err != nil:
		t.Problem(fmt.Errorf("%s: move .eml: %w; left in place", p.id, err))
		return
	}
	howJ, err := l.place(p.srcJSON, p.dstJSON)
	switch {
	case err == nil:
		l.done(how, p.srcEML)
		l.done(howJ, p.srcJSON)
		t.Done(Filed, "filed %s -> %s", p.id, p.relDir)
	case errors.Is(err, syscall.EEXIST):
		// The destination had this item's .json but not its .eml.
		if same, cerr := sameContent(p.srcJSON, p.dstJSON); cerr == nil && same {
			l.done(how, p.srcEML)
			l.pending = append(l.pending, p.srcJSON)
			t.Done(Filed, "filed %s -> %s (its .json was there already)", p.id, p.relDir)
			return
		}
		l.undo(how, p, t)
		t.Problem(fmt.Errorf("%s: %s/%s.json exists with different content; item left in place", p.id, p.relDir, p.id))
	default:
		l.undo(how, p, t)
		t.Problem(fmt.Errorf("%s: move .json: %w; item left in place", p.id, err))
	}
}

// ensureDir creates a dated directory once per run, and marks for fsync the
// parent of every level it creates.
func (l *Local) ensureDir(dir string) error {
	if l.dirs[dir] {
		return nil
	}
	rel, err := filepath.Rel(l.dest, dir)
	if err != nil {
		return err
	}
	p := l.dest
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		parent := p
		p = filepath.Join(p, part)
		if l.dirs[p] {
			continue
		}
		switch err := os.Mkdir(p, 0o750); {
		case err == nil:
			l.sync[parent] = true
		case errors.Is(err, os.ErrExist):
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
				return fmt.Errorf("%s exists and is not a directory", p)
			}
		default:
			return err
		}
		l.dirs[p] = true
	}
	return nil
}

// place moves src to dst without replacing dst: a rename, or across
// filesystems a copy whose source the caller removes later (done).
func (l *Local) place(src, dst string) (moveKind, error) {
	err := l.ops.rename(src, dst)
	if err == nil {
		l.changed = true
		l.sync[filepath.Dir(dst)] = true
		return renamed, nil
	}
	if !errors.Is(err, syscall.EXDEV) {
		return 0, err
	}
	if err := l.ops.copyNoReplace(src, dst); err != nil {
		return 0, err
	}
	l.sync[filepath.Dir(dst)] = true
	return copied, nil
}

// done finishes a placed file: a copied source is removed after the next
// flush has made its copy durable.
func (l *Local) done(how moveKind, src string) {
	if how == copied {
		l.pending = append(l.pending, src)
	}
}

// undo takes back a placed .eml when its .json cannot follow, so the item
// stays whole at the source.
func (l *Local) undo(how moveKind, p paths, t *Tally) {
	var err error
	switch how {
	case renamed:
		err = l.ops.rename(p.dstEML, p.srcEML)
	case copied:
		err = l.ops.remove(p.dstEML)
	}
	if err != nil {
		// The next run finishes the move (a .json whose .eml is filed).
		t.Problem(fmt.Errorf("%s: taking back the .eml: %w", p.id, err))
	}
}

// collide handles an item whose .eml already exists at the destination:
// identical content is deduplicated, anything else is left in place.
func (l *Local) collide(p paths, t *Tally) {
	same, err := sameContent(p.srcEML, p.dstEML)
	if err != nil {
		t.Problem(fmt.Errorf("%s: compare with %s: %w; left in place", p.id, p.relDir, err))
		return
	}
	if !same {
		t.Problem(fmt.Errorf("%s: %s/%s.eml exists with different content; item left in place", p.id, p.relDir, p.id))
		return
	}
	if exists(p.dstJSON) {
		same, err := sameContent(p.srcJSON, p.dstJSON)
		if err != nil || !same {
			t.Problem(fmt.Errorf("%s: %s/%s.json exists with different content (%v); item left in place", p.id, p.relDir, p.id, err))
			return
		}
		// The whole item is there already (a copy whose sources were
		// not yet removed, or a second copy of the archive).
		l.sync[p.dir] = true
		l.pending = append(l.pending, p.srcEML, p.srcJSON)
		t.Done(Deduplicated, "deduplicated %s: identical at %s", p.id, p.relDir)
		return
	}
	// Only the .eml is there: make it durable, drop the source's, then
	// move the .json as usual (the .eml first, the .json last).
	if err := l.ops.syncDir(p.dir); err != nil {
		t.Problem(fmt.Errorf("%s: fsync %s: %w; left in place", p.id, p.relDir, err))
		return
	}
	if err := l.ops.remove(p.srcEML); err != nil {
		t.Problem(fmt.Errorf("%s: remove duplicate .eml: %w", p.id, err))
		return
	}
	l.changed = true
	l.finish(p, t)
}

// finish moves the .json of an item whose .eml is already at the
// destination: what a filer that stopped between its two moves left.
func (l *Local) finish(p paths, t *Tally) {
	if !exists(p.dstEML) {
		t.Problem(fmt.Errorf("%s: .json without .eml, here or in %s; left in place", p.id, p.relDir))
		return
	}
	how, err := l.place(p.srcJSON, p.dstJSON)
	switch {
	case err == nil:
		l.done(how, p.srcJSON)
	case errors.Is(err, syscall.EEXIST):
		same, cerr := sameContent(p.srcJSON, p.dstJSON)
		if cerr != nil || !same {
			t.Problem(fmt.Errorf("%s: %s/%s.json exists with different content (%v); .json left in place", p.id, p.relDir, p.id, cerr))
			return
		}
		l.sync[p.dir] = true
		l.pending = append(l.pending, p.srcJSON)
	default:
		t.Problem(fmt.Errorf("%s: move .json: %w; left in place", p.id, err))
		return
	}
	t.Done(Finished, "finished %s -> %s (its .eml was filed already)", p.id, p.relDir)
}

// Plan reports what Put would do, changing nothing.
func (l *Local) Plan(_ context.Context, it Item, t *Tally) {
	p := l.paths(it)
	switch {
	case !it.EML && !exists(p.dstEML):
		t.Problem(fmt.Errorf("%s: .json without .eml, here or in %s; would be left in place", p.id, p.relDir))
	case !it.EML:
		t.Done(Finished, "would finish %s -> %s", p.id, p.relDir)
	case exists(p.dstEML) || exists(p.dstJSON):
		t.Done(Deduplicated, "would deduplicate %s if identical at %s (else leave it)", p.id, p.relDir)
	default:
		t.Done(Filed, "would file %s -> %s", p.id, p.relDir)
	}
}

// Flush makes this run's placements durable, then removes the sources
// waiting for that, then makes the removals durable.
func (l *Local) Flush(_ context.Context, t *Tally) {
	dirs := make([]string, 0, len(l.sync))
	for d := range l.sync {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	ok := true
	for _, d := range dirs {
		if err := l.ops.syncDir(d); err != nil {
			ok = false
			t.Problem(fmt.Errorf("fsync %s: %w", d, err))
		}
	}
	clear(l.sync)
	if ok {
		for _, src := range l.pending {
			if err := l.ops.remove(src); err != nil {
				t.Problem(fmt.Errorf("remove %s after copying it: %w", filepath.Base(src), err))
				continue
			}
			l.changed = true
		}
	} else if len(l.pending) > 0 {
		// Copies not known durable: keep the sources; the next run
		// finds both and deduplicates.
		t.Problem(fmt.Errorf("%d source files kept because their copies could not be synced", len(l.pending)))
	}
	l.pending = l.pending[:0]
	if l.changed {
		if err := l.ops.syncDir(l.root); err != nil {
			t.Problem(fmt.Errorf("fsync %s: %w", l.root, err))
		}
		l.changed = false
	}
}
