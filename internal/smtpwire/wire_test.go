package smtpwire

import (
	"bufio"
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestXtext(t *testing.T) {
	tests := []struct {
		in, out string
		err     bool
	}{
		{"plain", "plain", false},
		{"a+2Bb", "a+b", false},
		{"+3D+20", "= ", false},
		{"a+2", "", true},
		{"a+zz", "", true},
		{"a+2b", "", true}, // xtext hex is upper case
	}
	for _, tt := range tests {
		out, err := DecodeXtext(tt.in)
		if (err != nil) != tt.err || out != tt.out {
			t.Errorf("DecodeXtext(%q) = %q, %v", tt.in, out, err)
		}
	}
	got := ParseXforward(strings.Fields("NAME=host.example ADDR=127.0.0.1 PORT=52578 HELO=a+20b IDENT=[UNAVAILABLE] proto=ESMTP junk"))
	want := map[string]string{"NAME": "host.example", "ADDR": "127.0.0.1", "PORT": "52578", "HELO": "a b", "PROTO": "ESMTP"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseXforward = %v", got)
	}
}

func TestReadReply(t *testing.T) {
	in := "250-mx.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250-SIZE 10240000\r\n250 CHUNKING\r\n354 go\r\n"
	r := bufio.NewReader(strings.NewReader(in))
	rep, err := ReadReply(r, 1<<16)
	if err != nil || rep.Code != 250 || len(rep.Lines) != 5 {
		t.Fatalf("ReadReply = %+v, %v", rep, err)
	}
	if string(rep.Bytes()) != in[:strings.Index(in, "354")] {
		t.Fatalf("bytes %q", rep.Bytes())
	}
	stripped := rep.WithoutExtensions("STARTTLS", "CHUNKING")
	if got := string(stripped.Bytes()); got != "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 10240000\r\n" {
		t.Fatalf("WithoutExtensions: %q", got)
	}
	next, err := ReadReply(r, 1<<16)
	if err != nil || next.Code != 354 {
		t.Fatalf("second reply %+v %v", next, err)
	}
	if _, err := ReadReply(bufio.NewReader(strings.NewReader(strings.Repeat("x", 100)+"\n")), 50); err != ErrReplyTooLong {
		t.Fatalf("too long: %v", err)
	}
	odd, err := ReadReply(bufio.NewReader(strings.NewReader("garbage\r\n250 ok\r\n")), 100)
	if err != nil || odd.Code != 0 || len(odd.Lines) != 1 {
		t.Fatalf("garbage reply %+v %v", odd, err)
	}
}

func TestQueueID(t *testing.T) {
	for in, want := range map[string]string{
		"250 2.0.0 Ok: queued as DAB2D984306\r\n":  "DAB2D984306",
		"250 2.0.0 Ok: queued as 4Xy7Zk1w2Tz9\r\n": "4Xy7Zk1w2Tz9",
		"250 Ok\r\n": "",
	} {
		rep, _ := ReadReply(bufio.NewReader(strings.NewReader(in)), 1000)
		if got := rep.QueueID(); got != want {
			t.Errorf("QueueID(%q) = %q", in, got)
		}
	}
}

func FuzzReadReply(f *testing.F) {
	f.Add([]byte("250-a\r\n250 b\r\n"), "STARTTLS")
	f.Add([]byte("250-x\r\n250-STARTTLS\r\n250 CHUNKING\r\n"), "CHUNKING")
	f.Add([]byte("25"), "")
	f.Fuzz(func(t *testing.T, in []byte, ext string) {
		rep, err := ReadReply(bufio.NewReader(bytes.NewReader(in)), 1<<12)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(in, rep.Bytes()) {
			t.Fatalf("reply bytes %q are not the input's start", rep.Bytes())
		}
		out := rep.WithoutExtensions(ext)
		if len(out.Lines) == 0 {
			t.Fatalf("no lines left")
		}
		// Only the continuation mark of a line may change.
		a, b := out.Lines[0], rep.Lines[0]
		if len(a) != len(b) || (len(a) > 3 && (!bytes.Equal(a[:3], b[:3]) || !bytes.Equal(a[4:], b[4:]))) {
			t.Fatalf("first line changed: %q -> %q", b, a)
		}
		if rep.Code/100 == 2 {
			last := out.Lines[len(out.Lines)-1]
			if len(last) > 3 && last[3] == '-' {
				t.Fatalf("last line %q still says more follows", last)
			}
		}
		_ = rep.Text()
		_ = rep.QueueID()
	})
}

func FuzzXtext(f *testing.F) {
	f.Add("a+2Bb")
	f.Add("+")
	f.Fuzz(func(t *testing.T, s string) {
		out, err := DecodeXtext(s)
		if err == nil && len(out) > len(s) {
			t.Fatalf("decoded longer than input")
		}
	})
}
