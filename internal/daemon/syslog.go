package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// DevLog is the local syslog socket: rsyslog's, or journald's
// (/run/systemd/journal/dev-log, linked there) on systemd machines.
const DevLog = "/dev/log"

// Syslog facility and severities (RFC 5424, section 6.2.1).
const (
	facilityMail = 2
	sevErr       = 3
	sevWarning   = 4
	sevInfo      = 6
	sevDebug     = 7
)

// severity maps a slog level to a syslog severity.
func severity(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return sevErr
	case l >= slog.LevelWarn:
		return sevWarning
	case l >= slog.LevelInfo:
		return sevInfo
	}
	return sevDebug
}

// syslogWriter sends each line to the local syslog socket in the BSD
// format that syslog(3) uses for /dev/log (RFC 3164 section 4.1, without
// the host name, which the local daemon adds):
//
//	<PRI>Mmm dd hh:mm:ss TAG[PID]: MESSAGE
//
// with facility mail, so that rsyslog's default rules put the lines in
// /var/log/mail.log next to Postfix's. log/syslog does the same, but
// only on a socket it finds itself; this one dials a given path, which the
// tests point at their own listener.
type syslogWriter struct {
	path     string
	tag      string
	pid      int
	fallback io.Writer // gets a line that cannot be sent

	mu     sync.Mutex
	conn   net.Conn
	stream bool       // conn is a stream socket: messages need line ends
	level  slog.Level // of the record being written (set by syslogHandler)
}

// dialSyslog connects to the syslog socket at path: a datagram socket
// (journald, rsyslog's default) or, failing that, a stream socket.
func dialSyslog(path, tag string, fallback io.Writer) (*syslogWriter, error) {
	w := &syslogWriter{path: path, tag: tag, pid: os.Getpid(), fallback: fallback}
	if err := w.connect(); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *syslogWriter) connect() error {
	var errs []error
	for _, network := range []string{"unixgram", "unix"} {
		c, err := net.DialTimeout(network, w.path, 5*time.Second)
		if err == nil {
			w.conn, w.stream = c, network == "unix"
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("syslog: cannot connect to %s (no syslog daemon? use --log-target stderr): %w", w.path, errors.Join(errs...))
}

// Write sends p, one log record, as one syslog message at w.level. A
// failed send is retried once on a new connection (the syslog daemon may
// have restarted); if that fails too, the line goes to the fallback
// writer, so that it is never lost silently.
func (w *syslogWriter) Write(p []byte) (int, error) {
	msg := p
	for len(msg) > 0 && msg[len(msg)-1] == '\n' {
		msg = msg[:len(msg)-1]
	}
	line := fmt.Appendf(nil, "<%d>%s %s[%d]: %s", facilityMail*8+severity(w.level),
		time.Now().Format(time.Stamp), w.tag, w.pid, msg)
	err := w.send(line)
	if err != nil {
		if w.conn != nil {
			w.conn.Close()
			w.conn = nil
		}
		if err = w.connect(); err == nil {
			err = w.send(line)
		}
	}
	if err != nil {
		fmt.Fprintf(w.fallback, "%s[%d]: %v; the line was: %s\n", w.tag, w.pid, err, msg)
	}
	return len(p), nil
}

func (w *syslogWriter) send(line []byte) error {
	if w.conn == nil {
		return errors.New("syslog: not connected")
	}
	if w.stream {
		line = append(line[:len(line):len(line)], '\n')
	}
	w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := w.conn.Write(line)
	return err
}

func (w *syslogWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn == nil {
		return nil
	}
	err := w.conn.Close()
	w.conn = nil
	return err
}

// syslogHandler formats records with the inner handler (text or JSON,
// writing to w) and hands the record's level to w, which needs it for the
// message's severity. slog's handlers write each record with one Write.
type syslogHandler struct {
	inner slog.Handler
	w     *syslogWriter
}

func (h *syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.level = r.Level
	return h.inner.Handle(ctx, r)
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &syslogHandler{inner: h.inner.WithAttrs(as), w: h.w}
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	return &syslogHandler{inner: h.inner.WithGroup(name), w: h.w}
}
