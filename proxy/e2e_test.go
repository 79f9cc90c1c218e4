package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/internal/smtpsink"
	"github.com/postfix-archive/mailarchive/proxy"
)

// tcpRelay stands in for the content filter on 10025 that hands mail on to
// proxy_archiver: it relays bytes both ways, XFORWARD included.
func tcpRelay(t *testing.T, listen, to string) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s, err := net.Dial("tcp", to)
				if err != nil {
					return // Postfix sees a lost connection and defers
				}
				defer s.Close()
				go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, s)
			}()
		}
	}()
}

// runningProxy is an in-process proxy_archiver on a fixed address.
type runningProxy struct {
	srv  *proxy.Server
	done chan struct{}
}

func startProxy(t *testing.T, addr, server string, store *archive.Store, logw io.Writer) *runningProxy {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger a moment after a stop
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Config{Server: server, Store: store, Timeout: 60 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logw, nil))})
	if err != nil {
		t.Fatal(err)
	}
	p := &runningProxy{srv: srv, done: make(chan struct{})}
	go func() { defer close(p.done); srv.Serve(ln) }()
	return p
}

func (p *runningProxy) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.srv.Shutdown(ctx)
	<-p.done
}

var receivedID = regexp.MustCompile(`with E?SMTP id ([0-9A-Za-z]+)`)

func TestPostfixContentFilterEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Postfix")
	}
	postfixtest.Require(t)
	swaks := postfixtest.RequireCommand(t, "swaks")
	smtpSource := postfixtest.RequireCommand(t, "smtp-source")

	sink := &smtpsink.Server{Dir: t.TempDir()}
	if err := sink.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })

	filterAddr, proxyAddr, reinjectAddr := postfixtest.FreeAddr(t), postfixtest.FreeAddr(t), postfixtest.FreeAddr(t)
	port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
	repl := map[string]string{"10025": port(filterAddr), "10026": port(reinjectAddr), "10027": port(proxyAddr)}
	mainCF, err := postfixtest.LoadSnippet("../postfix-examples/content_filter/main.cf", repl)
	if err != nil {
		t.Fatal(err)
	}
	masterCF, err := postfixtest.LoadSnippet("../postfix-examples/content_filter/master.cf", repl)
	if err != nil {
		t.Fatal(err)
	}
	pf := postfixtest.Start(t, postfixtest.Options{MainCF: mainCF, MasterCF: masterCF, RelayTo: sink.Addr()})

	archDir := t.TempDir()
	store, err := archive.Open(archDir, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	plog := &archivetest.SyncBuffer{}
	px := startProxy(t, proxyAddr, reinjectAddr, store, plog)
	defer func() { px.stop() }()
	tcpRelay(t, filterAddr, proxyAddr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy log:\n%s", plog.String())
		}
	})

	// Varied messages from real clients.
	sent := 0
	swaksSend := func(args ...string) {
		t.Helper()
		base := []string{"--server", pf.SMTPAddr(), "--helo", "client.example", "--from", "alice@example.org"}
		out, err := exec.Command(swaks, append(base, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks %v: %v\n%s", args, err, out)
		}
		sent++
	}
	swaksSend("--to", "bob@example.net,carol@example.net", "--header", "Subject: two recipients")
	swaksSend("--to", "dave@example.net", "--header", "Subject: dots", "--body", ".leading dot\n..two dots\n.\nend\n")
	swaksSend("--to", "erin@example.net", "--header", "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=", "--body", "8-bit: Grüße, 東京\n")
	swaksSend("--to", "frank@example.net", "--pipeline", "--header", "Subject: pipelined")
	py := `import smtplib,sys
s=smtplib.SMTP("127.0.0.1",` + strconv.Itoa(pf.SMTPPort()) + `)
s.ehlo("py.example")
for i in range(3):
    s.sendmail("py@example.org",["g%d@example.net"%i,"h%d@example.net"%i],b"Subject: smtplib %d\r\nFrom: py@example.org\r\n\r\nbody %d\r\n.dot\r\n"%(i,i))
s.quit()`
	if out, err := exec.Command("python3", "-c", py).CombinedOutput(); err != nil {
		t.Fatalf("python smtplib: %v\n%s", err, out)
	}
	sent += 3
	// The load generator Postfix itself uses: 200 messages, 5 sessions,
	// 3 recipients each.
	if out, err := exec.Command(smtpSource, "-s", "5", "-m", "200", "-r", "3", "-l", "3000",
		"-f", "load@example.org", "-t", "load@example.net", pf.SMTPAddr()).CombinedOutput(); err != nil {
		t.Fatalf("smtp-source: %v\n%s", err, out)
	}
	sent += 200

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	delivered, err := sink.WaitFor(ctx, sent)
	if err != nil {
		t.Fatalf("sink got %d of %d messages: %v\nmaillog:\n%s", len(delivered), sent, err, pf.Log())
	}
	checkDeliveredArchived(t, delivered, waitItems(t, ctx, archDir, sent), pf.Log())

	// With the proxy down, Postfix defers; once it is back and the queue
	// is flushed, every message is delivered and archived exactly once.
	px.stop()
	for i := 0; i < 3; i++ {
		swaksSend("--to", fmt.Sprintf("later%d@example.net", i), "--header", fmt.Sprintf("Subject: while down %d", i))
	}
	if err := waitFor(ctx, func() bool { return strings.Count(pf.Log(), "status=deferred") >= 3 }); err != nil {
		t.Fatalf("Postfix did not defer while the proxy was down:\n%s", pf.Log())
	}
	if n, _ := sink.Messages(); len(n) != sent-3 {
		t.Fatalf("sink got %d messages while the proxy was down, want %d", len(n), sent-3)
	}
	px = startProxy(t, proxyAddr, reinjectAddr, store, plog)
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	delivered, err = sink.WaitFor(ctx, sent)
	if err != nil {
		t.Fatalf("after restart: sink got %d of %d: %v\nmaillog:\n%s", len(delivered), sent, err, pf.Log())
	}
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	checkDeliveredArchived(t, delivered, waitItems(t, ctx, archDir, sent), pf.Log())
}

// waitItems waits for n items: the reinjection smtpd may deliver a message
// to the sink before the proxy has committed its item (the proxy commits
// once the server's reply is in, while the server hands the message on).
func waitItems(t *testing.T, ctx context.Context, dir string, n int) []item {
	t.Helper()
	var items []item
	if err := waitFor(ctx, func() bool { items = archivetest.ReadItems(t, dir); return len(items) >= n }); err != nil {
		t.Errorf("%d items, want %d: %v", len(items), n, err)
	}
	return items
}

func waitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// checkDeliveredArchived: every delivered message has exactly one accepted
// item whose bytes are what the reinjection smtpd received (the delivered
// message minus the Received: header it added) and whose envelope is right.
func checkDeliveredArchived(t *testing.T, delivered []smtpsink.Message, items []item, maillog string) {
	t.Helper()
	byBody := map[string][]item{}
	for _, it := range items {
		if it.Env.Outcome != "accepted" {
			t.Errorf("item %s outcome %q", it.Env.ID, it.Env.Outcome)
		}
		byBody[string(it.EML)] = append(byBody[string(it.EML)], it)
	}
	if len(items) != len(delivered) {
		t.Errorf("%d items for %d delivered messages", len(items), len(delivered))
	}
	for _, d := range delivered {
		body := archivetest.StripTopReceived(t, d.Data)
		its := byBody[string(body)]
		if len(its) != 1 {
			t.Errorf("delivered message %d (%.60q) has %d archived items", d.Seq, body, len(its))
			continue
		}
		e := its[0].Env
		// The queue ID the proxy recorded is the reinjection smtpd's: it
		// names it in the Received: header it prepended.
		m := receivedID.FindSubmatch(d.Data)
		if m == nil || e.QueueID != string(m[1]) {
			t.Errorf("item %s queue_id %q, delivered message says %q", e.ID, e.QueueID, m)
		}
		if !strings.Contains(maillog, e.QueueID+": from=<"+d.MailFrom+">") {
			t.Errorf("queue ID %s with sender %s not in the maillog", e.QueueID, d.MailFrom)
		}
		if e.MailFrom == nil || e.MailFrom.Addr != d.MailFrom {
			t.Errorf("item %s mail_from %+v, delivered from %q", e.ID, e.MailFrom, d.MailFrom)
		}
		var got []string
		for _, r := range e.RcptTo {
			if r.Accepted {
				got = append(got, r.Addr)
			}
		}
		if strings.Join(got, ",") != strings.Join(d.RcptAddrs(), ",") {
			t.Errorf("item %s rcpts %v, delivered to %v", e.ID, got, d.RcptAddrs())
		}
		// XFORWARD told the proxy who the original client was: the
		// clients here all connect from 127.0.0.1, and IDENT is the first
		// smtpd's queue ID, named in the archived message's Received:.
		if e.Client == nil || e.Client.Addr != "127.0.0.1" || e.Client.Ident == "" ||
			!strings.Contains(string(its[0].EML), "id "+e.Client.Ident) {
			t.Errorf("item %s client %+v", e.ID, e.Client)
		}
		if e.Helo == "" || e.Peer == nil {
			t.Errorf("item %s helo %q peer %+v", e.ID, e.Helo, e.Peer)
		}
	}
}
