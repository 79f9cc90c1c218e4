package milter_test

import (
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/milter"
)

// requireProgram finds a peer program; a missing one fails the test under
// CI=true and skips it elsewhere.
func requireProgram(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required under CI (scripts/install-peers.sh installs it): %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

// TestMiltertest drives the server with OpenDKIM's miltertest, an MTA
// simulator independent of go-milter.
func TestMiltertest(t *testing.T) {
	mt := requireProgram(t, "miltertest")
	ts := startServer(t, milter.Config{AddHeader: true})
	_, port, _ := strings.Cut(ts.addr, ":")
	cmd := exec.Command(mt, "-s", "testdata/archive.lua", "-D", "port="+port)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("miltertest: %v\n%s", err, out)
	}
	ts.waitTmpEmpty(t)
	items := ts.items(t)
	if len(items) != 2 {
		t.Fatalf("%d items, want 2\n%s", len(items), out)
	}
	if !strings.Contains(string(out), "X-Archive-ID: "+items[0].id) {
		t.Errorf("miltertest saw no X-Archive-ID for %s:\n%s", items[0].id, out)
	}

	wantEML := "Subject: x\r\nSubject: \tx\r\nSubject:   x\r\nX-Folded: first\r\n\tsecond\r\nX-Empty: \r\n\r\nline one\r\nline two\r\n"
	if got := string(items[0].eml); got != wantEML {
		t.Errorf("message 1:\n%q\nwant\n%q", got, wantEML)
	}
	env := items[0].env
	wantClient := &archive.Client{Addr: "192.0.2.55", Name: "client.example", Helo: "helo.example", Auth: "alice"}
	env.Client.Port = 0 // miltertest sends its own
	if !reflect.DeepEqual(env.Client, wantClient) {
		t.Errorf("client %+v, want %+v", env.Client, wantClient)
	}
	if env.QueueID != "MTQ1" || env.MailFrom.Addr != "alice@example.org" ||
		!reflect.DeepEqual(env.MailFrom.Params, []string{"SIZE=42", "BODY=8BITMIME"}) {
		t.Errorf("queue_id %q mail_from %+v", env.QueueID, env.MailFrom)
	}
	wantRcpt := []archive.Rcpt{
		{Addr: "bob@example.net", Accepted: true},
		{Addr: "carol@example.net", Params: []string{"NOTIFY=NEVER"}, Accepted: true},
	}
	if !reflect.DeepEqual(env.RcptTo, wantRcpt) {
		t.Errorf("rcpt_to %+v", env.RcptTo)
	}

	env2 := items[1].env
	if got := string(items[1].eml); got != "Subject: second\r\n\r\nsecond body\r\n" {
		t.Errorf("message 2: %q", got)
	}
	if env2.QueueID != "MTQ2" || env2.MailFrom.Addr != "" || len(env2.RcptTo) != 1 ||
		env2.Client == nil || env2.Client.Helo != "helo.example" || env2.Macros["j"] != "mx.example" {
		t.Errorf("message 2 envelope: %+v client %+v", env2, env2.Client)
	}
	if env2.Macros["{auth_authen}"] != "" {
		t.Errorf("message 1's macros leaked into message 2: %v", env2.Macros)
	}
}
