package faulttest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/smtpsink"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/smtpwire"
	"github.com/postfix-archive/mailarchive/proxy"
)

// recorder is a downstream SMTP server that frames commands and DATA the
// way Postfix's smtpd does (smtpwire), records every byte it reads, and can
// misbehave.
type recorder struct {
	ln net.Listener

	delay      time.Duration // before every reply
	dropInData bool          // close after the first message bytes

	mu   sync.Mutex
	raw  bytes.Buffer
	msgs [][]byte
	wg   sync.WaitGroup
}

func newRecorder(t *testing.T, mod func(*recorder)) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln}
	if mod != nil {
		mod(r)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.serve(c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *recorder) addr() string { return r.ln.Addr().String() }

func (r *recorder) received() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.raw.Bytes())
}

func (r *recorder) messages() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.msgs...)
}

type recWriter struct{ r *recorder }

func (w recWriter) Write(p []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.r.raw.Write(p)
}

func (r *recorder) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReaderSize(io.TeeReader(c, recWriter{r}), 4<<10)
	w := bufio.NewWriter(c)
	reply := func(s string) {
		time.Sleep(r.delay)
		w.WriteString(s)
		if br.Buffered() == 0 {
			w.Flush()
		}
	}
	reply("220 rec.test ESMTP\r\n")
	mail, rcpts, n := false, 0, 0
	for {
		line, err := readLongLine(br)
		if err != nil {
			return
		}
		if len(line) > 2048 {
			reply("500 5.5.2 Error: line too long\r\n")
			continue
		}
		switch cmd := smtpwire.ParseCommand(line); cmd.Verb {
		case "EHLO":
			reply("250-rec.test\r\n250-PIPELINING\r\n250-XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n250 8BITMIME\r\n")
		case "HELO", "NOOP", "XFORWARD":
			reply("250 2.0.0 Ok\r\n")
		case "MAIL":
			mail, rcpts = true, 0
			reply("250 2.1.0 Ok\r\n")
		case "RCPT":
			if !mail {
				reply("503 5.5.1 Error: need MAIL command\r\n")
				continue
			}
			rcpts++
			reply("250 2.1.5 Ok\r\n")
		case "RSET":
			mail, rcpts = false, 0
			reply("250 2.0.0 Ok\r\n")
		case "DATA":
			if rcpts == 0 {
				reply("503 5.5.1 Error: need RCPT command\r\n")
				continue
			}
			reply("354 End data with <CR><LF>.<CR><LF>\r\n")
			w.Flush()
			if r.dropInData {
				br.Peek(1)
				return
			}
			var msg bytes.Buffer
			if _, err := smtpwire.ReadData(br, &msg); err != nil {
				return
			}
			r.mu.Lock()
			r.msgs = append(r.msgs, msg.Bytes())
			r.mu.Unlock()
			n++
			mail, rcpts = false, 0
			reply(fmt.Sprintf("250 2.0.0 Ok: queued as REC%d\r\n", n))
		case "QUIT":
			reply("221 2.0.0 Bye\r\n")
			w.Flush()
			io.Copy(io.Discard, br) // read to EOF: the test compares every byte
			return
		default:
			reply("502 5.5.2 Error: command not recognized\r\n")
		}
	}
}

// readLongLine reads a line of any length ending in LF (or the rest at EOF,
// which counts as an error, as in Postfix).
func readLongLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		b, err := br.ReadSlice('\n')
		line = append(line, b...)
		if err == bufio.ErrBufferFull {
			continue
		}
		return line, err
	}
}

// inProxy runs a proxy.Server in this process.
type inProxy struct {
	srv  *proxy.Server
	addr string
	dir  string
	logs *archivetest.SyncBuffer
}

func startInProxy(t *testing.T, server, dir string, mod func(*proxy.Config)) *inProxy {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	store, err := archive.Open(dir, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := &inProxy{dir: dir, logs: &archivetest.SyncBuffer{}}
	cfg := proxy.Config{Server: server, Store: store, Timeout: 5 * time.Second, DialTimeout: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(p.logs, nil))}
	if mod != nil {
		mod(&cfg)
	}
	if p.srv, err = proxy.New(cfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); p.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.srv.Shutdown(ctx)
		<-done
		if t.Failed() {
			t.Logf("proxy log:\n%s", p.logs.String())
		}
	})
	return p
}

// tmpLeftovers lists the non-empty files left under ROOT/tmp. An empty
// .eml is not message bytes: a writer killed between creating it and
// writing leaves one, and the recovery sweep at start-up leaves it alone for
// its first seconds (archive's freshEmpty) in case a live writer owns it; a
// later sweep removes it.
func tmpLeftovers(t *testing.T, dir string) []string {
	var out []string
	for _, name := range tmpFiles(dir) {
		fi, err := os.Stat(filepath.Join(dir, "tmp", name))
		if err == nil && fi.Size() == 0 {
			t.Logf("empty %s left under tmp/", name)
			continue
		}
		out = append(out, name)
	}
	return out
}

// tmpFiles lists what is left under ROOT/tmp.
func tmpFiles(dir string) []string {
	ents, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// smtpClient is a minimal client for driving the proxy.
type smtpClient struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dial(t *testing.T, addr string) *smtpClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return &smtpClient{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *smtpClient) send(s string) {
	c.t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// reply reads one reply; code 0 means the connection ended.
func (c *smtpClient) reply() (int, string) {
	rep, err := smtpwire.ReadReply(c.r, 1<<20)
	if err != nil {
		return 0, err.Error()
	}
	return rep.Code, rep.Text()
}

func (c *smtpClient) expect(code int) string {
	c.t.Helper()
	got, text := c.reply()
	if got != code {
		c.t.Fatalf("got %d %q, want %d", got, text, code)
	}
	return text
}

// message sends one message on an open session and returns the final
// reply's code.
func (c *smtpClient) message(body string) int {
	c.t.Helper()
	c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
	for _, want := range []int{250, 250, 354} {
		if got, text := c.reply(); got != want {
			return got
		} else if got == 0 {
			c.t.Fatalf("connection ended: %s", text)
		}
	}
	c.send(body + ".\r\n")
	code, _ := c.reply()
	return code
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binary builds a command of this module once per test run.
func binary(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "faulttest-bin-")
		if buildErr != nil {
			return
		}
		os.Chmod(buildDir, 0o755)
		for _, cmd := range []string{"proxy_archiver", "milter_archiver"} {
			out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, cmd), "../cmd/"+cmd).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", cmd, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func body(i int, size int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Subject: fault test %d\r\nMessage-ID: <%d@faulttest>\r\n\r\n", i, i)
	for b.Len() < size {
		b.WriteString("the quick brown fox jumps over the lazy dog 0123456789\r\n")
	}
	return b.String()
}

// crashCounts is what checkEveryDeliveryArchived counted.
type crashCounts struct {
	items, recovered int
	dupDeliveries    int // deliveries of a message delivered before
	neverDelivered   int // distinct archived messages the sink never got
	extra            int // items beyond the deliveries of the same bytes
}

// checkEveryDeliveryArchived is the crash tests' verdict: every message the
// sink received (minus Postfix's top Received:) has an archived item with
// the same bytes, and tmp/ holds no message bytes. Duplicates and recovered
// items are allowed, and counted.
func checkEveryDeliveryArchived(t *testing.T, delivered []smtpsink.Message, archDir string) crashCounts {
	t.Helper()
	items := archivetest.ReadItems(t, archDir)
	c := crashCounts{items: len(items)}
	byBody := map[string]int{}
	for _, it := range items {
		byBody[string(it.EML)]++
		if it.Env.Recovered {
			c.recovered++
		}
	}
	seen := map[string]int{}
	for _, d := range delivered {
		b := string(archivetest.StripTopReceived(t, d.Data))
		seen[b]++
		if byBody[b] == 0 {
			t.Errorf("delivered message %d (%.120q) has no archived item", d.Seq, b)
		}
	}
	for _, n := range seen {
		c.dupDeliveries += n - 1
	}
	for b, n := range byBody {
		if seen[b] == 0 {
			c.neverDelivered++
		}
		c.extra += n - seen[b]
	}
	if left := tmpLeftovers(t, archDir); len(left) > 0 {
		t.Errorf("tmp/ still holds %v", left)
	}
	return c
}
