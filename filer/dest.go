package filer

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"
)

// Destination is where the filer moves items: the local dated tree
// (NewLocal) or an object store (package objstore). The filer decides which
// items to file; a destination decides how to move one, and reports what
// happened through the run's Tally.
//
// The contract every destination keeps: nothing accepted is lost. An item
// leaves the root only once its copy at the destination is durable and
// complete; the .eml is placed first and the .json last, so a crash at any
// point leaves either the item whole at the source, or its .eml already
// placed and its .json still in the root (the next run finishes it: Put with
// it.EML false), or the item whole at both (the next run deduplicates).
type Destination interface {
	// Put files one complete item. It may return before the work is
	// durable; Flush waits for it.
	Put(ctx context.Context, it Item, t *Tally)
	// Plan reports what Put would do, changing nothing (--dry-run).
	Plan(ctx context.Context, it Item, t *Tally)
	// Flush makes every Put so far durable and complete, then removes the
	// sources that waited for that.
	Flush(ctx context.Context, t *Tally)
}

// Item is one complete item of the root, handed to a destination.
type Item struct {
	ID    string
	Stamp time.Time // from the ID
	Root  string    // the archive root it is in
	// EML says its .eml is still in the root. False: a run that stopped
	// between its two moves placed the .eml already; only the .json is left.
	EML bool
}

// EMLPath and JSONPath are the item's files in the root.
func (it Item) EMLPath() string  { return filepath.Join(it.Root, it.ID+".eml") }
func (it Item) JSONPath() string { return filepath.Join(it.Root, it.ID+".json") }

// Outcome is what a destination did with an item.
type Outcome int

const (
	Filed        Outcome = iota + 1 // placed at the destination, gone from the root
	Finished                        // a crashed run had placed the .eml; the .json followed
	Deduplicated                    // already at the destination, identical: source removed
	Kept                            // at the destination, the local copy kept on purpose (--keep-local)
)

// Tally collects one run's results. Destinations may report from several
// goroutines.
type Tally struct {
	mu      sync.Mutex
	rep     *Report
	verbose io.Writer
}

// NewTally returns a Tally adding to rep and writing per-item lines to
// verbose (nil: none).
func NewTally(rep *Report, verbose io.Writer) *Tally {
	return &Tally{rep: rep, verbose: verbose}
}

// Done counts an outcome and says it in one verbose line.
func (t *Tally) Done(o Outcome, format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch o {
	case Filed:
		t.rep.Filed++
	case Finished:
		t.rep.Finished++
	case Deduplicated:
		t.rep.Deduplicated++
	case Kept:
		t.rep.Kept++
	}
	t.say(format, args...)
}

// Problem records what kept an item (or the run) from being done.
func (t *Tally) Problem(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rep.Problems = append(t.rep.Problems, err)
}

// Verbose writes one line when the run is verbose.
func (t *Tally) Verbose(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.say(format, args...)
}

func (t *Tally) say(format string, args ...any) {
	if t.verbose != nil {
		fmt.Fprintf(t.verbose, format+"\n", args...)
	}
}

// count adds to a counter of the report under the lock.
func (t *Tally) count(field *int) {
	t.mu.Lock()
	*field++
	t.mu.Unlock()
}
