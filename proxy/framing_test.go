package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/proxy"
)

// TestSpellings: commands spelled in every way Postfix's smtpd reads them
// are recorded as Postfix reads them (the scripted server splits lines with
// the same tokenizer; the real-Postfix check is TestDifferentialPostfix).
func TestSpellings(t *testing.T) {
	tests := []struct {
		name, session string
		from          string
		rcpts         []string
	}{
		{"plain", "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", "a@b", []string{"c@d"}},
		{"leading space DATA", "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n DATA\r\n", "a@b", []string{"c@d"}},
		{"DATA TAB", "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\t\r\n", "a@b", []string{"c@d"}},
		{"DATA NUL", "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\x00junk\r\n", "a@b", []string{"c@d"}},
		{"RCPT TAB TO", "MAIL FROM:<a@b>\r\nRCPT\tTO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n", "a@b", []string{"c@d", "e@f"}},
		{"MAIL two spaces", "MAIL  FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", "a@b", []string{"c@d"}},
		{"space after colon", "MAIL FROM: <a@b>\r\nRCPT TO:\t<c@d>\r\nDATA\r\n", "a@b", []string{"c@d"}},
		{"VT FF CR", "\vMAIL\fFROM:<a@b>\r\nRCPT\rTO:<c@d>\r\n\fDATA\v\r\r\n", "a@b", []string{"c@d"}},
		{"lower case", "mail from:<a@b>\nrcpt to:<c@d>\ndata\n", "a@b", []string{"c@d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := setup(t, nil)
			c := f.dial()
			c.expect(220)
			c.send("EHLO x\r\n" + tt.session)
			for range 2 + len(tt.rcpts) {
				c.expect(250)
			}
			c.expect(354)
			c.send("body\r\n.\r\n")
			c.expect(250)
			items := f.items()
			if len(items) != 1 {
				t.Fatalf("%d items", len(items))
			}
			e := items[0].Env
			if e.MailFrom == nil || e.MailFrom.Addr != tt.from {
				t.Errorf("mail_from %+v", e.MailFrom)
			}
			var got []string
			for _, r := range e.RcptTo {
				got = append(got, r.Addr)
			}
			if strings.Join(got, ",") != strings.Join(tt.rcpts, ",") {
				t.Errorf("rcpts %v, want %v", got, tt.rcpts)
			}
		})
	}
}

// TestEhloSpellingsRewritten: however EHLO is spelled, the client never
// sees CHUNKING or STARTTLS.
func TestEhloSpellingsRewritten(t *testing.T) {
	for _, ehlo := range []string{"EHLO x\r\n", "EHLO\tx\r\n", " ehlo x\r\n", "EHLO\vx\x00y\r\n"} {
		f := setup(t, nil)
		c := f.dial()
		c.expect(220)
		c.send(ehlo)
		rep := c.expect(250)
		if b := string(rep.Bytes()); strings.Contains(b, "CHUNKING") || strings.Contains(b, "STARTTLS") {
			t.Errorf("%q: reply %q", ehlo, b)
		}
	}
}

// TestEndWithCRs: "." with any number of CRs (up to the limit every
// Postfix shares) ends the message; what is pipelined after it is a second
// transaction, archived on its own, and never part of the first.
func TestEndWithCRs(t *testing.T) {
	for _, end := range []string{"\r\n.\r\r\n", "\n.\r\r\n", "\r\n.\r\r\r\r\r\n", "\n." + strings.Repeat("\r", 511) + "\n"} {
		f := setup(t, nil)
		c := f.dial()
		c.expect(220)
		c.send("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
		for _, code := range []int{250, 250, 250, 354} {
			c.expect(code)
		}
		c.send("first" + end + "MAIL FROM:<smuggled@x>\r\nRCPT TO:<e@f>\r\nDATA\r\n")
		for _, code := range []int{250, 250, 250, 354} {
			c.expect(code)
		}
		c.send("second\r\n.\r\n")
		c.expect(250)
		items := f.items()
		if len(items) != 2 {
			t.Fatalf("end %q: %d items", end, len(items))
		}
		bodies := map[string]string{}
		for _, it := range items {
			bodies[it.Env.MailFrom.Addr] = string(it.EML)
		}
		if bodies["a@b"] != "first"+end[:strings.IndexByte(end, '.')] || bodies["smuggled@x"] != "second\r\n" {
			t.Fatalf("end %q: items %q", end, bodies)
		}
	}
}

// TestAmbiguousEndRefused: "." with so many CRs that Postfix frames it
// by its line_length_limit: the server never sees the LF, the client gets
// 5xx, nothing is archived.
func TestAmbiguousEndRefused(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	c.beginData()
	c.send("body\r\n." + strings.Repeat("\r", 600) + "\nMAIL FROM:<x@y>\r\n")
	c.expect(554)
	time.Sleep(50 * time.Millisecond)
	if got := f.srv.received(); strings.Contains(got, "\r\r\n") || strings.Contains(got, "x@y") {
		t.Fatalf("server received %q", got[max(0, len(got)-40):])
	}
	if n := len(f.items()); n != 0 {
		t.Fatalf("%d items", n)
	}
}

// TestUnsureCommandRefused: a verb that a server with a smaller
// line_length_limit would not read is refused, not relayed.
func TestUnsureCommandRefused(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	c.send(strings.Repeat(" ", 600) + "DATA\r\nNOOP\r\n")
	c.expect(500)
	c.expect(250)
	if got := f.srv.received(); strings.Contains(got, "DATA") {
		t.Fatalf("server received %q", got)
	}
}

// TestFlushBeforeLocalReply: commands pipelined in one packet before a
// command the proxy answers itself reach the server at once.
func TestFlushBeforeLocalReply(t *testing.T) {
	for _, tail := range []string{"STARTTLS\r\n", " BDAT 3 LAST\r\nabc", "starttls\t\r\n"} {
		f := setup(t, nil)
		c := f.dial()
		c.expect(220)
		t0 := time.Now()
		c.send("EHLO x\r\nNOOP\r\n" + tail)
		c.expect(250)
		c.expect(250)
		c.reply()
		if d := time.Since(t0); d > 2*time.Second {
			t.Fatalf("%q: replies took %v", tail, d)
		}
	}
}

// TestServerStopsReading: a server that accepts DATA and stops reading
// holds a connection no longer than --timeout, so its --max-conns slot
// comes back.
func TestServerStopsReading(t *testing.T) {
	f := setup(t, func(cfg *proxy.Config, s *scriptServer) {
		cfg.Timeout = 500 * time.Millisecond
		cfg.MaxConns = 2
		s.stallData = true
	})
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), 1<<17) // 8 MiB
	done := make(chan time.Duration, 2)
	for range 2 {
		c := f.dial()
		c.expect(220)
		c.beginData()
		go func() {
			t0 := time.Now()
			c.conn.Write(big) // fails once the proxy gives up
			c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			var b [512]byte
			for {
				if _, err := c.conn.Read(b[:]); err != nil {
					break
				}
			}
			done <- time.Since(t0)
		}()
	}
	for range 2 {
		if d := <-done; d > 5*time.Second {
			t.Fatalf("a stalled connection lasted %v", d)
		}
	}
	// Both slots are free again.
	deadline := time.Now().Add(3 * time.Second)
	for {
		c := f.dial()
		if rep := c.reply(); rep.Code == 220 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("slots not back: %q", rep.Bytes())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestShutdownCutsStuckClient: when the shutdown timeout runs out, a
// client that stopped reading does not hold the shutdown up.
func TestShutdownCutsStuckClient(t *testing.T) {
	f := setup(t, nil) // Timeout 10s: the shutdown must not wait for it
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(4096)
	// Far more replies than the socket buffers hold, never read.
	go nc.Write(bytes.Repeat([]byte("NOOP\r\n"), 1<<20))
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err = f.proxy.Shutdown(ctx)
	if d := time.Since(t0); d > 1500*time.Millisecond {
		t.Fatalf("Shutdown took %v", d)
	}
	if err == nil {
		t.Fatalf("Shutdown: no error for a cut connection")
	}
}

// TestTempfailLogLine: the line of a message withheld for an archive
// failure names what an operator needs to find it in Postfix's log.
func TestTempfailLogLine(t *testing.T) {
	f := setup(t, func(cfg *proxy.Config, _ *scriptServer) { cfg.Store = brokenStore(t) })
	c := f.dial()
	c.expect(220)
	c.send("EHLO x\r\n" + postfixBatch)
	for _, code := range []int{250, 250, 250, 250, 250, 550, 250, 354} {
		c.expect(code)
	}
	c.send("body\r\n.\r\n")
	c.expect(451)
	log := f.logs.String()
	for _, want := range []string{"orig_queue_id=D3F1F984303", "from=alice@example.org", "rcpts_accepted=2", "rcpts_refused=1",
		"to=bob@example.net,carol@example.net", "outcome=tempfailed"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}

// failCommit is a store whose writers fail to commit.
type failCommit struct{ *archive.Store }

func (s failCommit) Create(tags ...string) (archive.Writer, error) {
	w, err := s.Store.Create(tags...)
	return failingWriter{w}, err
}

type failingWriter struct{ archive.Writer }

func (failingWriter) Commit(*archive.Envelope) error { return errors.New("injected commit failure") }

// TestCommitFailureKeepsEnvelope: a commit that fails after the server
// accepted the message leaves the bytes and the envelope (everything but
// the final reply) for recovery.
func TestCommitFailureKeepsEnvelope(t *testing.T) {
	var store *archive.Store
	f := setup(t, func(cfg *proxy.Config, _ *scriptServer) {
		store = cfg.Store.(*archive.Store)
		cfg.Store = failCommit{store}
	})
	c := f.dial()
	c.expect(220)
	c.send("EHLO x\r\n" + postfixBatch)
	for _, code := range []int{250, 250, 250, 250, 250, 550, 250, 354} {
		c.expect(code)
	}
	c.send(stuffedBody)
	c.expect(250)
	if !strings.Contains(f.logs.String(), "bytes kept under tmp/ for recovery") {
		t.Fatalf("log:\n%s", f.logs.String())
	}
	if rep := store.Recover(); len(rep.Recovered) != 1 {
		t.Fatalf("recover: %+v", rep)
	}
	items := archivetest.ReadItems(t, f.dir)
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	e := items[0].Env
	if !e.Recovered || string(items[0].EML) != wantBody || e.MailFrom == nil || e.MailFrom.Addr != "alice@example.org" ||
		len(e.RcptTo) != 3 || e.Client == nil || e.Client.Ident != "D3F1F984303" || e.Helo != "x" {
		t.Fatalf("recovered item %+v", e)
	}
}

// TestAddressFormRefused: an address Postfix would read with its RFC 822
// parser (a comment, a trailing atom) is refused, never relayed.
func TestAddressFormRefused(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	c.send("EHLO x\r\nMAIL FROM:<>0\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c(x)@d>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
	for _, code := range []int{250, 501, 250, 501, 250, 354} {
		c.expect(code)
	}
	c.send("b\r\n.\r\n")
	c.expect(250)
	if got := f.srv.received(); strings.Contains(got, "<>0") || strings.Contains(got, "(x)") {
		t.Fatalf("server received %q", got)
	}
	if it := f.items(); len(it) != 1 || len(it[0].Env.RcptTo) != 1 || it[0].Env.RcptTo[0].Addr != "c@d" {
		t.Fatalf("items %+v", it)
	}
}

// flakyListener fails its first Accepts with errors a busy machine gives.
type flakyListener struct {
	net.Listener
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

// TestAcceptRetries: ENFILE, ENOBUFS and ENOMEM from accept are waited
// out, not the end of Serve.
func TestAcceptRetries(t *testing.T) {
	srv := newScriptServer(t)
	store, err := archive.Open(t.TempDir(), archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	logs := &archivetest.SyncBuffer{}
	p, err := proxy.New(proxy.Config{Server: srv.addr(), Store: store, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln, errs: []error{
		&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)},
		&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENOBUFS)},
		&net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENOMEM)},
	}}
	served := make(chan error, 1)
	go func() { served <- p.Serve(fl) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "220") {
		t.Fatalf("greeting %q, %v", line, err)
	}
	if n := strings.Count(logs.String(), "accept failed; retrying"); n != 3 {
		t.Fatalf("%d retries logged:\n%s", n, logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.Shutdown(ctx)
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
