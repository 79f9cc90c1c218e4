package proxy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/proxy"
)

// heapPeak samples the live heap until stop is closed and returns the peak.
func heapPeak(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		// The heap found live by the last GC: unlike heap/objects, it does
		// not count garbage awaiting collection, so it measures what the
		// proxy holds, not how lazily the collector runs.
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var peak uint64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// TestLargeMessageBoundedMemory relays a 100 MB message (with 1 MiB lines
// among ordinary ones) and checks that the live heap never comes near the
// message size: the proxy streams, it does not buffer.
func TestLargeMessageBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MB transfer")
	}
	f := setup(t, func(_ *proxy.Config, s *scriptServer) { s.discardData = true })
	c := f.dial()
	c.expect(220)
	c.beginData()

	const total = 100 << 20
	line := []byte(strings.Repeat("0123456789abcdef", 4) + "\r\n")
	long := []byte(strings.Repeat("L", 1<<20) + "\r\n")
	chunk := make([]byte, 0, 64<<10)
	for len(chunk)+len(line) <= cap(chunk) {
		chunk = append(chunk, line...)
	}
	runtime.GC()
	stop := make(chan struct{})
	peakc := heapPeak(stop)
	h := sha256.New()
	sent := 0
	for sent < total {
		b := chunk
		if sent%(10<<20) == 0 {
			b = long
		}
		if _, err := c.conn.Write(b); err != nil {
			t.Fatal(err)
		}
		h.Write(b)
		sent += len(b)
	}
	c.send(".\r\n")
	c.expect(250)
	close(stop)
	peak := <-peakc

	items := f.items()
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	fi, err := os.Stat(filepath.Join(f.dir, items[0].Env.ID+".eml"))
	if err != nil || fi.Size() != int64(sent) || items[0].Env.Message.SHA256 != hex.EncodeToString(h.Sum(nil)) {
		t.Fatalf("archived %v bytes (want %d), sha %s", fi.Size(), sent, items[0].Env.Message.SHA256)
	}
	t.Logf("relayed %d MB; peak live heap %.1f MiB", sent>>20, float64(peak)/(1<<20))
	if peak > 16<<20 {
		t.Fatalf("peak live heap %d bytes for a %d byte message: not streaming", peak, sent)
	}
}
