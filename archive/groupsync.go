package archive

import "sync"

// groupSync coalesces fsyncs of one directory (group commit). Every writer
// must fsync the directory after its own create or rename, and with many
// concurrent writers those fsyncs queue up on the same directory inode and
// journal. A directory fsync makes durable every entry change made before it
// started, so one that starts after a writer's change serves that writer as
// well as its own would: writers join the next batch and wait for its one
// fsync instead of each running one. With one writer this is exactly one
// fsync.
type groupSync struct {
	mu      sync.Mutex
	cond    *sync.Cond
	next    *syncBatch // the batch new requests join; nil when none waits
	running bool
}

// syncBatch is the requests one fsync serves. Each request gets the error
// of the fsync of its own batch: never that of an earlier fsync (which
// started before its change) or of a later one.
type syncBatch struct {
	finished bool
	err      error
}

func newGroupSync() *groupSync {
	g := &groupSync{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// sync returns once an fsync (done by fsync) that started after this call
// has completed, with that fsync's error.
func (g *groupSync) sync(fsync func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.next == nil {
		g.next = &syncBatch{}
	}
	b := g.next
	for !b.finished {
		if g.running || g.next != b {
			g.cond.Wait()
			continue
		}
		// Start b's fsync: requests from now on join a new batch.
		g.running, g.next = true, nil
		g.mu.Unlock()
		err := fsync()
		g.mu.Lock()
		g.running = false
		b.finished, b.err = true, err
		g.cond.Broadcast()
	}
	return b.err
}
