package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/smtpwire"
	"github.com/postfix-archive/mailarchive/proxy"
)

type fixture struct {
	t     *testing.T
	srv   *scriptServer
	addr  string
	dir   string
	logs  *archivetest.SyncBuffer
	proxy *proxy.Server
}

// item is an archive item.
type item = archivetest.Item

func setup(t *testing.T, mod func(*proxy.Config, *scriptServer)) *fixture {
	t.Helper()
	f := &fixture{t: t, srv: newScriptServer(t), dir: t.TempDir(), logs: &archivetest.SyncBuffer{}}
	store, err := archive.Open(f.dir, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := proxy.Config{
		Server:  f.srv.addr(),
		Store:   store,
		Timeout: 10 * time.Second,
		Logger:  slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		f.srv.mu.Lock()
		mod(&cfg, f.srv)
		f.srv.mu.Unlock()
	}
	f.proxy, err = proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.proxy.Serve(ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.proxy.Shutdown(ctx)
		<-done
		if t.Failed() {
			t.Logf("proxy log:\n%s", f.logs.String())
		}
	})
	return f
}

type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (f *fixture) dial() *client {
	f.t.Helper()
	c, err := net.Dial("tcp", f.addr)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	return &client{t: f.t, conn: c, r: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *client) reply() smtpwire.Reply {
	c.t.Helper()
	rep, err := smtpwire.ReadReply(c.r, 1<<20)
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	return rep
}

func (c *client) expect(code int) smtpwire.Reply {
	c.t.Helper()
	rep := c.reply()
	if rep.Code != code {
		c.t.Fatalf("got reply %q, want code %d", rep.Bytes(), code)
	}
	return rep
}

// beginData opens a one-recipient transaction and stops at the 354.
func (c *client) beginData() {
	c.t.Helper()
	c.send("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
	for _, code := range []int{250, 250, 250, 354} {
		c.expect(code)
	}
}

// items returns the archive's complete items, and fails if tmp/ holds
// anything.
func (f *fixture) items() []item {
	f.t.Helper()
	out := archivetest.ReadItems(f.t, f.dir)
	if left, _ := os.ReadDir(filepath.Join(f.dir, "tmp")); len(left) > 0 {
		f.t.Errorf("tmp/ not empty: %v", left)
	}
	return out
}

// postfixBatch is what Postfix's smtp client sends in one write
// (POSTFIX-FACTS.md).
const postfixBatch = "XFORWARD NAME=client.example ADDR=192.0.2.7 PORT=52578\r\n" +
	"XFORWARD PROTO=ESMTP HELO=helo+20name IDENT=D3F1F984303 SOURCE=REMOTE\r\n" +
	"MAIL FROM:<alice@example.org> SIZE=430 BODY=8BITMIME\r\n" +
	"RCPT TO:<bob@example.net> ORCPT=rfc822;bob@example.net\r\n" +
	"RCPT TO:<reject@example.net>\r\n" +
	"RCPT TO:<carol@example.net>\r\n" +
	"DATA\r\n"

const stuffedBody = "Subject: test\r\nFrom: Alice <alice@example.org>\r\nMessage-ID: <m1@example.org>\r\n\r\n" +
	"..leading dot\r\n.\r\n" // the second line is content "." only if stuffed; here it ends
var wantBody = "Subject: test\r\nFrom: Alice <alice@example.org>\r\nMessage-ID: <m1@example.org>\r\n\r\n.leading dot\r\n"

func TestPipelinedTransaction(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	c.send("EHLO relay.example\r\n")
	ehlo := c.expect(250)
	if got := string(ehlo.Bytes()); strings.Contains(got, "STARTTLS") || strings.Contains(got, "CHUNKING") ||
		!strings.Contains(got, "XFORWARD") || !strings.HasSuffix(got, "250 8BITMIME\r\n") {
		t.Fatalf("EHLO reply not rewritten right: %q", got)
	}
	c.send(postfixBatch)
	for _, code := range []int{250, 250, 250, 250, 550, 250, 354} {
		c.expect(code)
	}
	c.send(stuffedBody)
	final := c.expect(250)
	c.send("QUIT\r\n")
	c.expect(221)

	// The server saw every byte the client sent.
	sent := "EHLO relay.example\r\n" + postfixBatch + stuffedBody + "QUIT\r\n"
	if got := f.srv.received(); got != sent {
		t.Fatalf("server received\n%q\nwant\n%q", got, sent)
	}
	items := f.items()
	if len(items) != 1 {
		t.Fatalf("%d items, want 1", len(items))
	}
	it := items[0]
	if string(it.EML) != wantBody || !bytes.Equal(it.EML, f.srv.msgs()[0]) {
		t.Fatalf("archived %q, want %q", it.EML, wantBody)
	}
	e := it.Env
	want := &archive.Envelope{
		Version: 1, ID: e.ID, Source: "proxy", ArchivedAt: e.ArchivedAt, Host: e.Host,
		Peer:     e.Peer,
		Client:   &archive.Client{Addr: "192.0.2.7", Port: 52578, Name: "client.example", Helo: "helo name", Proto: "ESMTP", Ident: "D3F1F984303", Source: "REMOTE"},
		Helo:     "relay.example",
		MailFrom: &archive.MailFrom{Addr: "alice@example.org", Params: []string{"SIZE=430", "BODY=8BITMIME"}},
		RcptTo: []archive.Rcpt{
			{Addr: "bob@example.net", Params: []string{"ORCPT=rfc822;bob@example.net"}, Accepted: true, Reply: "250 2.1.5 Ok"},
			{Addr: "reject@example.net", Accepted: false, Reply: "550 5.1.1 <TO:<reject@example.net>>: Recipient address rejected"},
			{Addr: "carol@example.net", Accepted: true, Reply: "250 2.1.5 Ok"},
		},
		QueueID: "ABC001",
		Reply:   strings.TrimSpace(string(final.Bytes())),
		Outcome: "accepted",
		Message: archive.Message{Size: int64(len(wantBody)), SHA256: e.Message.SHA256, MessageID: "<m1@example.org>", From: "Alice <alice@example.org>", Subject: "test"},
	}
	if !reflect.DeepEqual(e, want) {
		t.Fatalf("envelope\n%+v\nwant\n%+v", e, want)
	}
	if e.Peer == nil || e.Peer.Addr != "127.0.0.1" || e.Peer.Port == 0 {
		t.Fatalf("peer %+v", e.Peer)
	}
	if !strings.Contains(f.logs.String(), "queue_id=ABC001") {
		t.Fatalf("no log line with the queue ID:\n%s", f.logs.String())
	}
}

// TestSeveralTransactions: two messages and an RSET on one connection, each
// message with its own envelope, XFORWARD not leaking from one to the next.
func TestSeveralTransactions(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	c.send("HELO relay.example\r\n")
	c.expect(250)
	c.send(postfixBatch)
	for _, code := range []int{250, 250, 250, 250, 550, 250, 354} {
		c.expect(code)
	}
	c.send("one\r\n.\r\n")
	c.expect(250)
	c.send("MAIL FROM:<x@example.org>\r\nRCPT TO:<y@example.net>\r\nRSET\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(250)
	c.send("MAIL FROM:<>\r\nRCPT TO:<z@example.net>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(354)
	c.send("two\n.\n")
	c.expect(250)
	items := f.items()
	if len(items) != 2 {
		t.Fatalf("%d items", len(items))
	}
	byBody := map[string]*archive.Envelope{}
	for _, it := range items {
		byBody[string(it.EML)] = it.Env
	}
	one, two := byBody["one\r\n"], byBody["two\n"]
	if one == nil || two == nil {
		t.Fatalf("bodies: %v", byBody)
	}
	if one.Client == nil || one.MailFrom.Addr != "alice@example.org" || len(one.RcptTo) != 3 {
		t.Fatalf("first envelope %+v", one)
	}
	if two.Client != nil || two.MailFrom.Addr != "" || len(two.RcptTo) != 1 || two.RcptTo[0].Addr != "z@example.net" || two.Helo != "relay.example" {
		t.Fatalf("second envelope %+v", two)
	}
}

func TestRefusedData(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	c.send("EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<reject@b>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(550)
	c.expect(554)
	// The proxy must not take what follows as data: it is a command.
	c.send("NOOP\r\n")
	c.expect(250)
	if n := len(f.items()); n != 0 {
		t.Fatalf("%d items after refused DATA", n)
	}
}

func TestRejectedMessage(t *testing.T) {
	for _, keep := range []bool{false, true} {
		f := setup(t, func(cfg *proxy.Config, s *scriptServer) {
			cfg.KeepRejected = keep
			s.finalReply = "554 5.7.1 Rejected by policy\r\n"
		})
		c := f.dial()
		c.expect(220)
		c.beginData()
		c.send("spam\r\n.\r\n")
		c.expect(554)
		items := f.items()
		if !keep && len(items) != 0 {
			t.Fatalf("rejected message archived without --keep-rejected")
		}
		if keep && (len(items) != 1 || items[0].Env.Outcome != "rejected" || items[0].Env.Reply != "554 5.7.1 Rejected by policy") {
			t.Fatalf("keep-rejected: items %+v", items)
		}
	}
}

func TestServerDropsMidData(t *testing.T) {
	f := setup(t, func(_ *proxy.Config, s *scriptServer) { s.dropInData = true })
	c := f.dial()
	c.expect(220)
	c.beginData()
	// Keep sending until the proxy notices the server is gone.
	chunk := strings.Repeat("x", 1000) + "\r\n"
	var rep smtpwire.Reply
	go func() {
		for i := 0; i < 10000; i++ {
			if _, err := c.conn.Write([]byte(chunk)); err != nil {
				return
			}
		}
	}()
	rep, err := smtpwire.ReadReply(c.r, 1<<20)
	if err != nil || rep.Code != 421 {
		t.Fatalf("client got %q, %v; want 421", rep.Bytes(), err)
	}
	if n := len(f.items()); n != 0 {
		t.Fatalf("%d items for a message the server never took", n)
	}
}

func TestServerDropsAfterEnd(t *testing.T) {
	f := setup(t, func(_ *proxy.Config, s *scriptServer) { s.dropAtEnd = true })
	c := f.dial()
	c.expect(220)
	c.beginData()
	c.send("body\r\n.\r\n")
	c.expect(421)
	// The server may have queued it: keep the bytes, claim no outcome.
	items := f.items()
	if len(items) != 1 || items[0].Env.Outcome != "unknown" || string(items[0].EML) != "body\r\n" {
		t.Fatalf("items %+v", items)
	}
}

func TestServerUnreachable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	f := setup(t, func(cfg *proxy.Config, _ *scriptServer) { cfg.Server = dead })
	c := f.dial()
	rep := c.expect(421)
	if !strings.Contains(string(rep.Bytes()), "4.4.1") {
		t.Fatalf("reply %q", rep.Bytes())
	}
}

// brokenStore makes every archive write fail, as a full disk would.
func brokenStore(t *testing.T) *archive.Store {
	dir := t.TempDir()
	s, err := archive.Open(dir, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(dir, "tmp")) // create in tmp/ now fails
	return s
}

func TestArchiveFailureTempfail(t *testing.T) {
	f := setup(t, func(cfg *proxy.Config, _ *scriptServer) { cfg.Store = brokenStore(t) })
	c := f.dial()
	c.expect(220)
	c.beginData()
	c.send("body\r\n.\r\n")
	rep := c.expect(451)
	if !strings.Contains(string(rep.Bytes()), "4.3.0") {
		t.Fatalf("reply %q", rep.Bytes())
	}
	// The server got the content but never its end: it will discard it.
	time.Sleep(50 * time.Millisecond)
	if got := f.srv.received(); strings.HasSuffix(got, "\r\n.\r\n") || len(f.srv.msgs()) != 0 {
		t.Fatalf("server received the end of data: %q", got)
	}
	if !strings.Contains(f.logs.String(), "withheld from the server") {
		t.Fatalf("no log of the failure")
	}
}

func TestArchiveFailurePass(t *testing.T) {
	f := setup(t, func(cfg *proxy.Config, _ *scriptServer) {
		cfg.Store = brokenStore(t)
		cfg.OnArchiveError = archive.PolicyPass
	})
	c := f.dial()
	c.expect(220)
	c.beginData()
	c.send("body\r\n.\r\n")
	c.expect(250)
	if m := f.srv.msgs(); len(m) != 1 || string(m[0]) != "body\r\n" {
		t.Fatalf("server messages %q", m)
	}
	if !strings.Contains(f.logs.String(), "WITHOUT archive copy") {
		t.Fatalf("failure not logged loudly:\n%s", f.logs.String())
	}
}

// TestHostileBytes: bare LF, bare CR, NUL, 8-bit and a 1 MiB line are
// relayed as sent and archived as relayed.
func TestHostileBytes(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	long := strings.Repeat("y", 1<<20)
	body := "Subject: \xff\xfe\x00\r\nbare\nlf\rcr\r\n\x00nul\r\n" + long + "\r\n..\r\n"
	c.beginData()
	go c.send(body + ".\r\n")
	c.expect(250)
	want := strings.Replace(body, "\r\n..\r\n", "\r\n.\r\n", 1)
	items := f.items()
	if len(items) != 1 || string(items[0].EML) != want || string(f.srv.msgs()[0]) != want {
		t.Fatalf("archived %d bytes, server %d, want %d", len(items[0].EML), len(f.srv.msgs()[0]), len(want))
	}
	if !strings.HasSuffix(f.srv.received(), body+".\r\n") {
		t.Fatalf("server did not receive the bytes as sent")
	}
}

// TestLongCommandLine: a command line longer than any buffer is relayed
// whole and answered once.
func TestLongCommandLine(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	junk := "XJUNK " + strings.Repeat("z", 100000) + "\r\n"
	go c.send(junk + "NOOP\r\n")
	c.expect(502)
	c.expect(250)
	if got := f.srv.received(); got != junk+"NOOP\r\n" {
		t.Fatalf("server received %d bytes, want %d", len(got), len(junk)+6)
	}
}

func TestStartTLSAndBDATRefused(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	c.send("EHLO x\r\nSTARTTLS\r\nBDAT 5 LAST\r\nhelloNOOP\r\n")
	c.expect(250)
	c.expect(454)
	c.expect(502)
	c.expect(250)
	if got := f.srv.received(); got != "EHLO x\r\nNOOP\r\n" {
		t.Fatalf("server received %q", got)
	}
}

func TestAuthNotRecorded(t *testing.T) {
	f := setup(t, nil)
	c := f.dial()
	c.expect(220)
	c.send("EHLO x\r\nAUTH LOGIN\r\n")
	c.expect(250)
	c.expect(334)
	// This line is a credential, not a command: the proxy must not parse it.
	c.send("c2VjcmV0LXBhc3N3b3Jk\r\n")
	c.expect(235)
	c.send("MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(354)
	c.send("x\r\n.\r\n")
	c.expect(250)
	items := f.items()
	js, _ := os.ReadFile(filepath.Join(f.dir, items[0].Env.ID+".json"))
	for _, secret := range []string{"c2VjcmV0LXBhc3N3b3Jk", "LOGIN"} {
		if strings.Contains(string(js), secret) || strings.Contains(f.logs.String(), secret) {
			t.Fatalf("credential %q recorded", secret)
		}
	}
}

func TestMaxConns(t *testing.T) {
	f := setup(t, func(cfg *proxy.Config, _ *scriptServer) { cfg.MaxConns = 1 })
	c1 := f.dial()
	c1.expect(220)
	c2 := f.dial()
	rep := c2.expect(421)
	if !strings.Contains(string(rep.Bytes()), "Too many") {
		t.Fatalf("reply %q", rep.Bytes())
	}
	c1.send("NOOP\r\n")
	c1.expect(250)
}

func TestIdleTimeout(t *testing.T) {
	f := setup(t, func(cfg *proxy.Config, _ *scriptServer) { cfg.Timeout = 200 * time.Millisecond })
	c := f.dial()
	c.expect(220)
	rep := c.expect(421)
	if !strings.Contains(string(rep.Bytes()), "timeout") {
		t.Fatalf("reply %q", rep.Bytes())
	}
}

// TestShutdownFinishesTransaction: on Shutdown an idle connection is closed
// with 421 at once, while one in DATA completes its message first.
func TestShutdownFinishesTransaction(t *testing.T) {
	f := setup(t, nil)
	idle := f.dial()
	idle.expect(220)
	busy := f.dial()
	busy.expect(220)
	busy.beginData()
	busy.send("part one\r\n")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- f.proxy.Shutdown(ctx)
	}()
	idle.expect(421)
	time.Sleep(100 * time.Millisecond) // the busy one must still be open
	// QUIT goes with the final dot: sent after the 250 it would race the
	// drain, which may close the connection with 421 as soon as it is
	// between transactions (also correct).
	busy.send("part two\r\n.\r\nQUIT\r\n")
	busy.expect(250)
	busy.expect(221)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	items := f.items()
	if len(items) != 1 || string(items[0].EML) != "part one\r\npart two\r\n" {
		t.Fatalf("items %+v", items)
	}
}
