package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/postfix-archive/mailarchive/internal/smtpwire"
)

// The client-to-server side: it reads the client's commands, frames them
// exactly as Postfix's smtpd does (smtpwire.ParseCommand), relays them and
// queues what each reply is to be matched with (replies.go).

// Replies the proxy gives itself, never relaying the command.
var (
	replyNoTLS    = []byte("454 4.7.0 TLS not available through the archiving proxy\r\n")
	replyBDAT     = []byte("502 5.5.1 BDAT not available through the archiving proxy; use DATA\r\n")
	replyBDATArg  = []byte("501 5.5.4 Syntax: BDAT size [LAST]\r\n")
	replyUnsure   = []byte("500 5.5.2 Archiving proxy: command word not within the first 512 bytes; not relayed\r\n")
	replyAddrForm = []byte("501 5.1.7 Archiving proxy: address form not supported, use <local-part@domain>\r\n")
)

// pathForm reports a MAIL or RCPT whose address is in a form Postfix reads
// with its RFC 822 parser (smtpwire.ErrAddressForm).
func pathForm(p *pending) bool {
	prefix := map[kind]string{kMail: "FROM:", kRcpt: "TO:"}[p.kind]
	if prefix == "" {
		return false
	}
	_, _, err := p.cmd.Path(prefix)
	return errors.Is(err, smtpwire.ErrAddressForm)
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

// pushLocal queues a reply the proxy gives itself.
func (c *conn) pushLocal(reply []byte) bool {
	return c.push(&pending{kind: kLocal, local: reply})
}

// await flushes the commands and waits for the reply of a sync point.
func (c *conn) await(p *pending) (smtpwire.Reply, bool) {
	if err := c.sw.Flush(); err != nil {
		c.failServer(err)
		return smtpwire.Reply{}, false
	}
	select {
	case rep, ok := <-p.done:
		return rep, ok
	case <-c.closed:
		return smtpwire.Reply{}, false
	}
}

// kinds maps the verbs whose replies the proxy records.
var kinds = map[string]kind{
	"HELO": kHelo, "EHLO": kEhlo, "XFORWARD": kXforward,
	"MAIL": kMail, "RCPT": kRcpt, "DATA": kData, "RSET": kRset, "AUTH": kAuth,
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
		if cmd.Unsure {
			// A server with a smaller line_length_limit could read
			// another verb in this line than a larger one: refuse it.
			if !c.skipLine(line, complete) || !c.pushLocal(replyUnsure) {
				return
			}
			continue
		}
		switch cmd.Verb {
		case "STARTTLS":
			// Not offered (we remove it from EHLO): a TLS session would
			// hide the message from the archive.
			if !c.skipLine(line, complete) || !c.pushLocal(replyNoTLS) {
				return
			}
			continue
		case "BDAT":
			if !c.refuseBDAT(line, complete, cmd) {
				return
			}
			continue
		}
		p := &pending{kind: kinds[cmd.Verb], cmd: cmd}
		if pathForm(p) {
			// Postfix would take this address but read it otherwise
			// than we can: refuse it rather than record another.
			if !c.skipLine(line, complete) || !c.pushLocal(replyAddrForm) {
				return
			}
			continue
		}
		switch p.kind {
		case kData:
			p.done = make(chan smtpwire.Reply, 1)
		case kAuth:
			p.done = make(chan smtpwire.Reply, 1)
			p.cmd = smtpwire.Command{Verb: "AUTH"} // never keep credentials
		}
		if !c.push(p) || !c.relayLine(line, complete) {
			return
		}
		switch p.kind {
		case kData:
			rep, ok := c.await(p)
			if !ok || rep.Code == 354 && !c.relayData() {
				return
			}
		case kAuth:
			if !c.relayAuth(p) {
				return
			}
		}
	}
}

// endCommands handles the end of the client's input.
func (c *conn) endCommands(err error) {
	var we serverWriteError
	switch {
	case errors.As(err, &we):
		c.failServer(we.err)
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
			c.failServer(err)
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
// DATA, so only a client that ignores EHLO gets here. The server never
// sees the command, so only our own framing of the chunk matters.
func (c *conn) refuseBDAT(line []byte, complete bool, cmd smtpwire.Command) bool {
	if !c.skipLine(line, complete) {
		return false
	}
	var size int64 = -1
	if len(cmd.Args) > 0 {
		size, _ = strconv.ParseInt(cmd.Args[0], 10, 64)
	}
	if size < 0 {
		return c.pushLocal(replyBDATArg)
	}
	for size > 0 {
		if err := c.fill(1); err != nil {
			c.endCommands(err)
			return false
		}
		n, _ := c.cr.Discard(int(min(size, int64(c.cr.Buffered()))))
		size -= int64(n)
	}
	return c.pushLocal(replyBDAT)
}
