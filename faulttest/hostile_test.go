package faulttest

import (
	"bytes"
	"context"
	"io"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"
)

// hostileCorpus is malformed SMTP a client might send. None names STARTTLS
// or BDAT, which the proxy answers itself instead of relaying.
var hostileCorpus = map[string]string{
	"bare CR and LF mixes": "EHLO x\rstill ehlo\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\r\r\nDATA\n" +
		"line with bare cr\r in it\nbare lf line\n.\r.not end\r\n..stuffed\n\r.\r\n.\r\r\nnot end either\r\n.\n" +
		"MAIL FROM:<e@f>\r\nRCPT TO:<g@h>\r\nDATA\r\nx\r\n\r\n.\r\nQUIT\r\n",
	"NULs":              "EHLO \x00x\r\nMAIL FROM:<a\x00@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n\x00\x00\r\n.\x00\r\n\x00.\r\n.\r\nNO\x00OP\r\nQUIT\r\n",
	"1 MB command line": "EHLO x\r\nNOOP " + strings.Repeat("y", 1<<20) + "\r\nMAIL FROM:<" + strings.Repeat("a", 1<<20) + "@b>\r\nQUIT\r\n",
	"1 MB line in DATA": "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n" + strings.Repeat("z", 1<<20) +
		"\r\n." + strings.Repeat("d", 1<<20) + "\r\n.\r\nQUIT\r\n",
	"commands out of order": "DATA\r\nthis is not data\r\n.\r\nRCPT TO:<c@d>\r\nMAIL FROM:<a@b>\r\nMAIL FROM:<a@b>\r\n" +
		"DATA\r\nRSET\r\nDATA\r\n.\r\nHELO\r\nEHLO\r\nQUIT\r\n",
	"garbage after the final dot": "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhello\r\n.\r\n" +
		"\xff\xfe garbage \x01\x02\r\nGARBAGE\r\n\r\n.\r\nMAIL FROM:<x@y>\r\nQUIT\r\n",
	"pipelined junk": "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\nm1\r\n.\r\n" +
		"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nm2\r\n..\r\n.\r\nRSET\r\nNOOP\r\nVRFY x\r\nETRN y\r\n" +
		"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nm3\r\n.\r\nQUIT\r\nafter quit\r\n",
	"smuggling attempts": "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhello\n.\nMAIL FROM:<evil@x>\r\n" +
		"RCPT TO:<c@d>\r\nDATA\r\nsmuggled\r\n.\r\nhello\r.\r\nstill data\r\n\r\n.\r\nQUIT\r\n",
	"EOF mid-data":    "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nunfinished message\r\n.",
	"EOF mid-command": "EHLO x\r\nMAIL FROM:<a@b",
	"AUTH exchange":   "EHLO x\r\nAUTH PLAIN\r\nAHVzZXIAcGFzcw==\r\nAUTH LOGIN\r\n*\r\nQUIT\r\n",
}

// Each hostile input goes through the proxy to the recording server, sent
// whole and then byte by byte in random-sized writes: the server receives
// exactly the client's bytes, and the archive holds exactly the messages
// the server took, byte for byte.
func TestHostileInput(t *testing.T) {
	for name, in := range hostileCorpus {
		for _, mode := range []string{"one write", "small writes"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				rec := newRecorder(t, nil)
				p := startInProxy(t, rec.addr(), "", nil)
				c, err := net.Dial("tcp", p.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				go func() {
					if mode == "one write" {
						c.Write([]byte(in))
					} else {
						for b := []byte(in); len(b) > 0; {
							n := min(len(b), 1+len(b)%7)
							if len(b) > 64<<10 {
								n = 32 << 10
							}
							if _, err := c.Write(b[:n]); err != nil {
								return
							}
							b = b[n:]
						}
					}
					c.(*net.TCPConn).CloseWrite()
				}()
				if _, err := io.Copy(io.Discard, c); err != nil {
					t.Fatalf("reading replies: %v", err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := p.srv.Shutdown(ctx); err != nil {
					t.Fatal(err)
				}
				got := rec.received()
				// Bytes that get no reply (an unterminated last line) may
				// still be on their way into the server.
				for deadline := time.Now().Add(2 * time.Second); len(got) < len(in) && time.Now().Before(deadline); got = rec.received() {
					time.Sleep(5 * time.Millisecond)
				}
				if held := []byte(in)[min(len(got), len(in)):]; bytes.HasPrefix([]byte(in), got) &&
					(string(held) == "." || string(held) == ".\r") && strings.HasPrefix(name, "EOF mid-data") {
					// The DATA reader holds a line-start "." until it
					// knows whether it ends the data; at EOF the
					// connection is cut with it.
					got = []byte(in)
				}
				if !bytes.Equal(got, []byte(in)) {
					t.Fatalf("server received %d bytes, client sent %d; first difference at %d",
						len(got), len(in), firstDiff(got, []byte(in)))
				}
				var archived, taken []string
				for _, it := range archivetest.ReadItems(t, p.dir) {
					archived = append(archived, string(it.EML))
				}
				for _, m := range rec.messages() {
					taken = append(taken, string(m))
				}
				sort.Strings(archived)
				sort.Strings(taken)
				if strings.Join(archived, "\x00|") != strings.Join(taken, "\x00|") {
					t.Fatalf("archive holds %d messages %.200q, the server took %d %.200q", len(archived), archived, len(taken), taken)
				}
				if left := tmpFiles(p.dir); len(left) > 0 {
					t.Fatalf("tmp/ holds %v", left)
				}
			})
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
