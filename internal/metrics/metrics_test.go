package metrics_test

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/postfix-archive/mailarchive/internal/metrics"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Code, rec.Body.String()
}

func TestCounters(t *testing.T) {
	m := metrics.New("milter")
	m.MessageDone(metrics.OutcomeAccepted, 100)
	m.MessageDone(metrics.OutcomeAccepted, 23)
	m.MessageDone(metrics.OutcomeTempfailed, 0)
	m.ArchiveFailed(fmt.Errorf("archive: write tmp/x.eml: %w", syscall.ENOSPC))
	m.ArchiveFailed(nil) // not counted
	m.CommitObserved(3 * time.Millisecond)
	m.ConnOpened()
	m.ConnOpened()
	m.ConnClosed()
	m.ConnRefused()
	m.DownstreamFailed()

	code, body := get(t, m.Handler(nil), "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, want := range []string{
		`mailarchive_messages_total{outcome="accepted",source="milter"} 2`,
		`mailarchive_messages_total{outcome="tempfailed",source="milter"} 1`,
		`mailarchive_messages_total{outcome="not_archived",source="milter"} 0`, // exported before the first event
		`mailarchive_messages_total{outcome="aborted",source="milter"} 0`,
		`mailarchive_archived_bytes_total{source="milter"} 123`,
		`mailarchive_archive_failures_total{cause="enospc",source="milter"} 1`,
		`mailarchive_archive_failures_total{cause="eio",source="milter"} 0`,
		`mailarchive_archive_commit_seconds_bucket{source="milter",le="0.0025"} 0`,
		`mailarchive_archive_commit_seconds_bucket{source="milter",le="0.005"} 1`,
		`mailarchive_archive_commit_seconds_count{source="milter"} 1`,
		`mailarchive_connections_active{source="milter"} 1`,
		`mailarchive_connections_refused_total{source="milter"} 1`,
		`mailarchive_downstream_connect_failures_total{source="milter"} 1`,
		`mailarchive_build_info{commit=`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(body, want+"") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if n := testutil.CollectAndCount(m.Registry(), "mailarchive_messages_total"); n != len(metrics.Outcomes) {
		t.Errorf("messages_total has %d series, want %d", n, len(metrics.Outcomes))
	}
}

// A nil *Metrics is a no-op: callers need no checks.
func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.MessageDone(metrics.OutcomeAccepted, 1)
	m.ArchiveFailed(errors.New("x"))
	m.CommitObserved(time.Second)
	m.ConnOpened()
	m.ConnClosed()
	m.ConnRefused()
	m.DownstreamFailed()
	if code, _ := get(t, m.Handler(nil), "/metrics"); code != 200 {
		t.Errorf("nil metrics /metrics: %d", code)
	}
}

// Two daemons (or tests) in one process must not collide.
func TestIndependentRegistries(t *testing.T) {
	a, b := metrics.New("proxy"), metrics.New("proxy")
	a.MessageDone(metrics.OutcomeAccepted, 5)
	if _, body := get(t, b.Handler(nil), "/metrics"); !strings.Contains(body, `mailarchive_archived_bytes_total{source="proxy"} 0`) {
		t.Errorf("b sees a's bytes:\n%s", body)
	}
}

func TestCause(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("archive: write tmp/x.eml: %w", syscall.ENOSPC), "enospc"},
		{fmt.Errorf("archive: create tmp/x.eml: %w", syscall.EDQUOT), "edquot"},
		{&os.PathError{Op: "open", Path: "/x", Err: syscall.EACCES}, "eacces"},
		{fmt.Errorf("archive: rename: %w", syscall.EPERM), "eacces"},
		{fmt.Errorf("archive: create: %w", syscall.EROFS), "erofs"},
		{fmt.Errorf("archive: fsync tmp/: %w", syscall.EIO), "eio"},
		{fmt.Errorf("archive: create: %w", syscall.EMFILE), "emfile"},
		{fmt.Errorf("archive: create: %w", syscall.ENFILE), "emfile"},
		{fmt.Errorf("archive: create: %w", syscall.EEXIST), "other"},
		{errors.New("archive: write after commit or abort"), "other"},
		{fs.ErrPermission, "other"}, // no errno inside: not guessed
	} {
		if got := metrics.Cause(c.err); got != c.want {
			t.Errorf("Cause(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

func TestHealthz(t *testing.T) {
	var bad error
	h := metrics.New("milter").Handler(func() error { return bad })
	if code, body := get(t, h, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("healthy: %d %q", code, body)
	}
	bad = errors.New("archive not writable: open tmp/.healthz-1-x: no space left on device")
	if code, body := get(t, h, "/healthz"); code != 503 || !strings.Contains(body, "no space left") {
		t.Errorf("unhealthy: %d %q", code, body)
	}
	if code, _ := get(t, h, "/nothing"); code != 404 {
		t.Errorf("/nothing: %d", code)
	}
}

func TestServe(t *testing.T) {
	m := metrics.New("milter")
	m.MessageDone(metrics.OutcomeAccepted, 7)
	srv, err := m.Serve("127.0.0.1:0", func() error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for path, want := range map[string]string{
		"/metrics": `mailarchive_archived_bytes_total{source="milter"} 7`,
		"/healthz": "ok",
	} {
		resp, err := http.Get("http://" + srv.Addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d %q", path, resp.StatusCode, b)
		}
	}
	// A busy address fails at once, not in the background.
	if _, err := m.Serve(srv.Addr, nil); err == nil {
		t.Error("second Serve on the same address succeeded")
	}
}

func TestAll(t *testing.T) {
	ok := func() error { return nil }
	e1 := func() error { return errors.New("one") }
	e2 := func() error { return errors.New("two") }
	if err := metrics.All(ok, nil, ok)(); err != nil {
		t.Error(err)
	}
	if err := metrics.All(e1, ok, e2)(); err == nil || err.Error() != "one\ntwo" {
		t.Errorf("got %v", err)
	}
}

func TestReachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	quit := make(chan string, 1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220-smtp.example ESMTP\r\n220 go ahead\r\n"))
			b := make([]byte, 64)
			c.SetReadDeadline(time.Now().Add(time.Second))
			n, _ := c.Read(b)
			if n > 0 {
				select {
				case quit <- string(b[:n]):
				default:
				}
				c.Write([]byte("221 bye\r\n"))
			}
			c.Close()
		}
	}()
	if err := metrics.SMTPReady(addr, time.Second)(); err != nil {
		t.Error(err)
	}
	if got := <-quit; got != "QUIT\r\n" {
		t.Errorf("SMTPReady sent %q", got)
	}
	ln.Close()
	if err := metrics.SMTPReady(addr, time.Second)(); err == nil {
		t.Error("closed port ready")
	}
}

func TestSMTPNotReady(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Write([]byte("554 5.7.1 go away\r\n"))
			c.Close()
		}
	}()
	if err := metrics.SMTPReady(ln.Addr().String(), time.Second)(); err == nil || !strings.Contains(err.Error(), "554") {
		t.Errorf("got %v", err)
	}
}
