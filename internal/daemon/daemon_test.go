package daemon

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/internal/archivetest"
)

// flags parses args for a program named "milter_archiver" whose stderr is
// the returned buffer, running as a user that is not root.
func flags(t *testing.T, args ...string) (*Flags, *archivetest.SyncBuffer) {
	t.Helper()
	fs := pflag.NewFlagSet("milter_archiver", pflag.ContinueOnError)
	f := AddFlags(fs)
	stderr := &archivetest.SyncBuffer{}
	f.stderr = stderr
	f.euid = 1000
	if code, done := f.Parse(args, "usage\n"); done {
		t.Fatalf("Parse(%q): done with exit %d: %s", args, code, stderr)
	}
	return f, stderr
}

// start parses args as flags does and starts the daemon, closed when the
// test ends.
func start(t *testing.T, args ...string) (*Daemon, *Flags, *archivetest.SyncBuffer) {
	t.Helper()
	f, stderr := flags(t, args...)
	d, err := f.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, f, stderr
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--help"}, 0, "--log-target"},
		{[]string{"--log-target", "journal"}, 2, `--log-target "journal": want stderr or syslog`},
		{[]string{"--log-format", "xml"}, 2, "want text or json"},
		{[]string{"--log-level", "loud"}, 2, "want debug, info, warn or error"},
		{[]string{"extra"}, 2, "unexpected arguments"},
		{[]string{"--no-such"}, 2, "unknown flag"},
	} {
		fs := pflag.NewFlagSet("milter_archiver", pflag.ContinueOnError)
		f := AddFlags(fs)
		var stderr bytes.Buffer
		f.stderr = &stderr
		code, done := f.Parse(tc.args, "usage\n")
		if !done || code != tc.code || !strings.Contains(stderr.String(), tc.out) {
			t.Errorf("%q: done %v exit %d, stderr %q; want exit %d with %q", tc.args, done, code, stderr.String(), tc.code, tc.out)
		}
	}
	f, _ := flags(t, "--log-target=syslog", "--metrics-listen", "127.0.0.1:0")
	if f.LogTarget != TargetSyslog || f.MetricsListen != "127.0.0.1:0" || f.Log.Format != "text" {
		t.Errorf("parsed %+v", f)
	}
}

// syslogListener is a syslog daemon stand-in on a unix datagram socket.
func syslogListener(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func recvDatagram(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 64<<10)
	n, err := c.Read(b)
	if err != nil {
		t.Fatalf("syslog: nothing received: %v", err)
	}
	return string(b[:n])
}

func TestSyslog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	ln := syslogListener(t, path)
	f, stderr := flags(t, "--log-target", "syslog")
	f.syslogPath = path
	d, err := f.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	d.Log.Debug("hidden")
	d.Log.Info("message archived", "id", "X", "queue_id", "4DC0A00004")
	d.Log.Warn("careful")
	d.Log.With("conn", 7).Error("MESSAGE NOT ARCHIVED", "err", "disk full")
	// <PRI> is facility mail (2) * 8 + severity; the tag is the program's
	// name with its PID; syslog stamps the line, so the record has no time.
	head := fmt.Sprintf(`^<%%d>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d milter_archiver\[%d\]: `, os.Getpid())
	for _, want := range []struct {
		pri  int
		rest string
	}{
		{22, `level=INFO msg="message archived" id=X queue_id=4DC0A00004`},
		{20, `level=WARN msg=careful`},
		{19, `level=ERROR msg="MESSAGE NOT ARCHIVED" conn=7 err="disk full"`},
	} {
		got := recvDatagram(t, ln)
		re := regexp.MustCompile(fmt.Sprintf(head, want.pri) + regexp.QuoteMeta(want.rest) + `$`)
		if !re.MatchString(got) {
			t.Errorf("syslog message %q, want <%d>... %s", got, want.pri, want.rest)
		}
	}
	if s := stderr.String(); s != "" {
		t.Errorf("stderr %q, want nothing (all went to syslog)", s)
	}

	// The syslog daemon restarts: the next line reaches the new socket.
	ln.Close()
	os.Remove(path)
	ln2 := syslogListener(t, path)
	d.Log.Info("after restart")
	if got := recvDatagram(t, ln2); !strings.HasSuffix(got, `level=INFO msg="after restart"`) {
		t.Errorf("after the restart: %q", got)
	}

	// It is gone for good: the line is not lost, it goes to stderr.
	ln2.Close()
	os.Remove(path)
	d.Log.Error("nobody listens", "id", "Y")
	if s := stderr.String(); !strings.Contains(s, `msg="nobody listens" id=Y`) || !strings.Contains(s, path) {
		t.Errorf("stderr %q, want the line and the socket's failure", s)
	}
}

func TestSyslogJSONAndStream(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	ln, err := net.Listen("unix", path) // rsyslog can listen on a stream socket
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lines := make(chan string, 4)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	f, _ := flags(t, "--log-target", "syslog", "--log-format", "json")
	f.syslogPath = path
	d, err := f.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.Log.Info("one", "n", 1)
	d.Log.Info("two", "n", 2)
	for _, want := range []string{`{"level":"INFO","msg":"one","n":1}`, `{"level":"INFO","msg":"two","n":2}`} {
		select {
		case got := <-lines:
			if !strings.HasPrefix(got, "<22>") || !strings.HasSuffix(got, "]: "+want) {
				t.Errorf("stream line %q, want <22>... %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no line %s", want)
		}
	}
}

func TestSyslogMissing(t *testing.T) {
	f, stderr := flags(t, "--log-target", "syslog")
	f.syslogPath = filepath.Join(t.TempDir(), "no-such-log")
	if _, err := f.Start(); err == nil {
		t.Fatal("started without a syslog socket")
	}
	if s := stderr.String(); !strings.Contains(s, "milter_archiver: syslog: cannot connect to "+f.syslogPath) || !strings.Contains(s, "--log-target stderr") {
		t.Errorf("stderr %q", s)
	}
}

func TestRootWarning(t *testing.T) {
	for _, euid := range []int{0, 1000} {
		f, stderr := flags(t)
		f.euid = euid
		d, err := f.Start()
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		warned := strings.Contains(stderr.String(), "level=WARN msg=\"running as root: run milter_archiver as the archive's owner")
		if warned != (euid == 0) {
			t.Errorf("euid %d: warned %v: %q", euid, warned, stderr.String())
		}
	}
}

func TestRunSignal(t *testing.T) {
	d, _, stderr := start(t)
	stopServe := make(chan struct{})
	var shutdownCalled bool
	shutdown := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("shutdown context has no deadline")
		}
		shutdownCalled = true
		close(stopServe)
		return nil
	}
	serve := func() error { <-stopServe; return errors.New("closed") }
	go func() {
		time.Sleep(50 * time.Millisecond)
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}()
	if code := d.Run(serve, shutdown, time.Second); code != 0 || !shutdownCalled {
		t.Errorf("Run: exit %d, shutdown called %v; want 0, true", code, shutdownCalled)
	}
	if d.Context().Err() == nil {
		t.Error("context not done after the signal")
	}
	for _, want := range []string{`msg="signal received: shutting down" signal=terminated`, `msg="shutting down: finishing work in flight" timeout=1s`, `msg=stopped`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr)
		}
	}
}

func TestRunServeFails(t *testing.T) {
	d, _, stderr := start(t)
	code := d.Run(func() error { return errors.New("accept: too many open files") },
		func(context.Context) error { t.Error("shutdown called"); return nil }, time.Second)
	if code != 1 || !strings.Contains(stderr.String(), `msg="serving failed" err="accept: too many open files"`) {
		t.Errorf("exit %d, log %q", code, stderr)
	}
}

func TestServeMetrics(t *testing.T) {
	d, f, _ := start(t)
	if met, err := d.ServeMetrics(f, "milter", nil); met != nil || err != nil {
		t.Errorf("without --metrics-listen: %v %v, want nil nil", met, err)
	}

	d, f, stderr := start(t, "--metrics-listen", "127.0.0.1:0")
	healthy := errors.New("archive not writable: read-only file system")
	met, err := d.ServeMetrics(f, "milter", func() error { return healthy })
	if err != nil || met == nil {
		t.Fatalf("ServeMetrics: %v %v", met, err)
	}
	m := regexp.MustCompile(`msg="serving /metrics and /healthz" addr=(\S+)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no address logged: %s", stderr)
	}
	base := "http://" + m[1]
	get := func(path, accept string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, body := get("/healthz", ""); resp.StatusCode != 503 || !strings.Contains(body, "read-only") {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}
	if resp, body := get("/metrics", ""); !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || !strings.Contains(body, `mailarchive_messages_total{outcome="accepted",source="milter"} 0`) {
		t.Errorf("/metrics: %q\n%s", resp.Header.Get("Content-Type"), body)
	}
	// docs/operations.md: OpenMetrics when asked for.
	resp, body := get("/metrics", "application/openmetrics-text; version=1.0.0")
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/openmetrics-text") || !strings.HasSuffix(body, "# EOF\n") {
		t.Errorf("/metrics as OpenMetrics: %q, body ends %q", resp.Header.Get("Content-Type"), body[max(0, len(body)-40):])
	}
	d.Close()
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("metrics still served after Close")
	}
}
