package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sort"
	"strings"
	"testing"
	"time"
)

// FuzzRelay feeds an arbitrary client byte stream through the proxy to the
// scripted server and checks that the server received exactly those bytes
// and that the archive holds exactly the messages the server took.
//
// Inputs that name STARTTLS or BDAT (which the proxy answers itself and
// does not relay) or QUIT (after which the server stops reading) are
// skipped: for them "the server saw every byte" does not hold by design.
func FuzzRelay(f *testing.F) {
	for _, s := range []string{
		"EHLO x\r\n" + postfixBatch + stuffedBody,
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nline\r\n.\r\nMAIL FROM:<e@f>\r\n",
		"HELO x\nMAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nbare lf\n..dot\n.\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nbare\rcr\r\n.\r\r\n.\r\nNOOP\x00\r\n",
		"DATA\r\nnot data\r\n.\r\nRCPT TO:<c@d>\r\n",
		"EHLO x\r\nAUTH PLAIN\r\nAHVzZXIAcGFzcw==\r\nMAIL FROM:<a@b>\r\n",
		"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nunterminated",
		"NOOP " + string(bytes.Repeat([]byte("x"), 20000)) + "\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		up := bytes.ToUpper(in)
		for _, v := range []string{"STARTTLS", "BDAT", "QUIT"} {
			if bytes.Contains(up, []byte(v)) {
				t.Skip("input names " + v)
			}
		}
		fx := setup(t, nil)
		c, err := net.Dial("tcp", fx.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.TCPConn).CloseWrite()
		}()
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("reading replies: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := fx.proxy.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		got := fx.srv.received()
		// Bytes that get no reply (an unterminated last line) may still be
		// on their way into the server when the client sees the close.
		for deadline := time.Now().Add(2 * time.Second); len(got) < len(in) && time.Now().Before(deadline); got = fx.srv.received() {
			time.Sleep(5 * time.Millisecond)
		}
		if held := string(in[min(len(got), len(in)):]); strings.HasPrefix(string(in), got) && (held == "." || held == ".\r") {
			// EOF mid-DATA: the DATA reader holds a line-start "." until
			// it knows whether it ends the data, and the cut drops it.
			got = string(in)
		}
		if got != string(in) {
			t.Fatalf("server received %d bytes, client sent %d:\n got %q\nwant %q", len(got), len(in), got, in)
		}
		var archived, taken []string
		for _, it := range fx.items() {
			archived = append(archived, string(it.EML))
		}
		for _, m := range fx.srv.msgs() {
			taken = append(taken, string(m))
		}
		sort.Strings(archived)
		sort.Strings(taken)
		if len(archived) != len(taken) {
			t.Fatalf("archive holds %d messages, the server took %d", len(archived), len(taken))
		}
		for i := range taken {
			if archived[i] != taken[i] {
				t.Fatalf("archived %q, server took %q", archived[i], taken[i])
			}
		}
	})
}
