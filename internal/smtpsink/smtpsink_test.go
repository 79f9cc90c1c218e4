package smtpsink_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/smtp"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/smtpsink"
)

func startSink(t *testing.T, configure func(*smtpsink.Server)) *smtpsink.Server {
	t.Helper()
	s := &smtpsink.Server{Dir: t.TempDir(), IdleTimeout: 30 * time.Second}
	if configure != nil {
		configure(s)
	}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// client is a raw SMTP connection for tests that control every byte.
type client struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { conn.Close() })
	c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
	c.expect(220)
	return c
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatal(err)
	}
}

// reply reads one (possibly multi-line) reply and returns its code and the
// text of its last line.
func (c *client) reply() (int, string) {
	c.t.Helper()
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply: %v (got %q)", err, line)
		}
		if !strings.HasSuffix(line, "\r\n") || len(line) < 6 {
			c.t.Fatalf("malformed reply line %q", line)
		}
		var code int
		if _, err := fmt.Sscanf(line[:3], "%d", &code); err != nil {
			c.t.Fatalf("malformed reply line %q", line)
		}
		if line[3] == ' ' {
			return code, strings.TrimSuffix(line[4:], "\r\n")
		}
	}
}

func (c *client) expect(code int) string {
	c.t.Helper()
	got, text := c.reply()
	if got != code {
		c.t.Fatalf("reply %d %s, want %d", got, text, code)
	}
	return text
}

// stuff returns body as sent in DATA: dot-stuffed (RFC 5321 4.5.2) and
// followed by the end-of-data line. body must end with a line end.
func stuff(body string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(body, "\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	b.WriteString(".\r\n")
	return b.String()
}

func waitFor(t *testing.T, s *smtpsink.Server, n int) []smtpsink.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msgs, err := s.WaitFor(ctx, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != n {
		t.Fatalf("%d messages, want %d", len(msgs), n)
	}
	return msgs
}

func TestEHLOAdvertises(t *testing.T) {
	s := startSink(t, func(s *smtpsink.Server) { s.Hostname = "sink.example" })
	c := dial(t, s.Addr())
	c.send("EHLO client.example\r\n")
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.TrimSuffix(line, "\r\n"))
		if line[3] == ' ' {
			break
		}
	}
	want := []string{
		"250-sink.example",
		"250-PIPELINING",
		"250-SIZE",
		"250-8BITMIME",
		"250-SMTPUTF8",
		"250-ENHANCEDSTATUSCODES",
		"250-DSN",
		"250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("EHLO reply\n got %q\nwant %q", lines, want)
	}
}

// TestPipelining sends whole command groups in single writes (RFC 2920) and
// checks every reply comes back, in order, without the client waiting
// between commands.
func TestPipelining(t *testing.T) {
	s := startSink(t, nil)
	c := dial(t, s.Addr())

	c.send("EHLO client.example\r\n" +
		"XFORWARD NAME=mail.example.org ADDR=192.0.2.1 PORT=4321\r\n" +
		"XFORWARD PROTO=ESMTP HELO=client.example IDENT=ABC123 SOURCE=REMOTE\r\n" +
		"MAIL FROM:<alice@example.org> SIZE=42 BODY=8BITMIME\r\n" +
		"RCPT TO:<bob@example.net> ORCPT=rfc822;bob@example.net NOTIFY=NEVER\r\n" +
		"RCPT TO:<carol@example.net>\r\n" +
		"DATA\r\n")
	for _, code := range []int{250, 250, 250, 250, 250, 250, 354} {
		c.expect(code)
	}
	body1 := "Subject: one\r\n\r\nfirst\r\n"
	body2 := "Subject: two\r\n\r\nsecond\r\n"
	// The end of one message, a whole second transaction up to DATA, and
	// then (after 354) its content, RSET, NOOP and QUIT in one write.
	c.send(stuff(body1) +
		"MAIL FROM:<>\r\n" +
		"RCPT TO:<dave@example.net>\r\n" +
		"DATA\r\n")
	id1 := c.expect(250)
	c.expect(250)
	c.expect(250)
	c.expect(354)
	c.send(stuff(body2) + "RSET\r\nNOOP\r\nQUIT\r\n")
	id2 := c.expect(250)
	c.expect(250)
	c.expect(250)
	c.expect(221)
	if _, err := c.r.ReadByte(); err != io.EOF {
		t.Errorf("after QUIT: %v, want EOF", err)
	}

	msgs := waitFor(t, s, 2)
	m := msgs[0]
	if want := "2.0.0 Ok: queued as " + m.ID; id1 != want {
		t.Errorf("reply %q, want %q", id1, want)
	}
	if want := "2.0.0 Ok: queued as " + msgs[1].ID; id2 != want {
		t.Errorf("reply %q, want %q", id2, want)
	}
	if m.Helo != "client.example" || m.MailFrom != "alice@example.org" {
		t.Errorf("helo %q from %q", m.Helo, m.MailFrom)
	}
	if want := []string{"SIZE=42", "BODY=8BITMIME"}; !reflect.DeepEqual(m.MailParams, want) {
		t.Errorf("mail params %q, want %q", m.MailParams, want)
	}
	wantRcpts := []smtpsink.Rcpt{
		{Addr: "bob@example.net", Params: []string{"ORCPT=rfc822;bob@example.net", "NOTIFY=NEVER"}},
		{Addr: "carol@example.net"},
	}
	if !reflect.DeepEqual(m.Rcpts, wantRcpts) {
		t.Errorf("rcpts %+v, want %+v", m.Rcpts, wantRcpts)
	}
	wantXF := map[string]string{
		"NAME": "mail.example.org", "ADDR": "192.0.2.1", "PORT": "4321",
		"PROTO": "ESMTP", "HELO": "client.example", "IDENT": "ABC123", "SOURCE": "REMOTE",
	}
	if !reflect.DeepEqual(m.XForward, wantXF) {
		t.Errorf("xforward %v, want %v", m.XForward, wantXF)
	}
	if string(m.Data) != body1 || string(msgs[1].Data) != body2 {
		t.Errorf("data %q, %q", m.Data, msgs[1].Data)
	}
	// XFORWARD attributes last for one transaction only.
	if msgs[1].XForward != nil || msgs[1].MailFrom != "" {
		t.Errorf("second message: xforward %v from %q", msgs[1].XForward, msgs[1].MailFrom)
	}
	if m.RemoteAddr != c.conn.LocalAddr().String() {
		t.Errorf("remote addr %q, want %q", m.RemoteAddr, c.conn.LocalAddr())
	}
	if m.Seq != 1 || msgs[1].Seq != 2 || filepath.Base(m.Path) != "000001.eml" {
		t.Errorf("seq %d, %d, path %s", m.Seq, msgs[1].Seq, m.Path)
	}
	if len(m.ID) < 10 || strings.Trim(m.ID, "0123456789ABCDEF") != "" || m.ID == msgs[1].ID {
		t.Errorf("queue IDs %q, %q: want distinct upper-case hex", m.ID, msgs[1].ID)
	}
}

// TestMultipleTransactions uses net/smtp, a real client, for several
// messages on one connection.
func TestMultipleTransactions(t *testing.T) {
	s := startSink(t, nil)
	cl, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.Hello("client.example"); err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := range n {
		if err := cl.Mail(fmt.Sprintf("sender%d@example.org", i)); err != nil {
			t.Fatal(err)
		}
		for j := 0; j <= i; j++ {
			if err := cl.Rcpt(fmt.Sprintf("rcpt%d@example.net", j)); err != nil {
				t.Fatal(err)
			}
		}
		w, err := cl.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "Subject: %d\r\n\r\nbody %d\r\n", i, i)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Quit(); err != nil {
		t.Fatal(err)
	}
	msgs := waitFor(t, s, n)
	for i, m := range msgs {
		if m.MailFrom != fmt.Sprintf("sender%d@example.org", i) || len(m.Rcpts) != i+1 {
			t.Errorf("message %d: from %q rcpts %v", i, m.MailFrom, m.RcptAddrs())
		}
		if want := fmt.Sprintf("Subject: %d\r\n\r\nbody %d\r\n", i, i); string(m.Data) != want {
			t.Errorf("message %d: data %q, want %q", i, m.Data, want)
		}
		// net/smtp sends BODY=8BITMIME and SMTPUTF8 when advertised.
		if want := []string{"BODY=8BITMIME", "SMTPUTF8"}; !reflect.DeepEqual(m.MailParams, want) {
			t.Errorf("message %d: params %q, want %q", i, m.MailParams, want)
		}
	}
}

func TestRejectRcpt(t *testing.T) {
	s := startSink(t, func(s *smtpsink.Server) {
		s.RejectRcpt = func(addr string) bool { return strings.HasPrefix(addr, "nobody@") }
	})
	c := dial(t, s.Addr())
	c.send("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<nobody@example.net>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	if text := c.expect(550); !strings.HasPrefix(text, "5.1.1 <nobody@example.net>") {
		t.Errorf("550 reply text %q", text)
	}
	if text := c.expect(554); text != "5.5.1 Error: no valid recipients" {
		t.Errorf("554 reply text %q", text)
	}
	// The transaction is still open: add a good recipient.
	c.send("RCPT TO:<bob@example.net>\r\nRCPT TO:<nobody@example.com>\r\nDATA\r\n")
	c.expect(250)
	c.expect(550)
	c.expect(354)
	c.send(stuff("x\r\n") + "QUIT\r\n")
	c.expect(250)
	c.expect(221)
	msgs := waitFor(t, s, 1)
	if got := msgs[0].RcptAddrs(); !reflect.DeepEqual(got, []string{"bob@example.net"}) {
		t.Errorf("rcpts %q", got)
	}
}

func TestProtocolErrors(t *testing.T) {
	s := startSink(t, nil)
	c := dial(t, s.Addr())
	steps := []struct {
		send string
		code int
	}{
		{"MAIL FROM:<a@example.org>", 503}, // before HELO
		{"HELO", 501},
		{"HELO client.example", 250},
		{"RCPT TO:<b@example.net>", 503},
		{"DATA", 503},
		{"MAIL TO:<a@example.org>", 501},
		{"MAIL FROM:<a@example.org", 501},
		{"MAIL FROM: <a@example.org>", 250}, // Postfix accepts the space
		{"MAIL FROM:<a@example.org>", 503},  // nested
		{"XFORWARD ADDR=192.0.2.1", 503},    // inside a transaction
		{"RCPT TO:<>", 501},
		{`RCPT TO:<"odd>local"@example.net>`, 250},
		{"DATA now", 501},
		{"RSET", 250},
		{"XFORWARD FOO=bar", 501},
		{"XFORWARD", 501},
		{"BDAT 10 LAST", 502},
		{"", 500},
		{"NOOP", 250},
		{"VRFY bob", 252},
		{"MAIL FROM:<" + strings.Repeat("a", 100_000) + "@example.org>", 500},
		{"NOOP", 250},
	}
	for _, st := range steps {
		c.send(st.send + "\r\n")
		if got, text := c.reply(); got != st.code {
			t.Errorf("%.40q: reply %d %s, want %d", st.send, got, text, st.code)
		}
	}
}

// TestBytesPreserved checks that the .eml is exactly the DATA content after
// dot-unstuffing, with line ends as received.
func TestBytesPreserved(t *testing.T) {
	s := startSink(t, nil)
	var eightBit strings.Builder
	for b := 0x80; b <= 0xff; b++ {
		eightBit.WriteByte(byte(b))
	}
	bodies := []struct {
		name, body string
	}{
		{"crlf", "Subject: hi\r\n\r\nhello\r\n"},
		{"dot-stuffing", ".leading dot\r\n..two dots\r\n. \r\n.\tx\r\nend\r\n"},
		{"bare LF", "Subject: lf\n\nline one\nline two\n.dot line\n"},
		{"mixed line ends and bare CR", "a\r\nb\nc\rd\r\n\r\r\n"},
		{"8-bit and NUL", "Subject: =?utf-8?q?x?=\r\n\r\nGrüße " + eightBit.String() + "\x00\x01\r\n"},
		{"empty", ""},
		{"1 MB line", "X-Long: " + strings.Repeat("x", 1<<20) + "\r\n\r\nbody\r\n"},
		{"1 MB line starting with a dot", strings.Repeat(".", 1<<20) + "\r\n"},
	}
	c := dial(t, s.Addr())
	c.send("EHLO client.example\r\n")
	c.expect(250)
	for _, b := range bodies {
		c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
		c.expect(250)
		c.expect(250)
		c.expect(354)
		// The server writes nothing during DATA, so a 1 MB write blocks
		// only if the server stops reading: what the test is about.
		c.send(stuff(b.body))
		c.expect(250)
	}
	c.send("QUIT\r\n")
	c.expect(221)
	msgs := waitFor(t, s, len(bodies))
	for i, b := range bodies {
		m := msgs[i]
		if !bytes.Equal(m.Data, []byte(b.body)) {
			t.Errorf("%s: stored %d bytes %.80q, want %d bytes %.80q", b.name, len(m.Data), m.Data, len(b.body), b.body)
		}
		if m.Size != int64(len(b.body)) {
			t.Errorf("%s: size %d, want %d", b.name, m.Size, len(b.body))
		}
		onDisk, err := os.ReadFile(m.Path)
		if err != nil || !bytes.Equal(onDisk, m.Data) {
			t.Errorf("%s: %s differs from Data (%v)", b.name, m.Path, err)
		}
	}
}

func TestXForwardXtext(t *testing.T) {
	s := startSink(t, nil)
	c := dial(t, s.Addr())
	c.send("EHLO relay.example\r\n")
	c.expect(250)
	c.send("xforward name=[UNAVAILABLE] helo=odd+20name+2Bplus ident=bad+zz\r\n")
	c.expect(250)
	c.send("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(354)
	c.send(stuff("x\r\n"))
	c.expect(250)
	m := waitFor(t, s, 1)[0]
	want := map[string]string{"NAME": "[UNAVAILABLE]", "HELO": "odd name+plus", "IDENT": "bad+zz"}
	if !reflect.DeepEqual(m.XForward, want) {
		t.Errorf("xforward %q, want %q", m.XForward, want)
	}
}

func TestConcurrentClients(t *testing.T) {
	s := startSink(t, nil)
	const clients, each = 8, 5
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				msg := fmt.Sprintf("Subject: %d.%d\r\n\r\nbody\r\n", i, j)
				err := smtp.SendMail(s.Addr(), nil, "a@example.org", []string{"b@example.net"}, []byte(msg))
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	msgs := waitFor(t, s, clients*each)
	ids := map[string]bool{}
	for i, m := range msgs {
		if m.Seq != i+1 {
			t.Errorf("message %d has seq %d", i, m.Seq)
		}
		if ids[m.ID] {
			t.Errorf("duplicate queue ID %s", m.ID)
		}
		ids[m.ID] = true
	}
}

func TestWaitForTimeout(t *testing.T) {
	s := startSink(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	msgs, err := s.WaitFor(ctx, 1)
	if err == nil || len(msgs) != 0 {
		t.Fatalf("WaitFor = %d messages, %v; want a timeout", len(msgs), err)
	}
	if !strings.Contains(err.Error(), "0 of 1") {
		t.Errorf("error %q does not say how many arrived", err)
	}
}

// TestRestart checks a new server on the same directory keeps the messages
// there and numbers after them.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	send := func() {
		s := &smtpsink.Server{Dir: dir}
		if err := s.Listen("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := smtp.SendMail(s.Addr(), nil, "a@example.org", []string{"b@example.net"}, []byte("x\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	send()
	send()
	msgs, err := smtpsink.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 2 || msgs[0].Seq != 1 || msgs[1].Seq != 2 {
		t.Fatalf("got %d messages %+v", len(msgs), msgs)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if want := []string{"000001.eml", "000001.json", "000002.eml", "000002.json"}; !reflect.DeepEqual(names, want) {
		t.Errorf("files %q, want %q", names, want)
	}
}

// TestCloseDropsClients checks Close returns while a client sits idle in the
// middle of DATA, and that the partial message is not recorded.
func TestCloseDropsClients(t *testing.T) {
	s := &smtpsink.Server{Dir: t.TempDir()}
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	c := dial(t, s.Addr())
	c.send("HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expect(250)
	c.expect(354)
	c.send("partial line\r\n")
	done := make(chan error)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	msgs, err := s.Messages()
	if err != nil || len(msgs) != 0 {
		t.Errorf("Messages = %d, %v; want none", len(msgs), err)
	}
	ents, _ := os.ReadDir(s.Dir)
	if len(ents) != 0 {
		t.Errorf("left files behind: %v", ents)
	}
	if _, err := c.r.ReadByte(); err == nil {
		t.Error("connection still open after Close")
	}
}
