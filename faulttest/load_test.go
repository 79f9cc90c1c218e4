package faulttest

import (
	"bufio"
	"net"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/proxy"
)

// 500 clients connect at once to a proxy allowing 100: exactly 100 are
// served, the other 400 get 421 and are closed; then the idle ones are cut
// at the timeout with 421.
func TestConnectionFlood(t *testing.T) {
	rec := newRecorder(t, nil)
	const n, maxConns = 500, 100
	p := startInProxy(t, rec.addr(), "", func(c *proxy.Config) { c.MaxConns = maxConns; c.Timeout = time.Second })
	type result struct {
		greeting string
		after    string
		took     time.Duration
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				results[i].greeting = "dial: " + err.Error()
				return
			}
			defer c.Close()
			t0 := time.Now()
			c.SetDeadline(t0.Add(10 * time.Second))
			r := bufio.NewReader(c)
			results[i].greeting, _ = r.ReadString('\n')
			// Say nothing more: what comes next is the timeout's 421 or
			// the close.
			results[i].after, _ = r.ReadString('\n')
			if _, err := r.ReadByte(); err == nil {
				results[i].after += " (and more)"
			}
			results[i].took = time.Since(t0)
		}(i)
	}
	close(start)
	wg.Wait()
	served, refused := 0, 0
	for i, r := range results {
		switch {
		case strings.HasPrefix(r.greeting, "220 "):
			served++
			if !strings.HasPrefix(r.after, "421 4.4.2") || r.took > 4*time.Second {
				t.Errorf("client %d: idle connection ended with %q after %v, want 421 4.4.2 at the 1 s timeout", i, r.after, r.took)
			}
		case strings.HasPrefix(r.greeting, "421 "):
			refused++
			if r.after != "" {
				t.Errorf("client %d: refused connection not closed: %q", i, r.after)
			}
		default:
			t.Errorf("client %d: greeting %q", i, r.greeting)
		}
	}
	t.Logf("%d served, %d refused with 421", served, refused)
	if served != maxConns || refused != n-maxConns {
		t.Fatalf("%d served and %d refused, want %d and %d", served, refused, maxConns, n-maxConns)
	}
}

func liveHeap() uint64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// Clients that send one byte at a time, never pausing as long as the
// timeout, inside a command line that never ends and inside a message that
// never ends: the proxy streams them on and the heap stays bounded, and
// once they pause past the timeout they are cut.
func TestTrickleClientsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("takes seconds")
	}
	rec := newRecorder(t, nil)
	p := startInProxy(t, rec.addr(), "", func(c *proxy.Config) { c.Timeout = time.Second })
	const clients = 40
	before := liveHeap()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	cut := make(chan string, clients)
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.Dial("tcp", p.addr)
			if err != nil {
				cut <- err.Error()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			r := bufio.NewReader(c)
			r.ReadString('\n')
			if i%2 == 1 {
				c.Write([]byte("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"))
				for j := 0; j < 4; j++ { // EHLO is multi-line
					if l, _ := r.ReadString('\n'); strings.HasPrefix(l, "354") {
						break
					}
				}
			} else {
				c.Write([]byte("NOOP "))
			}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
		trickle:
			for {
				select {
				case <-stop:
					break trickle
				case <-tick.C:
					if _, err := c.Write([]byte("x")); err != nil {
						cut <- "cut while trickling: " + err.Error()
						return
					}
				}
			}
			// Now pause: the proxy must cut the connection at its timeout.
			t0 := time.Now()
			rest, _ := r.ReadString(0)
			if d := time.Since(t0); d > 3*time.Second || !strings.Contains(rest, "421") {
				cut <- "after the pause: " + rest
				return
			}
			cut <- ""
		}(i)
	}
	// Well past the timeout: a per-read timeout alone would not cut them.
	time.Sleep(2500 * time.Millisecond)
	during := liveHeap()
	close(stop)
	wg.Wait()
	close(cut)
	for s := range cut {
		if s != "" {
			t.Error(s)
		}
	}
	grew := int64(during) - int64(before)
	t.Logf("%d trickling clients: live heap grew by %d KiB (%d bytes each)", clients, grew>>10, grew/clients)
	if grew > clients*128<<10 {
		t.Fatalf("live heap grew by %d bytes for %d trickling clients", grew, clients)
	}
}
