package proxy

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/metrics"
	"github.com/postfix-archive/mailarchive/internal/smtpwire"
)

// message is one DATA phase on its way to the archive.
type message struct {
	w       archive.Writer // nil when it could not be created
	bw      *bufio.Writer  // buffers writes to w during DATA; pooled
	head    headWriter     // the first bytes of the content (loop check)
	archErr error          // why it is not being archived
	start   time.Time
	syncDur time.Duration // time spent making the .eml durable
}

// headWriter keeps the first maxHead bytes written through it.
type headWriter struct {
	w    io.Writer // nil: only keep the head
	head []byte
}

const maxHead = 8 << 10

func (h *headWriter) Write(p []byte) (int, error) {
	if n := min(len(p), maxHead-len(h.head)); n > 0 {
		h.head = append(h.head, p[:n]...)
	}
	if h.w == nil {
		return len(p), nil
	}
	return h.w.Write(p)
}

// relayData relays the message after the server's 354, copying it
// dot-unstuffed into the archive. The end-of-data line reaches the server
// only after the archived copy is on disk, so the server never accepts a
// message the archive does not hold (unless the policy says pass).
func (c *conn) relayData() bool {
	msg := &message{start: time.Now()}
	u := smtpwire.Unstuffer{Raw: c.sw, Content: &msg.head}
	w, err := c.s.cfg.Store.Create()
	if err != nil {
		msg.archErr = err
	} else {
		msg.w = w
		msg.bw = archiveBufs.Get().(*bufio.Writer)
		msg.bw.Reset(w)
		msg.head.w = msg.bw
	}
	for {
		if c.cr.Buffered() == 0 {
			if err := c.fill(1); err != nil {
				// The client is gone mid-message; the server drops its
				// partial copy when we close.
				msg.abort(c.log)
				var we serverWriteError
				switch {
				case errors.As(err, &we):
					c.failServer(we.err)
				case errors.Is(err, os.ErrDeadlineExceeded):
					c.fail("421 4.4.2 Archiving proxy: timeout exceeded\r\n", "client idle timeout during DATA")
				default:
					c.fail("", "client lost during DATA: "+err.Error())
				}
				return false
			}
		}
		buf, _ := c.cr.Peek(c.cr.Buffered())
		n, done, err := u.Feed(buf)
		c.cr.Discard(n)
		if errors.Is(err, smtpwire.ErrAmbiguousEnd) {
			// Whether the server ends the message here depends on its
			// line_length_limit: never let it see this LF. Closing the
			// server connection mid-DATA makes it drop the message.
			msg.abort(c.log)
			c.fail("554 5.6.0 Archiving proxy: end-of-data line with too many CRs, message refused\r\n",
				"end-of-data line the server may frame differently")
			return false
		}
		if err != nil {
			msg.abort(c.log)
			c.failServer(err)
			return false
		}
		if done {
			break
		}
	}
	env := c.envelope(nil)
	if id, loop := c.s.loops.check(msg.head.head, env); loop {
		msg.abort(c.log)
		c.s.cfg.Metrics.MessageDone(metrics.OutcomeTempfailed, 0)
		env.Outcome = archive.OutcomeTempfailed
		c.log.Error("CONFIGURATION ERROR: content-filter loop: this message came back through the proxy after the server queued it; "+
			"deferred. --server must be the reinjection smtpd that does not apply content_filter",
			append(logAttrs(env, msg, 0), "looped_queue_id", id, "server", c.s.cfg.Server)...)
		c.fail("451 4.4.6 Archiving proxy: mail loop (message came back after the server queued it as "+id+"), try again later\r\n", "")
		return false
	}
	if msg.w != nil {
		t0 := time.Now()
		err := msg.bw.Flush()
		msg.releaseBuf()
		if err == nil {
			// Everything but the server's answer is known: make it
			// durable with the bytes, so a commit that fails after the
			// server took the message leaves recovery the envelope.
			err = msg.w.Prepare(env)
		}
		msg.syncDur = time.Since(t0)
		if err != nil {
			msg.archErr = err
			msg.abort(c.log)
		}
	}
	if msg.archErr != nil {
		c.s.cfg.Metrics.ArchiveFailed(msg.archErr)
		if c.s.cfg.OnArchiveError == archive.PolicyTempfail {
			c.s.cfg.Metrics.MessageDone(metrics.OutcomeTempfailed, 0)
			env.Outcome = archive.OutcomeTempfailed
			c.log.Error("message not archived; withheld from the server, client told to retry",
				append(logAttrs(env, msg, 0), "to", acceptedRcpts(env), "err", msg.archErr, "policy", "tempfail")...)
			c.fail("451 4.3.0 Archive unavailable, message not accepted, try again later\r\n", "")
			return false
		}
		c.log.Error("MESSAGE NOT ARCHIVED; passed to the server because --on-archive-error=pass",
			append(logAttrs(env, msg, 0), "to", acceptedRcpts(env), "err", msg.archErr, "policy", "pass")...)
	}
	if _, err := c.sw.Write(u.EndLine()); err != nil {
		msg.abort(c.log)
		c.failServer(err)
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
	m.head.w = nil
}

// abort drops the archive copy of a message the server will not get (or
// refused). A failure to remove it leaves files for the recovery sweep:
// logged, as they will turn up as recovered items.
func (m *message) abort(log *slog.Logger) {
	m.releaseBuf()
	if m.w != nil {
		if err := m.w.Abort(); err != nil {
			log.Error("cannot remove the archive copy of a message the server did not take", "id", m.w.ID(), "err", err)
		}
		m.w = nil
	}
}
