package proxy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/internal/proxytest"
	"github.com/postfix-archive/mailarchive/internal/smtpsink"
)

// Spellings of the parts of a command line (every command: EHLO, HELO,
// XFORWARD, MAIL, RCPT, DATA, BDAT, STARTTLS, RSET, QUIT) that Postfix's smtpd accepts
// beyond the plain form (shared/POSTFIX-FACTS.md, "Framing").
var (
	spellLead  = []string{"", " ", "\t", "\v", "\f", " \t ", "\r"}
	spellSep   = []string{" ", "  ", "\t", "\v", "\f", " \t", "\r"}
	spellColon = []string{"", " ", "\t"}
	spellTrail = []string{"", " ", "\t", "\x00junk", " \x00 <x@y>", "\r"}
	spellEOL   = []string{"\r\n", "\n", "\r\r\n"}
	// Every end-of-data line Postfix 3.7 takes, after the content's last
	// line end (CRLF or bare LF), plus one it may frame either way
	// (refused by the proxy: nothing may be queued).
	spellEnd = []string{"\r\n.\r\n", "\n.\n", "\r\n.\n", "\n.\r\n", "\r\n.\r\r\n", "\n.\r\r\n", "\r\n.\r\r\r\r\n",
		"\r\n." + strings.Repeat("\r", 600) + "\n"}
	// Lines inside the content that look like an end but are not.
	spellNotEnd = []string{"..\r\n", ". \r\n", ".\r\rx\r\n", ".x\n", " .\r\n", "\r.\r\n", "..\r\r\n"}
)

// speller builds command lines in random spellings, each variant at least
// once over a run (the counters walk every list in turn).
type speller struct {
	rnd *rand.Rand
	n   map[string]int
}

func (s *speller) pick(name string, list []string) string {
	i := s.n[name]
	s.n[name]++
	if i < len(list) {
		return list[i]
	}
	return list[s.rnd.Intn(len(list))]
}

func (s *speller) verb(v string) string {
	switch s.rnd.Intn(3) {
	case 0:
		return strings.ToLower(v)
	case 1:
		return v[:1] + strings.ToLower(v[1:])
	}
	return v
}

// line is a command: verb, then args joined by a separator.
func (s *speller) line(verb, name string, args ...string) string {
	l := s.pick(name+"lead", spellLead) + s.verb(verb)
	for i, a := range args {
		if i == 0 || s.rnd.Intn(2) == 0 {
			l += s.pick(name+"sep", spellSep)
		} else {
			l += " "
		}
		l += a
	}
	return l + s.pick(name+"trail", spellTrail) + s.pick(name+"eol", spellEOL)
}

func (s *speller) path(verb, prefix, addr, name string) string {
	return s.line(verb, name, prefix+s.pick(name+"colon", spellColon)+"<"+addr+">")
}

// session is one client connection's bytes, sent in one write, and the
// tokens of the messages it tries to have queued.
func (s *speller) session(n int) string {
	var b strings.Builder
	if s.rnd.Intn(2) == 0 {
		b.WriteString(s.line("EHLO", "ehlo", "client.example"))
	} else {
		b.WriteString(s.line("HELO", "helo", "client.example"))
	}
	for m := 0; m < 2; m++ {
		tok := fmt.Sprintf("tok%03d-%d", n, m)
		from := fmt.Sprintf("s%03d-%d@example.org", n, m)
		b.WriteString(s.line("XFORWARD", "xforward", "NAME=c.example", fmt.Sprintf("ADDR=192.0.2.%d", n%250+1), "IDENT="+ident(tok)))
		b.WriteString(s.path("MAIL", "FROM:", from, "mail"))
		for r := 0; r <= s.rnd.Intn(2); r++ {
			b.WriteString(s.path("RCPT", "TO:", fmt.Sprintf("r%03d-%d-%d@example.net", n, m, r), "rcpt"))
		}
		switch s.rnd.Intn(8) {
		case 0: // BDAT: Postfix supports it; the proxy must not relay it.
			body := "Subject: " + tok + "\r\n\r\nchunked\r\n"
			b.WriteString(s.line("BDAT", "bdat", fmt.Sprint(len(body)), "LAST") + body)
			b.WriteString(s.line("RSET", "rset"))
			continue
		case 1: // STARTTLS, answered by the proxy, then on.
			b.WriteString(s.line("STARTTLS", "starttls"))
		}
		b.WriteString(s.line("DATA", "data"))
		eol := "\r\n"
		if s.rnd.Intn(3) == 0 {
			eol = "\n"
		}
		fmt.Fprintf(&b, "From: <%s>%sTo: <r@example.net>%sDate: Tue, 01 Dec 2026 12:00:00 +0000%sMessage-ID: <%s@example.org>%sSubject: %s%s%s",
			from, eol, eol, eol, tok, eol, tok, eol, eol)
		for l := 0; l < 3; l++ {
			b.WriteString("line " + tok + eol)
			b.WriteString(s.pick("notend", spellNotEnd))
		}
		b.WriteString("last line " + tok)
		b.WriteString(s.pick("end", spellEnd))
		if s.rnd.Intn(4) == 0 {
			b.WriteString(s.line("RSET", "rset"))
		}
	}
	b.WriteString(s.line("QUIT", "quit"))
	return b.String()
}

var tokRE = regexp.MustCompile(`tok[0-9]{3}-[0-9]`)

// ident is the XFORWARD IDENT sent with the message of token tok.
func ident(tok string) string { return "ID" + strings.NewReplacer("tok", "", "-", "X").Replace(tok) }

// normalize gives a message as Postfix delivers it: lines split at LF,
// with the CRs before each LF dropped, and a bare CR within a line
// delivered as a space.
func normalize(msg []byte) string {
	lines := bytes.Split(msg, []byte("\n"))
	for i, l := range lines {
		lines[i] = bytes.ReplaceAll(bytes.TrimRight(l, "\r"), []byte("\r"), []byte(" "))
	}
	return string(bytes.TrimSuffix(bytes.Join(lines, []byte("\n")), []byte("\n")))
}

// TestDifferentialPostfix sends generated spellings of every command and
// of the end-of-data line through the proxy to a real Postfix smtpd. The
// invariant: every message and recipient Postfix queued has an item that
// holds it, byte for byte as Postfix stores it; every accepted item was
// queued.
func TestDifferentialPostfix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Postfix")
	}
	sink := &smtpsink.Server{Dir: t.TempDir()}
	if err := sink.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	pf := postfixtest.Start(t, postfixtest.Options{RelayTo: sink.Addr(),
		MainCF: []string{"smtpd_authorized_xforward_hosts = 127.0.0.0/8"}})

	dir := t.TempDir()
	store, err := archive.Open(dir, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxytest.Serve(t, ln, pf.SMTPAddr(), store, 30*time.Second)

	sp := &speller{rnd: rand.New(rand.NewSource(1)), n: map[string]int{}}
	const sessions = 120
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i := 0; i < sessions; i++ {
		in := sp.session(i)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out, err := converse(ln.Addr().String(), in)
			if err != nil {
				t.Errorf("session %d: %v\nsent %q\ngot %q", i, err, in, out)
			}
			if strings.Contains(out, "CHUNKING") || strings.Contains(out, "STARTTLS") {
				t.Errorf("session %d: the client saw an extension the proxy hides:\n%s", i, out)
			}
		}()
	}
	wg.Wait()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	delivered, err := sink.Messages()
	if err != nil {
		t.Fatal(err)
	}
	items := archivetest.ReadItems(t, dir)
	byContent := map[string]item{}
	for _, it := range items {
		byContent[normalize(it.EML)] = it
	}
	queued := map[string]bool{}
	for _, d := range delivered {
		body := normalize(archivetest.StripTopReceived(t, d.Data))
		queued[body] = true
		it, ok := byContent[body]
		if !ok {
			t.Errorf("Postfix queued a message that has no item (from %s to %v):\n%.400q", d.MailFrom, d.RcptAddrs(), body)
			continue
		}
		if it.Env.Outcome != "accepted" || it.Env.MailFrom == nil || it.Env.MailFrom.Addr != d.MailFrom {
			t.Errorf("item %s: outcome %q mail_from %+v; Postfix queued it from %q", it.Env.ID, it.Env.Outcome, it.Env.MailFrom, d.MailFrom)
		}
		if want := ident(tokRE.FindString(body)); it.Env.Client == nil || it.Env.Client.Ident != want {
			t.Errorf("item %s client %+v, want XFORWARD IDENT %s", it.Env.ID, it.Env.Client, want)
		}
		accepted := map[string]bool{}
		for _, r := range it.Env.RcptTo {
			if r.Accepted {
				accepted[r.Addr] = true
			}
		}
		for _, r := range d.RcptAddrs() {
			if !accepted[r] {
				t.Errorf("item %s lacks recipient %s that Postfix queued (has %+v)", it.Env.ID, r, it.Env.RcptTo)
			}
		}
	}
	for body, it := range byContent {
		if it.Env.Outcome == "accepted" && !queued[body] {
			t.Errorf("item %s accepted but not queued by Postfix:\n%.300q", it.Env.ID, body)
		}
	}
	// The run must have exercised both sides: messages queued, and the
	// refusals (BDAT, the ambiguous end line) happened.
	if len(delivered) < sessions/2 {
		t.Errorf("only %d messages queued from %d sessions", len(delivered), sessions)
	}
	t.Logf("%d sessions, %d messages queued, %d items", sessions, len(delivered), len(items))
}

// converse sends in at once and reads what comes back until the server
// closes.
func converse(addr, in string) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := io.WriteString(c, in); err != nil {
		return "", err
	}
	// Read to the close, or to the reply to QUIT. A connection the proxy
	// cut with bytes unread ends in a reset: the replies before it are
	// what counts.
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		out = append(out, buf[:n]...)
		if bytes.HasPrefix(out, []byte("221 ")) || bytes.Contains(out, []byte("\n221 ")) {
			return string(out), nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return string(out), err
		}
		if err != nil {
			return string(out), nil
		}
	}
}
