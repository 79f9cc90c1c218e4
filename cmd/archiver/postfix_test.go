package main_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

// The documented setup with a real Postfix: mailbox_command from
// postfix-examples/mailbox_command/main.cf runs the setuid archiver (as
// installed by install.sh) in front of a delivery command, for a local user.
// Then filer (as the archive owner) files the items.
func TestPostfixMailboxCommand(t *testing.T) {
	postfixtest.Require(t)
	in := install(t)
	rcpt := addUser(t, "mar")

	// The delivery command: keeps what it got, who it ran as and its
	// environment; exits 75 once when told to.
	out := filepath.Join(in.base, "delivered")
	os.Mkdir(out, 0o700)
	os.Chown(out, rcpt.uid, rcpt.gid)
	deliver := filepath.Join(in.base, "deliver.sh")
	os.WriteFile(deliver, []byte(`#!/bin/sh
out=`+out+`
n=$(date +%s%N)
cat > "$out/$n.msg"
id -u > "$out/$n.uid"
ls `+in.root+` > /dev/null 2>&1 && echo listed >> "$out/breach"
cat `+in.root+`/*.eml > /dev/null 2>&1 && echo read >> "$out/breach"
if [ -e "$out/defer" ]; then rm -f "$out/defer"; exit 75; fi
exit 0
`), 0o755)

	_, file, _, _ := runtime.Caller(0)
	snippet := filepath.Join(filepath.Dir(file), "..", "..", "postfix-examples", "mailbox_command", "main.cf")
	mainCF, err := postfixtest.LoadSnippet(snippet, map[string]string{
		"/usr/local/bin/archiver":           in.bin,
		`/usr/bin/procmail -a "$EXTENSION"`: deliver,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(mainCF, "\n"), in.bin+` local "$USER" `+deliver) {
		t.Fatalf("snippet not as expected: %q", mainCF)
	}
	pf := postfixtest.Start(t, postfixtest.Options{MainCF: mainCF})

	send := func(subject string) {
		t.Helper()
		msg := "From: Alice <alice@example.org>\r\n" +
			"To: " + rcpt.name + "@localhost\r\n" +
			"Subject: " + subject + "\r\n" +
			"Message-ID: <" + subject + "@example.org>\r\n" +
			"\r\n" +
			"Hello " + rcpt.name + ",\r\n" +
			". a line that starts with a dot\r\n" +
			"the end\r\n"
		if err := smtp.SendMail(pf.SMTPAddr(), nil, "alice@example.org", []string{rcpt.name + "@localhost"}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	wait := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := pf.WaitQueueEmpty(ctx); err != nil {
			t.Fatalf("%v\n%s", err, pf.Log())
		}
	}

	// 1. A delivery.
	send("first")
	wait()
	items := completeItems(t, in.root)
	deliveries := delivered(t, out)
	if len(items) != 1 || len(deliveries) != 1 {
		t.Fatalf("items %v, deliveries %v\n%s", items, deliveries, pf.Log())
	}
	env := checkArchived(t, in.root, items[0], deliveries)
	t.Logf("delivery environment recorded: %v", env.Env)
	if env.Message.Subject != "first" {
		t.Errorf("subject %q", env.Message.Subject)
	}
	for k, want := range map[string]string{
		"USER":            rcpt.name,
		"SENDER":          "alice@example.org",
		"RECIPIENT":       rcpt.name + "@localhost",
		"LOCAL":           rcpt.name,
		"DOMAIN":          "localhost",
		"CLIENT_ADDRESS":  "127.0.0.1",
		"CLIENT_PROTOCOL": "ESMTP",
	} {
		if env.Env[k] != want {
			t.Errorf("env[%s] = %q, want %q (env %v)", k, env.Env[k], want, env.Env)
		}
	}
	if env.Client == nil || env.Client.Addr != "127.0.0.1" || env.Client.Proto != "ESMTP" {
		t.Errorf("client %+v", env.Client)
	}
	// The queue ID, from Postfix's Received: field, is the one the maillog
	// gives this delivery, so the item joins Postfix's log.
	sent := regexp.MustCompile(`([0-9A-Za-z]+): to=<` + regexp.QuoteMeta(rcpt.name) + `@localhost>, .*status=sent \(delivered to command`).FindStringSubmatch(pf.Log())
	if sent == nil || env.QueueID != sent[1] {
		t.Errorf("queue_id %q, maillog delivery %q", env.QueueID, sent)
	}
	if len(env.Tags) != 2 || env.Tags[0] != "local" || env.Tags[1] != rcpt.name {
		t.Errorf("tags %q", env.Tags)
	}
	for _, d := range deliveries {
		if uid, _ := os.ReadFile(strings.TrimSuffix(d, ".msg") + ".uid"); strings.TrimSpace(string(uid)) != strconv.Itoa(rcpt.uid) {
			t.Errorf("delivery ran as uid %q, want %d", uid, rcpt.uid)
		}
	}

	// 2. The delivery command defers (75): Postfix keeps the message; the
	// retry delivers it. Both attempts are complete items.
	marker := filepath.Join(out, "defer")
	os.WriteFile(marker, nil, 0o644)
	os.Chown(marker, rcpt.uid, rcpt.gid)
	send("second")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pf.WaitLog(ctx, "status=deferred"); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	wait()
	items = completeItems(t, in.root)
	deliveries = delivered(t, out)
	if len(items) != 3 || len(deliveries) != 3 {
		t.Fatalf("items %v, deliveries %v\n%s", items, deliveries, pf.Log())
	}
	seconds := 0
	for _, id := range items {
		if checkArchived(t, in.root, id, deliveries).Message.Subject == "second" {
			seconds++
		}
	}
	if seconds != 2 {
		t.Errorf("%d items of the deferred message, want 2", seconds)
	}
	if !strings.Contains(pf.Log(), "status=sent (delivered to command: "+in.bin) {
		t.Errorf("no delivery to the archiver in the log")
	}
	if b, err := os.ReadFile(filepath.Join(out, "breach")); err == nil {
		t.Errorf("the delivering user reached the archive: %s", b)
	}
	if ok, o := asUser(t, rcpt, "ls "+in.root+" || cat "+filepath.Join(in.root, items[0]+".eml")); ok {
		t.Errorf("%s can reach the archive: %s", rcpt.name, o)
	}

	// 3. The archive cannot take the item: nothing is delivered, Postfix
	// defers; once the archive is back, the retry archives and delivers.
	if err := os.Chmod(in.root, 0o500); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(pf.Log(), "status=deferred")
	send("third")
	for strings.Count(pf.Log(), "status=deferred") == before {
		if ctx.Err() != nil {
			t.Fatalf("not deferred:\n%s", pf.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(delivered(t, out)); n != 3 {
		t.Errorf("%d deliveries, want 3: delivered although not archived", n)
	}
	if i := strings.Index(pf.Log(), "message not archived"); i < 0 {
		t.Errorf("the archiver's reason is not in Postfix's log")
	} else {
		line := pf.Log()[strings.LastIndex(pf.Log()[:i], "\n")+1:]
		t.Logf("Postfix logged: %s", line[:strings.IndexByte(line, '\n')])
	}
	if err := os.Chmod(in.root, 0o2750); err != nil {
		t.Fatal(err)
	}
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	wait()
	items = completeItems(t, in.root)
	deliveries = delivered(t, out)
	if len(items) != 4 || len(deliveries) != 4 {
		t.Fatalf("items %v, deliveries %v\n%s", items, deliveries, pf.Log())
	}
	for _, id := range items {
		checkArchived(t, in.root, id, deliveries)
	}
	if ents, _ := os.ReadDir(filepath.Join(in.root, "tmp")); len(ents) != 0 {
		t.Errorf("left in tmp/: %v", ents)
	}

	// 4. filer, as the archive owner, files them into dated directories.
	filerBin := buildFiler(t)
	cmd := exec.Command(filerBin, "-v", in.root)
	cmd.SysProcAttr = asCred(in.owner)
	cmd.Dir = "/"
	o, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(o), "filed 4,") {
		t.Fatalf("filer: %v\n%s", err, o)
	}
	if left := completeItems(t, in.root); len(left) != 0 {
		t.Errorf("left in the root: %v", left)
	}
	for _, id := range items {
		pid, _ := archive.ParseID(id)
		dir := filepath.Join(in.root, pid.Stamp.UTC().Format("2006/01/02"))
		checkArchived(t, dir, id, deliveries)
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscallStat); int(st.Uid) != in.owner.uid || fi.Mode().Perm() != 0o750 {
			t.Errorf("%s: owner %d mode %v", dir, st.Uid, fi.Mode())
		}
	}
	if ok, o := asUser(t, rcpt, "ls "+in.root+"/2*"); ok {
		t.Errorf("%s can list the dated tree: %s", rcpt.name, o)
	}
}

// delivered lists the messages the delivery command received.
func delivered(t *testing.T, out string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(out, "*.msg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkArchived checks that item id in dir is complete and consistent, and
// byte for byte one of the deliveries.
func checkArchived(t *testing.T, dir, id string, deliveries []string) *archive.Envelope {
	t.Helper()
	eml, err := os.ReadFile(filepath.Join(dir, id+".eml"))
	if err != nil {
		t.Fatal(err)
	}
	env, err := archive.ReadEnvelope(filepath.Join(dir, id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(eml)
	if env.ID != id || env.Source != "wrapper" || env.Message.Size != int64(len(eml)) || env.Message.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("%s: inconsistent envelope %+v", id, env)
	}
	if !strings.HasPrefix(string(eml), "From alice@example.org ") || !strings.Contains(string(eml), "\nDelivered-To: ") {
		t.Errorf("%s: not what local(8) hands a mailbox_command: %q", id, eml[:min(len(eml), 200)])
	}
	found := false
	for _, d := range deliveries {
		b, _ := os.ReadFile(d)
		if string(b) == string(eml) {
			found = true
		}
	}
	if !found {
		t.Errorf("%s: archived bytes match no delivery", id)
	}
	return env
}

var filerBin string

func buildFiler(t *testing.T) string {
	t.Helper()
	if filerBin != "" {
		return filerBin
	}
	p := filepath.Join(binDir, "filer")
	c := exec.Command("go", "build", "-o", p, "../filer")
	if o, err := c.CombinedOutput(); err != nil {
		t.Fatal(fmt.Errorf("build filer: %v: %s", err, o))
	}
	filerBin = p
	return p
}
