package smtpsink

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/internal/smtpwire"
)

// maxCommandLine bounds the part of a command line the server keeps; the
// rest of a longer line is read and thrown away, then the command is refused.
// RFC 5321 4.5.3.1.4 allows 512 octets plus extension parameters.
const maxCommandLine = 16 << 10

// errLineTooLong marks a command line longer than maxCommandLine.
var errLineTooLong = errors.New("command line too long")

// xforwardAttrs are the attributes the server advertises and accepts
// (Postfix XFORWARD_README).
var xforwardAttrs = []string{"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"}

// session is one SMTP connection.
type session struct {
	s    *Server
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	log  *slog.Logger

	helo     string
	esmtp    bool
	xforward map[string]string // since the end of the last transaction

	// The mail transaction; inTx is true after a successful MAIL.
	inTx       bool
	from       string
	mailParams []string
	rcpts      []Rcpt
}

func (c *session) run() error {
	c.reply(220, c.s.hostname()+" ESMTP smtpsink")
	for {
		// PIPELINING (RFC 2920 3.1): the client may send a whole group of
		// commands in one write and read the replies later. Flush only when
		// no more input is waiting, so replies to a group go out together and
		// a client waiting for a reply always gets it before we block.
		if c.r.Buffered() == 0 {
			if err := c.w.Flush(); err != nil {
				return err
			}
		}
		line, err := c.readLine()
		if errors.Is(err, errLineTooLong) {
			c.reply(500, "5.5.2 Error: command line too long")
			continue
		}
		if err != nil {
			return err
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		switch verb {
		case "HELO", "EHLO":
			c.cmdHello(verb, strings.TrimSpace(arg))
		case "XFORWARD":
			c.cmdXforward(arg)
		case "MAIL":
			c.cmdMail(arg)
		case "RCPT":
			c.cmdRcpt(arg)
		case "DATA":
			if err := c.cmdData(arg); err != nil {
				return err
			}
		case "RSET":
			c.resetTx()
			c.reply(250, "2.0.0 Ok")
		case "NOOP":
			c.reply(250, "2.0.0 Ok")
		case "VRFY":
			c.reply(252, "2.0.0 Cannot VRFY user, but will accept message")
		case "QUIT":
			c.reply(221, "2.0.0 Bye")
			return c.w.Flush()
		case "":
			c.reply(500, "5.5.2 Error: bad syntax")
		default:
			c.reply(502, "5.5.2 Error: command not recognized")
		}
	}
}

// readLine returns the next command line without its line end (LF or CRLF).
// It never holds more than maxCommandLine bytes of one line.
func (c *session) readLine() (string, error) {
	var line []byte
	tooLong := false
	for {
		frag, err := c.r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > maxCommandLine {
				tooLong, line = true, nil
			} else {
				line = append(line, frag...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			return "", err
		case tooLong:
			return "", errLineTooLong
		}
		s := string(line[:len(line)-1])
		return strings.TrimSuffix(s, "\r"), nil
	}
}

func (c *session) reply(code int, text string) {
	fmt.Fprintf(c.w, "%d %s\r\n", code, text)
}

func (c *session) resetTx() {
	c.inTx = false
	c.from = ""
	c.mailParams = nil
	c.rcpts = nil
	c.xforward = nil // Postfix resets XFORWARD attributes with the transaction
}

// cmdHello handles HELO and EHLO. Either one resets the transaction
// (RFC 5321 4.1.4).
func (c *session) cmdHello(verb, arg string) {
	if arg == "" {
		c.reply(501, "5.5.4 Syntax: "+verb+" hostname")
		return
	}
	c.resetTx()
	c.helo = arg
	c.esmtp = verb == "EHLO"
	host := c.s.hostname()
	if !c.esmtp {
		c.reply(250, host)
		return
	}
	ext := []string{
		host,
		"PIPELINING",
		"SIZE",
		"8BITMIME",
		"SMTPUTF8",
		"ENHANCEDSTATUSCODES",
		"DSN",
		"XFORWARD " + strings.Join(xforwardAttrs, " "),
	}
	for i, e := range ext {
		sep := "-"
		if i == len(ext)-1 {
			sep = " "
		}
		fmt.Fprintf(c.w, "250%s%s\r\n", sep, e)
	}
}

// cmdXforward records XFORWARD attributes (Postfix XFORWARD_README). Values
// are xtext (RFC 3461 4); they are stored decoded. Repeated commands add to
// the attributes until the transaction ends.
func (c *session) cmdXforward(arg string) {
	if c.inTx {
		c.reply(503, "5.5.1 Error: MAIL transaction in progress")
		return
	}
	fields := strings.Fields(arg)
	if len(fields) == 0 {
		c.reply(501, "5.5.4 Syntax: XFORWARD attribute=value...")
		return
	}
	attrs := make(map[string]string, len(fields))
	for _, f := range fields {
		name, value, ok := strings.Cut(f, "=")
		name = strings.ToUpper(name)
		if !ok || !knownXforward(name) {
			c.reply(501, "5.5.4 Bad XFORWARD attribute name: "+name)
			return
		}
		attrs[name] = xtextDecode(value)
	}
	if c.xforward == nil {
		c.xforward = make(map[string]string)
	}
	for k, v := range attrs {
		c.xforward[k] = v
	}
	c.reply(250, "2.0.0 Ok")
}

func knownXforward(name string) bool {
	for _, a := range xforwardAttrs {
		if a == name {
			return true
		}
	}
	return false
}

// xtextDecode decodes "+XX" hex escapes; a malformed value is kept as sent.
func xtextDecode(s string) string {
	if !strings.Contains(s, "+") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return s
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return s
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String()
}

func (c *session) cmdMail(arg string) {
	if c.helo == "" {
		c.reply(503, "5.5.1 Error: send HELO/EHLO first")
		return
	}
	if c.inTx {
		c.reply(503, "5.5.1 Error: nested MAIL command")
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		c.reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
		return
	}
	addr, params, ok := parsePath(rest)
	if !ok {
		c.reply(501, "5.1.7 Bad sender address syntax")
		return
	}
	c.inTx = true
	c.from = addr
	c.mailParams = params
	c.reply(250, "2.1.0 Ok")
}

func (c *session) cmdRcpt(arg string) {
	if !c.inTx {
		c.reply(503, "5.5.1 Error: need MAIL command")
		return
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		c.reply(501, "5.5.4 Syntax: RCPT TO:<address>")
		return
	}
	addr, params, ok := parsePath(rest)
	if !ok || addr == "" {
		c.reply(501, "5.1.3 Bad recipient address syntax")
		return
	}
	if c.s.RejectRcpt != nil && c.s.RejectRcpt(addr) {
		c.log.Info("reject", "rcpt", addr)
		c.reply(550, "5.1.1 <"+addr+">: Recipient address rejected: User unknown")
		return
	}
	c.rcpts = append(c.rcpts, Rcpt{Addr: addr, Params: params})
	c.reply(250, "2.1.5 Ok")
}

// cmdData receives the message into a temporary file in Dir and commits it.
// A returned error ends the connection.
func (c *session) cmdData(arg string) error {
	switch {
	case arg != "":
		c.reply(501, "5.5.4 Syntax: DATA")
		return nil
	case !c.inTx:
		c.reply(503, "5.5.1 Error: need RCPT command")
		return nil
	case len(c.rcpts) == 0:
		c.reply(554, "5.5.1 Error: no valid recipients")
		return nil
	}
	c.reply(354, "End data with <CR><LF>.<CR><LF>")
	// DATA ends a pipelined group (RFC 2920 3.1): the client now waits.
	if err := c.w.Flush(); err != nil {
		return err
	}

	start := time.Now()
	tmp, err := os.CreateTemp(c.s.Dir, ".incoming-*")
	if err != nil {
		c.log.Error("store", "err", err)
		// Still read to the end of the data, or its lines would be taken
		// for commands.
		if _, err := smtpwire.ReadData(c.r, io.Discard); err != nil {
			return err
		}
		c.resetTx()
		c.reply(451, "4.3.0 Error: cannot store message")
		return nil
	}
	bw := bufio.NewWriterSize(tmp, 64<<10)
	ew := &stickyWriter{w: bw}
	n, rerr := smtpwire.ReadData(c.r, ew)
	if ew.err == nil {
		ew.err = bw.Flush()
	}
	if cerr := tmp.Close(); ew.err == nil {
		ew.err = cerr
	}
	if rerr != nil {
		os.Remove(tmp.Name())
		return rerr
	}
	msg := Message{
		Time:       start.UTC(),
		RemoteAddr: c.conn.RemoteAddr().String(),
		Helo:       c.helo,
		XForward:   c.xforward,
		MailFrom:   c.from,
		MailParams: c.mailParams,
		Rcpts:      c.rcpts,
		Size:       n,
	}
	c.resetTx()
	if ew.err == nil {
		ew.err = c.s.commit(tmp.Name(), &msg)
	}
	if ew.err != nil {
		os.Remove(tmp.Name())
		c.log.Error("store", "err", ew.err)
		c.reply(451, "4.3.0 Error: cannot store message")
		return nil
	}
	c.log.Info("queued", "id", msg.ID, "file", msg.Path, "from", msg.MailFrom,
		"rcpts", len(msg.Rcpts), "size", msg.Size)
	c.reply(250, "2.0.0 Ok: queued as "+msg.ID)
	return nil
}

// stickyWriter remembers the first write error and then discards, so that
// the DATA reader keeps consuming the message to its end even when the disk
// fails: the rest of the message must not be taken for commands.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (w *stickyWriter) Write(p []byte) (int, error) {
	if w.err == nil {
		_, w.err = w.w.Write(p)
	}
	return len(p), nil
}

// cutPrefixFold is strings.CutPrefix, ignoring ASCII case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// parsePath splits `<address> PARAM=value ...` (RFC 5321 4.1.2 Path plus
// Mail-parameters / Rcpt-parameters). It is lenient like Postfix: a space
// after the colon and an address without angle brackets are accepted.
// The address is returned without the brackets; "<>" gives "".
func parsePath(s string) (addr string, params []string, ok bool) {
	s = strings.TrimLeft(s, " ")
	if s == "" {
		return "", nil, false
	}
	if s[0] != '<' {
		addr, rest, _ := strings.Cut(s, " ")
		return addr, strings.Fields(rest), true
	}
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQuote:
			i++
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == '>' && !inQuote:
			rest := s[i+1:]
			if rest != "" && rest[0] != ' ' {
				return "", nil, false
			}
			return s[1:i], strings.Fields(rest), true
		}
	}
	return "", nil, false
}
