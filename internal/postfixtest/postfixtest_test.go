package postfixtest_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/internal/smtpsink"
)

func startSink(t *testing.T, addr string) *smtpsink.Server {
	t.Helper()
	s := &smtpsink.Server{Dir: t.TempDir()}
	if err := s.Listen(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitMessages(t *testing.T, s *smtpsink.Server, n int) []smtpsink.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	msgs, err := s.WaitFor(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != n {
		t.Fatalf("sink has %d messages, want %d", len(msgs), n)
	}
	return msgs
}

func waitQueueEmpty(t *testing.T, pf *postfixtest.Instance) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatal(err)
	}
}

var queuedAs = regexp.MustCompile(`250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)`)

// swaks sends msg (CRLF line ends, no dot-stuffing) with swaks and returns
// Postfix's queue ID.
func swaks(t *testing.T, addr, from string, to []string, msg string) string {
	t.Helper()
	bin := postfixtest.RequireCommand(t, "swaks")
	// With --no-data-fixup swaks sends the file as it is: no dot-stuffing,
	// no end-of-data line.
	var data strings.Builder
	for _, line := range strings.SplitAfter(msg, "\n") {
		if strings.HasPrefix(line, ".") {
			data.WriteByte('.')
		}
		data.WriteString(line)
	}
	data.WriteString(".\r\n")
	file := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(file, []byte(data.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--server", addr, "--helo", "client.example",
		"--from", from, "--to", strings.Join(to, ","),
		"--data", "@"+file, "--no-data-fixup").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	m := queuedAs.FindSubmatch(out)
	if m == nil {
		t.Fatalf("swaks: no queue ID in transcript:\n%s", out)
	}
	return string(m[1])
}

// pythonScript sends stdin as one message with smtplib and prints the DATA
// reply. smtplib turns every line end into CRLF and dot-stuffs.
const pythonScript = `
import smtplib, sys
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), local_hostname="py.example")
s.ehlo()
s.mail(sys.argv[3])
for r in sys.argv[4:]:
    code, resp = s.rcpt(r)
    if code != 250:
        sys.exit("rcpt %s: %d %s" % (r, code, resp))
code, resp = s.data(sys.stdin.buffer.read())
print(code, resp.decode())
s.quit()
`

func pythonSMTP(t *testing.T, addr, from string, to []string, msg string) string {
	t.Helper()
	bin := postfixtest.RequireCommand(t, "python3")
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, append([]string{"-c", pythonScript, host, port, from}, to...)...)
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 smtplib: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`^250 2\.0\.0 Ok: queued as ([0-9A-Za-z]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("python3 smtplib: unexpected reply %q", out)
	}
	return string(m[1])
}

// checkPrepended checks that got is want with exactly one Received: header
// prepended, the one Postfix's smtpd adds, naming queue ID id.
func checkPrepended(t *testing.T, got []byte, want, id string) {
	t.Helper()
	if !bytes.HasSuffix(got, []byte(want)) {
		t.Errorf("delivered message does not end with the bytes sent\n got %q\nwant suffix %q", got, want)
		return
	}
	prefix := string(got[:len(got)-len(want)])
	if !strings.HasPrefix(prefix, "Received: from ") || !strings.HasSuffix(prefix, "\r\n") {
		t.Errorf("prepended %q, want a Received: header", prefix)
		return
	}
	for i, line := range strings.Split(strings.TrimSuffix(prefix, "\r\n"), "\r\n") {
		if i > 0 && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			t.Errorf("prepended more than one header: %q", prefix)
		}
	}
	if !strings.Contains(prefix, "by mx.test.example (Postfix) with ESMTP id "+id) {
		t.Errorf("Received: header %q does not name queue ID %s", prefix, id)
	}
}

// TestRelayToSink sends three messages into a private Postfix with two
// real clients (swaks and Python's smtplib) and checks the sink behind it
// received each one intact, with the envelope and XFORWARD attributes, and
// that the maillog tells the story by queue ID.
func TestRelayToSink(t *testing.T) {
	t.Parallel()
	postfixtest.RequireCommand(t, "swaks")
	postfixtest.RequireCommand(t, "python3")
	sink := startSink(t, "127.0.0.1:0")
	pf := postfixtest.Start(t, postfixtest.Options{
		RelayTo: sink.Addr(),
		MainCF:  []string{"smtp_send_xforward_command = yes"},
	})

	msg1 := "From: Alice <alice@example.org>\r\n" +
		"To: Bob <bob@example.net>\r\n" +
		"Subject: one\r\n" +
		"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\n" +
		"Message-ID: <one@example.org>\r\n" +
		"\r\n" +
		"Hello Bob.\r\n" +
		".a line that starts with a dot\r\n" +
		"..and two\r\n"
	msg2 := "From: alice@example.org\r\n" +
		"To: bob@example.net, carol@example.net\r\n" +
		"Subject: two\r\n" +
		"Date: Mon, 24 Nov 2025 10:00:01 +0000\r\n" +
		"Message-ID: <two@example.org>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"Grüße an euch beide.\r\n"
	// No Date:, Message-ID: or From: header: Postfix must not add them to
	// mail from an SMTP client (see local_header_rewrite_clients in mainCF).
	msg3 := "Subject: three\r\n" +
		"\r\n" +
		"Sent with smtplib.\r\n"

	id1 := swaks(t, pf.SMTPAddr(), "alice@example.org", []string{"bob@example.net"}, msg1)
	id2 := swaks(t, pf.SMTPAddr(), "alice@example.org", []string{"bob@example.net", "carol@example.net"}, msg2)
	id3 := pythonSMTP(t, pf.SMTPAddr(), "py@example.org", []string{"dave@example.net"}, msg3)

	msgs := waitMessages(t, sink, 3)
	waitQueueEmpty(t, pf)
	bySubject := map[string]smtpsink.Message{}
	for _, m := range msgs {
		for _, s := range []string{"one", "two", "three"} {
			if bytes.Contains(m.Data, []byte("\r\nSubject: "+s+"\r\n")) {
				bySubject[s] = m
			}
		}
	}
	cases := []struct {
		subject, sent, id, from, helo string
		rcpts                         []string
	}{
		{"one", msg1, id1, "alice@example.org", "client.example", []string{"bob@example.net"}},
		{"two", msg2, id2, "alice@example.org", "client.example", []string{"bob@example.net", "carol@example.net"}},
		{"three", msg3, id3, "py@example.org", "py.example", []string{"dave@example.net"}},
	}
	log := pf.Log()
	for _, c := range cases {
		m, ok := bySubject[c.subject]
		if !ok {
			t.Errorf("message %q not delivered to the sink", c.subject)
			continue
		}
		checkPrepended(t, m.Data, c.sent, c.id)
		if m.MailFrom != c.from || !reflect.DeepEqual(m.RcptAddrs(), c.rcpts) {
			t.Errorf("%s: envelope from %q to %q, want %q to %q", c.subject, m.MailFrom, m.RcptAddrs(), c.from, c.rcpts)
		}
		// Postfix's smtp client forwards the original client and its own
		// queue ID as IDENT.
		xf := m.XForward
		if xf["ADDR"] != "127.0.0.1" || xf["HELO"] != c.helo || xf["IDENT"] != c.id || xf["PROTO"] != "ESMTP" {
			t.Errorf("%s: XFORWARD %v", c.subject, xf)
		}
		if m.Helo != "mx.test.example" {
			t.Errorf("%s: sink saw HELO %q", c.subject, m.Helo)
		}
		for _, r := range c.rcpts {
			if !strings.Contains(log, c.id+": to=<"+r+">") {
				t.Errorf("%s: maillog has no delivery line for %s to %s", c.subject, c.id, r)
			}
		}
		for _, want := range []string{
			c.id + ": client=localhost[127.0.0.1]",
			"status=sent (250 2.0.0 Ok: queued as " + m.ID + ")",
			c.id + ": removed",
		} {
			if !strings.Contains(log, want) {
				t.Errorf("%s: maillog lacks %q", c.subject, want)
			}
		}
	}
}

// TestSendmail submits with Postfix's sendmail -C DIR: local submission,
// through pickup, with LF line ends.
func TestSendmail(t *testing.T) {
	t.Parallel()
	sink := startSink(t, "127.0.0.1:0")
	pf := postfixtest.Start(t, postfixtest.Options{RelayTo: sink.Addr()})
	msg := "Subject: via sendmail\n" +
		"To: bob@example.net\n" +
		"\n" +
		"first line\n" +
		".\n" + // with -i a lone dot does not end the message
		"last line\n"
	pf.Sendmail(t, []string{"-f", "alice@example.org", "-i", "bob@example.net"}, []byte(msg))

	m := waitMessages(t, sink, 1)[0]
	waitQueueEmpty(t, pf)
	if m.MailFrom != "alice@example.org" || !reflect.DeepEqual(m.RcptAddrs(), []string{"bob@example.net"}) {
		t.Errorf("envelope from %q to %q", m.MailFrom, m.RcptAddrs())
	}
	head, body, ok := bytes.Cut(m.Data, []byte("\r\n\r\n"))
	if !ok {
		t.Fatalf("no header/body separator in %q", m.Data)
	}
	if want := "first line\r\n.\r\nlast line\r\n"; string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}
	// Local submission: pickup's Received: and the headers cleanup adds.
	for _, re := range []string{
		`^Received: by mx\.test\.example \(Postfix, from userid 0\)\r\n\tid [0-9A-F]+;`,
		`\r\nSubject: via sendmail\r\nTo: bob@example\.net\r\n`,
		`\r\nMessage-Id: <[^>]+@mx\.test\.example>`,
		`\r\nDate: `,
	} {
		if !regexp.MustCompile(re).Match(head) {
			t.Errorf("headers do not match %s:\n%s", re, head)
		}
	}
	if !strings.Contains(pf.Log(), "from=<alice@example.org>") {
		t.Error("maillog has no from=<alice@example.org>")
	}
}

// TestDeferFlush checks a message deferred while the next hop is down is
// delivered after Flush, and the queue helpers along the way.
func TestDeferFlush(t *testing.T) {
	t.Parallel()
	addr := postfixtest.FreeAddr(t)
	pf := postfixtest.Start(t, postfixtest.Options{
		RelayTo: addr,
		// Keep Postfix from retrying on its own before the test flushes.
		MainCF: []string{"minimal_backoff_time = 300s", "maximal_backoff_time = 300s", "queue_run_delay = 300s"},
	})
	if err := smtp.SendMail(pf.SMTPAddr(), nil, "alice@example.org", []string{"bob@example.net"},
		[]byte("Subject: deferred\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pf.WaitLog(ctx, "status=deferred"); err != nil {
		t.Fatal(err)
	}
	q, err := pf.Queue()
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || q[0].QueueName != "deferred" || q[0].Sender != "alice@example.org" {
		t.Fatalf("queue %+v, want one deferred message", q)
	}
	ids, err := pf.QueueIDs()
	if err != nil || len(ids) != 1 || ids[0] != q[0].QueueID {
		t.Fatalf("QueueIDs = %v, %v", ids, err)
	}
	if empty, err := pf.QueueEmpty(); empty || err != nil {
		t.Fatalf("QueueEmpty = %v, %v", empty, err)
	}

	sink := startSink(t, addr)
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	waitQueueEmpty(t, pf)
	m := waitMessages(t, sink, 1)[0]
	if !strings.Contains(string(m.Data), "id "+ids[0]) {
		t.Errorf("delivered message is not %s: %q", ids[0], m.Data)
	}
}

// TestLongLinesAndReload shows what Postfix's smtp client does to a line
// longer than smtp_line_length_limit (998 by default): it inserts CRLF SPACE.
// Then it sets the limit to 0 with Postconf and Reload, and the same message
// passes unchanged.
func TestLongLinesAndReload(t *testing.T) {
	t.Parallel()
	sink := startSink(t, "127.0.0.1:0")
	pf := postfixtest.Start(t, postfixtest.Options{RelayTo: sink.Addr()})
	long := "X-Long: " + strings.Repeat("y", 3000) + "\r\n"
	msg := "Subject: long\r\n" + long + "\r\nbody\r\n"
	send := func() {
		t.Helper()
		if err := smtp.SendMail(pf.SMTPAddr(), nil, "a@example.org", []string{"b@example.net"}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}

	send()
	m := waitMessages(t, sink, 1)[0]
	if bytes.HasSuffix(m.Data, []byte(msg)) {
		t.Error("3000-byte line passed unchanged with the default smtp_line_length_limit")
	}
	if !bytes.Contains(m.Data, []byte(long[:998]+"\r\n ")) {
		t.Errorf("line not folded after 998 bytes: %.1200q", m.Data)
	}

	if _, err := pf.Postconf("-e", "smtp_line_length_limit = 0"); err != nil {
		t.Fatal(err)
	}
	if got, err := pf.Postconf("-h", "smtp_line_length_limit"); err != nil || got != "0" {
		t.Fatalf("postconf -h = %q, %v", got, err)
	}
	if err := pf.Reload(); err != nil {
		t.Fatal(err)
	}
	send()
	m = waitMessages(t, sink, 2)[1]
	if !bytes.HasSuffix(m.Data, []byte(msg)) {
		t.Errorf("with smtp_line_length_limit = 0 the message changed: %.200q", m.Data)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, for checking what Start reports when it fails.
type fatalRecorder struct {
	*testing.T
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestStartFailureShowsMaillog makes the master fail to bind its SMTP port
// and checks the failure carries the maillog, where Postfix wrote why.
func TestStartFailureShowsMaillog(t *testing.T) {
	t.Parallel()
	postfixtest.Require(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port

	rec := &fatalRecorder{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		postfixtest.Start(rec, postfixtest.Options{SMTPPort: port})
	}()
	<-done
	if rec.msg == "" {
		t.Fatal("Start succeeded on a busy port")
	}
	for _, want := range []string{"maillog:", "bind 127.0.0.1 port " + strconv.Itoa(port), "Address already in use"} {
		if !strings.Contains(rec.msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, rec.msg)
		}
	}
}

func TestLoadSnippet(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "master.cf")
	snippet := "# content filter, FILTER_README\n" +
		"\n" +
		"scan      unix  -       -       n       -       16      smtp\n" +
		"  -o smtp_send_xforward_command=yes\n" +
		"    # a comment inside an entry\n" +
		"\t-o smtp_line_length_limit=0\n" +
		"127.0.0.1:10026 inet n  -       n       -       16      smtpd   \r\n" +
		"  -o content_filter=\n" +
		"  -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n"
	if err := os.WriteFile(file, []byte(snippet), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := postfixtest.LoadSnippet(file, map[string]string{
		"127.0.0.1:10026": "127.0.0.1:40001",
		"10026":           "never used: the longer key wins",
		"127.0.0.0/8":     "127.0.0.1/32",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"scan      unix  -       -       n       -       16      smtp",
		"  -o smtp_send_xforward_command=yes",
		"\t-o smtp_line_length_limit=0",
		"127.0.0.1:40001 inet n  -       n       -       16      smtpd",
		"  -o content_filter=",
		"  -o smtpd_authorized_xforward_hosts=127.0.0.1/32",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LoadSnippet\n got %q\nwant %q", got, want)
	}
	if _, err := postfixtest.LoadSnippet(filepath.Join(dir, "missing"), nil); err == nil {
		t.Error("LoadSnippet of a missing file succeeded")
	}
}
