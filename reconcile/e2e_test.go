package reconcile_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/internal/proxytest"
	"github.com/postfix-archive/mailarchive/internal/smtpsink"
	"github.com/postfix-archive/mailarchive/reconcile"
)

// startMilter builds and runs milter_archiver on spec (inet:HOST:PORT).
func startMilter(t *testing.T, spec, dir string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "milter_archiver")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/milter_archiver").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-l", spec, "-d", dir)
	log := &archivetest.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("milter_archiver log:\n%s", log.String())
		}
	})
	addr := strings.TrimPrefix(spec, "inet:")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("milter_archiver not listening on %s:\n%s", addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReconcileRealPostfix: a real Postfix with the milter on its smtpd and
// proxy_archiver as its content filter; one message deferred while the
// proxy is down and archived later; then an item removed on purpose and a
// forged one added, which reconcile reports.
func TestReconcileRealPostfix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Postfix")
	}
	postfixtest.Require(t)
	swaks := postfixtest.RequireCommand(t, "swaks")

	sink := &smtpsink.Server{Dir: t.TempDir()}
	if err := sink.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	archDir := filepath.Join(t.TempDir(), "archive")
	store, err := archive.Open(archDir, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}

	filterAddr, reinjectAddr, milterAddr := postfixtest.FreeAddr(t), postfixtest.FreeAddr(t), postfixtest.FreeAddr(t)
	port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
	repl := map[string]string{"10025": port(filterAddr), "10026": port(reinjectAddr)}
	mainCF, err := postfixtest.LoadSnippet("../postfix-examples/content_filter/main.cf", repl)
	if err != nil {
		t.Fatal(err)
	}
	masterCF, err := postfixtest.LoadSnippet("../postfix-examples/content_filter/master.cf", repl)
	if err != nil {
		t.Fatal(err)
	}
	milterCF, err := postfixtest.LoadSnippet("../postfix-examples/milter/main.cf", map[string]string{"inet:127.0.0.1:10030": "inet:" + milterAddr})
	if err != nil {
		t.Fatal(err)
	}
	startMilter(t, "inet:"+milterAddr, archDir)
	pf := postfixtest.Start(t, postfixtest.Options{MainCF: append(mainCF, milterCF...), MasterCF: masterCF, RelayTo: sink.Addr()})
	stopProxy := proxytest.Start(t, filterAddr, reinjectAddr, store)

	sent := 0
	send := func(to, subject string) {
		t.Helper()
		out, err := exec.Command(swaks, "--server", pf.SMTPAddr(), "--helo", "client.example", "--from", "alice@example.org",
			"--to", to, "--header", "Subject: "+subject).CombinedOutput()
		if err != nil {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		sent++
	}
	for i := 0; i < 4; i++ {
		send(fmt.Sprintf("bob%d@example.net", i), fmt.Sprintf("message %d", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := sink.WaitFor(ctx, sent); err != nil {
		t.Fatalf("sink: %v\n%s", err, pf.Log())
	}
	// The proxy goes down: Postfix defers the next message, and delivers
	// (and the proxy archives) it once the proxy is back.
	stopProxy()
	send("later@example.net", "while the proxy was down")
	if err := pf.WaitLog(ctx, "status=deferred"); err != nil {
		t.Fatalf("Postfix did not defer: %v\n%s", err, pf.Log())
	}
	proxytest.Start(t, filterAddr, reinjectAddr, store)
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := sink.WaitFor(ctx, sent); err != nil {
		t.Fatalf("after restart: %v\n%s", err, pf.Log())
	}
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // qmgr's "removed" lines

	run := func() *reconcile.Report {
		t.Helper()
		f, err := os.Open(pf.LogFile())
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rep, err := reconcile.Run(ctx, reconcile.Options{Root: archDir, Log: f})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := run()
	if rep.Messages != sent || rep.Complete != sent || len(rep.Missing) != 0 || len(rep.Unmatched) != 0 ||
		strings.Join(rep.Hooks, ",") != "proxy,milter" {
		t.Fatalf("clean archive: %+v\nmaillog:\n%s", rep, pf.Log())
	}

	// Remove the milter's item of the deferred message; forge a proxy item.
	var victim, victimQID string
	rd, _ := archive.OpenReader(archDir, archive.ReaderOptions{})
	rd.Walk(func(it archive.Item) error {
		env, _ := it.Envelope()
		if env.Source == archive.SourceMilter && env.Message.Subject == "while the proxy was down" {
			victim, victimQID = it.ID, env.QueueID
		}
		return nil
	}, nil)
	if victim == "" {
		t.Fatal("no milter item for the deferred message")
	}
	os.Remove(filepath.Join(archDir, victim+".json"))
	os.Remove(filepath.Join(archDir, victim+".eml"))
	w, _ := store.Create()
	io.WriteString(w, "Subject: forged\r\n\r\nx\r\n")
	forged := w.ID()
	if err := w.Commit(&archive.Envelope{Source: archive.SourceProxy, Client: &archive.Client{Ident: "ABCDEF12345"},
		QueueID: "9876543210A", Outcome: archive.OutcomeAccepted, MailFrom: &archive.MailFrom{}}); err != nil {
		t.Fatal(err)
	}
	rep = run()
	if len(rep.Missing) != 1 || rep.Missing[0].QueueIDs[0] != victimQID || strings.Join(rep.Missing[0].Missing, ",") != "milter" ||
		len(rep.Missing[0].Items) != 1 {
		t.Fatalf("removed milter item of %s not reported: %+v", victimQID, rep.Missing)
	}
	if len(rep.Unmatched) != 1 || rep.Unmatched[0].ID != forged {
		t.Fatalf("forged item not reported: %+v", rep.Unmatched)
	}
}
