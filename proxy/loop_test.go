package proxy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

func TestReceivedIDs(t *testing.T) {
	head := "Received: from relay (localhost [127.0.0.1])\r\n\tby mx.example (Postfix) with ESMTP id 4Zab12CdEf\r\n\tfor <bob@example.net>; Tue,  1 Dec 2026 13:00:00 +0000 (UTC)\r\n" +
		"X-Other: id NOTME\r\n" +
		"received: by host with SMTP id 8C1D2E3F4A5\n" +
		"Subject: id SUBJ\r\n\r\n" +
		"Received: from body with ESMTP id BODY1\r\n"
	got := receivedIDs([]byte(head))
	if want := []string{"4Zab12CdEf", "8C1D2E3F4A5"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("receivedIDs = %v, want %v", got, want)
	}
	// Only the top two Received: fields count.
	three := "Received: by a with ESMTP id ONE\r\nReceived: by b with ESMTP id TWO\r\nReceived: by c with ESMTP id THREE\r\n\r\n"
	if got := receivedIDs([]byte(three)); !reflect.DeepEqual(got, []string{"ONE", "TWO"}) {
		t.Fatalf("three fields: %v", got)
	}
	// A field cut off by the end of the captured head is not read.
	if got := receivedIDs([]byte("Received: by x with ESMTP id CUT")); got != nil {
		t.Fatalf("cut field: %v", got)
	}
}

func env(queueID string, rcpts ...string) *archive.Envelope {
	e := &archive.Envelope{QueueID: queueID}
	for _, r := range rcpts {
		e.RcptTo = append(e.RcptTo, archive.Rcpt{Addr: r, Accepted: true})
	}
	e.RcptTo = append(e.RcptTo, archive.Rcpt{Addr: "refused@x", Accepted: false})
	return e
}

func received(id string) []byte {
	return []byte("Received: from a by b (Postfix) with ESMTP id " + id + "\r\n\tfor <x>; date\r\nSubject: s\r\n\r\nbody\r\n")
}

func TestLoopGuard(t *testing.T) {
	now := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	g := newLoopGuard()
	g.now = func() time.Time { return now }

	g.relayed(env("AAA", "bob@example.net", "carol@example.net"))
	if err := g.health(); err != nil {
		t.Fatalf("healthy at start: %v", err)
	}
	// Unknown queue ID; known one with other recipients (an alias
	// forward): no loop.
	if id, loop := g.check(received("ZZZ"), env("", "bob@example.net")); loop || id != "" {
		t.Fatalf("unknown ID: %q %v", id, loop)
	}
	if _, loop := g.check(received("AAA"), env("", "dave@example.net")); loop {
		t.Fatalf("forward to other recipients taken for a loop")
	}
	// The same message back, recipients in another order and case: loop.
	if id, loop := g.check(received("AAA"), env("", "Carol@example.net", "bob@example.net")); !loop || id != "AAA" {
		t.Fatalf("loop not seen: %q %v", id, loop)
	}
	if err := g.health(); err == nil || !strings.Contains(err.Error(), "AAA") {
		t.Fatalf("health after a loop: %v", err)
	}
	// XFORWARD IDENT names it as well.
	g.relayed(env("BBB", "eve@example.net"))
	e := env("", "eve@example.net")
	e.Client = &archive.Client{Ident: "BBB"}
	if _, loop := g.check([]byte("Subject: no received\r\n\r\n"), e); !loop {
		t.Fatalf("loop by IDENT not seen")
	}
	// Postfix retries the deferred message: deferred again while loops
	// are recent, without making the loop newer.
	if _, loop := g.check(received("AAA"), env("", "bob@example.net", "carol@example.net")); !loop {
		t.Fatalf("retry let through while the loop is recent")
	}
	now = now.Add(loopHold - time.Second)
	if g.health() == nil {
		t.Fatalf("healthy within loopHold")
	}
	if _, loop := g.check(received("AAA"), env("", "bob@example.net", "carol@example.net")); !loop {
		t.Fatalf("retry let through within loopHold")
	}
	// No new loop for loopHold: healthy, and the retry passes.
	now = now.Add(2 * time.Second)
	if err := g.health(); err != nil {
		t.Fatalf("still failing after loopHold: %v", err)
	}
	if _, loop := g.check(received("AAA"), env("", "bob@example.net", "carol@example.net")); loop {
		t.Fatalf("retry deferred after loopHold")
	}
	g.relayed(env("CCC", "bob@example.net", "carol@example.net"))
	// Still broken: it comes back as CCC, a new loop.
	if _, loop := g.check(received("CCC"), env("", "bob@example.net", "carol@example.net")); !loop {
		t.Fatalf("loop after the retry not seen")
	}
	if g.health() == nil {
		t.Fatalf("healthy after a new loop")
	}
}

func TestLoopGuardBounded(t *testing.T) {
	g := newLoopGuard()
	for i := range loopMemory + 10 {
		g.relayed(env(strings.Repeat("A", i%7+1)+string(rune('a'+i%26))+time.Duration(i).String(), "x@y"))
	}
	if len(g.recent) != loopMemory || len(g.order) != loopMemory {
		t.Fatalf("remembered %d/%d", len(g.recent), len(g.order))
	}
}
