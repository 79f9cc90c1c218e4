package archive

import "sync"

// groupSync coalesces fsyncs of one directory (group commit). Every writer
// must fsync the directory after its own create or rename, and with many
// concurrent writers those fsyncs queue up on the same directory inode and
// journal. A directory fsync makes durable every entry change made before it
// started, so one that starts after a writer's change serves that writer as
// well as its own would: writers wait for the next fsync to start and finish
// instead of each running one. With one writer this is exactly one fsync.
type groupSync struct {
	mu      sync.Mutex
	cond    *sync.Cond
	req     uint64 // requests registered so far
	done    uint64 // requests covered by the last completed fsync
	running bool
	err     error // result of the last completed fsync
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
	g.req++
	mine := g.req
	for g.done < mine {
		if g.running {
			g.cond.Wait()
			continue
		}
		// Run one fsync for every request registered so far.
		g.running = true
		covers := g.req
		g.mu.Unlock()
		err := fsync()
		g.mu.Lock()
		g.running = false
		g.done, g.err = covers, err
		g.cond.Broadcast()
	}
	// If a later fsync than ours already finished, its result is ours too:
	// it started after our change as well.
	return g.err
}
