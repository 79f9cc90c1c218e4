package faulttest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/internal/smtpsink"
)

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

// proxyProc is the real proxy_archiver binary.
type proxyProc struct {
	cmd  *exec.Cmd
	logs *archivetest.SyncBuffer
}

func startProxyProc(t *testing.T, bin, listen, server, dir string, logs *archivetest.SyncBuffer) *proxyProc {
	t.Helper()
	cmd := exec.Command(bin, "-l", listen, "-s", server, "-d", dir, "--max-conns", "200", "--timeout", "30s")
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proxyProc{cmd: cmd, logs: logs}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy_archiver not listening on %s: %v\n%s", listen, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill -9 proxy_archiver while a few thousand messages flow through a real
// Postfix content_filter chain, restart it, flush the queue: every message
// the final sink received has an archived item with identical bytes
// (possibly recovered at the restart), and nothing is left under tmp/.
func TestCrashProxyArchiverInPostfixChain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real Postfix and sends thousands of messages")
	}
	postfixtest.Require(t)
	smtpSource := postfixtest.RequireCommand(t, "smtp-source")
	bin := binary(t, "proxy_archiver")

	sink := &smtpsink.Server{Dir: t.TempDir()}
	if err := sink.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	proxyAddr, reinjectAddr := postfixtest.FreeAddr(t), postfixtest.FreeAddr(t)
	// Postfix's content_filter points straight at the proxy.
	repl := map[string]string{"10025": port(proxyAddr), "10026": port(reinjectAddr), "10027": port(proxyAddr)}
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
	logs := &archivetest.SyncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("proxy_archiver log:\n%s", logs.String())
		}
	})
	px := startProxyProc(t, bin, proxyAddr, reinjectAddr, archDir, logs)

	const total = 2000
	t0 := time.Now()
	srcDone := make(chan error, 1)
	go func() {
		out, err := exec.Command(smtpSource, "-s", "10", "-m", strconv.Itoa(total), "-l", "2000",
			"-f", "crash@example.org", "-t", "crash@example.net", pf.SMTPAddr()).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("smtp-source: %v\n%s", err, out)
		}
		srcDone <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := sink.WaitFor(ctx, total/4); err != nil {
		t.Fatalf("before the crash: %v\nmaillog:\n%s", err, pf.Log())
	}
	px.cmd.Process.Signal(syscall.SIGKILL)
	px.cmd.Wait()
	killedAt, _ := sink.Messages()
	t.Logf("killed proxy_archiver after %d deliveries (%v)", len(killedAt), time.Since(t0).Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond)
	startProxyProc(t, bin, proxyAddr, reinjectAddr, archDir, logs) // recovers at start
	if err := <-srcDone; err != nil {
		t.Fatal(err)
	}
	// Postfix deferred what failed while the proxy was down: retry it now,
	// and again while anything is left.
	for {
		if err := pf.Flush(); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
		err := pf.WaitQueueEmpty(wctx)
		wcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("queue never emptied: %v", err)
		}
	}
	delivered, err := sink.Messages()
	if err != nil {
		t.Fatal(err)
	}
	if len(delivered) < total {
		t.Fatalf("sink got %d messages, sent %d\nmaillog:\n%s", len(delivered), total, pf.Log())
	}
	r := checkEveryDeliveryArchived(t, delivered, archDir)
	t.Logf("%d messages sent, %d deliveries (%d duplicate deliveries), %d items (%d recovered, %d never delivered), %v",
		total, len(delivered), r.dupDeliveries, r.items, r.recovered, r.neverDelivered, time.Since(t0).Round(time.Millisecond))
}
