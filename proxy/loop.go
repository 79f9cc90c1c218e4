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
// queue, and /healthz fails. Postfix's retries of it are deferred again
// as long as loops keep happening; once no new loop has been seen for
// loopHold (longer than Postfix's maximal_backoff_time, so a retry cannot
// pass for a fix), retries pass and /healthz is healthy again. After
// fixing --server, restart the proxy (it forgets the queue IDs) and run
// "postqueue -f" to deliver the deferred messages at once.

const (
	loopMemory = 10000         // queue IDs remembered
	loopHold   = 2 * time.Hour // how long after the last loop retries are deferred and /healthz fails
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

	lastLoop time.Time // the last new loop seen; zero: none
	lastID   string
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
func (g *loopGuard) relayed(env *archive.Envelope) {
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
}

// check looks at a message about to be relayed (head is the start of its
// content) and reports whether it is one the server queued coming back
// (id: the queue ID it had there).
func (g *loopGuard) check(head []byte, env *archive.Envelope) (id string, loop bool) {
	ids := receivedIDs(head)
	if env.Client != nil && env.Client.Ident != "" {
		ids = append(ids, env.Client.Ident)
	}
	key := rcptKey(env)
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	for _, id := range ids {
		r, ok := g.recent[id]
		if !ok || r.rcpts != key {
			continue
		}
		if r.deferred {
			// Postfix retrying a deferred loop: a new loop since
			// keeps it deferred; after loopHold it may pass.
			if now.Sub(g.lastLoop) < loopHold {
				return id, true
			}
			r.deferred = false
			return "", false
		}
		r.deferred = true
		g.lastLoop, g.lastID = now, id
		return id, true
	}
	return "", false
}

// health fails while a loop was seen within loopHold.
func (g *loopGuard) health() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.lastLoop.IsZero() || g.now().Sub(g.lastLoop) >= loopHold {
		return nil
	}
	return fmt.Errorf("content-filter loop: queue ID %s came back through the proxy at %s: --server must be the reinjection smtpd without content_filter",
		g.lastID, g.lastLoop.UTC().Format(time.RFC3339))
}

var receivedID = regexp.MustCompile(`(?i)\sid\s+([0-9A-Za-z]+)`)

// loopReceived is how many Received: fields from the top are looked at:
// the one the looping smtpd added, and one a filter in front of the proxy
// may have added above it. A message that came back from another host (a
// mail loop elsewhere) has that host's and its receiving smtpd's fields
// above ours, so it is not taken for a content-filter loop.
const loopReceived = 2

// receivedIDs returns the queue IDs named by the top loopReceived
// Received: fields of the header at the start of a message ("... with
// ESMTP id 4Z1abc ...").
func receivedIDs(head []byte) []string {
	var ids []string
	for seen := 0; len(head) > 0 && seen < loopReceived; {
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
		seen++
		if m := receivedID.FindSubmatch(value); m != nil {
			ids = append(ids, string(m[1]))
		}
	}
	return ids
}
