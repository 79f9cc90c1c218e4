package reconcile

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// Hook points, as the envelope's source names them.
var hookNames = []string{archive.SourceProxy, archive.SourceMilter, archive.SourceWrapper}

// Options configure Run.
type Options struct {
	Root  string
	Filed string
	Log   io.Reader // Postfix's mail log
	Now   time.Time
	Since time.Time // ignore log lines and items before
	// Hooks in use; empty: those that archived an item in the log's time span.
	Hooks []string
	// WrapperMatch picks the deliveries that ran the delivery wrapper: the
	// text of a status=sent line ("delivered to command: /usr/local/bin/archiver ...").
	WrapperMatch string
}

// Message is one message as Postfix logged it: the queue files it passed
// through (a content filter or a relay back into the same Postfix makes a
// new one), in order.
type Message struct {
	QueueIDs  []string  `json:"queue_ids"`
	Time      time.Time `json:"time"`
	From      string    `json:"from"`
	MessageID string    `json:"message_id,omitempty"`
	Items     []string  `json:"items"`             // archive IDs found for it
	Missing   []string  `json:"missing"`           // hook points with no item
	Pending   bool      `json:"pending,omitempty"` // still in Postfix's queue at the end of the log
}

// ItemRef is an item with no Postfix record.
type ItemRef struct {
	ID      string `json:"id"`
	Source  string `json:"source"`
	QueueID string `json:"queue_id,omitempty"`
	Ident   string `json:"ident,omitempty"`
}

// Report is the result of Run.
type Report struct {
	LogLines   int       `json:"log_lines"`
	LogFrom    time.Time `json:"log_from"`
	LogTo      time.Time `json:"log_to"`
	Hooks      []string  `json:"hooks"`
	Messages   int       `json:"messages"`
	Complete   int       `json:"complete"`
	Missing    []Message `json:"missing"`
	Unmatched  []ItemRef `json:"unmatched_items"`
	ItemsSeen  int       `json:"items_seen"`
	Incomplete bool      `json:"-"`
}

type qfile struct {
	id       string
	first    time.Time
	from     string
	msgID    string
	queued   bool
	rejected bool
	removed  bool
	wrapper  bool     // delivered through the delivery wrapper
	next     []string // queue IDs it was relayed into
}

// receivedRe finds Postfix's queue ID in the Received: field it prepends
// ("by mx.example (Postfix) with ESMTP id 4ABC123").
var receivedRe = regexp.MustCompile(`\(Postfix[^)]*\)\s+with\s+\S+\s+id\s+([0-9A-Za-z]+)`)

// Run reconciles the archive with the mail log.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.WrapperMatch == "" {
		o.WrapperMatch = "archiver"
	}
	rep := &Report{Missing: []Message{}, Unmatched: []ItemRef{}}
	files := map[string]*qfile{}
	get := func(id string, t time.Time) *qfile {
		q := files[id]
		if q == nil {
			q = &qfile{id: id, first: t}
			files[id] = q
		}
		return q
	}
	lines, _, err := ReadLog(o.Log, o.Now, func(ev Event) {
		if ev.Time.Before(o.Since) {
			return
		}
		if rep.LogFrom.IsZero() || ev.Time.Before(rep.LogFrom) {
			rep.LogFrom = ev.Time
		}
		if ev.Time.After(rep.LogTo) {
			rep.LogTo = ev.Time
		}
		q := get(ev.QueueID, ev.Time)
		switch ev.Kind {
		case EvQueued:
			q.queued, q.from = true, ev.From
		case EvMessageID:
			q.msgID = ev.MsgID
		case EvRejected:
			q.rejected = true
		case EvRemoved:
			q.removed = true
		case EvSent:
			if ev.Queued != "" {
				q.next = append(q.next, ev.Queued)
			}
			if strings.Contains(ev.Text, o.WrapperMatch) && (strings.Contains(ev.Text, "delivered to command") || strings.Contains(ev.Text, "delivered via")) {
				q.wrapper = true
			}
		}
	})
	rep.LogLines = lines
	if err != nil {
		return nil, fmt.Errorf("reconcile: read mail log: %w", err)
	}

	// Items, keyed by the queue IDs they name.
	rd, err := archive.OpenReader(o.Root, archive.ReaderOptions{Filed: o.Filed})
	if err != nil {
		return nil, err
	}
	type item struct {
		id, source, qid, ident string
		stamp                  time.Time
	}
	var items []item
	byQID := map[string]map[string][]string{} // queue ID -> hook -> item IDs
	add := func(qid, hook, id string) {
		if qid == "" {
			return
		}
		if byQID[qid] == nil {
			byQID[qid] = map[string][]string{}
		}
		byQID[qid][hook] = append(byQID[qid][hook], id)
	}
	used := map[string]bool{}
	err = rd.Walk(func(it archive.Item) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if it.Stamp.Before(o.Since) {
			return nil
		}
		env, err := it.Envelope()
		if err != nil {
			return nil // damage is verify's business
		}
		x := item{id: it.ID, source: env.Source, qid: env.QueueID, stamp: it.Stamp}
		if env.Client != nil {
			x.ident = env.Client.Ident
		}
		switch env.Source {
		case archive.SourceProxy:
			// The proxy sits between two queue files: it saw the first as
			// XFORWARD IDENT and was told the second in "queued as".
			add(x.ident, archive.SourceProxy, it.ID)
		case archive.SourceMilter:
			add(x.qid, archive.SourceMilter, it.ID)
		case archive.SourceWrapper:
			// The wrapper records it (from the same Received: line);
			// items archived before it did are read here.
			if x.qid == "" {
				x.qid = receivedQueueID(it)
			}
			add(x.qid, archive.SourceWrapper, it.ID)
		default:
			return nil // recovered items of unknown origin
		}
		rep.ItemsSeen++
		if !rep.LogFrom.IsZero() && !it.Stamp.Before(rep.LogFrom.Add(-time.Minute)) && !it.Stamp.After(rep.LogTo.Add(time.Minute)) {
			used[env.Source] = true
		}
		items = append(items, x)
		return nil
	}, nil)
	if err != nil {
		return nil, err
	}
	hooks := o.Hooks
	if len(hooks) == 0 {
		for _, h := range hookNames {
			if used[h] {
				hooks = append(hooks, h)
			}
		}
	}
	rep.Hooks = hooks

	// Chains of queue files: first stages are those no other file relayed into.
	into := map[string]bool{}
	for _, q := range files {
		for _, n := range q.next {
			if files[n] != nil {
				into[n] = true
			}
		}
	}
	var firsts []*qfile
	for _, q := range files {
		if !into[q.id] && q.queued {
			firsts = append(firsts, q)
		}
	}
	sort.Slice(firsts, func(i, j int) bool {
		return firsts[i].first.Before(firsts[j].first) || firsts[i].first.Equal(firsts[j].first) && firsts[i].id < firsts[j].id
	})
	matched := map[string]bool{}
	for _, first := range firsts {
		m := Message{Time: first.first, From: first.from, MessageID: first.msgID, Items: []string{}, Missing: []string{}}
		have := map[string]bool{}
		proxyExpected, wrapperExpected := false, false
		seen := map[string]bool{}
		var walk func(q *qfile)
		walk = func(q *qfile) {
			if seen[q.id] {
				return
			}
			seen[q.id] = true
			m.QueueIDs = append(m.QueueIDs, q.id)
			if q.wrapper {
				wrapperExpected = true
			}
			for _, h := range hookNames {
				if ids := byQID[q.id][h]; len(ids) > 0 {
					have[h] = true
					m.Items = append(m.Items, ids...)
					for _, id := range ids {
						matched[id] = true
					}
				}
			}
			for _, n := range q.next {
				if nq := files[n]; nq != nil {
					proxyExpected = true // relayed back into this Postfix: the content filter
					walk(nq)
				}
			}
		}
		walk(first)
		// Still queued somewhere: what has not happened yet is not missing.
		m.Pending = !allRemoved(m.QueueIDs, files)
		rep.Messages++
		for _, h := range hooks {
			expected := h == archive.SourceMilter ||
				h == archive.SourceProxy && proxyExpected ||
				h == archive.SourceWrapper && wrapperExpected
			if expected && !have[h] {
				m.Missing = append(m.Missing, h)
			}
		}
		if len(m.Missing) > 0 && !m.Pending {
			rep.Missing = append(rep.Missing, m)
		} else if len(m.Missing) == 0 {
			rep.Complete++
		}
	}
	// Items no log line accounts for, within the log's time span.
	for _, x := range items {
		if matched[x.id] || rep.LogFrom.IsZero() || x.stamp.Before(rep.LogFrom.Add(-time.Minute)) || x.stamp.After(rep.LogTo.Add(time.Minute)) {
			continue
		}
		key := x.qid
		if x.source == archive.SourceProxy {
			key = x.ident
		}
		if key != "" && files[key] != nil {
			continue // a queue file Postfix rejected or still holds
		}
		rep.Unmatched = append(rep.Unmatched, ItemRef{ID: x.id, Source: x.source, QueueID: x.qid, Ident: x.ident})
	}
	rep.Incomplete = len(rep.Missing) > 0 || len(rep.Unmatched) > 0
	return rep, nil
}

func allRemoved(ids []string, files map[string]*qfile) bool {
	for _, id := range ids {
		if q := files[id]; q.queued && !q.removed {
			return false
		}
	}
	return true
}

// receivedQueueID reads the queue ID from the first Received: field of a
// wrapper item (after the mbox From_ line and local(8)'s own fields).
func receivedQueueID(it archive.Item) string {
	f, err := it.Open()
	if err != nil {
		return ""
	}
	defer f.Close()
	br := bufio.NewReader(io.LimitReader(f, 128<<10))
	var field string
	for {
		line, err := br.ReadString('\n')
		trimmed := strings.TrimRight(line, "\r\n")
		if field != "" && (strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")) {
			field += " " + strings.TrimSpace(trimmed)
		} else if field != "" {
			break
		}
		if field == "" && len(trimmed) > 9 && strings.EqualFold(trimmed[:9], "Received:") {
			field = trimmed
		}
		if err != nil || trimmed == "" && !strings.HasPrefix(line, "From ") {
			break
		}
	}
	if m := receivedRe.FindStringSubmatch(field); m != nil {
		return m[1]
	}
	return ""
}
