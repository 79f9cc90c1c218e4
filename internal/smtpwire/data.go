// Package smtpwire holds the SMTP wire-format pieces that the proxy and the
// test sink share: DATA framing and dot-unstuffing, xtext, command and reply
// parsing. Everything here keeps bytes exactly as sent.
package smtpwire

import (
	"bufio"
	"bytes"
	"io"
)

// Unstuffer is the DATA state machine (RFC 5321 section 4.5.2).
//
// It frames lines the way Postfix's smtpd does (smtp_get): a line ends at
// LF, with an optional CR before it, so a line that is "." followed by LF or
// CRLF ends the data, and a line that starts with "." has that dot removed.
// Matching the server's framing exactly matters: a proxy that ends DATA
// somewhere else than the server would relay the rest as commands (SMTP
// smuggling). Line ends, bare CR, bare LF, NUL and 8-bit bytes are kept as
// sent; no line is ever held in memory.
//
// Raw, if set, receives the input as sent minus the end-of-data line, which
// is kept back (EndLine) so the caller decides when the server sees it. A
// line-start "." or ".\r" is held until the next byte tells whether it
// starts the end line, so at most two bytes are ever held.
type Unstuffer struct {
	Content io.Writer // receives the unstuffed content
	Raw     io.Writer // optional: receives the raw input except the end line

	state      int
	held       []byte
	end        []byte
	contentErr error
	rawErr     error
}

const (
	stStart = iota // at the start of a line
	stMid          // inside a line
	stDot          // line so far is "."
	stDotCR        // line so far is ".\r"
)

// Reset prepares u for a new DATA phase, keeping its writers.
func (u *Unstuffer) Reset() {
	u.state, u.held, u.end, u.contentErr, u.rawErr = stStart, u.held[:0], nil, nil, nil
}

// Feed processes p. It returns how many bytes of p belong to the data (the
// end line included) and whether the end line was seen; bytes after the end
// line are not consumed. err is the first error of Raw: a caller relaying
// the data must stop. Errors of Content are remembered (ContentErr) but do
// not stop the parsing, so the framing stays right whatever happens to the
// copy.
func (u *Unstuffer) Feed(p []byte) (n int, done bool, err error) {
	i := 0
	for i < len(p) {
		switch u.state {
		case stStart:
			if p[i] == '.' {
				u.held = append(u.held[:0], '.')
				u.state = stDot
				i++
				continue
			}
			u.state = stMid
		case stMid:
			j := bytes.IndexByte(p[i:], '\n')
			if j < 0 {
				u.emit(p[i:], p[i:])
				i = len(p)
				continue
			}
			u.emit(p[i:i+j+1], p[i:i+j+1])
			i += j + 1
			u.state = stStart
		case stDot:
			switch p[i] {
			case '\n':
				u.end = append(u.held, '\n')
				u.held = nil
				u.state = stStart
				return i + 1, true, u.rawErr
			case '\r':
				u.held = append(u.held, '\r')
				u.state = stDotCR
				i++
			default:
				// A stuffed dot: the server sees it, the content does not.
				u.emit(u.held, nil)
				u.held = u.held[:0]
				u.state = stMid
			}
		case stDotCR:
			if p[i] == '\n' {
				u.end = append(u.held, '\n')
				u.held = nil
				u.state = stStart
				return i + 1, true, u.rawErr
			}
			// ".\r" then something else: Postfix strips only a CR before
			// LF, so this line is not the end; its dot is unstuffed.
			u.emit(u.held, u.held[1:])
			u.held = u.held[:0]
			u.state = stMid
		}
	}
	return i, false, u.rawErr
}

func (u *Unstuffer) emit(raw, content []byte) {
	if u.Raw != nil && u.rawErr == nil && len(raw) > 0 {
		_, u.rawErr = u.Raw.Write(raw)
	}
	if u.Content != nil && u.contentErr == nil && len(content) > 0 {
		_, u.contentErr = u.Content.Write(content)
	}
}

// EndLine returns the end-of-data line as sent (".\r\n" or ".\n") once Feed
// has reported done.
func (u *Unstuffer) EndLine() []byte { return u.end }

// ContentErr returns the first error of the Content writer.
func (u *Unstuffer) ContentErr() error { return u.contentErr }

// Pending reports whether Feed has consumed bytes that it has not yet passed
// to Raw (a line-start "." or ".\r" awaiting the next byte).
func (u *Unstuffer) Pending() bool { return len(u.held) > 0 }

// ReadData reads DATA content from r up to and including the end-of-data
// line, writing the unstuffed content to w. It returns the number of content
// bytes written. End of input before the end line is io.ErrUnexpectedEOF.
func ReadData(r *bufio.Reader, w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	u := Unstuffer{Content: cw}
	for {
		if r.Buffered() == 0 {
			if _, err := r.Peek(1); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return cw.n, err
			}
		}
		buf, _ := r.Peek(r.Buffered())
		n, done, _ := u.Feed(buf)
		r.Discard(n)
		if done {
			// Feed keeps framing after a Content error, so the rest of
			// the session is never taken as data.
			return cw.n, u.ContentErr()
		}
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
