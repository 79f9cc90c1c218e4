package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/metrics"
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

// message is one DATA phase on its way to the archive.
type message struct {
	w       archive.Writer // nil when it could not be created
	bw      *bufio.Writer  // buffers writes to w during DATA; pooled
	archErr error          // why it is not being archived
	start   time.Time
	syncDur time.Duration // time spent making the .eml durable
}

type conn struct {
	s      *Server
	client net.Conn
	server net.Conn
	raw    syscall.RawConn // client's, to wait for bytes without a buffer; nil: always buffered
	cr     *bufio.Reader   // nil while idle between commands (see buffers.go)
	cw     *lazyWriter
	sr     *bufio.Reader // nil while no reply is awaited
	sw     *lazyWriter
	log    *slog.Logger
	peer   *archive.Peer

	q        chan *pending
	npending atomic.Int32
	inTxn    atomic.Bool   // a MAIL transaction is open (set by the reply side)
	closed   chan struct{} // closed by fail
	failOnce sync.Once
	cwMu     sync.Mutex // guards cw: the reply side and fail write to it

	// Owned by the reply side (replies.go).
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

// serve runs the connection to its end.
func (c *conn) serve() {
	defer c.client.Close()
	server, err := net.DialTimeout("tcp", c.s.cfg.Server, c.s.cfg.DialTimeout)
	if err != nil {
		c.s.cfg.Metrics.DownstreamFailed()
		c.log.Error("cannot connect to the server; client told to retry", "server", c.s.cfg.Server, "err", err)
		c.writeClient([]byte("421 4.4.1 Archiving proxy: downstream server unavailable, try again later\r\n"))
		return
	}
	c.server = server
	defer server.Close()
	c.sr = getReader(serverReadBuf, server)
	c.sw = newLazyWriter(server, serverWriteBuf)

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

// fail ends the connection: the client gets reply (if any), both sides are
// closed. Safe to call from either side, more than once.
func (c *conn) fail(reply, why string) {
	c.failOnce.Do(func() {
		if reply != "" {
			c.writeClient([]byte(reply))
		}
		if why != "" {
			c.log.Warn("connection closed", "reason", why)
		}
		close(c.closed)
		c.client.Close()
		if c.server != nil {
			c.server.Close()
		}
	})
}

// kick wakes the command reader so it notices a shutdown.
func (c *conn) kick() { c.client.SetReadDeadline(time.Now()) }

// errDrain ends the command reader at a transaction boundary on shutdown.
var errDrain = errors.New("shutting down")

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
func (c *conn) fillWait(n int, idle bool) error {
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

// push queues a pending reply. If the queue is full, the server may still
// be waiting for commands buffered here: flush them before blocking.
func (c *conn) push(p *pending) bool {
	c.npending.Add(1)
	select {
	case c.q <- p:
		return true
	default:
	}
	if c.sw.Flush() != nil {
		return false
	}
	select {
	case c.q <- p:
		return true
	case <-c.closed:
		return false
	}
}

// await flushes the commands and waits for the reply of a sync point.
func (c *conn) await(p *pending) (smtpwire.Reply, bool) {
	if err := c.sw.Flush(); err != nil {
		c.fail("421 4.4.2 Archiving proxy: downstream connection lost\r\n", "write to server: "+err.Error())
		return smtpwire.Reply{}, false
	}
	select {
	case rep, ok := <-p.done:
		return rep, ok
	case <-c.closed:
		return smtpwire.Reply{}, false
	}
}

// relayCommands is the client-to-server side. It returns when the client is
// gone or the connection failed.
func (c *conn) relayCommands() {
	for {
		line, complete, err := c.readLine()
		if err != nil {
			if errors.Is(err, io.EOF) && c.buffered() > 0 {
				// An unterminated last line: the server gets it as sent
				// and, like Postfix's smtpd, ignores it at EOF.
				part, _ := c.cr.Peek(c.cr.Buffered())
				c.sw.Write(part)
			}
			c.endCommands(err)
			return
		}
		cmd := smtpwire.ParseCommand(line)
		p := &pending{kind: kOther}
		switch cmd.Verb {
		case "STARTTLS":
			// Not offered (we remove it from EHLO): a TLS session would
			// hide the message from the archive.
			if !c.skipLine(line, complete) || !c.push(&pending{kind: kLocal, local: []byte("454 4.7.0 TLS not available through the archiving proxy\r\n")}) {
				return
			}
			continue
		case "BDAT":
			if !c.refuseBDAT(line, complete, cmd) {
				return
			}
			continue
		case "DATA", "AUTH":
			p.done = make(chan smtpwire.Reply, 1)
			if cmd.Verb == "DATA" {
				p.kind = kData
			} else {
				p.kind = kAuth
				cmd = smtpwire.Command{Verb: "AUTH"} // never keep credentials
			}
		case "HELO":
			p.kind = kHelo
		case "EHLO":
			p.kind = kEhlo
		case "XFORWARD":
			p.kind = kXforward
		case "MAIL":
			p.kind = kMail
		case "RCPT":
			p.kind = kRcpt
		case "RSET":
			p.kind = kRset
		}
		p.cmd = cmd
		if !c.push(p) || !c.relayLine(line, complete) {
			return
		}
		switch p.kind {
		case kData:
			rep, ok := c.await(p)
			if !ok {
				return
			}
			if rep.Code == 354 && !c.relayData() {
				return
			}
			continue
		case kAuth:
			if !c.relayAuth(p) {
				return
			}
			continue
		}
		if c.cr.Buffered() == 0 {
			if err := c.sw.Flush(); err != nil {
				c.fail("421 4.4.2 Archiving proxy: downstream connection lost\r\n", "write to server: "+err.Error())
				return
			}
		}
	}
}

// endCommands handles the end of the client's input.
func (c *conn) endCommands(err error) {
	switch {
	case errors.Is(err, errDrain):
		c.fail("421 4.3.2 Service shutting down\r\n", "")
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.fail("421 4.4.2 Archiving proxy: timeout exceeded\r\n", "client idle timeout")
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		// The client is done: let the server's last replies through.
		c.sw.Flush()
		if tc, ok := c.server.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
	default:
		c.fail("", "read from client: "+err.Error())
	}
}

// readLine returns the next command line from the client as a slice of the
// read buffer, valid until the next read: the whole line when it fits
// (complete), else the first bufferful, whose rest relayLine streams.
func (c *conn) readLine() (line []byte, complete bool, err error) {
	for n := 1; ; n = c.cr.Buffered() + 1 {
		if err := c.fillWait(n, n == 1); err != nil {
			return nil, false, err
		}
		buf, _ := c.cr.Peek(c.cr.Buffered())
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			return buf[:i+1], true, nil
		}
		if len(buf) == c.cr.Size() {
			return buf, false, nil
		}
	}
}

// relayLine forwards a line returned by readLine, and the rest of it when it
// was longer than the buffer.
func (c *conn) relayLine(line []byte, complete bool) bool {
	return c.passLine(line, complete, c.sw)
}

// skipLine consumes a line without relaying it.
func (c *conn) skipLine(line []byte, complete bool) bool {
	return c.passLine(line, complete, io.Discard)
}

func (c *conn) passLine(line []byte, complete bool, w io.Writer) bool {
	for {
		if _, err := w.Write(line); err != nil {
			c.fail("421 4.4.2 Archiving proxy: downstream connection lost\r\n", "write to server: "+err.Error())
			return false
		}
		c.cr.Discard(len(line))
		if complete {
			return true
		}
		if err := c.fill(1); err != nil {
			c.endCommands(err)
			return false
		}
		line, _ = c.cr.Peek(c.cr.Buffered())
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line, complete = line[:i+1], true
		}
	}
}

// relayAuth relays an AUTH exchange (RFC 4954): while the server answers
// 334, the client's next line is a response, not a command. Nothing of it
// is logged or stored.
func (c *conn) relayAuth(p *pending) bool {
	for {
		rep, ok := c.await(p)
		if !ok {
			return false
		}
		if rep.Code != 334 {
			return true
		}
		line, complete, err := c.readLine()
		if err != nil {
			c.endCommands(err)
			return false
		}
		p = &pending{kind: kAuth, done: make(chan smtpwire.Reply, 1)}
		if !c.push(p) || !c.relayLine(line, complete) {
			return false
		}
	}
}

// refuseBDAT answers BDAT (RFC 3030) itself and discards its chunk: we
// remove CHUNKING from EHLO because the archive must see the message as
// DATA, so only a client that ignores EHLO gets here.
func (c *conn) refuseBDAT(line []byte, complete bool, cmd smtpwire.Command) bool {
	if !c.skipLine(line, complete) {
		return false
	}
	f := strings.Fields(cmd.Arg)
	var size int64 = -1
	if len(f) > 0 {
		size, _ = strconv.ParseInt(f[0], 10, 64)
	}
	if size < 0 {
		return c.push(&pending{kind: kLocal, local: []byte("501 5.5.4 Syntax: BDAT size [LAST]\r\n")})
	}
	for size > 0 {
		if err := c.fill(1); err != nil {
			c.endCommands(err)
			return false
		}
		n, _ := c.cr.Discard(int(min(size, int64(c.cr.Buffered()))))
		size -= int64(n)
	}
	return c.push(&pending{kind: kLocal, local: []byte("502 5.5.1 BDAT not available through the archiving proxy; use DATA\r\n")})
}

// relayData relays the message after the server's 354, copying it
// dot-unstuffed into the archive. The end-of-data line reaches the server
// only after the archived copy is on disk, so the server never accepts a
// message the archive does not hold (unless the policy says pass).
func (c *conn) relayData() bool {
	msg := &message{start: time.Now()}
	u := smtpwire.Unstuffer{Raw: c.sw}
	w, err := c.s.cfg.Store.Create()
	if err != nil {
		msg.archErr = err
	} else {
		msg.w = w
		msg.bw = archiveBufs.Get().(*bufio.Writer)
		msg.bw.Reset(w)
		u.Content = msg.bw
	}
	for {
		if c.cr.Buffered() == 0 {
			// Let the server have what we have while we wait for more.
			if err := c.sw.Flush(); err != nil {
				msg.abort()
				c.fail("421 4.4.2 Archiving proxy: downstream connection lost\r\n", "write to server: "+err.Error())
				return false
			}
			if err := c.fill(1); err != nil {
				// The client is gone mid-message; the server drops its
				// partial copy when we close.
				msg.abort()
				if errors.Is(err, os.ErrDeadlineExceeded) {
					c.fail("421 4.4.2 Archiving proxy: timeout exceeded\r\n", "client idle timeout during DATA")
				} else {
					c.fail("", "client lost during DATA: "+err.Error())
				}
				return false
			}
		}
		buf, _ := c.cr.Peek(c.cr.Buffered())
		n, done, err := u.Feed(buf)
		c.cr.Discard(n)
		if err != nil {
			msg.abort()
			c.fail("421 4.4.2 Archiving proxy: downstream connection lost\r\n", "write to server: "+err.Error())
			return false
		}
		if done {
			break
		}
	}
	if msg.w != nil {
		t0 := time.Now()
		err := msg.bw.Flush()
		msg.releaseBuf()
		if err == nil {
			err = msg.w.Sync()
		}
		msg.syncDur = time.Since(t0)
		if err != nil {
			msg.archErr = err
			msg.abort()
		}
	}
	if msg.archErr != nil {
		c.s.cfg.Metrics.ArchiveFailed(msg.archErr)
		if c.s.cfg.OnArchiveError == Tempfail {
			c.s.cfg.Metrics.MessageDone(metrics.OutcomeTempfailed, 0)
			c.log.Error("message not archived; withheld from the server, client told to retry",
				"err", msg.archErr, "policy", "tempfail")
			c.fail("451 4.3.0 Archive unavailable, message not accepted, try again later\r\n", "")
			return false
		}
		c.log.Error("MESSAGE NOT ARCHIVED; passed to the server because --on-archive-error=pass",
			"err", msg.archErr, "policy", "pass")
	}
	if _, err := c.sw.Write(u.EndLine()); err != nil {
		msg.abort()
		c.fail("421 4.4.2 Archiving proxy: downstream connection lost\r\n", "write to server: "+err.Error())
		return false
	}
	if !c.push(&pending{kind: kDataEnd, msg: msg}) {
		c.finish(msg, nil)
		return false
	}
	if c.cr.Buffered() == 0 {
		if err := c.sw.Flush(); err != nil {
			// The reply side will see the connection fail and decide.
			c.log.Warn("write to server failed after the message", "err", err)
		}
	}
	return true
}

// releaseBuf returns the archive write buffer to the pool.
func (m *message) releaseBuf() {
	if m.bw != nil {
		m.bw.Reset(nil)
		archiveBufs.Put(m.bw)
		m.bw = nil
	}
}

// abort drops the archive copy of a message the server will not get.
func (m *message) abort() {
	m.releaseBuf()
	if m.w != nil {
		m.w.Abort()
		m.w = nil
	}
}
