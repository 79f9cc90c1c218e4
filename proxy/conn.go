package proxy

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/smtpwire"
)

// Buffer sizes. A command line longer than the client buffer is relayed in
// pieces, never held whole (Postfix's own line_length_limit is 2048). The
// buffers are pooled and held only by busy connections (buffers.go), so the
// DATA path gets 32 KiB reads and writes (5% more MB/s on 1 MiB messages
// than 8 KiB) without costing idle connections anything.
const (
	clientReadBuf  = 32 << 10
	serverWriteBuf = 32 << 10
	serverReadBuf  = 4 << 10
	clientWriteBuf = 4 << 10
	maxReply       = 64 << 10 // a server reply larger than this is a broken server
	maxPending     = 128      // commands in flight before the reader waits
	archiveBuf     = 32 << 10 // batches the archive copy's writes (pooled, DATA only)
)

// cutWrite bounds the last words (421) to clients when a shutdown runs out
// of time: they are sent only if they can go at once.
const cutWrite = 100 * time.Millisecond

// archiveBufs holds the buffers between the DATA reader and the archive
// file: without them every message line is its own write(2), which cost
// the proxy most of its CPU time (docs/bench.md).
var archiveBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, archiveBuf) }}

type kind int

const (
	kOther kind = iota
	kHelo
	kEhlo
	kXforward
	kMail
	kRcpt
	kData
	kRset
	kAuth    // AUTH and its continuation lines: relayed, never recorded
	kLocal   // a reply the proxy gives itself, in order with the others
	kDataEnd // the end of a message: its reply decides the outcome
)

// pending is a command relayed to the server whose reply is awaited.
type pending struct {
	kind  kind
	cmd   smtpwire.Command
	local []byte              // kLocal: the reply to give
	done  chan smtpwire.Reply // for sync points: receives the reply
	msg   *message            // kDataEnd
}

type conn struct {
	s      *Server
	client net.Conn
	raw    syscall.RawConn // client's, to wait for bytes without a buffer; nil: always buffered
	cr     *bufio.Reader   // nil while idle between commands (see buffers.go)
	cw     *lazyWriter
	sr     *bufio.Reader // nil while no reply is awaited
	sw     *lazyWriter
	log    *slog.Logger
	peer   *archive.Peer

	// server (and the dial's cancel) are set once by serve; Shutdown
	// reads them through close, so both go through mu.
	mu         sync.Mutex
	server     net.Conn
	dead       bool // closed: a server connected later is closed at once
	cancelDial func()

	q         chan *pending
	npending  atomic.Int32
	inTxn     atomic.Bool   // a MAIL transaction is open (set by the reply side)
	closed    chan struct{} // closed by close
	failOnce  sync.Once
	closeOnce sync.Once
	cwMu      sync.Mutex // guards cw: the reply side and fail write to it

	// Owned by the reply side (replies.go); the command side reads them
	// only while the reply side waits for it (after a sync point's reply).
	helo string
	xfwd map[string]string
	txn  *txn
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		s:      s,
		client: nc,
		cw:     newLazyWriter(nc, clientWriteBuf),
		q:      make(chan *pending, maxPending),
		closed: make(chan struct{}),
		xfwd:   map[string]string{},
	}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	c.peer = peerOf(nc.RemoteAddr())
	c.log = s.log.With("client", nc.RemoteAddr().String())
	return c
}

func peerOf(a net.Addr) *archive.Peer {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return &archive.Peer{Addr: a.String()}
	}
	p, _ := strconv.Atoi(port)
	return &archive.Peer{Addr: host, Port: p}
}

// deadlineWriter gives every write its own deadline: a peer that stops
// reading holds a connection (and its --max-conns slot) no longer than
// the timeout.
type deadlineWriter struct {
	c net.Conn
	d time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.d))
	return w.c.Write(p)
}

// serve runs the connection to its end.
func (c *conn) serve() {
	defer c.client.Close()
	// The dial ends early when the connection is closed (a shutdown out
	// of time must not wait for DialTimeout).
	ctx, cancel := context.WithCancel(context.Background())
	c.mu.Lock()
	c.cancelDial = cancel
	dead := c.dead
	c.mu.Unlock()
	if dead {
		cancel()
	}
	d := net.Dialer{Timeout: c.s.cfg.DialTimeout}
	server, err := d.DialContext(ctx, "tcp", c.s.cfg.Server)
	cancel()
	if err != nil {
		c.s.cfg.Metrics.DownstreamFailed()
		c.log.Error("cannot connect to the server; client told to retry", "server", c.s.cfg.Server, "err", err)
		c.writeClient([]byte("421 4.4.1 Archiving proxy: downstream server unavailable, try again later\r\n"))
		return
	}
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		server.Close()
		return
	}
	c.server = server
	c.mu.Unlock()
	defer server.Close()
	c.sr = getReader(serverReadBuf, server)
	c.sw = newLazyWriter(deadlineWriter{server, c.s.cfg.Timeout}, serverWriteBuf)

	server.SetReadDeadline(time.Now().Add(c.s.cfg.Timeout))
	greeting, err := smtpwire.ReadReply(c.sr, maxReply)
	if err != nil {
		c.s.cfg.Metrics.DownstreamFailed()
		c.log.Error("no greeting from the server; client told to retry", "server", c.s.cfg.Server, "err", err)
		c.writeClient([]byte("421 4.4.2 Archiving proxy: downstream server did not greet, try again later\r\n"))
		return
	}
	c.writeClient(greeting.Bytes())
	c.releaseServerReader()

	replies := make(chan struct{})
	go func() {
		defer close(replies)
		c.relayReplies()
	}()
	c.relayCommands()
	close(c.q)
	<-replies
	// The reply side stops early only when the connection failed; messages
	// still queued behind it were relayed in full but got no reply.
	for p := range c.q {
		if p.kind == kDataEnd {
			c.finish(p.msg, nil)
		}
	}
}

// writeClient writes and flushes bytes to the client.
func (c *conn) writeClient(b []byte) error {
	c.cwMu.Lock()
	defer c.cwMu.Unlock()
	c.client.SetWriteDeadline(time.Now().Add(c.s.cfg.Timeout))
	if _, err := c.cw.Write(b); err != nil {
		return err
	}
	return c.cw.Flush()
}

// fail ends the connection: the client gets reply (if any, within the
// timeout), both sides are closed. Safe to call from either side, more
// than once.
func (c *conn) fail(reply, why string) {
	c.failOnce.Do(func() {
		if reply != "" {
			c.writeClient([]byte(reply))
		}
		c.close(why)
	})
}

// failServer ends the connection after a write to the server failed.
func (c *conn) failServer(err error) {
	c.fail("421 4.4.2 Archiving proxy: downstream connection lost\r\n", "write to server: "+err.Error())
}

// cut ends the connection at once, for a shutdown out of time: the client
// gets reply only if no other write holds the connection and it goes out
// before deadline. It never waits for fail.
func (c *conn) cut(reply string, deadline time.Time) {
	if c.cwMu.TryLock() {
		c.client.SetWriteDeadline(deadline)
		if _, err := c.cw.Write([]byte(reply)); err == nil {
			c.cw.Flush()
		}
		c.cwMu.Unlock()
	}
	c.close("shutdown timeout")
}

// close closes both sides, which ends every read and write in flight.
func (c *conn) close(why string) {
	c.closeOnce.Do(func() {
		if why != "" {
			c.log.Warn("connection closed", "reason", why)
		}
		c.mu.Lock()
		c.dead = true
		server, cancelDial := c.server, c.cancelDial
		c.mu.Unlock()
		if cancelDial != nil {
			cancelDial()
		}
		close(c.closed)
		c.client.Close()
		if server != nil {
			server.Close()
		}
	})
}

// kick wakes the command reader so it notices a shutdown.
func (c *conn) kick() { c.client.SetReadDeadline(time.Now()) }

// errDrain ends the command reader at a transaction boundary on shutdown.
var errDrain = errors.New("shutting down")

// serverWriteError is a failed write to the server met while reading
// from the client (fill flushes before it waits).
type serverWriteError struct{ err error }

func (e serverWriteError) Error() string { return "write to server: " + e.err.Error() }
func (e serverWriteError) Unwrap() error { return e.err }

// atBoundary reports whether nothing is in flight: no reply awaited, no
// transaction open, no client bytes unread.
func (c *conn) atBoundary() bool {
	return c.npending.Load() == 0 && !c.inTxn.Load() && c.buffered() == 0
}

// buffered is how many client bytes are buffered (none while idle).
func (c *conn) buffered() int {
	if c.cr == nil {
		return 0
	}
	return c.cr.Buffered()
}

// releaseServerReader gives back the server reader's buffer when empty.
func (c *conn) releaseServerReader() {
	if c.sr != nil && c.sr.Buffered() == 0 {
		putReader(serverReadBuf, c.sr)
		c.sr = nil
	}
}

// fill waits until n bytes from the client are buffered. It applies the
// idle timeout and, on shutdown, ends the connection at a boundary.
func (c *conn) fill(n int) error { return c.fillWait(n, false) }

// fillWait is fill; idle says the connection is between commands, where an
// empty read buffer is given back while waiting.
//
// Before it waits, it flushes what is buffered for the server: the server
// must have every command before the client's next bytes are awaited, or a
// client waiting for a reply (to a command pipelined before one the proxy
// answers itself, STARTTLS or BDAT) and the server waiting for that command
// would both wait for the timeout.
func (c *conn) fillWait(n int, idle bool) error {
	if c.buffered() < n {
		if err := c.sw.Flush(); err != nil {
			return serverWriteError{err}
		}
	}
	deadline := time.Now().Add(c.s.cfg.Timeout)
	for {
		rd := deadline
		if c.s.draining.Load() {
			if c.atBoundary() {
				return errDrain
			}
			// Mid-transaction: look again soon, so the connection ends as
			// soon as this transaction does.
			if soon := time.Now().Add(100 * time.Millisecond); soon.Before(deadline) {
				rd = soon
			}
		}
		c.client.SetReadDeadline(rd)
		// Checked again after setting the deadline: Shutdown sets draining
		// before it kicks, so either we see draining here or its kick
		// interrupts the read below.
		if c.s.draining.Load() && c.atBoundary() {
			return errDrain
		}
		var err error
		if idle && c.raw != nil && c.buffered() == 0 {
			if c.cr != nil {
				putReader(clientReadBuf, c.cr)
				c.cr = nil
			}
			err = waitReadable(c.raw)
		}
		if err == nil {
			if c.cr == nil {
				c.cr = getReader(clientReadBuf, c.client)
			}
			if _, err = c.cr.Peek(n); err == nil {
				return nil
			}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && time.Now().Before(deadline) {
			continue // kicked by Shutdown or polling, not idle
		}
		return err
	}
}
