package proxy

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// Content-filter loop detection.
//
// When --server points at an smtpd that applies the same content_filter,
// every message the server queues comes straight back through the proxy,
// again and again, until Postfix bounces it for too many hops. Nothing is
// added to the message to see this (so it works whatever the server
// accepts, XFORWARD or not): the proxy remembers the queue IDs the server
// gave the messages it accepted, with their recipients, and the smtpd that
// queued a message names that queue ID in the Received: header it adds
// ("... with ESMTP id QUEUEID"), as does XFORWARD IDENT when the Postfix
// smtp client sends it. A message that names one of those queue IDs and has
// the same recipients is that message coming back: a loop. (Mail forwarded
// by an alias also names an earlier queue ID, but goes to other
// recipients.)
//
// The looping message is deferred (451 4.4.6), so it stays in Postfix's
// queue, and /healthz fails. When Postfix retries it, it is let through
// once: with the configuration fixed it is delivered, and if its next queue
// ID does not come back within loopProbe, /healthz is healthy again; with
// the configuration still wrong it comes back and is deferred again.

const (
	loopMemory = 10000           // queue IDs remembered
	loopProbe  = 2 * time.Minute // a retried loop that stays away this long: fixed
	loopHold   = time.Hour       // without such a sign, how long /healthz fails
)

type relayed struct {
	rcpts    string
	deferred bool // came back once and was deferred
}

type loopGuard struct {
	mu     sync.Mutex
	recent map[string]*relayed
	order  []string // oldest first, for eviction
	now    func() time.Time

	lastLoop time.Time // zero: no loop seen (or fixed since)
	lastID   string
	probeID  string // a retried loop's next queue ID
	probeAt  time.Time
}

func newLoopGuard() *loopGuard {
	return &loopGuard{recent: map[string]*relayed{}, now: time.Now}
}

// rcptKey is the set of accepted recipients, for comparing envelopes.
func rcptKey(env *archive.Envelope) string {
	var rs []string
	for _, r := range env.RcptTo {
		if r.Accepted {
			rs = append(rs, strings.ToLower(r.Addr))
		}
	}
	slices.Sort(rs)
	return strings.Join(rs, "\x00")
}

// relayed records a message the server accepted (env has its queue ID).
// retry is the queue ID of the deferred loop it retries, if it does.
func (g *loopGuard) relayed(env *archive.Envelope, retry string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.recent[env.QueueID]; !ok {
		g.order = append(g.order, env.QueueID)
		if len(g.order) > loopMemory {
			delete(g.recent, g.order[0])
			g.order = g.order[1:]
		}
	}
	g.recent[env.QueueID] = &relayed{rcpts: rcptKey(env)}
	if retry != "" {
		g.probeID, g.probeAt = env.QueueID, g.now()
	}
}

// check looks at a message about to be relayed: head is the start of its
// content. loop reports that it is a message the server queued coming
// back (id: that queue ID). A non-empty id without loop is the retry of a
// deferred loop, let through once.
func (g *loopGuard) check(head []byte, env *archive.Envelope) (id string, loop bool) {
	ids := receivedIDs(head)
	if env.Client != nil && env.Client.Ident != "" {
		ids = append(ids, env.Client.Ident)
	}
	key := rcptKey(env)
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, id := range ids {
		r, ok := g.recent[id]
		if !ok || r.rcpts != key {
			continue
		}
		if r.deferred {
			r.deferred = false
			return id, false
		}
		r.deferred = true
		g.lastLoop, g.lastID = g.now(), id
		g.probeID = ""
		return id, true
	}
	return "", false
}

// health fails while a loop seen recently has not been shown fixed.
func (g *loopGuard) health() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lastLoop.IsZero() {
		return nil
	}
	now := g.now()
	if g.probeID != "" && now.Sub(g.probeAt) > loopProbe || now.Sub(g.lastLoop) > loopHold {
		g.lastLoop, g.probeID = time.Time{}, ""
		return nil
	}
	return fmt.Errorf("content-filter loop: queue ID %s came back through the proxy at %s: --server must be the reinjection smtpd without content_filter",
		g.lastID, g.lastLoop.UTC().Format(time.RFC3339))
}

var receivedID = regexp.MustCompile(`(?i)\sid\s+([0-9A-Za-z]+)`)

// receivedIDs returns the queue IDs named by the Received: fields in the
// header at the start of a message ("... with ESMTP id 4Z1abc ...").
func receivedIDs(head []byte) []string {
	var ids []string
	for len(head) > 0 {
		end := bytes.IndexByte(head, '\n')
		if end < 0 {
			return ids // cut off: not a whole field
		}
		line := head[:end+1]
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return ids // end of the header
		}
		// The field and its continuation lines.
		for end+1 < len(head) && (head[end+1] == ' ' || head[end+1] == '\t') {
			next := bytes.IndexByte(head[end+1:], '\n')
			if next < 0 {
				return ids
			}
			end += 1 + next
		}
		field := head[:end+1]
		head = head[end+1:]
		name, value, ok := bytes.Cut(field, []byte(":"))
		if !ok || !strings.EqualFold(string(bytes.TrimRight(name, " \t")), "Received") {
			continue
		}
		if m := receivedID.FindSubmatch(value); m != nil {
			ids = append(ids, string(m[1]))
		}
	}
	return ids
}
