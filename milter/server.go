// Package milter is the milter hook point: a milter server that Postfix
// (smtpd_milters, non_smtpd_milters) shows every message to, and that
// archives each message through the shared store before it answers
// end-of-message, so that nothing enters the queue unarchived.
package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/metrics"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("milter: server closed")

// Config configures a Server.
type Config struct {
	Store          archive.Archive // required
	Logger         *slog.Logger    // default: slog.Default()
	OnArchiveError archive.Policy
	// AddHeader adds "X-Archive-ID: ID" to every message that was archived.
	AddHeader bool
	// Metrics, if not nil, counts messages, failures, commit latency and
	// connections (docs/operations.md).
	Metrics *metrics.Metrics
}

// Server serves the milter protocol on any number of listeners.
type Server struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	lns     map[net.Listener]struct{}
	conns   map[*conn]struct{}
	closing bool
	wg      sync.WaitGroup // one per connection
}

// NewServer returns a Server; call Serve to start it.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		lns:   map[net.Listener]struct{}{},
		conns: map[*conn]struct{}{},
	}
}

// Serve accepts milter connections on ln until Shutdown, and then returns
// ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and the like: wait rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			return ErrServerClosed
		}
		go s.serveConn(c)
	}
}

func (s *Server) newConn(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil
	}
	c := &conn{Conn: nc, closed: make(chan struct{})}
	c.sess = newSession(s, c)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.cfg.Metrics.ConnOpened()
	return c
}

// serveConn runs go-milter on one connection. Each connection gets its own
// go-milter Server whose NewMilter always returns this connection's
// session: go-milter calls NewMilter again after any reply that is not
// Continue, and the connection's client and HELO data must survive that for
// the next message on the same connection.
func (s *Server) serveConn(c *conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.cfg.Metrics.ConnClosed()
		s.wg.Done()
	}()
	actions := gomilter.OptSetSymList
	if s.cfg.AddHeader {
		actions |= gomilter.OptAddHeader
	}
	ms := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return c.sess },
		Actions:   actions,
		SymList:   symList,
	}
	// Protocol is set by oneListener.Accept once the MTA's offer is read.
	ms.Serve(&oneListener{c: c, ms: ms}) // returns once the connection is closed
}

// protocolFor is the protocol mask to answer an MTA's OPTNEG with.
//
// NOUNKNOWN: go-milter drops the connection on SMFIC_UNKNOWN.
//
// HDR_LEADSPC: header values exactly as they stood after the colon. It is
// asked for when the MTA offers it, and also when the MTA speaks a protocol
// version below 6, whose offer has no room for the bit: Postfix with
// milter_protocol = 2..5 does not offer it but honours the request (seen
// with 3.7). An MTA at version 6 or later that does not offer it (go-milter
// based MTAs) is not asked, as the milter protocol wants.
func protocolFor(t *packetTap) gomilter.OptProtocol {
	p := gomilter.OptNoUnknown
	if !t.sawOptNeg || t.offeredVersion < 6 || t.offeredProto&uint32(gomilter.OptHeaderLeadingSpace) != 0 {
		p |= gomilter.OptHeaderLeadingSpace
	}
	return p
}

// symList asks for the macros the envelope needs, per stage. The MTA
// replaces its configured lists (Postfix's milter_*_macros) with these.
var symList = map[gomilter.Stage][]string{
	gomilter.StageConnect:  {"j", "_", "v", "{daemon_name}", "{daemon_addr}", "{daemon_port}", "{client_addr}", "{client_name}", "{client_port}", "{client_ptr}", "{client_connections}"},
	gomilter.StageHelo:     {"{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}"},
	gomilter.StageMailFrom: {"i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}", "{mail_host}", "{mail_mailer}"},
	gomilter.StageRcptTo:   {"i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"},
	gomilter.StageData:     {"i"},
	gomilter.StageEOH:      {"i"},
	gomilter.StageEOM:      {"i"},
}

// Shutdown stops accepting connections, lets every message in flight
// finish, closes each connection as soon as it is between messages, and
// waits for them all until ctx is done. Then it closes what is left, which
// aborts those messages (the MTA applies milter_default_action, tempfail),
// and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.drain()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	n := len(s.conns)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.log.Warn("shutdown: closed connections with messages still in flight", "connections", n)
	select {
	case <-done:
	case <-time.After(5 * time.Second): // a callback stuck in fsync
	}
	return ctx.Err()
}

// conn wraps a milter connection: it taps the packets go-milter reads, ends
// the session cleanly between messages when draining, and aborts the
// message in progress when it closes.
type conn struct {
	net.Conn
	sess     *session
	tap      packetTap // used only by the goroutine reading the connection
	draining atomic.Bool
	replay   []byte // bytes read before go-milter started, for go-milter

	// leadSpace: SMFIP_HDR_LEADSPC was negotiated, so header values come
	// (and added ones go) with their leading white space. Set before
	// go-milter runs the connection's callbacks.
	leadSpace bool

	closeOnce sync.Once
	closed    chan struct{}
}

func (c *conn) Read(p []byte) (int, error) {
	if len(c.replay) > 0 {
		n := copy(p, c.replay)
		c.replay = c.replay[n:]
		return n, nil
	}
	for {
		if c.draining.Load() && c.tap.atBoundary() && !c.sess.busy() {
			return 0, io.EOF // go-milter ends the session quietly
		}
		n, err := c.Conn.Read(p)
		c.tap.feed(p[:n])
		var ne net.Error
		if n == 0 && errors.As(err, &ne) && ne.Timeout() && c.draining.Load() {
			// Shutdown's wake-up call: stop if idle, else read on.
			c.Conn.SetReadDeadline(time.Time{})
			continue
		}
		return n, err
	}
}

// readFirstPacket reads the MTA's first packet (OPTNEG, which the MTA sends
// before anything else and then waits for the answer) through the tap, and
// keeps its bytes for go-milter to read again.
func (c *conn) readFirstPacket() error {
	var rec bytes.Buffer
	r := io.TeeReader(readerFunc(c.Read), &rec)
	var hdr [4]byte
	_, err := io.ReadFull(r, hdr[:])
	if n := binary.BigEndian.Uint32(hdr[:]); err == nil && n <= maxTapped {
		_, err = io.CopyN(io.Discard, r, int64(n))
	}
	c.replay = rec.Bytes()
	return err
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// drain makes the connection end at the next point between messages.
func (c *conn) drain() {
	c.draining.Store(true)
	c.Conn.SetReadDeadline(time.Now()) // wake a Read waiting for the next message
}

// Close closes the connection and aborts the message in progress, if any.
// It is safe to call more than once and from any goroutine.
func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		close(c.closed)
		c.sess.close()
	})
	return err
}

// oneListener hands go-milter's Serve a single connection, then blocks until
// that connection is closed. Before it hands the connection over, it reads
// the MTA's offer and sets the protocol mask go-milter answers with: go-milter
// answers with Server.Protocol whatever the offer, and reads it when Accept
// returns.
type oneListener struct {
	c    *conn
	ms   *gomilter.Server
	used bool
}

func (l *oneListener) Accept() (net.Conn, error) {
	if !l.used {
		l.used = true
		if err := l.c.readFirstPacket(); err != nil {
			return nil, err
		}
		l.ms.Protocol = protocolFor(&l.c.tap)
		l.c.leadSpace = l.c.tap.sawOptNeg && l.ms.Protocol&gomilter.OptHeaderLeadingSpace != 0
		return l.c, nil
	}
	<-l.c.closed
	return nil, net.ErrClosed
}

func (l *oneListener) Close() error   { return nil }
func (l *oneListener) Addr() net.Addr { return l.c.LocalAddr() }
