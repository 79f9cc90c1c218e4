package main_test

import (
	"context"
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/internal/proxytest"
	"github.com/postfix-archive/mailarchive/reconcile"
)

// TestReconcileThreeHooks: one real Postfix with all three hook points
// (the milter on its smtpd, proxy_archiver as its content filter, the
// wrapper as local(8)'s mailbox_command), a message deferred while the
// proxy is down and archived later; reconcile finds every message complete
// at every hook, then reports the wrapper item removed on purpose.
func TestReconcileThreeHooks(t *testing.T) {
	postfixtest.Require(t)
	in := install(t)
	rcpt := addUser(t, "mrc")
	deliver := filepath.Join(in.base, "deliver.sh")
	os.WriteFile(deliver, []byte("#!/bin/sh\ncat > /dev/null\nexit 0\n"), 0o755)

	_, file, _, _ := runtime.Caller(0)
	examples := filepath.Join(filepath.Dir(file), "..", "..", "postfix-examples")
	filterAddr, reinjectAddr, milterAddr := postfixtest.FreeAddr(t), postfixtest.FreeAddr(t), postfixtest.FreeAddr(t)
	port := func(a string) string { _, p, _ := net.SplitHostPort(a); return p }
	var mainCF []string
	for _, s := range []struct {
		file string
		repl map[string]string
	}{
		{"content_filter/main.cf", map[string]string{"10025": port(filterAddr), "10026": port(reinjectAddr)}},
		{"milter/main.cf", map[string]string{"inet:127.0.0.1:10030": "inet:" + milterAddr}},
		{"mailbox_command/main.cf", map[string]string{"/usr/local/bin/archiver": in.bin, `/usr/bin/procmail -a "$EXTENSION"`: deliver}},
	} {
		lines, err := postfixtest.LoadSnippet(filepath.Join(examples, s.file), s.repl)
		if err != nil {
			t.Fatal(err)
		}
		mainCF = append(mainCF, lines...)
	}
	masterCF, err := postfixtest.LoadSnippet(filepath.Join(examples, "content_filter/master.cf"),
		map[string]string{"10025": port(filterAddr), "10026": port(reinjectAddr)})
	if err != nil {
		t.Fatal(err)
	}

	// milter_archiver and proxy_archiver write into the wrapper's archive.
	milterBin := filepath.Join(t.TempDir(), "milter_archiver")
	if out, err := exec.Command("go", "build", "-o", milterBin, "../milter_archiver").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	mcmd := exec.Command(milterBin, "-l", "inet:"+milterAddr, "-d", in.root)
	if err := mcmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mcmd.Process.Signal(syscall.SIGTERM); mcmd.Wait() })
	waitDial(t, milterAddr)
	store, err := archive.Open(in.root, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stopProxy := proxytest.Start(t, filterAddr, reinjectAddr, store)
	pf := postfixtest.Start(t, postfixtest.Options{MainCF: mainCF, MasterCF: masterCF})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	send := func(subject string) {
		t.Helper()
		msg := "From: alice@example.org\r\nTo: " + rcpt.name + "@localhost\r\nSubject: " + subject + "\r\n\r\nbody\r\n"
		if err := smtp.SendMail(pf.SMTPAddr(), nil, "alice@example.org", []string{rcpt.name + "@localhost"}, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		send(fmt.Sprintf("message %d", i))
	}
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatalf("%v\n%s", err, pf.Log())
	}
	stopProxy()
	send("while the proxy was down")
	if err := pf.WaitLog(ctx, "status=deferred"); err != nil {
		t.Fatalf("Postfix did not defer: %v\n%s", err, pf.Log())
	}
	proxytest.Start(t, filterAddr, reinjectAddr, store)
	if err := pf.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := pf.WaitQueueEmpty(ctx); err != nil {
		t.Fatalf("%v\n%s", err, pf.Log())
	}
	time.Sleep(200 * time.Millisecond)

	check := func() *reconcile.Report {
		t.Helper()
		f, err := os.Open(pf.LogFile())
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		rep, err := reconcile.Run(ctx, reconcile.Options{Root: in.root, Log: f})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := check()
	if rep.Messages != 4 || rep.Complete != 4 || len(rep.Unmatched) != 0 || strings.Join(rep.Hooks, ",") != "proxy,milter,wrapper" {
		t.Fatalf("reconcile: %+v\nmaillog:\n%s", rep, pf.Log())
	}
	// Remove the wrapper's item of the deferred message.
	rd, _ := archive.OpenReader(in.root, archive.ReaderOptions{})
	var victim string
	rd.Walk(func(it archive.Item) error {
		if env, err := it.Envelope(); err == nil && env.Source == archive.SourceWrapper && env.Message.Subject == "while the proxy was down" {
			victim = it.ID
		}
		return nil
	}, nil)
	if victim == "" {
		t.Fatal("no wrapper item for the deferred message")
	}
	os.Remove(filepath.Join(in.root, victim+".json"))
	os.Remove(filepath.Join(in.root, victim+".eml"))
	rep = check()
	if len(rep.Missing) != 1 || strings.Join(rep.Missing[0].Missing, ",") != "wrapper" || len(rep.Missing[0].Items) != 2 {
		t.Fatalf("removed wrapper item not reported: %+v", rep.Missing)
	}
}

func waitDial(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s", addr)
		}
	}
}
