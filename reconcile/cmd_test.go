package reconcile_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/reconcile"
)

func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	st := reconcile.Command.Run(&cli.Env{Ctx: context.Background(), Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb,
		Program: "mailarchive reconcile"}, args)
	return st, out.String(), errb.String()
}

func TestCommand(t *testing.T) {
	root := t.TempDir()
	stamp := time.Now().Format("Jan _2 15:04:05")
	log := stamp + " mx postfix/smtpd[1]: 5AB12C: client=localhost[127.0.0.1]\n" +
		stamp + " mx postfix/qmgr[2]: 5AB12C: from=<alice@example.org>, size=300, nrcpt=1 (queue active)\n" +
		stamp + " mx postfix/smtp[3]: 5AB12C: to=<b@x>, relay=x[1.2.3.4]:25, dsn=2.0.0, status=sent (250 ok)\n" +
		stamp + " mx postfix/qmgr[2]: 5AB12C: removed\n"
	// Told the milter is in use, the message without an item is missing.
	st, out, e := runCmd(t, log, "-d", root, "--maillog", "-", "--hooks", "milter")
	if st != cli.ExitFindings || !strings.Contains(out, "missing milter: queue 5AB12C from <alice@example.org>") {
		t.Fatalf("status %d\n%s%s", st, out, e)
	}
	// With no hook point in use, nothing can be missing.
	path := filepath.Join(t.TempDir(), "mail.log")
	os.WriteFile(path, []byte(log), 0o644)
	if st, out, e := runCmd(t, "", "-d", root, "--maillog", path, "--json"); st != 0 || !strings.Contains(out, `"messages": 1`) {
		t.Fatalf("status %d\n%s%s", st, out, e)
	}
	for _, bad := range [][]string{
		{"-d", root, "--maillog", filepath.Join(root, "nope")},
		{"-d", root, "--hooks", "smtp"},
		{"-d", root, "--since", "yesterday"},
		{"-d", filepath.Join(root, "nope"), "--maillog", path},
	} {
		if st, _, e := runCmd(t, "", bad...); st != cli.ExitError || e == "" {
			t.Errorf("%v: status %d, stderr %q", bad, st, e)
		}
	}
}
