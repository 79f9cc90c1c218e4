// Package filer moves complete archive items from the archive root into
// dated directories, ROOT/YYYY/MM/DD/ (README.md, "filer"): the date comes from
// the ID's stamp, so no message is read. It is safe to run while writers
// write and while another filer runs, idempotent, and a crash at any point
// loses nothing: the next run finishes the job.
package filer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// LockName is the lock file filers of one root take in it.
const LockName = archive.ToolLock

// ErrLocked says another filer holds the root's lock.
var ErrLocked = errors.New("another filer is running on this root")

// Options configure one run.
type Options struct {
	Root      string
	Dest      string        // the dated tree's root; default Root
	OlderThan time.Duration // leave items younger than this in place
	LocalTime bool          // date items in local time instead of UTC
	DryRun    bool          // change nothing, report what would be done
	Recover   bool          // first turn crashed writers' leftovers into items
	Verbose   io.Writer     // one line per item and per skipped name; nil: none
	Logger    *slog.Logger  // for the store's recovery; default slog.Default()
	Now       func() time.Time
	// To is where items go; nil: the local dated tree (Dest, LocalTime).
	To  Destination
	Ctx context.Context // cancels a run that talks to a server; default Background
}

// Report says what a run did.
type Report struct {
	Filed        int // moved to the destination
	Finished     int // completed after a crashed run had moved the .eml
	Deduplicated int // already at the destination, identical: source removed
	Kept         int // at the destination, local copy kept on purpose (--keep-local)
	Recent       int // younger than OlderThan
	Incomplete   int // .eml without .json: a writer between its renames
	Foreign      int // names that are not items, left alone
	Recovered    int // items rebuilt from tmp/ by the recovery sweep
	Busy         int // tmp/ files a live writer holds
	Problems     []error
}

// Summary is the one-line summary of a run.
func (r Report) Summary(dryRun bool) string {
	verb := "filed"
	if dryRun {
		verb = "would file"
	}
	kept := ""
	if r.Kept > 0 {
		kept = fmt.Sprintf(", kept local %d", r.Kept)
	}
	return fmt.Sprintf("%s %d, finished %d, deduplicated %d%s; skipped %d (recent %d, incomplete %d, foreign %d); recovered %d; problems %d",
		verb, r.Filed, r.Finished, r.Deduplicated, kept, r.Recent+r.Incomplete+r.Foreign,
		r.Recent, r.Incomplete, r.Foreign, r.Recovered, len(r.Problems))
}

// filer is one run's state: which items to file. How they move is the
// destination's business.
type filer struct {
	opt Options
	rep Report
	t   *Tally
	to  Destination
}

// Run files every complete item of opt.Root once.
func Run(opt Options) (Report, error) {
	return run(opt, osOps)
}

func run(opt Options, ops fsOps) (Report, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Ctx == nil {
		opt.Ctx = context.Background()
	}
	f := &filer{opt: opt, to: opt.To}
	f.t = NewTally(&f.rep, opt.Verbose)
	if f.to == nil {
		f.to = newLocal(opt.Root, opt.Dest, opt.LocalTime, ops)
	}
	if fi, err := os.Stat(opt.Root); err != nil {
		return f.rep, fmt.Errorf("filer: %w", err)
	} else if !fi.IsDir() {
		return f.rep, fmt.Errorf("filer: %s is not a directory", opt.Root)
	}
	if !opt.DryRun {
		unlock, err := lock(opt.Root)
		if err != nil {
			return f.rep, err
		}
		defer unlock()
		if opt.Recover {
			f.recover()
		}
	}
	items, err := f.scan()
	if err != nil {
		return f.rep, err
	}
	for i, it := range items {
		if opt.Ctx.Err() != nil {
			f.t.Problem(fmt.Errorf("stopped (%v); %d items not looked at, left in place", context.Cause(opt.Ctx), len(items)-i))
			break
		}
		f.file(it)
	}
	f.to.Flush(opt.Ctx, f.t)
	return f.rep, nil
}

// file decides whether an item is filed now, and hands it to the
// destination.
func (f *filer) file(e archive.RootEntry) {
	it := Item{ID: e.ID, Stamp: e.Stamp, Root: f.opt.Root, EML: e.EML}
	if !e.JSON {
		f.t.count(&f.rep.Incomplete)
		f.t.Verbose("incomplete %s: .eml without .json (a writer between its renames); left alone", it.ID)
		return
	}
	if !it.EML && exists(it.EMLPath()) {
		// The directory read saw a writer's .json but missed the .eml it
		// had renamed just before.
		it.EML = true
	}
	if it.EML && f.opt.OlderThan > 0 && f.opt.Now().Sub(it.Stamp) < f.opt.OlderThan {
		f.t.count(&f.rep.Recent)
		f.t.Verbose("recent %s: younger than %v; left in place", it.ID, f.opt.OlderThan)
		return
	}
	if f.opt.DryRun {
		f.to.Plan(f.opt.Ctx, it, f.t)
		return
	}
	f.to.Put(f.opt.Ctx, it, f.t)
}

// lock takes the root's filer lock without waiting.
func lock(root string) (func(), error) {
	unlock, ok, err := archive.TryLock(root, LockName)
	if err != nil {
		return nil, fmt.Errorf("filer: %w", err)
	}
	if !ok {
		return nil, ErrLocked
	}
	return unlock, nil
}

func (f *filer) recover() {
	st, err := archive.Open(f.opt.Root, archive.Options{Logger: f.opt.Logger})
	if err != nil {
		f.problem(fmt.Errorf("recover: %w", err))
		return
	}
	rr := st.Recover()
	f.rep.Recovered += len(rr.Recovered)
	f.rep.Busy += rr.Busy
	for _, id := range rr.Recovered {
		f.verbose("recovered %s (left in tmp/ by a crashed writer)", id)
	}
	for _, name := range rr.Foreign {
		f.verbose("foreign tmp/%s: left alone", name)
	}
	for _, err := range rr.Errors {
		f.problem(err)
	}
}

func (f *filer) verbose(format string, args ...any) { f.t.Verbose(format, args...) }

func (f *filer) problem(err error) { f.t.Problem(err) }

// scan lists the root's items (through the archive's read API, which knows
// the names) and reports the rest.
func (f *filer) scan() ([]archive.RootEntry, error) {
	r, err := archive.OpenReader(f.opt.Root, archive.ReaderOptions{Filed: f.opt.Dest})
	if err != nil {
		return nil, fmt.Errorf("filer: %w", err)
	}
	l, err := r.ListRoot(LockName)
	if err != nil {
		return nil, fmt.Errorf("filer: %w", err)
	}
	for _, name := range l.Foreign {
		f.rep.Foreign++
		f.verbose("foreign %s: left alone", name)
	}
	return l.Entries, nil
}

// DatedDir is the directory, relative to the destination root, that an ID
// is filed in: YYYY/MM/DD of its stamp in UTC, or in local time.
func DatedDir(id string, local bool) (string, error) {
	pid, err := archive.ParseID(id)
	if err != nil {
		return "", err
	}
	return archive.DatedDir(pid.Stamp, local), nil
}
