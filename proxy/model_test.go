package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/proxy"
)

// pfModel is a model of Postfix 3.7's smtpd framing, written from its
// source (smtp_stream.c smtp_get, smtpd_token.c, the DATA loop and
// bdat_cmd in smtpd.c) independently of smtpwire: lines of at most
// modelLimit bytes, CRs before LF dropped, words split by isspace with
// <...> and "..." held together, "." records end DATA, BDAT supported.
// It queues what Postfix would queue.
type pfModel struct {
	ln     net.Listener
	mu     sync.Mutex
	queued []modelMsg
	wg     sync.WaitGroup
}

type modelMsg struct {
	from  string
	rcpts []string
	body  string // normalized: lines joined by "\n"
}

const modelLimit = 2048

func newModel(t testing.TB) *pfModel {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &pfModel{ln: ln}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.wg.Add(1)
			go func() { defer m.wg.Done(); m.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); m.wg.Wait() })
	return m
}

// get reads one record as smtp_get does: up to limit bytes or the LF;
// with the LF (or a CR completed by one) the CRs before it are dropped.
// nl reports whether the record ended its line.
func modelGet(r *bufio.Reader, limit int) (rec []byte, nl bool, err error) {
	for len(rec) < limit {
		b, err := r.ReadByte()
		if err != nil {
			return rec, false, err
		}
		if b == '\n' {
			return bytes.TrimRight(rec, "\r"), true, nil
		}
		rec = append(rec, b)
	}
	if rec[len(rec)-1] == '\r' {
		if b, err := r.ReadByte(); err == nil {
			if b == '\n' {
				return bytes.TrimRight(rec, "\r"), true, nil
			}
			r.UnreadByte()
		}
	}
	return rec, false, nil
}

func modelSpace(b byte) bool { return strings.IndexByte(" \t\n\v\f\r", b) >= 0 }

// modelWords is smtpd_token over s up to its first NUL. A word with an
// unclosed <...> or "..." gets a "\x00" appended (SMTPD_TOK_ERROR).
func modelWords(s []byte) []string {
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	var out []string
	p := 0
	for {
		var tok []byte
		for p < len(s) {
			c := s[p]
			p++
			if modelSpace(c) {
				for p < len(s) && modelSpace(s[p]) {
					p++
				}
				if len(tok) > 0 {
					break
				}
				continue
			}
			if c == '<' || c == '"' {
				want := []byte{'>'}
				if c == '"' {
					want[0] = '"'
				}
				tok = append(tok, c)
				closed := false
				for p < len(s) && !closed {
					d := s[p]
					p++
					tok = append(tok, d)
					top := want[len(want)-1]
					if d == '\\' {
						if p < len(s) {
							tok = append(tok, s[p])
							p++
						}
					} else if d == top {
						want = want[:len(want)-1]
						closed = len(want) == 0
					} else if d == '"' {
						want = append(want, '"')
					} else if d == '<' && top == '>' {
						want = append(want, '>')
					}
				}
				if !closed {
					tok = append(tok, 0)
				}
				continue
			}
			if c == ':' {
				tok = append(tok, c)
				if l := strings.ToLower(string(tok)); l == "to:" || l == "from:" {
					break
				}
				continue
			}
			if c == '\\' {
				tok = append(tok, c)
				if p == len(s) {
					break
				}
				c = s[p]
				p++
			}
			tok = append(tok, c)
		}
		if len(tok) == 0 {
			return out
		}
		out = append(out, string(tok))
	}
}

func modelAddr(w string) string {
	if len(w) >= 2 && w[0] == '<' && w[len(w)-1] == '>' {
		w = w[1 : len(w)-1]
	}
	return w
}

func (m *pfModel) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	say := func(s string) {
		w.WriteString(s + "\r\n")
		if r.Buffered() == 0 {
			w.Flush()
		}
	}
	say("220 model ESMTP")
	var txn *modelMsg
	var chunks bytes.Buffer
	queue := func(body []byte) {
		lines := bytes.Split(body, []byte("\n"))
		for i, l := range lines {
			lines[i] = bytes.TrimRight(l, "\r")
		}
		txn.body = strings.TrimSuffix(string(bytes.Join(lines, []byte("\n"))), "\n")
		m.mu.Lock()
		m.queued = append(m.queued, *txn)
		n := len(m.queued)
		m.mu.Unlock()
		say(fmt.Sprintf("250 2.0.0 Ok: queued as M%04d", n))
		txn = nil
	}
	for {
		line, nl, err := modelGet(r, modelLimit)
		if err != nil {
			return
		}
		if !nl { // skip the rest of an overlong command line
			if _, err := r.ReadBytes('\n'); err != nil {
				return
			}
		}
		words := modelWords(line)
		if len(words) == 0 {
			say("500 5.5.2 Error: bad syntax")
			continue
		}
		switch verb := strings.ToUpper(words[0]); {
		case verb == "EHLO" && len(words) > 1:
			say("250-model\r\n250-PIPELINING\r\n250-XFORWARD NAME ADDR PROTO HELO IDENT\r\n250 CHUNKING")
		case verb == "HELO" && len(words) > 1, verb == "NOOP", verb == "XFORWARD":
			say("250 Ok")
		case (verb == "MAIL" || verb == "RCPT") && len(words) > 2 && strings.HasSuffix(words[2], "\x00"):
			say("501 5.1.7 Bad address syntax")
		case verb == "MAIL" && txn == nil && len(words) > 2 && strings.EqualFold(words[1], "FROM:"):
			txn = &modelMsg{from: modelAddr(words[2])}
			chunks.Reset()
			say("250 2.1.0 Ok")
		case verb == "RCPT" && txn != nil && len(words) > 2 && strings.EqualFold(words[1], "TO:"):
			txn.rcpts = append(txn.rcpts, modelAddr(words[2]))
			say("250 2.1.5 Ok")
		case verb == "DATA" && txn != nil && len(txn.rcpts) > 0 && len(words) == 1:
			say("354 End data with <CR><LF>.<CR><LF>")
			w.Flush()
			var body []byte
			cont := false
			for {
				rec, nl, err := modelGet(r, modelLimit)
				if err != nil {
					return
				}
				if !cont && len(rec) > 0 && rec[0] == '.' {
					if len(rec) == 1 && nl {
						break
					}
					rec = rec[1:]
				}
				body = append(body, rec...)
				if nl {
					body = append(body, '\n')
				}
				cont = !nl
			}
			queue(body)
		case verb == "BDAT" && txn != nil && len(txn.rcpts) > 0 && len(words) > 1:
			n, err := strconv.Atoi(words[1])
			if err != nil || n < 0 {
				say("501 5.5.4 Syntax: BDAT count [LAST]")
				continue
			}
			if _, err := io.CopyN(&chunks, r, int64(n)); err != nil {
				return
			}
			if len(words) > 2 && strings.EqualFold(words[2], "LAST") {
				queue(chunks.Bytes())
			} else {
				say("250 2.0.0 Ok")
			}
		case verb == "RSET":
			txn = nil
			say("250 2.0.0 Ok")
		case verb == "QUIT":
			say("221 2.0.0 Bye")
			w.Flush()
			return
		default:
			say("502 5.5.2 Error: command not recognized")
		}
	}
}

func newRand(seed int64) *rand.Rand { return rand.New(rand.NewSource(seed)) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// checkQueuedArchived: every message the model queued has an item with
// its content, sender and recipients; every accepted item was queued.
func checkQueuedArchived(t testing.TB, queued []modelMsg, items []archivetest.Item) {
	t.Helper()
	byBody := map[string]archivetest.Item{}
	for _, it := range items {
		lines := bytes.Split(it.EML, []byte("\n"))
		for i, l := range lines {
			lines[i] = bytes.TrimRight(l, "\r")
		}
		byBody[strings.TrimSuffix(string(bytes.Join(lines, []byte("\n"))), "\n")] = it
	}
	seen := map[string]bool{}
	for _, q := range queued {
		seen[q.body] = true
		it, ok := byBody[q.body]
		if !ok {
			t.Fatalf("queued without an item: from %q to %v: %q", q.from, q.rcpts, q.body)
		}
		if it.Env.MailFrom == nil || it.Env.MailFrom.Addr != q.from {
			t.Fatalf("item mail_from %+v, queued from %q", it.Env.MailFrom, q.from)
		}
		acc := map[string]bool{}
		for _, r := range it.Env.RcptTo {
			if r.Accepted {
				acc[r.Addr] = true
			}
		}
		for _, r := range q.rcpts {
			if !acc[r] {
				t.Fatalf("item lacks recipient %q (has %+v)", r, it.Env.RcptTo)
			}
		}
	}
	for body, it := range byBody {
		if it.Env.Outcome == archive.OutcomeAccepted && !seen[body] {
			t.Fatalf("accepted item never queued: %q", body)
		}
	}
}

// FuzzPostfixModel sends arbitrary client bytes through the proxy to the
// model of Postfix's smtpd: whatever the bytes, every message the model
// queued has an item holding it, with its sender and recipients.
func FuzzPostfixModel(f *testing.F) {
	sp := &speller{rnd: newRand(2), n: map[string]int{}}
	for i := range 12 {
		f.Add([]byte(sp.session(i)))
	}
	for _, s := range []string{
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nx\r\n.\r\r\nMAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nDATA\r\ny\r\n.\r\n",
		" BDAT 3 LAST\r\nEHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n BDAT 3 LAST\r\nabcQUIT\r\n",
		"EHLO x\r\nMAIL\tFROM:<a@b>\r\nRCPT\vTO:<c@d>\r\n\fdata\x00\r\nz\n.\r\r\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		model := newModel(t)
		dir := t.TempDir()
		store, err := archive.Open(dir, archive.Options{})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := proxy.New(proxy.Config{Server: model.ln.Addr().String(), Store: store, Timeout: 5 * time.Second,
			Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() { c.Write(in); c.(*net.TCPConn).CloseWrite() }()
		// A reset after a cut is fine; a session that does not end once
		// the client is done is not.
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("session did not end")
		}
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		model.mu.Lock()
		queued := append([]modelMsg(nil), model.queued...)
		model.mu.Unlock()
		checkQueuedArchived(t, queued, archivetest.ReadItems(t, dir))
	})
}
