// Package proxy is proxy_archiver: an SMTP pass-through proxy for Postfix's
// content_filter chain that relays every byte between the client (Postfix's
// smtp client) and the server (the reinjection smtpd) and archives each
// message, with its envelope, through the shared archive store.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/metrics"
)

// Store is what the proxy needs of the archive: a place to stream messages.
type Store interface {
	Create(tags ...string) (archive.Writer, error)
}

var _ Store = archive.Archive(nil)

// Config configures a Server.
type Config struct {
	Server         string         // downstream SMTP server, host:port
	Store          Store          // where messages are archived
	OnArchiveError archive.Policy // what to do when archiving fails
	KeepRejected   bool           // also archive messages the server refused
	MaxConns       int            // concurrent connections; 0 = unlimited
	Timeout        time.Duration  // bounds each read and each write, either side
	DialTimeout    time.Duration  // connecting to the server
	Logger         *slog.Logger
	Metrics        *metrics.Metrics // nil: none
}

// Server accepts client connections and proxies each to Config.Server.
type Server struct {
	cfg      Config
	log      *slog.Logger
	sem      chan struct{}
	draining atomic.Bool
	wg       sync.WaitGroup

	loops *loopGuard

	mu    sync.Mutex
	ln    net.Listener
	conns map[*conn]struct{}
}

// Default timeouts. Timeout matches Postfix's smtpd_timeout.
const (
	DefaultTimeout     = 300 * time.Second
	DefaultDialTimeout = 30 * time.Second
)

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Server == "" {
		return nil, errors.New("proxy: no downstream server")
	}
	if cfg.Store == nil {
		return nil, errors.New("proxy: no archive store")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	s := &Server{cfg: cfg, log: cfg.Logger, conns: map[*conn]struct{}{}, loops: newLoopGuard()}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.MaxConns > 0 {
		s.sem = make(chan struct{}, cfg.MaxConns)
	}
	return s, nil
}

// Serve accepts connections on ln until Shutdown. It returns nil after
// Shutdown, or the listener's error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining.Load() {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.ln = ln
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.draining.Load() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("proxy: accept: %w", err)
			}
			// Out of file descriptors, buffers or memory (EMFILE,
			// ENFILE, ENOBUFS, ENOMEM) and the like: wait, as net/http
			// does, rather than spin or die.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed; retrying", "err", err, "backoff", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if s.sem != nil {
			select {
			case s.sem <- struct{}{}:
			default:
				if !s.track(nil) {
					nc.Close()
					return nil
				}
				go func() {
					defer s.wg.Done()
					s.refuse(nc)
				}()
				continue
			}
		}
		c := newConn(s, nc)
		if !s.track(c) {
			nc.Close()
			if s.sem != nil {
				<-s.sem
			}
			return nil
		}
		go func() {
			defer s.wg.Done()
			s.cfg.Metrics.ConnOpened()
			c.serve()
			s.cfg.Metrics.ConnClosed()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			if s.sem != nil {
				<-s.sem
			}
		}()
	}
}

// track counts a connection's goroutine in wg (and c, if not nil, in
// conns) unless a shutdown has begun: checked under mu, which Shutdown
// holds when it starts draining, so no Add can race its Wait.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining.Load() {
		return false
	}
	if c != nil {
		s.conns[c] = struct{}{}
	}
	s.wg.Add(1)
	return true
}

// Healthy reports a problem the proxy found with its configuration: a
// content-filter loop (loop.go). It suits metrics.All.
func (s *Server) Healthy() error { return s.loops.health() }

// refuse turns away a connection beyond MaxConns, the way Postfix's smtpd
// does when it has no process left: 421, then close.
func (s *Server) refuse(nc net.Conn) {
	s.cfg.Metrics.ConnRefused()
	s.log.Warn("too many connections; refusing", "client", nc.RemoteAddr().String(), "max_conns", s.cfg.MaxConns)
	nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	nc.Write([]byte("421 4.7.0 Too many connections, try again later\r\n"))
	nc.Close()
}

// Shutdown stops accepting, lets every connection finish its transaction in
// flight and closes each as soon as it is between transactions. When ctx
// ends first, the remaining connections are cut (their unfinished messages
// are not archived and the client retries them).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.conns {
		c.kick()
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
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// Cut without waiting on any client: the 421 goes only where it can
	// go at once (a write under s.mu could block Serve and the
	// connections' own clean-up for the whole --timeout).
	deadline := time.Now().Add(cutWrite)
	for _, c := range conns {
		c.cut("421 4.3.2 Service shutting down\r\n", deadline)
	}
	<-done
	return fmt.Errorf("proxy: shutdown: cut %d connections: %w", len(conns), ctx.Err())
}
