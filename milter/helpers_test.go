package milter_test

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/milter"
)

// testServer is a milter server on 127.0.0.1:0 writing to a fresh archive.
type testServer struct {
	addr  string
	dir   string
	store *archive.Store
	srv   *milter.Server
	done  chan error
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startServer(t testing.TB, cfg milter.Config) *testServer {
	t.Helper()
	dir := t.TempDir()
	log := testLogger(t)
	store, err := archive.Open(dir, archive.Options{Logger: log, Host: "test.example"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store = store
	if cfg.Logger == nil {
		cfg.Logger = log
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{addr: ln.Addr().String(), dir: dir, store: store, srv: milter.NewServer(cfg), done: make(chan error, 1)}
	go func() { ts.done <- ts.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.srv.Shutdown(ctx)
		<-ts.done
	})
	return ts
}

type item struct {
	id  string
	eml []byte
	env *archive.Envelope
}

// items returns the committed items, oldest first.
func (ts *testServer) items(t testing.TB) []item {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(ts.dir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	var items []item
	for _, n := range names {
		env, err := archive.ReadEnvelope(n)
		if err != nil {
			t.Fatal(err)
		}
		eml, err := os.ReadFile(strings.TrimSuffix(n, ".json") + ".eml")
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, item{id: env.ID, eml: eml, env: env})
	}
	// Same-second IDs do not sort by time: order by archived_at.
	sort.SliceStable(items, func(i, j int) bool { return items[i].env.ArchivedAt.Before(items[j].env.ArchivedAt) })
	return items
}

// waitTmpEmpty waits until tmp/ holds nothing: the server aborts
// asynchronously when a client goes away.
func (ts *testServer) waitTmpEmpty(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ents, err := os.ReadDir(filepath.Join(ts.dir, "tmp"))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("tmp/ not empty: %v", names)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client returns a go-milter client session (an MTA that, like go-milter
// based MTAs, does not offer HDR_LEADSPC).
func (ts *testServer) client(t testing.TB) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClientWithOptions("tcp", ts.addr, gomilter.ClientOptions{
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		ActionMask:   gomilter.OptAddHeader,
	})
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rawConn speaks the milter protocol byte by byte, as Postfix does,
// including what go-milter's client cannot send (HDR_LEADSPC, garbage).
type rawConn struct {
	t testing.TB
	c net.Conn
}

func (ts *testServer) raw(t testing.TB) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, c: c}
}

func (r *rawConn) send(code byte, parts ...string) {
	r.t.Helper()
	data := []byte{code}
	for _, p := range parts {
		data = append(data, p...)
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	if _, err := r.c.Write(append(b, data...)); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) recv() (byte, string) {
	r.t.Helper()
	var n uint32
	if err := binary.Read(r.c, binary.BigEndian, &n); err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r.c, b); err != nil {
		r.t.Fatalf("read reply: %v", err)
	}
	return b[0], string(b[1:])
}

// expect sends a command and wants reply code want.
func (r *rawConn) expect(want byte, code byte, parts ...string) string {
	r.t.Helper()
	r.send(code, parts...)
	got, data := r.recv()
	if got != want {
		r.t.Fatalf("command %c: reply %c %q, want %c", code, got, data, want)
	}
	return data
}

// negotiate offers what Postfix 3.7 offers with milter_protocol = 6:
// version 6, every action and protocol bit.
func (r *rawConn) negotiate() {
	r.t.Helper()
	r.negotiateAs(6, 0x1fffff)
}

// negotiateAs offers milter protocol version and protocol mask proto, with
// every action, and returns the protocol mask the milter answered with.
func (r *rawConn) negotiateAs(version, proto uint32) uint32 {
	r.t.Helper()
	b := binary.BigEndian.AppendUint32(nil, version)
	b = binary.BigEndian.AppendUint32(b, 0x1ff)
	b = binary.BigEndian.AppendUint32(b, proto)
	data := r.expect('O', 'O', string(b))
	if len(data) < 12 {
		r.t.Fatalf("OPTNEG answer %q: too short", data)
	}
	return binary.BigEndian.Uint32([]byte(data[8:12]))
}

// connect sends the macros and connect packet Postfix sends for an inet
// client.
func (r *rawConn) connect(name, addr string, port uint16) {
	r.t.Helper()
	r.send('D', "C", "j\x00mx.example\x00{client_addr}\x00", addr, "\x00")
	p := binary.BigEndian.AppendUint16(nil, port)
	r.expect('c', 'C', name, "\x00", "4", string(p), addr, "\x00")
}

// headersBodyEnd sends header fields (name, value as the MTA sends it), the
// end of the header, a body chunk and end-of-message to a milter that adds
// a header, and returns the added field's packet data.
func (r *rawConn) headersBodyEnd(fields [][2]string, body string) string {
	r.t.Helper()
	for _, f := range fields {
		r.expect('c', 'L', f[0], "\x00", f[1], "\x00")
	}
	r.expect('c', 'N')
	r.expect('c', 'B', body)
	r.send('E')
	code, data := r.recv()
	if code != 'h' {
		r.t.Fatalf("end of message: %c %q, want h (add header)", code, data)
	}
	if code, _ := r.recv(); code != 'c' {
		r.t.Fatalf("end of message: %c, want c", code)
	}
	return data
}

// bufLogger logs to a buffer the test reads.
func bufLogger() (*slog.Logger, *archivetest.SyncBuffer) {
	var b archivetest.SyncBuffer
	return slog.New(slog.NewTextHandler(&b, nil)), &b
}

// wantLogLine fails unless some line of log has every piece of want.
func wantLogLine(t *testing.T, log string, want ...string) {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			return
		}
	}
	t.Errorf("no log line with all of %q:\n%s", want, log)
}
