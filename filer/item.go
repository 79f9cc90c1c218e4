package filer

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"syscall"
)

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

func (f *filer) paths(it *item) paths {
	dir := f.destDir(it.stamp)
	rel, _ := filepath.Rel(f.opt.Dest, dir)
	return paths{
		id:      it.id,
		dir:     dir,
		relDir:  rel,
		srcEML:  filepath.Join(f.opt.Root, it.id+".eml"),
		srcJSON: filepath.Join(f.opt.Root, it.id+".json"),
		dstEML:  filepath.Join(dir, it.id+".eml"),
		dstJSON: filepath.Join(dir, it.id+".json"),
	}
}

// file files one item: the .eml first, the .json last, so the item is
// complete at its destination exactly when it is gone from the source.
func (f *filer) file(it *item) {
	p := f.paths(it)
	if !it.json {
		f.rep.Incomplete++
		f.verbose("incomplete %s: .eml without .json (a writer between its renames); left alone", it.id)
		return
	}
	if !it.eml && exists(p.srcEML) {
		// The directory read saw a writer's .json but missed the .eml it
		// had renamed just before.
		it.eml = true
	}
	if it.eml && f.opt.OlderThan > 0 && f.opt.Now().Sub(it.stamp) < f.opt.OlderThan {
		f.rep.Recent++
		f.verbose("recent %s: younger than %v; left in place", it.id, f.opt.OlderThan)
		return
	}
	if f.opt.DryRun {
		f.dryRun(it, p)
		return
	}
	if err := f.ensureDir(p.dir); err != nil {
		f.problem(fmt.Errorf("%s: %w; left in place", it.id, err))
		return
	}
	if !it.eml {
		f.finish(p)
		return
	}
	how, err := f.place(p.srcEML, p.dstEML)
	switch {
	case errors.Is(err, syscall.EEXIST):
		f.collide(p)
		return
	case err != nil:
		f.problem(fmt.Errorf("%s: move .eml: %w; left in place", p.id, err))
		return
	}
	howJ, err := f.place(p.srcJSON, p.dstJSON)
	switch {
	case err == nil:
		f.done(how, p.srcEML)
		f.done(howJ, p.srcJSON)
		f.rep.Filed++
		f.verbose("filed %s -> %s", p.id, p.relDir)
	case errors.Is(err, syscall.EEXIST):
		// The destination had this item's .json but not its .eml.
		if same, cerr := sameContent(p.srcJSON, p.dstJSON); cerr == nil && same {
			f.done(how, p.srcEML)
			f.pending = append(f.pending, p.srcJSON)
			f.rep.Filed++
			f.verbose("filed %s -> %s (its .json was there already)", p.id, p.relDir)
			return
		}
		f.undo(how, p)
		f.problem(fmt.Errorf("%s: %s/%s.json exists with different content; item left in place", p.id, p.relDir, p.id))
	default:
		f.undo(how, p)
		f.problem(fmt.Errorf("%s: move .json: %w; item left in place", p.id, err))
	}
}

// place moves src to dst without replacing dst: a rename, or across
// filesystems a copy whose source the caller removes later (done).
func (f *filer) place(src, dst string) (moveKind, error) {
	err := f.ops.rename(src, dst)
	if err == nil {
		f.changed = true
		f.sync[filepath.Dir(dst)] = true
		return renamed, nil
	}
	if !errors.Is(err, syscall.EXDEV) {
		return 0, err
	}
	if err := f.ops.copyNoReplace(src, dst); err != nil {
		return 0, err
	}
	f.sync[filepath.Dir(dst)] = true
	return copied, nil
}

// done finishes a placed file: a copied source is removed after the next
// flush has made its copy durable.
func (f *filer) done(how moveKind, src string) {
	if how == copied {
		f.pending = append(f.pending, src)
	}
}

// undo takes back a placed .eml when its .json cannot follow, so the item
// stays whole at the source.
func (f *filer) undo(how moveKind, p paths) {
	var err error
	switch how {
	case renamed:
		err = f.ops.rename(p.dstEML, p.srcEML)
	case copied:
		err = f.ops.remove(p.dstEML)
	}
	if err != nil {
		// The next run finishes the move (a .json whose .eml is filed).
		f.problem(fmt.Errorf("%s: taking back the .eml: %w", p.id, err))
	}
}

// collide handles an item whose .eml already exists at the destination:
// identical content is deduplicated, anything else is left in place.
func (f *filer) collide(p paths) {
	same, err := sameContent(p.srcEML, p.dstEML)
	if err != nil {
		f.problem(fmt.Errorf("%s: compare with %s: %w; left in place", p.id, p.relDir, err))
		return
	}
	if !same {
		f.problem(fmt.Errorf("%s: %s/%s.eml exists with different content; item left in place", p.id, p.relDir, p.id))
		return
	}
	if exists(p.dstJSON) {
		same, err := sameContent(p.srcJSON, p.dstJSON)
		if err != nil || !same {
			f.problem(fmt.Errorf("%s: %s/%s.json exists with different content (%v); item left in place", p.id, p.relDir, p.id, err))
			return
		}
		// The whole item is there already (a copy whose sources were
		// not yet removed, or a second copy of the archive).
		f.sync[p.dir] = true
		f.pending = append(f.pending, p.srcEML, p.srcJSON)
		f.rep.Deduplicated++
		f.verbose("deduplicated %s: identical at %s", p.id, p.relDir)
		return
	}
	// Only the .eml is there: make it durable, drop the source's, then
	// move the .json as usual (the .eml first, the .json last).
	if err := f.ops.syncDir(p.dir); err != nil {
		f.problem(fmt.Errorf("%s: fsync %s: %w; left in place", p.id, p.relDir, err))
		return
	}
	if err := f.ops.remove(p.srcEML); err != nil {
		f.problem(fmt.Errorf("%s: remove duplicate .eml: %w", p.id, err))
		return
	}
	f.changed = true
	f.finish(p)
}

// finish moves the .json of an item whose .eml is already at the
// destination: what a filer that stopped between its two moves left.
func (f *filer) finish(p paths) {
	if !exists(p.dstEML) {
		f.problem(fmt.Errorf("%s: .json without .eml, here or in %s; left in place", p.id, p.relDir))
		return
	}
	how, err := f.place(p.srcJSON, p.dstJSON)
	switch {
	case err == nil:
		f.done(how, p.srcJSON)
	case errors.Is(err, syscall.EEXIST):
		same, cerr := sameContent(p.srcJSON, p.dstJSON)
		if cerr != nil || !same {
			f.problem(fmt.Errorf("%s: %s/%s.json exists with different content (%v); .json left in place", p.id, p.relDir, p.id, cerr))
			return
		}
		f.sync[p.dir] = true
		f.pending = append(f.pending, p.srcJSON)
	default:
		f.problem(fmt.Errorf("%s: move .json: %w; left in place", p.id, err))
		return
	}
	f.rep.Finished++
	f.verbose("finished %s -> %s (its .eml was filed already)", p.id, p.relDir)
}

// dryRun reports what file would do, changing nothing.
func (f *filer) dryRun(it *item, p paths) {
	switch {
	case !it.eml && !exists(p.dstEML):
		f.problem(fmt.Errorf("%s: .json without .eml, here or in %s; would be left in place", p.id, p.relDir))
	case !it.eml:
		f.rep.Finished++
		f.verbose("would finish %s -> %s", p.id, p.relDir)
	case exists(p.dstEML) || exists(p.dstJSON):
		f.rep.Deduplicated++
		f.verbose("would deduplicate %s if identical at %s (else leave it)", p.id, p.relDir)
	default:
		f.rep.Filed++
		f.verbose("would file %s -> %s", p.id, p.relDir)
	}
}

// flush makes this run's placements durable, then removes the sources
// waiting for that, then makes the removals durable.
func (f *filer) flush() {
	dirs := make([]string, 0, len(f.sync))
	for d := range f.sync {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	ok := true
	for _, d := range dirs {
		if err := f.ops.syncDir(d); err != nil {
			ok = false
			f.problem(fmt.Errorf("fsync %s: %w", d, err))
		}
	}
	clear(f.sync)
	if ok {
		for _, src := range f.pending {
			if err := f.ops.remove(src); err != nil {
				f.problem(fmt.Errorf("remove %s after copying it: %w", filepath.Base(src), err))
				continue
			}
			f.changed = true
		}
	} else if len(f.pending) > 0 {
		// Copies not known durable: keep the sources; the next run
		// finds both and deduplicates.
		f.problem(fmt.Errorf("%d source files kept because their copies could not be synced", len(f.pending)))
	}
	f.pending = f.pending[:0]
	if f.changed {
		if err := f.ops.syncDir(f.opt.Root); err != nil {
			f.problem(fmt.Errorf("fsync %s: %w", f.opt.Root, err))
		}
		f.changed = false
	}
}
