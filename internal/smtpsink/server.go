// Package smtpsink is a small SMTP server that accepts mail and records every
// message on disk, byte for byte. It is the final destination of the
// end-to-end tests (a private Postfix relays to it) and of "make demo".
//
// Each accepted message becomes two files in Server.Dir:
//
//	NNNNNN.eml   the DATA bytes after dot-unstuffing, line ends as received,
//	             without the end-of-data line
//	NNNNNN.json  the envelope (Message, without Data)
//
// NNNNNN counts up from 000001 in the order the messages were accepted. The
// .json file is written last (through a rename), so a message whose .json
// exists is complete.
package smtpsink

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// DefaultHostname is the name in the greeting and the EHLO reply when
// Server.Hostname is empty.
const DefaultHostname = "sink.test.example"

// DefaultIdleTimeout is how long a connection may stay silent when
// Server.IdleTimeout is zero.
const DefaultIdleTimeout = 5 * time.Minute

// Server is an SMTP sink. Set the exported fields, then call Listen or Serve;
// do not change them afterwards.
type Server struct {
	// Dir receives the messages (see the package comment). Required. It is
	// created if missing; messages already in it are kept, numbering
	// continues after them and they count for Messages and WaitFor.
	Dir string

	// Hostname is announced in the greeting and the EHLO reply.
	Hostname string

	// RejectRcpt, if set, is asked about each RCPT TO address (without the
	// angle brackets); true refuses it with "550 5.1.1".
	RejectRcpt func(addr string) bool

	// Logger receives one line per connection and per message. Nil: none.
	Logger *slog.Logger

	// IdleTimeout bounds each wait for the client. Zero: DefaultIdleTimeout.
	IdleTimeout time.Duration

	mu      sync.Mutex
	ln      net.Listener
	started bool
	closed  bool
	conns   map[net.Conn]struct{}
	seq     int           // number of the last message file in Dir
	count   int           // messages in Dir
	changed chan struct{} // closed and replaced whenever count grows
	wg      sync.WaitGroup
}

// Listen listens on addr (e.g. "127.0.0.1:0") and serves in the background
// until Close.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("smtpsink: listen %s: %w", addr, err)
	}
	if err := s.start(ln); err != nil {
		ln.Close()
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.acceptLoop(ln)
	}()
	return nil
}

// Serve accepts connections on ln until Close, then returns nil. It returns
// an error if the server cannot start or ln fails.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.start(ln); err != nil {
		return err
	}
	return s.acceptLoop(ln)
}

// start prepares Dir and takes ln as the server's listener.
func (s *Server) start(ln net.Listener) error {
	if s.Dir == "" {
		return errors.New("smtpsink: Dir not set")
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("smtpsink: %w", err)
	}
	seq, count, err := scanDir(s.Dir)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("smtpsink: server already started")
	}
	if s.closed {
		return errors.New("smtpsink: server closed")
	}
	s.started = true
	s.ln = ln
	s.seq, s.count = seq, count
	s.conns = make(map[net.Conn]struct{})
	if s.changed != nil {
		close(s.changed) // wake WaitFor calls made before start
	}
	s.changed = make(chan struct{})
	return nil
}

func (s *Server) acceptLoop(ln net.Listener) error {
	var delay time.Duration
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// Temporary (e.g. EMFILE): back off like net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("smtpsink: accept: %w", err)
		}
		delay = 0
		if !s.track(conn) {
			conn.Close()
			return nil
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(conn)
			s.serveConn(conn)
		}()
	}
}

// Addr is the address the server listens on, "host:port"; "" before
// Listen or Serve.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops listening, drops every open connection (a message in the
// middle of DATA is not recorded) and waits for the server's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

func (s *Server) hostname() string {
	if s.Hostname != "" {
		return s.Hostname
	}
	return DefaultHostname
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (s *Server) serveConn(conn net.Conn) {
	timeout := s.IdleTimeout
	if timeout <= 0 {
		timeout = DefaultIdleTimeout
	}
	dc := &deadlineConn{Conn: conn, timeout: timeout}
	c := &session{
		s:    s,
		conn: conn,
		r:    bufio.NewReaderSize(dc, 64<<10),
		w:    bufio.NewWriter(dc),
		log:  s.logger().With("client", conn.RemoteAddr().String()),
	}
	c.log.Debug("connect")
	err := c.run()
	switch {
	case err == nil, errors.Is(err, io.EOF), s.isClosed():
		c.log.Debug("disconnect")
	default:
		c.log.Info("disconnect", "err", err)
	}
}

// deadlineConn renews the connection's deadline before each read and write,
// so IdleTimeout bounds every wait for the peer, not the whole session.
type deadlineConn struct {
	net.Conn
	timeout time.Duration
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}
