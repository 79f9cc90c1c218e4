// Package filer moves complete archive items from the archive root into
// dated directories, ROOT/YYYY/MM/DD/ (README.md, "filer"): the date comes from
// the ID's stamp, so no message is read. It is safe to run while writers
// write and while another filer runs, idempotent, and a crash at any point
// loses nothing: the next run finishes the job.
package filer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// LockName is the lock file filers of one root take in it.
const LockName = ".filer.lock"

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
}

// Report says what a run did.
type Report struct {
	Filed        int // moved to the dated tree
	Finished     int // completed after a crashed run had moved the .eml
	Deduplicated int // already at the destination, identical: source removed
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
	return fmt.Sprintf("%s %d, finished %d, deduplicated %d; skipped %d (recent %d, incomplete %d, foreign %d); recovered %d; problems %d",
		verb, r.Filed, r.Finished, r.Deduplicated, r.Recent+r.Incomplete+r.Foreign,
		r.Recent, r.Incomplete, r.Foreign, r.Recovered, len(r.Problems))
}

// filer is one run's state.
type filer struct {
	opt  Options
	ops  fsOps
	rep  Report
	dirs map[string]bool // dated directories known to exist
	sync map[string]bool // directories to fsync before sources go
	// pending are source files whose copy at the destination becomes
	// durable with the next flush; they are removed after it, in order.
	pending []string
	changed bool // the source root changed: fsync it at the end
}

// flushEvery bounds the pending removals of a cross-filesystem run.
const flushEvery = 1000

// Run files every complete item of opt.Root once.
func Run(opt Options) (Report, error) {
	return run(opt, osOps)
}

func run(opt Options, ops fsOps) (Report, error) {
	if opt.Dest == "" {
		opt.Dest = opt.Root
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	f := &filer{opt: opt, ops: ops, dirs: map[string]bool{}, sync: map[string]bool{}}
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
	for _, it := range items {
		f.file(it)
		if len(f.pending) >= flushEvery {
			f.flush()
		}
	}
	f.flush()
	return f.rep, nil
}

// lock takes the root's filer lock without waiting.
func lock(root string) (func(), error) {
	p := filepath.Join(root, LockName)
	l, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("filer: lock: %w", err)
	}
	if err := syscall.Flock(int(l.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		l.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("filer: lock %s: %w", p, err)
	}
	return func() { l.Close() }, nil
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

func (f *filer) verbose(format string, args ...any) {
	if f.opt.Verbose != nil {
		fmt.Fprintf(f.opt.Verbose, format+"\n", args...)
	}
}

// problem records what kept an item (or the run) from being done; the
// caller reports them.
func (f *filer) problem(err error) {
	f.rep.Problems = append(f.rep.Problems, err)
}

// item is one ID found in the root.
type item struct {
	id        string
	stamp     time.Time
	eml, json bool
}

// scan lists the root's items (through the archive's read API, which knows
// the names) and reports the rest.
func (f *filer) scan() ([]*item, error) {
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
	items := make([]*item, 0, len(l.Entries))
	for _, e := range l.Entries {
		items = append(items, &item{id: e.ID, stamp: e.Stamp, eml: e.EML, json: e.JSON})
	}
	return items, nil
}

// destDir is the dated directory of a stamp.
func (f *filer) destDir(stamp time.Time) string {
	return filepath.Join(f.opt.Dest, archive.DatedDir(stamp, f.opt.LocalTime))
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

// ensureDir creates a dated directory once per run, and marks for fsync the
// parent of every level it creates.
func (f *filer) ensureDir(dir string) error {
	if f.dirs[dir] {
		return nil
	}
	rel, err := filepath.Rel(f.opt.Dest, dir)
	if err != nil {
		return err
	}
	p := f.opt.Dest
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		parent := p
		p = filepath.Join(p, part)
		if f.dirs[p] {
			continue
		}
		switch err := os.Mkdir(p, 0o750); {
		case err == nil:
			f.sync[parent] = true
		case errors.Is(err, os.ErrExist):
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
				return fmt.Errorf("%s exists and is not a directory", p)
			}
		default:
			return err
		}
		f.dirs[p] = true
	}
	return nil
}
