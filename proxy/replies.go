package proxy

import (
	"strconv"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/metrics"
	"github.com/postfix-archive/mailarchive/internal/smtpwire"
)

// txn is the MAIL transaction as the server accepted it.
type txn struct {
	client   archive.Client
	mailFrom *archive.MailFrom
	rcpts    []archive.Rcpt
}

// relayReplies is the server-to-client side: it takes the pending commands
// in order, reads each one's reply, records what it means for the
// transaction, and relays it. It alone touches helo, xfwd and txn.
func (c *conn) relayReplies() {
	for p := range c.q {
		if p.kind == kLocal {
			c.relayReply(p, p.local)
			continue
		}
		c.server.SetReadDeadline(time.Now().Add(c.s.cfg.Timeout))
		if c.sr == nil {
			c.sr = getReader(serverReadBuf, c.server)
		}
		rep, err := smtpwire.ReadReply(c.sr, maxReply)
		if err != nil {
			if p.kind == kDataEnd {
				c.finish(p.msg, nil)
			}
			if p.done != nil {
				close(p.done)
			}
			c.fail("421 4.4.2 Archiving proxy: downstream connection lost\r\n", "read from server: "+err.Error())
			return
		}
		c.apply(p, &rep)
		c.relayReply(p, rep.Bytes())
		if p.done != nil {
			p.done <- rep
		}
		if rep.Code == 421 || rep.Code == 221 {
			// The server is closing (421, or 221 after QUIT); so do we,
			// after relaying its word.
			c.writeClient(nil)
			why := "server sent 421"
			if rep.Code == 221 {
				why = ""
			}
			c.fail("", why)
			return
		}
		c.releaseServerReader()
	}
}

func (c *conn) relayReply(p *pending, b []byte) {
	c.cwMu.Lock()
	c.client.SetWriteDeadline(time.Now().Add(c.s.cfg.Timeout))
	_, err := c.cw.Write(b)
	// Flush when no further reply is at hand (PIPELINING, RFC 2920), and
	// always before a sync point's command reader goes on.
	if err == nil && (p.done != nil || c.sr == nil || c.sr.Buffered() == 0 || len(c.q) == 0) {
		err = c.cw.Flush()
	}
	c.cwMu.Unlock()
	c.npending.Add(-1)
	if err != nil {
		// The client is gone, but replies still decide the outcome of
		// messages the server has: keep reading them.
		c.log.Debug("write to client failed", "err", err)
	}
}

// apply records what a reply means for the session; it may rewrite the
// reply (EHLO).
func (c *conn) apply(p *pending, rep *smtpwire.Reply) {
	ok := rep.Code/100 == 2
	switch p.kind {
	case kHelo, kEhlo:
		if p.kind == kEhlo {
			*rep = rep.WithoutExtensions("STARTTLS", "CHUNKING")
		}
		if ok {
			c.helo = p.cmd.Arg()
			c.endTxn()
		}
	case kXforward:
		if ok {
			for k, v := range smtpwire.ParseXforward(p.cmd.Args) {
				c.xfwd[k] = v
			}
		}
	case kMail:
		if ok {
			addr, params, err := p.cmd.Path("FROM:")
			if err != nil {
				addr = p.cmd.Arg() // the server took it; keep what was sent
			}
			c.txn = &txn{client: c.xforwardClient(), mailFrom: &archive.MailFrom{Addr: addr, Params: params}}
			c.inTxn.Store(true)
		}
	case kRcpt:
		if c.txn != nil {
			addr, params, err := p.cmd.Path("TO:")
			if err != nil {
				addr = p.cmd.Arg()
			}
			c.txn.rcpts = append(c.txn.rcpts, archive.Rcpt{Addr: addr, Params: params, Accepted: ok, Reply: rep.Text()})
		}
	case kRset:
		if ok {
			c.endTxn()
		}
	case kDataEnd:
		c.finish(p.msg, rep)
		c.endTxn()
	}
}

// endTxn closes the transaction. Postfix's smtp client sends XFORWARD anew
// before each MAIL, so its attributes end with the transaction too.
func (c *conn) endTxn() {
	c.txn = nil
	clear(c.xfwd)
	c.inTxn.Store(false)
}

// xforwardClient is the original client as XFORWARD described it.
func (c *conn) xforwardClient() archive.Client {
	port, _ := strconv.Atoi(c.xfwd["PORT"])
	return archive.Client{
		Addr:   c.xfwd["ADDR"],
		Port:   port,
		Name:   c.xfwd["NAME"],
		Helo:   c.xfwd["HELO"],
		Proto:  c.xfwd["PROTO"],
		Ident:  c.xfwd["IDENT"],
		Source: c.xfwd["SOURCE"],
	}
}

// outcome maps the server's final reply to the envelope's outcome; no reply
// at all (the server died after the message) is "unknown".
func outcome(rep *smtpwire.Reply) string {
	if rep == nil {
		return archive.OutcomeUnknown
	}
	switch rep.Code / 100 {
	case 2:
		return archive.OutcomeAccepted
	case 4:
		return archive.OutcomeTempfailed
	case 5:
		return archive.OutcomeRejected
	}
	return archive.OutcomeUnknown
}

// envelope is the message's envelope as far as it is known: the final
// reply rep may be nil (not yet, or never, received).
func (c *conn) envelope(rep *smtpwire.Reply) *archive.Envelope {
	env := &archive.Envelope{Source: archive.SourceProxy, Peer: c.peer, Helo: c.helo, Outcome: outcome(rep)}
	if c.txn != nil {
		if !c.txn.client.IsZero() {
			cl := c.txn.client
			env.Client = &cl
		}
		env.MailFrom = c.txn.mailFrom
		env.RcptTo = c.txn.rcpts
	}
	if rep != nil {
		env.Reply = rep.Text()
		env.QueueID = rep.QueueID()
	}
	return env
}

// logAttrs are the fields of a message's log lines, named alike at every
// hook point: id (archive ID), queue_id (the server's, from its reply;
// none for a message the server never got),
// orig_queue_id (the queue ID the message had before the content filter,
// from XFORWARD IDENT), outcome, from, rcpts_accepted, rcpts_refused.
func logAttrs(env *archive.Envelope, m *message, size int64) []any {
	var attrs []any
	if m.w != nil {
		attrs = append(attrs, "id", m.w.ID())
	}
	if env.QueueID != "" {
		attrs = append(attrs, "queue_id", env.QueueID)
	}
	if env.Client != nil {
		if env.Client.Ident != "" {
			attrs = append(attrs, "orig_queue_id", env.Client.Ident)
		}
		if env.Client.Addr != "" {
			attrs = append(attrs, "orig_client", env.Client.Addr)
		}
	}
	attrs = append(attrs, "outcome", env.Outcome)
	if env.MailFrom != nil {
		attrs = append(attrs, "from", env.MailFrom.Addr)
	}
	acc := 0
	for _, r := range env.RcptTo {
		if r.Accepted {
			acc++
		}
	}
	attrs = append(attrs, "rcpts_accepted", acc, "rcpts_refused", len(env.RcptTo)-acc)
	if size > 0 {
		attrs = append(attrs, "size", size)
	}
	return append(attrs, "duration", time.Since(m.start).Round(time.Millisecond))
}

// acceptedRcpts lists the accepted recipients, for the lines of a message
// the server never got (no queue ID of its own to look up).
func acceptedRcpts(env *archive.Envelope) string {
	var b strings.Builder
	for _, r := range env.RcptTo {
		if r.Accepted {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(r.Addr)
		}
	}
	return b.String()
}

// finish decides the fate of a message's archive copy once the server has
// answered it (rep), or could not (nil), and logs the message's one line.
func (c *conn) finish(m *message, rep *smtpwire.Reply) {
	env := c.envelope(rep)
	out := env.Outcome
	if out == archive.OutcomeAccepted && env.QueueID != "" {
		c.s.loops.relayed(env)
	}
	attrs := func(size int64) []any {
		a := logAttrs(env, m, size)
		if rep != nil && out != archive.OutcomeAccepted {
			a = append(a, "reply", env.Reply)
		}
		return a
	}

	switch {
	case m.w == nil:
		c.s.cfg.Metrics.MessageDone(metrics.OutcomeNotArchived, 0)
		c.log.Error("message relayed WITHOUT archive copy", append(attrs(0), "err", m.archErr)...)
		return
	case out == archive.OutcomeRejected || out == archive.OutcomeTempfailed:
		if !c.s.cfg.KeepRejected {
			c.s.cfg.Metrics.MessageDone(out, 0)
			size := m.w.Size()
			m.abort(c.log)
			c.log.Info("message refused by the server; not archived", attrs(size)...)
			return
		}
	}
	size := m.w.Size()
	t0 := time.Now()
	if err := m.w.Commit(env); err != nil {
		c.s.cfg.Metrics.ArchiveFailed(err)
		if out == archive.OutcomeAccepted || out == archive.OutcomeUnknown {
			c.s.cfg.Metrics.MessageDone(metrics.OutcomeNotArchived, 0)
			// The server may have the message and its bytes are already
			// synced under tmp/: leave them for the recovery sweep rather
			// than lose them.
			a := attrs(size)
			if cerr := m.w.Close(); cerr != nil {
				a = append(a, "close_err", cerr)
			}
			c.log.Error("archive commit failed after the server took the message; bytes kept under tmp/ for recovery",
				append(a, "err", err)...)
			return
		}
		c.s.cfg.Metrics.MessageDone(out, 0)
		a := attrs(size)
		m.abort(c.log)
		c.log.Error("archive commit failed", append(a, "err", err)...)
		return
	}
	c.s.cfg.Metrics.CommitObserved(m.syncDur + time.Since(t0))
	c.s.cfg.Metrics.MessageDone(out, size)
	c.log.Info("message archived", attrs(size)...)
}
