package proxy_test

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/internal/proxytest"
)

// TestContentFilterLoopPostfix points --server at an smtpd that applies
// the same content_filter (the mistake of pointing -s at port 25). That
// smtpd does not take XFORWARD from the proxy. The message must come back
// once, be deferred with 4.4.6 and stay queued; the proxy logs a
// configuration error and /healthz fails.
func TestContentFilterLoopPostfix(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Postfix")
	}
	swaks := postfixtest.RequireCommand(t, "swaks")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	pf := postfixtest.Start(t, postfixtest.Options{
		MainCF:   []string{"content_filter = archive:[127.0.0.1]:" + port},
		MasterCF: []string{"archive unix - - n - 4 smtp"},
	})

	dir := t.TempDir()
	store, err := archive.Open(dir, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := proxytest.Serve(t, ln, pf.SMTPAddr(), store, 30*time.Second)
	if err := srv.Healthy(); err != nil {
		t.Fatalf("unhealthy before any mail: %v", err)
	}

	out, err := exec.Command(swaks, "--server", pf.SMTPAddr(), "--from", "alice@example.org",
		"--to", "bob@example.net", "--header", "Subject: loop").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := pf.WaitLog(ctx, "4.4.6"); err != nil {
		t.Fatalf("Postfix never saw the loop deferred: %v\nmaillog:\n%s", err, pf.Log())
	}
	log := pf.Log()
	if !strings.Contains(log, "status=deferred") {
		t.Fatalf("looping message not deferred:\n%s", log)
	}
	ids, err := pf.QueueIDs()
	if err != nil || len(ids) != 1 {
		t.Fatalf("queue holds %v (%v), want the one deferred message", ids, err)
	}
	if !strings.Contains(srv.Logs.String(), "CONFIGURATION ERROR: content-filter loop") {
		t.Fatalf("no configuration error logged:\n%s", srv.Logs.String())
	}
	if err := srv.Healthy(); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Fatalf("Healthy after a loop: %v", err)
	}
	// One pass archived, the one that came back not.
	items := archivetest.ReadItems(t, dir)
	if len(items) != 1 || items[0].Env.Outcome != "accepted" {
		t.Fatalf("items %+v", items)
	}
	// Postfix retries it (this instance retries within seconds): it is
	// deferred again, nothing more is archived, it stays queued.
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, func() bool { return strings.Count(pf.Log(), "4.4.6") >= 2 }); err != nil {
		t.Fatalf("retry not deferred:\n%s", pf.Log())
	}
	if n := len(archivetest.ReadItems(t, dir)); n != 1 {
		t.Fatalf("%d items after the loop was stopped", n)
	}
	if ids2, _ := pf.QueueIDs(); len(ids2) != 1 || ids2[0] != ids[0] {
		t.Fatalf("queue %v, want %v", ids2, ids)
	}
}
