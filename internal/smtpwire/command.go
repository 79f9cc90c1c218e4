package smtpwire

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Postfix's line_length_limit: its default, which Postfix's smtpd applies
// to command lines (it reads that many bytes and skips the rest of the
// line), and the smallest value Postfix allows.
const (
	LineLimit    = 2048
	MinLineLimit = 512
)

// Command is one SMTP command line split into words the way Postfix's
// smtpd splits it (smtpd_token.c), so the proxy and the server always agree
// on what a line says.
type Command struct {
	Verb string   // the first word, upper case
	Args []string // the other words, as split by Postfix
	// Unsure: the first word does not end within the first MinLineLimit
	// bytes, so a server with a smaller line_length_limit than LineLimit
	// could read a different verb. Such a line must not be relayed.
	Unsure bool
}

// ParseCommand splits a command line as Postfix 3.7's smtpd does: the line
// ends at LF, CRs before it dropped; only the first LineLimit bytes count; a NUL ends the useful
// part; words are separated by runs of white space (space, TAB, LF, VT, FF,
// CR: C's isspace), except inside <...> and "..." and after a backslash;
// "TO:" and "FROM:" end a word at their colon. It never fails: an empty or
// odd line gives an empty or odd verb, and the server decides what it means.
func ParseCommand(line []byte) Command {
	n := len(line)
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		n = i
	}
	// Postfix reads at most LineLimit bytes; it drops the CRs before the
	// LF only when it read the LF (or a CR right before it) with them.
	if n < LineLimit && n < len(line) || n == LineLimit && line[n-1] == '\r' && n < len(line) {
		line = bytes.TrimRight(line[:n], "\r")
	} else {
		line = line[:min(n, LineLimit)]
	}
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	words, firstEnd := tokenize(line)
	var c Command
	if len(words) > 0 {
		c.Verb = strings.ToUpper(words[0])
		c.Args = words[1:]
	}
	// A line with no word within MinLineLimit bytes is "bad syntax" to a
	// server with that limit, but may hold a verb for one with a larger
	// limit: unsure too.
	c.Unsure = firstEnd > MinLineLimit || len(words) == 0 && len(line) > MinLineLimit
	return c
}

// isSpace is C's isspace in the C locale, which Postfix uses.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// tokenize splits s into words (see ParseCommand) and returns where the
// first word ends.
func tokenize(s []byte) (words []string, firstEnd int) {
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			return words, firstEnd
		}
		var w []byte
	word:
		for i < len(s) && !isSpace(s[i]) {
			c := s[i]
			i++
			switch c {
			case '<':
				w, i = quoted(s, i, append(w, c), '>')
			case '"':
				w, i = quoted(s, i, append(w, c), '"')
			case ':':
				w = append(w, c)
				if strings.EqualFold(string(w), "to:") || strings.EqualFold(string(w), "from:") {
					break word
				}
			case '\\':
				w = append(w, c)
				if i < len(s) {
					w = append(w, s[i])
					i++
				}
			default:
				w = append(w, c)
			}
		}
		words = append(words, string(w))
		if len(words) == 1 {
			firstEnd = i
		}
	}
}

// quoted reads a quoted run whose opening byte is already in w, up to the
// byte that closes it (last), honouring backslashes and nested "..." (and,
// inside <...>, nested <...>). An unclosed run takes the rest of s.
func quoted(s []byte, i int, w []byte, last byte) ([]byte, int) {
	stack := []byte{last}
	for i < len(s) {
		c := s[i]
		i++
		w = append(w, c)
		top := stack[len(stack)-1]
		switch {
		case c == '\\':
			if i < len(s) {
				w = append(w, s[i])
				i++
			}
		case c == top:
			if len(stack) == 1 {
				return w, i
			}
			stack = stack[:len(stack)-1]
		case c == '"':
			stack = append(stack, '"')
		case c == '<' && top == '>':
			stack = append(stack, '>')
		}
	}
	return w, i
}

// ErrAddressForm reports a MAIL or RCPT address in a form that Postfix's
// smtpd accepts but reads with its RFC 822 parser (comments, nested or
// trailing brackets, unquoted specials: "<a(x)@b>" is a@b to it, "<>0" is
// 0): the proxy cannot record it as Postfix will, so it must refuse it.
var ErrAddressForm = errors.New("smtp: address form the proxy cannot read as Postfix does")

// Path parses the words of MAIL or RCPT: prefix ("FROM:" or "TO:"), the
// address, then parameters, as Postfix's smtpd takes them. The address is
// returned without its angle brackets and without an RFC 5321 source route
// ("@hop,@hop:"), otherwise as sent; quoted local parts stay whole. Any
// other error than ErrAddressForm is one Postfix rejects too.
func (c Command) Path(prefix string) (addr string, params []string, err error) {
	if len(c.Args) < 2 || !strings.EqualFold(c.Args[0], prefix) {
		return "", nil, fmt.Errorf("smtp: %s %s: want %s<address>", c.Verb, strings.Join(c.Args, " "), prefix)
	}
	addr = c.Args[1]
	if strings.HasPrefix(addr, "<") {
		end, ok := closingBracket(addr)
		if !ok {
			return "", nil, fmt.Errorf("smtp: %s: unterminated <address>", addr)
		}
		if end != len(addr)-1 {
			return "", nil, fmt.Errorf("%w: %q", ErrAddressForm, addr)
		}
		addr = addr[1:end]
	}
	if strings.HasPrefix(addr, "@") {
		if i := strings.IndexByte(addr, ':'); i >= 0 {
			addr = addr[i+1:]
		}
	}
	if !plainAddr(addr) {
		return "", nil, fmt.Errorf("%w: %q", ErrAddressForm, c.Args[1])
	}
	if len(c.Args) > 2 {
		params = c.Args[2:]
	}
	return addr, params, nil
}

// plainAddr reports whether a has no RFC 822 specials outside quoted
// strings but "@", "." and a domain literal's brackets: the forms in which
// Postfix's parser keeps the address as sent.
func plainAddr(a string) bool {
	quoted := false
	for i := 0; i < len(a); i++ {
		switch c := a[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case quoted:
		case strings.IndexByte("<>()\\,;: \t\r\n\v\f", c) >= 0:
			return false
		}
	}
	return !quoted
}

// Arg is the command's words after the verb joined by single spaces, as
// Postfix's smtpd joins HELO's (collapse_args).
func (c Command) Arg() string { return strings.Join(c.Args, " ") }

// ParseXforward parses XFORWARD's NAME=value words. Values are
// xtext-decoded; "[UNAVAILABLE]" and "[TEMPUNAVAIL]" values are dropped,
// as they carry no information. Names are upper-cased.
func ParseXforward(args []string) map[string]string {
	attrs := map[string]string{}
	for _, f := range args {
		name, val, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if dec, err := DecodeXtext(val); err == nil {
			val = dec
		}
		if val == "[UNAVAILABLE]" || val == "[TEMPUNAVAIL]" {
			continue
		}
		attrs[strings.ToUpper(name)] = val
	}
	return attrs
}
