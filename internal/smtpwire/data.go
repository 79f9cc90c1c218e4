// Package smtpwire holds the SMTP wire-format pieces that the proxy and the
// test sink share: DATA framing and dot-unstuffing, xtext, command and reply
// parsing. Everything here keeps bytes exactly as sent.
package smtpwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Unstuffer is the DATA state machine (RFC 5321 section 4.5.2).
//
// It frames lines the way Postfix 3.7's smtpd does (smtp_get and the DATA
// loop in smtpd.c): a line ends at LF and every CR right before that LF is
// dropped, so a line of "." followed by any number of CRs and an LF ends
// the data, and a line that starts with "." has that dot removed. Matching
// the server's framing exactly matters: a proxy that ends DATA somewhere
// else than the server would relay the rest as commands (SMTP smuggling).
//
// One form depends on the server's line_length_limit: Postfix reads at most
// that many bytes of a line at once, so "." with more CRs than the limit
// before the LF is content to it. Up to MinLineLimit-1 CRs end the data on
// every Postfix; with more, Feed returns ErrAmbiguousEnd without consuming
// the LF, and the caller must not let the server see it.
//
// Line ends, bare CR, bare LF, NUL and 8-bit bytes are kept as sent; no
// line is ever held in memory beyond a line-start "." and its CRs.
//
// Raw, if set, receives the input as sent minus the end-of-data line, which
// is kept back (EndLine) so the caller decides when the server sees it.
type Unstuffer struct {
	Content io.Writer // receives the unstuffed content
	Raw     io.Writer // optional: receives the raw input except the end line

	state      int
	held       []byte // a line-start "." and the CRs after it
	end        []byte
	contentErr error
	rawErr     error
}

const (
	stStart  = iota // at the start of a line
	stMid           // inside a line
	stDot           // line so far is "." and zero or more CRs (held)
	stDotCRs        // line so far is "." and MinLineLimit or more CRs
)

// ErrAmbiguousEnd reports a "." line with so many CRs before its LF that
// whether it ends the data depends on the server's line_length_limit.
var ErrAmbiguousEnd = errors.New("smtp: end-of-data line with too many CRs: framing depends on the server's line_length_limit")

// Feed processes p. It returns how many bytes of p belong to the data (the
// end line included) and whether the end line was seen; bytes after the end
// line are not consumed. err is the first error of Raw (a caller relaying
// the data must stop) or ErrAmbiguousEnd. Errors of Content are remembered
// (ContentErr) but do not stop the parsing, so the framing stays right
// whatever happens to the copy.
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
				i++
				if len(u.held) > MinLineLimit {
					// Too long to hold: pass it on as content; an LF
					// still to come makes it ambiguous.
					u.emit(u.held, u.held[1:])
					u.held = u.held[:0]
					u.state = stDotCRs
				}
			default:
				// A stuffed dot: the server sees it, the content does
				// not. The CRs after it are content: Postfix drops only
				// CRs right before an LF.
				u.emit(u.held, u.held[1:])
				u.held = u.held[:0]
				u.state = stMid
			}
		case stDotCRs:
			switch p[i] {
			case '\n':
				return i, false, ErrAmbiguousEnd
			case '\r':
				u.emit(p[i:i+1], p[i:i+1])
				i++
			default:
				u.state = stMid
			}
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

// EndLine returns the end-of-data line as sent ("." and its CRs and LF)
// once Feed has reported done.
func (u *Unstuffer) EndLine() []byte { return u.end }

// ContentErr returns the first error of the Content writer.
func (u *Unstuffer) ContentErr() error { return u.contentErr }

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
		n, done, err := u.Feed(buf)
		r.Discard(n)
		if err != nil {
			return cw.n, err
		}
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
