package smtpwire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	long := strings.Repeat(" ", MinLineLimit)
	tests := []struct {
		in   string
		verb string
		args []string
		uns  bool
	}{
		{"mail FROM:<a@b>\r\n", "MAIL", []string{"FROM:", "<a@b>"}, false},
		{"DATA\n", "DATA", nil, false},
		{"\r\n", "", nil, false},
		{"EHLO  x\r\n", "EHLO", []string{"x"}, false},
		// Leading white space is skipped; the verb ends at any of it.
		{" DATA\r\n", "DATA", nil, false},
		{"\tDATA\r\n", "DATA", nil, false},
		{"DATA\t\r\n", "DATA", nil, false},
		{"\v\fDATA\v\r\n", "DATA", nil, false},
		{"DATA\r\r\n", "DATA", nil, false},
		{"RCPT\tTO:<c@d>\r\n", "RCPT", []string{"TO:", "<c@d>"}, false},
		{"MAIL  FROM:<a@b>\r\n", "MAIL", []string{"FROM:", "<a@b>"}, false},
		{"EHLO\tx\r\n", "EHLO", []string{"x"}, false},
		{" BDAT 10 LAST\r\n", "BDAT", []string{"10", "LAST"}, false},
		{"MAIL\rFROM:<a@b>\r\n", "MAIL", []string{"FROM:", "<a@b>"}, false},
		// A NUL ends the useful part of the line.
		{"DATA\x00junk\r\n", "DATA", nil, false},
		{"\x00DATA\r\n", "", nil, false},
		// "FROM:" and "TO:" end a word at their colon; <...> and "..."
		// hold white space.
		{"MAIL FROM: <a@b> SIZE=1\r\n", "MAIL", []string{"FROM:", "<a@b>", "SIZE=1"}, false},
		{"RCPT TO:<\"a b\"@c> NOTIFY=NEVER\r\n", "RCPT", []string{"TO:", "<\"a b\"@c>", "NOTIFY=NEVER"}, false},
		{"RCPT TO:<a <b> c> x\r\n", "RCPT", []string{"TO:", "<a <b> c>", "x"}, false},
		{"RCPT TO:<a\\ b>\r\n", "RCPT", []string{"TO:", "<a\\ b>"}, false},
		{"NOOP a\\ b\r\n", "NOOP", []string{"a\\ b"}, false},
		{"MAIL FROM:x:y\r\n", "MAIL", []string{"FROM:", "x:y"}, false},
		{"X:FROM: a\r\n", "X:FROM:", []string{"a"}, false},
		{"DATA<x y>\r\n", "DATA<X Y>", nil, false},
		{"MAIL FROM:<a@b\r\n", "MAIL", []string{"FROM:", "<a@b"}, false},
		// Only the first LineLimit bytes count.
		{"NOOP " + strings.Repeat("x", LineLimit) + " MORE\r\n", "NOOP", []string{strings.Repeat("x", LineLimit-5)}, false},
		// A verb that does not end within MinLineLimit bytes is unsure.
		{long + "DATA\r\n", "DATA", nil, true},
		{long[:MinLineLimit-4] + "DATA\r\n", "DATA", nil, false},
		{long[:MinLineLimit-4] + "DATAX\r\n", "DATAX", nil, true},
		{long + long + long + long + "DATA\r\n", "", nil, true},
	}
	for _, tt := range tests {
		got := ParseCommand([]byte(tt.in))
		want := Command{Verb: tt.verb, Args: tt.args, Unsure: tt.uns}
		if len(want.Args) == 0 {
			want.Args = got.Args[:0:0]
			if got.Args == nil {
				want.Args = nil
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseCommand(%.40q) = %+v, want %+v", tt.in, got, want)
		}
	}
}

func TestPath(t *testing.T) {
	tests := []struct {
		line, prefix, addr string
		params             []string
		err                bool
	}{
		{"MAIL FROM:<alice@example.org> SIZE=430 BODY=8BITMIME", "FROM:", "alice@example.org", []string{"SIZE=430", "BODY=8BITMIME"}, false},
		{"MAIL FROM:<>", "FROM:", "", nil, false},
		{"mail from: <a@b>", "FROM:", "a@b", nil, false},
		{"MAIL\tFROM:\t<a@b>", "FROM:", "a@b", nil, false},
		{"MAIL FROM:a@b SIZE=1", "FROM:", "a@b", []string{"SIZE=1"}, false},
		{"RCPT TO:<\"a >b\"@example.net> ORCPT=rfc822;x@y", "TO:", "\"a >b\"@example.net", []string{"ORCPT=rfc822;x@y"}, false},
		{"RCPT TO:<@hop1,@hop2:u@example.net>", "TO:", "u@example.net", nil, false},
		{"RCPT TO:<a@b>junk", "TO:", "", nil, true},
		{"MAIL FROM:<>0", "FROM:", "", nil, true},
		{"MAIL FROM:<a(c)@b>", "FROM:", "", nil, true},
		{"MAIL FROM:<<a@b>>", "FROM:", "", nil, true},
		{"MAIL FROM:<a@b>>", "FROM:", "", nil, true},
		{"MAIL FROM:<a\\@b@c>", "FROM:", "", nil, true},
		{"MAIL FROM:<\"a\\\"b\"@c>", "FROM:", "\"a\\\"b\"@c", nil, false},
		{"RCPT TO:<u@[192.0.2.1]>", "TO:", "u@[192.0.2.1]", nil, false},
		{"MAIL FROM:<>", "FROM:", "", nil, false},
		{"RCPT TO:<a@b", "TO:", "", nil, true},
		{"RCPT TO<a@b>", "TO:", "", nil, true},
		{"RCPT TO :<a@b>", "TO:", "", nil, true},
		{"MAIL FROM:", "FROM:", "", nil, true},
		{"MAIL", "FROM:", "", nil, true},
	}
	for _, tt := range tests {
		addr, params, err := ParseCommand([]byte(tt.line)).Path(tt.prefix)
		if (err != nil) != tt.err || addr != tt.addr || !reflect.DeepEqual(params, tt.params) {
			t.Errorf("Path(%q) = %q %q %v; want %q %q err=%v", tt.line, addr, params, err, tt.addr, tt.params, tt.err)
		}
	}
}

// TestAddressForm: the forms Postfix reads differently from the proxy
// are told apart from those Postfix rejects (measured against Postfix
// 3.7: "<>0" is queued from 0@myhostname, "<a(c)@b>" from a@b, while
// "<a@b" and "<a@b>junk" get 501).
func TestAddressForm(t *testing.T) {
	for line, form := range map[string]bool{
		"MAIL FROM:<>0": true, "MAIL FROM:<a(c)@b>": true, "MAIL FROM:<<a@b>>": true, "RCPT TO:<a b@c>": true,
		"MAIL FROM:<a@b": false, "MAIL FROM:": false, "MAIL FROM:<a@b>": false,
	} {
		_, _, err := ParseCommand([]byte(line)).Path(strings.Fields(line)[1][:strings.IndexByte(strings.Fields(line)[1], ':')+1])
		if got := errors.Is(err, ErrAddressForm); got != form {
			t.Errorf("%q: err %v, want ErrAddressForm %v", line, err, form)
		}
	}
}

func TestArg(t *testing.T) {
	if got := ParseCommand([]byte("HELO \tclient.example  x\r\n")).Arg(); got != "client.example x" {
		t.Fatalf("Arg = %q", got)
	}
}

// FuzzParseCommand checks what the proxy relies on: the verb is a word of
// the line's first LineLimit bytes before any NUL, the words hold no
// unquoted white space, and a line whose first word ends early is sure.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"MAIL FROM:<a@b> SIZE=1\r\n", " DATA\r\n", "RCPT\tTO:<\"x\\\"y\"@z>\r\n", "DATA\x00x", "<a b> c"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		c := ParseCommand(line)
		view := line
		if i := strings.IndexByte(string(view), '\n'); i >= 0 {
			view = view[:i]
		}
		if len(view) > LineLimit {
			view = view[:LineLimit]
		}
		if i := strings.IndexByte(string(view), 0); i >= 0 {
			view = view[:i]
		}
		if c.Verb != "" && !strings.Contains(strings.ToUpper(string(view)), c.Verb) {
			t.Fatalf("verb %q not in %q", c.Verb, view)
		}
		trimmed := strings.TrimLeft(string(view), " \t\n\v\f\r")
		if c.Verb == "" && trimmed != "" {
			t.Fatalf("no verb in %q", view)
		}
		// C's isspace, not Unicode's (U+0085 is no separator to Postfix).
		cSpace := func(r rune) bool { return r < 0x80 && strings.ContainsRune(" \t\n\v\f\r", r) }
		if fields := strings.FieldsFunc(trimmed, cSpace); len(fields) > 0 && !strings.ContainsAny(fields[0], "<\"\\:") {
			if c.Verb != strings.ToUpper(fields[0]) {
				t.Fatalf("verb %q, first field %q", c.Verb, fields[0])
			}
			if end := len(view) - len(trimmed) + len(fields[0]); end <= MinLineLimit && c.Unsure {
				t.Fatalf("unsure, but the verb ends at %d", end)
			}
		}
		if _, _, err := c.Path("TO:"); err == nil && !strings.EqualFold(c.Args[0], "TO:") {
			t.Fatalf("path without TO:")
		}
	})
}
