package smtpwire

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// closingBracket finds the '>' that closes s[0] == '<', skipping quoted
// strings and backslash escapes (RFC 5321 Quoted-string).
func closingBracket(s string) (int, bool) {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == '>' && !quoted:
			return i, true
		}
	}
	return 0, false
}

// DecodeXtext decodes RFC 3461 xtext ("+XX" hex escapes), as used in
// XFORWARD attribute values.
func DecodeXtext(s string) (string, error) {
	if !strings.Contains(s, "+") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '+' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("smtp: xtext %q: truncated escape", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil || strings.ToUpper(s[i+1:i+3]) != s[i+1:i+3] {
			return "", fmt.Errorf("smtp: xtext %q: bad escape", s)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// Reply is a server reply: every line as received, line ends included.
type Reply struct {
	Code  int // 0 if the first line does not start with three digits
	Lines [][]byte
}

// ErrReplyTooLong is returned for a reply larger than ReadReply's limit.
var ErrReplyTooLong = errors.New("smtp: reply too long")

// ReadReply reads one (possibly multi-line, RFC 5321 section 4.2.1) reply
// of at most max bytes. A line that does not follow the "NNN-" form ends the
// reply, so a malformed server cannot make us wait forever for more.
func ReadReply(r *bufio.Reader, max int) (Reply, error) {
	var rep Reply
	total := 0
	for {
		line, err := readLine(r, max-total)
		if err != nil {
			return rep, err
		}
		total += len(line)
		rep.Lines = append(rep.Lines, line)
		code, more := replyLine(line)
		if len(rep.Lines) == 1 {
			rep.Code = code
		}
		if !more || code != rep.Code {
			return rep, nil
		}
	}
}

func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		if len(line)+len(frag) > max {
			return nil, ErrReplyTooLong
		}
		line = append(line, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		return line, err
	}
}

// replyLine returns a reply line's code and whether another line follows.
func replyLine(line []byte) (code int, more bool) {
	if len(line) < 3 {
		return 0, false
	}
	for _, c := range line[:3] {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	return code, len(line) > 3 && line[3] == '-'
}

// Text returns the reply as text: its lines without line ends, joined by
// "\n" (the form stored in envelopes and logs).
func (r Reply) Text() string {
	var b strings.Builder
	for i, l := range r.Lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.Write(bytes.TrimRight(l, "\r\n"))
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}

// Bytes returns the reply as received.
func (r Reply) Bytes() []byte { return bytes.Join(r.Lines, nil) }

// QueueID returns the queue ID of a "250 ... queued as ID" reply, or "".
func (r Reply) QueueID() string {
	for _, l := range r.Lines {
		if _, after, ok := bytes.Cut(l, []byte("queued as ")); ok {
			end := 0
			for end < len(after) && isQueueIDByte(after[end]) {
				end++
			}
			return string(after[:end])
		}
	}
	return ""
}

func isQueueIDByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
}

// WithoutExtensions returns an EHLO reply without the lines advertising the
// named extensions (upper case), fixing the continuation marks so that the
// last remaining line ends the reply. Other bytes are kept as received.
func (r Reply) WithoutExtensions(names ...string) Reply {
	if r.Code/100 != 2 {
		return r // not an EHLO success: nothing to rewrite
	}
	out := Reply{Code: r.Code}
	for i, l := range r.Lines {
		if i > 0 && len(l) > 4 {
			kw, _, _ := bytes.Cut(bytes.TrimRight(l[4:], "\r\n"), []byte(" "))
			drop := false
			for _, n := range names {
				if strings.EqualFold(string(kw), n) {
					drop = true
				}
			}
			if drop {
				continue
			}
		}
		out.Lines = append(out.Lines, l)
	}
	for i, l := range out.Lines {
		if len(l) > 3 {
			want := byte('-')
			if i == len(out.Lines)-1 {
				want = ' '
			}
			if l[3] != want && (l[3] == '-' || l[3] == ' ') {
				l = append([]byte(nil), l...)
				l[3] = want
				out.Lines[i] = l
			}
		}
	}
	return out
}
