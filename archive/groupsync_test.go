package archive

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGroupSyncSingle(t *testing.T) {
	g := newGroupSync()
	n := 0
	for i := 0; i < 3; i++ {
		if err := g.sync(func() error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if n != 3 {
		t.Fatalf("%d fsyncs for 3 sequential calls, want 3", n)
	}
}

// TestGroupSyncCovers: every caller returns only after an fsync that
// started after the caller's call began, and concurrent callers share.
func TestGroupSyncCovers(t *testing.T) {
	g := newGroupSync()
	var clock atomic.Int64 // logical time
	type run struct{ start, end int64 }
	var mu sync.Mutex
	var runs []run
	fsync := func() error {
		r := run{start: clock.Add(1)}
		time.Sleep(2 * time.Millisecond) // a slow disk
		r.end = clock.Add(1)
		mu.Lock()
		runs = append(runs, r)
		mu.Unlock()
		return nil
	}
	const callers = 200
	var wg sync.WaitGroup
	bad := make(chan string, callers)
	for i := 0; i < callers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			called := clock.Add(1)
			if err := g.sync(fsync); err != nil {
				bad <- err.Error()
				return
			}
			returned := clock.Add(1)
			mu.Lock()
			defer mu.Unlock()
			for _, r := range runs {
				if r.start > called && r.end < returned {
					return
				}
			}
			bad <- "a caller returned with no fsync started after its call"
		}()
	}
	wg.Wait()
	close(bad)
	for b := range bad {
		t.Fatal(b)
	}
	if len(runs) >= callers/2 {
		t.Fatalf("%d fsyncs for %d concurrent callers: not shared", len(runs), callers)
	}
	t.Logf("%d concurrent callers, %d fsyncs", callers, len(runs))
}

func TestGroupSyncError(t *testing.T) {
	g := newGroupSync()
	boom := errors.New("EIO")
	if err := g.sync(func() error { return boom }); err != boom {
		t.Fatalf("err %v", err)
	}
	if err := g.sync(func() error { return nil }); err != nil {
		t.Fatalf("a later good fsync reported %v", err)
	}
}
