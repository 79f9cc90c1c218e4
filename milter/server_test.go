package milter_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/milter"
)

// sendMessage runs one transaction on s and returns the end-of-message
// reply.
func sendMessage(t *testing.T, s *gomilter.ClientSession, qid, from string, rcpts []string, hdr [][2]string, body string) ([]gomilter.ModifyAction, *gomilter.Action) {
	t.Helper()
	if err := s.Macros(gomilter.CodeMail, "i", qid, "{auth_authen}", "alice"); err != nil {
		t.Fatal(err)
	}
	cont(t)(s.Mail(from, []string{"SIZE=100", "BODY=8BITMIME"}))
	for _, r := range rcpts {
		cont(t)(s.Rcpt(r, []string{"NOTIFY=NEVER"}))
	}
	for _, f := range hdr {
		cont(t)(s.HeaderField(f[0], f[1]))
	}
	cont(t)(s.HeaderEnd())
	for len(body) > 0 {
		n := min(len(body), gomilter.MaxBodyChunk)
		cont(t)(s.BodyChunk([]byte(body[:n])))
		body = body[n:]
	}
	mods, act, err := s.End()
	if err != nil {
		t.Fatal(err)
	}
	return mods, act
}

// cont returns a check that a command was answered Continue.
func cont(t *testing.T) func(*gomilter.Action, error) {
	t.Helper()
	return func(act *gomilter.Action, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if act.Code != gomilter.ActContinue {
			t.Fatalf("reply %c, want continue", act.Code)
		}
	}
}

func connectHelo(t *testing.T, s *gomilter.ClientSession, helo string) {
	t.Helper()
	if err := s.Macros(gomilter.CodeConn, "j", "mx.example", "{daemon_name}", "smtpd"); err != nil {
		t.Fatal(err)
	}
	cont(t)(s.Conn("client.example", gomilter.FamilyInet, 40001, "192.0.2.7"))
	cont(t)(s.Helo(helo))
}

func TestFullTransaction(t *testing.T) {
	ts := startServer(t, milter.Config{})
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	hdr := [][2]string{
		{"From", "Alice <alice@example.org>"},
		{"Subject", "hello"},
		{"X-Folded", "first\n\tsecond"},
		{"Subject", "again"},
	}
	body := "line 1\r\nline 2\r\n"
	_, act := sendMessage(t, s, "QID1", "alice@example.org", []string{"bob@example.net", "carol@example.net"}, hdr, body)
	if act.Code != gomilter.ActContinue {
		t.Fatalf("end of message: %c, want continue", act.Code)
	}
	items := ts.items(t)
	if len(items) != 1 {
		t.Fatalf("%d items, want 1", len(items))
	}
	it := items[0]
	wantEML := "From: Alice <alice@example.org>\r\nSubject: hello\r\nX-Folded: first\r\n\tsecond\r\nSubject: again\r\n\r\n" + body
	if string(it.eml) != wantEML {
		t.Errorf("eml:\n%q\nwant\n%q", it.eml, wantEML)
	}
	env := it.env
	if env.Source != archive.SourceMilter || env.Outcome != archive.OutcomeAccepted || env.QueueID != "QID1" {
		t.Errorf("source %q outcome %q queue_id %q", env.Source, env.Outcome, env.QueueID)
	}
	wantClient := &archive.Client{Addr: "192.0.2.7", Port: 40001, Name: "client.example", Helo: "helo.example", Auth: "alice"}
	if !reflect.DeepEqual(env.Client, wantClient) {
		t.Errorf("client %+v, want %+v", env.Client, wantClient)
	}
	if env.Helo != "helo.example" {
		t.Errorf("helo %q", env.Helo)
	}
	if env.Peer == nil || env.Peer.Addr != "127.0.0.1" || env.Peer.Port == 0 {
		t.Errorf("peer %+v", env.Peer)
	}
	wantFrom := &archive.MailFrom{Addr: "alice@example.org", Params: []string{"SIZE=100", "BODY=8BITMIME"}}
	if !reflect.DeepEqual(env.MailFrom, wantFrom) {
		t.Errorf("mail_from %+v, want %+v", env.MailFrom, wantFrom)
	}
	wantRcpt := []archive.Rcpt{
		{Addr: "bob@example.net", Params: []string{"NOTIFY=NEVER"}, Accepted: true},
		{Addr: "carol@example.net", Params: []string{"NOTIFY=NEVER"}, Accepted: true},
	}
	if !reflect.DeepEqual(env.RcptTo, wantRcpt) {
		t.Errorf("rcpt_to %+v, want %+v", env.RcptTo, wantRcpt)
	}
	for k, v := range map[string]string{"j": "mx.example", "{daemon_name}": "smtpd", "i": "QID1", "{auth_authen}": "alice"} {
		if env.Macros[k] != v {
			t.Errorf("macro %s = %q, want %q (macros %v)", k, env.Macros[k], v, env.Macros)
		}
	}
	if env.Message.Subject != "hello" || env.Message.Size != int64(len(wantEML)) {
		t.Errorf("message %+v", env.Message)
	}
	ts.waitTmpEmpty(t)
}

// TestLeadingSpace drives the server as Postfix does, with HDR_LEADSPC:
// each field comes back byte for byte.
func TestLeadingSpace(t *testing.T) {
	ts := startServer(t, milter.Config{AddHeader: true})
	r := ts.raw(t)
	r.negotiate()
	r.connect("client.example", "192.0.2.9", 1025)
	r.expect('c', 'H', "helo.example\x00")
	r.send('D', "M", "i\x00ABCDEF\x00")
	r.expect('c', 'M', "<>\x00BODY=8BITMIME\x00")
	r.expect('c', 'R', "<bob@example.net>\x00")
	fields := [][2]string{
		{"Subject", "x"}, {"Subject", "\tx"}, {"Subject", "  x"}, {"From", " a@example.org"},
		{"X-Empty", ""}, {"X-Folded", " first\n\tsecond"},
	}
	data := r.headersBodyEnd(fields, "body\r\n")
	items := ts.items(t)
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	want := "Subject:x\r\nSubject:\tx\r\nSubject:  x\r\nFrom: a@example.org\r\nX-Empty:\r\nX-Folded: first\r\n\tsecond\r\n\r\nbody\r\n"
	if string(items[0].eml) != want {
		t.Errorf("eml %q, want %q", items[0].eml, want)
	}
	if wantH := "X-Archive-ID\x00 " + items[0].id + "\x00"; data != wantH {
		t.Errorf("added header %q, want %q", data, wantH)
	}
	env := items[0].env
	if env.MailFrom == nil || env.MailFrom.Addr != "" || !reflect.DeepEqual(env.MailFrom.Params, []string{"BODY=8BITMIME"}) {
		t.Errorf("null sender: %+v", env.MailFrom)
	}
	if env.QueueID != "ABCDEF" {
		t.Errorf("queue_id %q", env.QueueID)
	}
	// Postfix aborts after end of message, and may do it twice.
	r.send('A')
	r.send('A')
	r.send('Q')
}

// TestNegotiatedLeadingSpace: whether header values are taken as they stood
// after the colon follows what was negotiated, not what was offered.
// Postfix with milter_protocol = 2 or 4 offers no HDR_LEADSPC (versions
// below 6 cannot) yet honours the request and sends values with their
// leading space; an MTA at version 6 that does not offer it is not asked,
// and eats one space as sendmail's milters expect.
func TestNegotiatedLeadingSpace(t *testing.T) {
	const leadSpc = uint32(gomilter.OptHeaderLeadingSpace)
	// What the MTA sends, per case, for the fields Subject:x,
	// Subject: y and Subject:<TAB>z.
	withSpace := [3]string{"x", " y", "\tz"}
	eaten := [3]string{"x", "y", "\tz"}
	for _, tc := range []struct {
		name           string
		version, proto uint32
		wantLeadSpc    bool
		values         [3]string
		want           string
	}{
		{"postfix protocol 6", 6, 0x1fffff, true, withSpace, "Subject:x\r\nSubject: y\r\nSubject:\tz\r\n"},
		{"postfix protocol 4", 4, 0x3ff, true, withSpace, "Subject:x\r\nSubject: y\r\nSubject:\tz\r\n"},
		{"postfix protocol 2", 2, 0x7f, true, withSpace, "Subject:x\r\nSubject: y\r\nSubject:\tz\r\n"},
		{"version 6 without the bit", 6, 0x1fffff &^ leadSpc, false, eaten, "Subject: x\r\nSubject: y\r\nSubject: \tz\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, milter.Config{AddHeader: true})
			r := ts.raw(t)
			got := r.negotiateAs(tc.version, tc.proto)
			if (got&leadSpc != 0) != tc.wantLeadSpc {
				t.Fatalf("answered protocol mask %#x: HDR_LEADSPC %v, want %v", got, got&leadSpc != 0, tc.wantLeadSpc)
			}
			r.connect("client.example", "192.0.2.9", 1025)
			r.expect('c', 'M', "<a@example.org>\x00")
			r.expect('c', 'R', "<b@example.net>\x00")
			var fields [][2]string
			for _, v := range tc.values {
				fields = append(fields, [2]string{"Subject", v})
			}
			data := r.headersBodyEnd(fields, "body\r\n")
			items := ts.items(t)
			if len(items) != 1 {
				t.Fatalf("%d items", len(items))
			}
			if want := tc.want + "\r\nbody\r\n"; string(items[0].eml) != want {
				t.Errorf("eml %q, want %q", items[0].eml, want)
			}
			// An added field gets its space from us exactly when the MTA
			// adds none.
			wantH := "X-Archive-ID\x00" + items[0].id + "\x00"
			if tc.wantLeadSpc {
				wantH = "X-Archive-ID\x00 " + items[0].id + "\x00"
			}
			if data != wantH {
				t.Errorf("added header %q, want %q", data, wantH)
			}
		})
	}
}

func TestTwoMessagesOneConnection(t *testing.T) {
	ts := startServer(t, milter.Config{})
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	hdr := [][2]string{{"Subject", "one"}}
	sendMessage(t, s, "Q1", "a@example.org", []string{"b@example.net"}, hdr, "1\r\n")
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	hdr = [][2]string{{"Subject", "two"}}
	sendMessage(t, s, "Q2", "c@example.org", []string{"d@example.net", "e@example.net"}, hdr, "2\r\n")
	items := ts.items(t)
	if len(items) != 2 {
		t.Fatalf("%d items, want 2", len(items))
	}
	for i, want := range []struct{ qid, from, subject string }{{"Q1", "a@example.org", "one"}, {"Q2", "c@example.org", "two"}} {
		env := items[i].env
		if env.QueueID != want.qid || env.MailFrom.Addr != want.from || env.Message.Subject != want.subject {
			t.Errorf("item %d: queue_id %q from %q subject %q", i, env.QueueID, env.MailFrom.Addr, env.Message.Subject)
		}
		if env.Client == nil || env.Client.Addr != "192.0.2.7" || env.Client.Helo != "helo.example" || env.Helo != "helo.example" {
			t.Errorf("item %d: client %+v helo %q", i, env.Client, env.Helo)
		}
		if env.Macros["j"] != "mx.example" {
			t.Errorf("item %d: connect macros lost: %v", i, env.Macros)
		}
	}
	if len(items[1].env.RcptTo) != 2 {
		t.Errorf("second message rcpts: %+v", items[1].env.RcptTo)
	}
}

func TestAbort(t *testing.T) {
	ts := startServer(t, milter.Config{})
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	cont(t)(s.Mail("a@example.org", nil))
	cont(t)(s.Rcpt("b@example.net", nil))
	cont(t)(s.HeaderField("Subject", "aborted"))
	cont(t)(s.HeaderEnd())
	cont(t)(s.BodyChunk(bytes.Repeat([]byte("x"), 60000)))
	// RSET: abort, twice.
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	ts.waitTmpEmpty(t)
	// The connection goes on: the next message is archived.
	sendMessage(t, s, "Q2", "c@example.org", []string{"d@example.net"}, [][2]string{{"Subject", "kept"}}, "ok\r\n")
	items := ts.items(t)
	if len(items) != 1 || items[0].env.Message.Subject != "kept" {
		t.Fatalf("items %+v", items)
	}

	// Lost MTA before the end: nothing stays in tmp/.
	r := ts.raw(t)
	r.negotiate()
	r.connect("c", "192.0.2.1", 1)
	r.expect('c', 'M', "<a@example.org>\x00")
	r.expect('c', 'L', "Subject\x00 lost\x00")
	r.expect('c', 'B', "partial")
	r.c.Close() // no abort, no quit
	ts.waitTmpEmpty(t)
	if n := len(ts.items(t)); n != 1 {
		t.Fatalf("%d items, want 1", n)
	}
}

// breakArchive makes every Create fail: tmp/ becomes a regular file (root
// ignores permissions, so chmod would not do). It returns the repair.
func breakArchive(t *testing.T, dir string) func() {
	t.Helper()
	tmp := filepath.Join(dir, "tmp")
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Remove(tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(tmp, 0o750); err != nil {
			t.Fatal(err)
		}
	}
}

func TestArchiveFailureTempfail(t *testing.T) {
	log, logBuf := bufLogger()
	ts := startServer(t, milter.Config{OnArchiveError: archive.PolicyTempfail, AddHeader: true, Logger: log})
	repair := breakArchive(t, ts.dir)
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	mods, act := sendMessage(t, s, "Q1", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "s"}}, "b\r\n")
	if act.Code != gomilter.ActReplyCode || act.SMTPCode != 451 || !strings.HasPrefix(act.SMTPText, "4.3.0 ") {
		t.Fatalf("reply %+v, want 451 4.3.0", act)
	}
	if len(mods) != 0 {
		t.Errorf("modifications on a failed message: %+v", mods)
	}
	if n := len(ts.items(t)); n != 0 {
		t.Fatalf("%d items", n)
	}
	wantLogLine(t, logBuf.String(), "level=ERROR", `msg="message not archived: archive failed, answered tempfail"`,
		"queue_id=Q1", "from=a@example.org", "rcpts_accepted=1", "outcome=tempfailed", "err=")
	// The client retries on the same connection once the archive is back;
	// the connection's data survived the tempfail.
	repair()
	if err := s.Abort(); err != nil {
		t.Fatal(err)
	}
	_, act = sendMessage(t, s, "Q2", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "s"}}, "b\r\n")
	if act.Code != gomilter.ActContinue {
		t.Fatalf("retry: reply %+v", act)
	}
	items := ts.items(t)
	if len(items) != 1 || items[0].env.Client == nil || items[0].env.Client.Helo != "helo.example" || items[0].env.QueueID != "Q2" {
		t.Fatalf("items %+v", items)
	}
	ts.waitTmpEmpty(t)
}

func TestArchiveFailureAccept(t *testing.T) {
	log, logBuf := bufLogger()
	ts := startServer(t, milter.Config{OnArchiveError: archive.PolicyPass, AddHeader: true, Logger: log})
	breakArchive(t, ts.dir)
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	mods, act := sendMessage(t, s, "Q1", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "s"}}, "b\r\n")
	if act.Code != gomilter.ActContinue {
		t.Fatalf("reply %+v, want continue", act)
	}
	if len(mods) != 0 {
		t.Errorf("X-Archive-ID added to an unarchived message: %+v", mods)
	}
	if n := len(ts.items(t)); n != 0 {
		t.Fatalf("%d items", n)
	}
	wantLogLine(t, logBuf.String(), "level=ERROR", "MESSAGE NOT ARCHIVED", "queue_id=Q1", "outcome=not_archived")
}

// TestArchiveFailureMidMessage breaks the archive after the item was
// created, so the commit fails. With tempfail nothing is left behind (the
// client retries); with accept the bytes stay under tmp/ and the recovery
// sweep makes them an item marked recovered.
func TestArchiveFailureMidMessage(t *testing.T) {
	for _, policy := range []archive.Policy{archive.PolicyTempfail, archive.PolicyPass} {
		t.Run(policy.String(), func(t *testing.T) {
			ts := startServer(t, milter.Config{OnArchiveError: policy})
			s := ts.client(t)
			connectHelo(t, s, "helo.example")
			cont(t)(s.Mail("a@example.org", nil))
			cont(t)(s.HeaderField("Subject", "s"))
			cont(t)(s.HeaderEnd())
			ents, _ := os.ReadDir(filepath.Join(ts.dir, "tmp"))
			if len(ents) != 1 {
				t.Fatalf("tmp/ holds %d files, want the item in progress", len(ents))
			}
			// A directory where the item goes makes the rename fail.
			id := strings.TrimSuffix(ents[0].Name(), ".eml")
			blocker := filepath.Join(ts.dir, id+".eml")
			if err := os.MkdirAll(filepath.Join(blocker, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			cont(t)(s.BodyChunk([]byte("body\r\n")))
			_, act, err := s.End()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(ts.dir, id+".json")); err == nil {
				t.Fatal("a .json was committed")
			}
			if policy == archive.PolicyTempfail {
				if act.Code != gomilter.ActReplyCode || act.SMTPCode != 451 {
					t.Fatalf("reply %+v, want 451", act)
				}
				ts.waitTmpEmpty(t)
				return
			}
			if act.Code != gomilter.ActContinue {
				t.Fatalf("reply %+v, want continue", act)
			}
			os.RemoveAll(blocker)
			rep := ts.store.Recover()
			if len(rep.Recovered) != 1 || rep.Recovered[0] != id {
				t.Fatalf("recovery: %+v", rep)
			}
			items := ts.items(t)
			if len(items) != 1 || !items[0].env.Recovered || string(items[0].eml) != "Subject: s\r\n\r\nbody\r\n" {
				t.Fatalf("recovered items %+v", items)
			}
		})
	}
}

func TestAddHeader(t *testing.T) {
	ts := startServer(t, milter.Config{AddHeader: true})
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	mods, act := sendMessage(t, s, "Q1", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "s"}}, "b\r\n")
	if act.Code != gomilter.ActContinue {
		t.Fatalf("reply %+v", act)
	}
	items := ts.items(t)
	if len(items) != 1 {
		t.Fatalf("%d items", len(items))
	}
	want := []gomilter.ModifyAction{{Code: gomilter.ActAddHeader, HeaderName: "X-Archive-ID", HeaderValue: items[0].id}}
	if !reflect.DeepEqual(mods, want) {
		t.Errorf("modifications %+v, want %+v", mods, want)
	}
	// Off by default.
	ts2 := startServer(t, milter.Config{})
	s2 := ts2.client(t)
	connectHelo(t, s2, "helo.example")
	if mods, _ := sendMessage(t, s2, "Q1", "a@example.org", nil, [][2]string{{"Subject", "s"}}, "b\r\n"); len(mods) != 0 {
		t.Errorf("modifications without --add-header: %+v", mods)
	}
}

// TestGarbage: malformed packets close that connection only.
func TestGarbage(t *testing.T) {
	ts := startServer(t, milter.Config{})
	garbage := []string{
		"GET / HTTP/1.0\r\n\r\n",                    // a length of 1.2 GB
		"\x00\x00\x00\x00",                          // zero length
		"\x00\x00\x00\x02Z!",                        // unknown command
		"\x00\x00\x00\x01C",                         // connect without data
		"\x00\x00\x00\x01D",                         // macros without stage
		"\x00\x00\x00\x10O\x00\x00",                 // truncated packet, then EOF
		"\x00\x00\x00\x05L\x00\x00\x00\x00\x00\x00", // header of NULs
	}
	for _, g := range garbage {
		r := ts.raw(t)
		r.c.Write([]byte(g))
		r.c.(interface{ CloseWrite() error }).CloseWrite()
		r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		for {
			if _, err := r.c.Read(buf); err != nil {
				break // closed by the server (or EOF after a reply)
			}
		}
	}
	// Garbage in the middle of a message: the message is dropped.
	r := ts.raw(t)
	r.negotiate()
	r.connect("c", "192.0.2.1", 1)
	r.expect('c', 'M', "<a@example.org>\x00")
	r.expect('c', 'L', "Subject\x00 s\x00")
	r.c.Write(binary.BigEndian.AppendUint32(nil, 0xfffffff0))
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after garbage")
	}
	ts.waitTmpEmpty(t)

	// The service still works.
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	if _, act := sendMessage(t, s, "Q", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "s"}}, "b\r\n"); act.Code != gomilter.ActContinue {
		t.Fatalf("reply %+v", act)
	}
	if n := len(ts.items(t)); n != 1 {
		t.Fatalf("%d items", n)
	}
}

// TestShutdown: a message in flight completes, an idle connection is
// closed, and Shutdown returns once both are done.
func TestShutdown(t *testing.T) {
	ts := startServer(t, milter.Config{})
	busy := ts.client(t)
	connectHelo(t, busy, "busy.example")
	cont(t)(busy.Mail("a@example.org", nil))
	cont(t)(busy.HeaderField("Subject", "in flight"))
	idle := ts.raw(t)
	idle.negotiate()
	idle.connect("idle.example", "192.0.2.2", 2)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- ts.srv.Shutdown(ctx)
	}()
	// The idle connection is closed promptly.
	idle.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.c.Read(make([]byte, 1)); err == nil {
		t.Fatal("idle connection not closed")
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v with a message in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	// New connections are refused.
	if c, err := gomilter.NewClientWithOptions("tcp", ts.addr, gomilter.ClientOptions{ReadTimeout: time.Second, WriteTimeout: time.Second}).Session(); err == nil {
		c.Close()
		t.Fatal("new connection accepted during shutdown")
	}
	cont(t)(busy.HeaderEnd())
	cont(t)(busy.BodyChunk([]byte("body\r\n")))
	_, act, err := busy.End()
	if err != nil || act.Code != gomilter.ActContinue {
		t.Fatalf("end: %+v %v", act, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the message completed")
	}
	if n := len(ts.items(t)); n != 1 {
		t.Fatalf("%d items", n)
	}
}

// TestShutdownTimeout: a message that does not finish in time is aborted.
func TestShutdownTimeout(t *testing.T) {
	ts := startServer(t, milter.Config{})
	s := ts.client(t)
	connectHelo(t, s, "slow.example")
	cont(t)(s.Mail("a@example.org", nil))
	cont(t)(s.HeaderField("Subject", "slow"))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil with a message still in flight")
	}
	ts.waitTmpEmpty(t)
}

func TestBigBody(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	ts := startServer(t, milter.Config{})
	s := ts.client(t)
	connectHelo(t, s, "helo.example")
	line := strings.Repeat("0123456789", 99) + "\r\n"
	body := strings.Repeat(line, 20<<20/len(line))
	_, act := sendMessage(t, s, "Q", "a@example.org", []string{"b@example.net"}, [][2]string{{"Subject", "big"}}, body)
	if act.Code != gomilter.ActContinue {
		t.Fatalf("reply %+v", act)
	}
	items := ts.items(t)
	if len(items) != 1 || string(items[0].eml) != "Subject: big\r\n\r\n"+body {
		t.Fatal("big body not archived intact")
	}
}

func TestListen(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "m.sock")
	ln, err := milter.Listen("unix:"+sock, milter.Socket{Mode: 0o660, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket %v %v", fi, err)
	}
	if _, err := milter.Listen("unix:"+sock, milter.Socket{Mode: 0o660, GID: -1}); err == nil {
		t.Fatal("second listener on a live socket")
	}
	ln.Close()
	for _, bad := range []string{"127.0.0.1:1", "inet:nohost", "smtp:1.2.3.4:25", "unix:"} {
		if _, err := milter.Listen(bad, milter.Socket{Mode: 0o660, GID: -1}); err == nil {
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
	for _, good := range []string{"inet:127.0.0.1:0", "inet:0@127.0.0.1"} {
		ln, err := milter.Listen(good, milter.Socket{GID: -1})
		if err != nil {
			t.Errorf("Listen(%q): %v", good, err)
			continue
		}
		ln.Close()
	}
}

// TestListenSocketDir: -l unix:/var/spool/postfix/milter/archive.sock works
// on a machine where that directory does not exist yet, and the socket can
// get a group user postfix is in.
func TestListenSocketDir(t *testing.T) {
	gid := os.Getgid()
	if os.Geteuid() == 0 {
		// Root may give any group: take one that is not ours, to see it set.
		if g, err := milter.LookupGroup("nogroup"); err == nil {
			gid = g
		}
	}
	for _, tc := range []struct {
		name    string
		gid     int
		dirMode os.FileMode
	}{
		{"no group", -1, 0o755 | os.ModeDir},
		{"with group", gid, 0o750 | os.ModeDir | os.ModeSetgid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "spool", "milter")
			sock := filepath.Join(dir, "archive.sock")
			ln, err := milter.Listen("unix:"+sock, milter.Socket{Mode: 0o660, GID: tc.gid})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			di, err := os.Stat(dir)
			if err != nil || di.Mode() != tc.dirMode {
				t.Fatalf("directory %v %v, want %v", di.Mode(), err, tc.dirMode)
			}
			si, err := os.Stat(sock)
			if err != nil || si.Mode().Perm() != 0o660 {
				t.Fatalf("socket %v %v, want 0660", si.Mode(), err)
			}
			if tc.gid >= 0 {
				for _, fi := range []os.FileInfo{di, si} {
					if g := int(fi.Sys().(*syscall.Stat_t).Gid); g != tc.gid {
						t.Errorf("%s: group %d, want %d", fi.Name(), g, tc.gid)
					}
				}
			}
			c, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		})
	}
}

func TestLookupGroup(t *testing.T) {
	for name, want := range map[string]int{"0": 0, "root": 0, "4242": 4242} {
		if got, err := milter.LookupGroup(name); err != nil || got != want {
			t.Errorf("LookupGroup(%q) = %d, %v; want %d", name, got, err, want)
		}
	}
	for _, bad := range []string{"no-such-group-here", "-1", ""} {
		if _, err := milter.LookupGroup(bad); err == nil {
			t.Errorf("LookupGroup(%q) succeeded", bad)
		}
	}
}
