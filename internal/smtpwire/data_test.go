package smtpwire

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// reference frames and unstuffs data the slow, obvious way Postfix's smtpd
// does: split at LF, drop every CR before the LF, compare with "."; drop one
// leading dot from other lines. A "." line with MinLineLimit or more CRs is
// ambiguous (its LF is not consumed).
func reference(in []byte) (content, raw, end []byte, consumed int, done, ambiguous bool) {
	pos := 0
	dotCRs := func(b []byte) (int, bool) { // "." then only CRs: how many
		if len(b) == 0 || b[0] != '.' || len(bytes.Trim(b[1:], "\r")) > 0 {
			return 0, false
		}
		return len(b) - 1, true
	}
	for pos < len(in) {
		j := bytes.IndexByte(in[pos:], '\n')
		if j < 0 {
			// An unfinished last line: "." and up to MinLineLimit-1 CRs
			// may still become the end line, so it is held; anything
			// else is passed on.
			rest := in[pos:]
			if k, ok := dotCRs(rest); ok && k < MinLineLimit {
				return content, raw, nil, len(in), false, false
			}
			if rest[0] == '.' {
				rest = rest[1:]
			}
			content = append(content, rest...)
			raw = append(raw, in[pos:]...)
			return content, raw, nil, len(in), false, false
		}
		line := in[pos : pos+j+1]
		if k, ok := dotCRs(line[:j]); ok {
			if k < MinLineLimit {
				return content, raw, line, pos + j + 1, true, false
			}
			return append(content, line[1:j]...), append(raw, line[:j]...), nil, pos + j, false, true
		}
		raw = append(raw, line...)
		if line[0] == '.' {
			line = line[1:]
		}
		content = append(content, line...)
		pos += j + 1
	}
	return content, raw, nil, pos, false, false
}

func feedAll(t testing.TB, in []byte, chunk int) (content, raw, end []byte, consumed int, done, ambiguous bool) {
	var c, r bytes.Buffer
	u := Unstuffer{Content: &c, Raw: &r}
	for len(in) > 0 && !done {
		n := min(chunk, len(in))
		k, d, err := u.Feed(in[:n])
		consumed += k
		if err == ErrAmbiguousEnd {
			return c.Bytes(), r.Bytes(), nil, consumed, false, true
		}
		if err != nil {
			t.Fatal(err)
		}
		if !d && k != n {
			t.Fatalf("Feed consumed %d of %d without finishing", k, n)
		}
		done = d
		in = in[k:]
	}
	return c.Bytes(), r.Bytes(), u.EndLine(), consumed, done, false
}

func TestUnstuffer(t *testing.T) {
	tests := []struct {
		name, in, content, end string
		consumed               int // -1: all
	}{
		{"empty message", ".\r\n", "", ".\r\n", 3},
		{"simple", "a\r\nb\r\n.\r\n", "a\r\nb\r\n", ".\r\n", -1},
		{"stuffed dot", "..x\r\n.\r\n", ".x\r\n", ".\r\n", -1},
		{"lone stuffed dot", "..\r\n.\r\n", ".\r\n", ".\r\n", -1},
		{"bare LF end", "a\n.\n", "a\n", ".\n", -1},
		{"CRLF then bare LF end", "a\r\n.\n", "a\r\n", ".\n", -1},
		{"dot CR not LF", "a\r\n.\rx\r\n.\r\n", "a\r\n\rx\r\n", ".\r\n", -1},
		{"dot CR CR LF ends", "a\r\n.\r\r\nMAIL", "a\r\n", ".\r\r\n", 7},
		{"bare LF dot CR CR LF ends", "a\n.\r\r\n", "a\n", ".\r\r\n", -1},
		{"dot and 511 CRs ends", "a\n." + strings.Repeat("\r", 511) + "\n", "a\n", "." + strings.Repeat("\r", 511) + "\n", -1},
		{"dot CRs x is content", ".\r\r\rx\r\n.\r\n", "\r\r\rx\r\n", ".\r\n", -1},
		{"dot many CRs x is content", "." + strings.Repeat("\r", 600) + "x\n.\n", strings.Repeat("\r", 600) + "x\n", ".\n", -1},
		{"bare CR is not a line end", "a\r.\r\n.\r\n", "a\r.\r\n", ".\r\n", -1},
		{"dot mid line", "a.b\r\n.\r\n", "a.b\r\n", ".\r\n", -1},
		{"NUL and 8-bit", "a\x00\xff\xfe\r\n.\r\n", "a\x00\xff\xfe\r\n", ".\r\n", -1},
		{"trailing commands not consumed", "x\r\n.\r\nQUIT\r\n", "x\r\n", ".\r\n", 6},
		{"dot space is content", ". \r\n.\r\n", " \r\n", ".\r\n", -1},
		{"unfinished", "abc\r\n.", "abc\r\n", "", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.consumed
			if want < 0 {
				want = len(tt.in)
			}
			for chunk := 1; chunk <= len(tt.in); chunk++ {
				content, raw, end, consumed, done, _ := feedAll(t, []byte(tt.in), chunk)
				if string(content) != tt.content || string(end) != tt.end || consumed != want || done != (tt.end != "") {
					t.Fatalf("chunk %d: content %q end %q consumed %d done %v; want %q %q %d",
						chunk, content, end, consumed, done, tt.content, tt.end, want)
				}
				if tt.end != "" && string(raw)+string(end) != tt.in[:want] {
					t.Fatalf("chunk %d: raw+end %q, want the input %q", chunk, string(raw)+string(end), tt.in[:want])
				}
			}
		})
	}
}

// TestAmbiguousEnd: with MinLineLimit CRs or more, whether "." ends the
// data depends on the server's line_length_limit: Feed stops before the LF.
func TestAmbiguousEnd(t *testing.T) {
	in := "a\r\n." + strings.Repeat("\r", MinLineLimit) + "\nQUIT\r\n"
	for _, chunk := range []int{1, 7, len(in)} {
		content, raw, _, consumed, done, amb := feedAll(t, []byte(in), chunk)
		if !amb || done || consumed != len(in)-len("\nQUIT\r\n") {
			t.Fatalf("chunk %d: ambiguous %v done %v consumed %d", chunk, amb, done, consumed)
		}
		if string(raw) != in[:consumed] || string(content) != "a\r\n"+strings.Repeat("\r", MinLineLimit) {
			t.Fatalf("chunk %d: raw %q content %q", chunk, raw, content)
		}
	}
	if _, err := ReadData(bufio.NewReader(strings.NewReader(in)), io.Discard); err != ErrAmbiguousEnd {
		t.Fatalf("ReadData: err %v", err)
	}
}

func TestReadData(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("..a\r\nb\n.\r\nMAIL FROM:<>\r\n"), 16)
	var buf bytes.Buffer
	n, err := ReadData(r, &buf)
	if err != nil || buf.String() != ".a\r\nb\n" || n != int64(buf.Len()) {
		t.Fatalf("ReadData = %d, %v, %q", n, err, buf.String())
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "MAIL FROM:<>\r\n" {
		t.Fatalf("rest %q", rest)
	}
	if _, err := ReadData(bufio.NewReader(strings.NewReader("abc\r\n")), io.Discard); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated data: err %v", err)
	}
}

// TestReadDataLongLine feeds a 1 MiB line through a small buffer: framing
// must not depend on lines fitting the buffer.
func TestReadDataLongLine(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	in := long + "\r\n..\r\n.\r\n"
	var buf bytes.Buffer
	if _, err := ReadData(bufio.NewReaderSize(strings.NewReader(in), 16), &buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != long+"\r\n.\r\n" {
		t.Fatalf("got %d bytes", buf.Len())
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrShortWrite
	}
	f.n--
	return len(p), nil
}

// TestReadDataContentError: a failing copy must not break the framing.
func TestReadDataContentError(t *testing.T) {
	r := bufio.NewReaderSize(strings.NewReader("a\r\nb\r\n.\r\nNEXT\r\n"), 16)
	_, err := ReadData(r, &failWriter{n: 0})
	if err != io.ErrShortWrite {
		t.Fatalf("err %v", err)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "NEXT\r\n" {
		t.Fatalf("framing lost: rest %q", rest)
	}
}

func FuzzUnstuffer(f *testing.F) {
	for _, s := range []string{".\r\n", "a\r\n..b\r\n.\r\n", ".\rx\n.\n", "\r\n.\r\r\n.\n", "\n.\r\r\r\nMAIL", ".\r\r\rx\n", "x\x00\n.\nQUIT\r\n", "..", ".\r"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		wc, wr, we, wn, wd, wa := reference(in)
		c, r, e, n, d, a := feedAll(t, in, int(chunk)+1)
		if !bytes.Equal(c, wc) || !bytes.Equal(e, we) || n != wn || d != wd || a != wa {
			t.Fatalf("in %q chunk %d: got content %q end %q n %d done %v ambiguous %v; want %q %q %d %v %v",
				in, chunk+1, c, e, n, d, a, wc, we, wn, wd, wa)
		}
		if !bytes.Equal(r, wr) {
			t.Fatalf("in %q: raw %q, want %q", in, r, wr)
		}
	})
}
