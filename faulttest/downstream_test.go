package faulttest

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"

	"github.com/postfix-archive/mailarchive/proxy"
)

// The downstream server dies after the first bytes of a message: the client
// is told to retry (4xx), nothing is left under tmp/, and no item claims the
// message was accepted.
func TestDownstreamDiesMidData(t *testing.T) {
	rec := newRecorder(t, func(r *recorder) { r.dropInData = true })
	p := startInProxy(t, rec.addr(), "", nil)
	c := dial(t, p.addr)
	c.expect(220)
	c.send("EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(250)
	c.expect(354)
	// More than the socket buffers hold, so the proxy's writes fail; ours
	// may fail too once the proxy has given up.
	c.Write([]byte(body(1, 200<<10) + ".\r\n"))
	code, text := c.reply()
	if code/100 != 4 && code != 0 {
		t.Fatalf("after the server died mid-DATA the client got %d %q, want 4xx or a closed connection", code, text)
	}
	waitEmptyTmp(t, p.dir)
	// When the whole message fits in the socket buffers before the server's
	// close is noticed, the proxy sent the end of data and got no reply: it
	// cannot know the server dropped it, so it keeps the copy as "unknown"
	// (over-archiving, never losing). Never "accepted".
	for _, it := range archivetest.ReadItems(t, p.dir) {
		if it.Env.Outcome != "unknown" {
			t.Fatalf("item %s outcome %q for a message the server never took", it.Env.ID, it.Env.Outcome)
		}
		t.Logf("item %s kept with outcome unknown", it.Env.ID)
	}
}

// Nothing listens downstream: every client gets 421 at once.
func TestDownstreamRefusesConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := startInProxy(t, dead, "", nil)
	for i := 0; i < 3; i++ {
		c := dial(t, p.addr)
		t0 := time.Now()
		if text := c.expect(421); !strings.Contains(text, "4.4.1") {
			t.Errorf("421 without 4.4.1: %q", text)
		}
		if d := time.Since(t0); d > 2*time.Second {
			t.Errorf("refusal took %v", d)
		}
		if code, _ := c.reply(); code != 0 {
			t.Errorf("connection still open after 421 (got %d)", code)
		}
	}
	if items := archivetest.ReadItems(t, p.dir); len(items) != 0 {
		t.Fatalf("%d items", len(items))
	}
}

// A server that takes 150 ms per reply, slower than normal but within the
// proxy's timeout (500 ms per read): the messages still go through.
func TestDownstreamSlow(t *testing.T) {
	rec := newRecorder(t, func(r *recorder) { r.delay = 150 * time.Millisecond })
	p := startInProxy(t, rec.addr(), "", func(c *proxy.Config) { c.Timeout = 500 * time.Millisecond })
	c := dial(t, p.addr)
	c.expect(220)
	c.send("EHLO x\r\n")
	c.expect(250)
	for i := 0; i < 2; i++ {
		if code := c.message(body(i, 4<<10)); code != 250 {
			t.Fatalf("message %d: %d", i, code)
		}
	}
	items := archivetest.ReadItems(t, p.dir)
	msgs := rec.messages()
	if len(items) != 2 || len(msgs) != 2 {
		t.Fatalf("%d items, server took %d", len(items), len(msgs))
	}
}

func waitEmptyTmp(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(tmpFiles(dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tmp/ still holds %v", tmpFiles(dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
