package retention_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/filer"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/internal/s3test"
	"github.com/postfix-archive/mailarchive/objstore"
	"github.com/postfix-archive/mailarchive/retention"
)

// item writes a complete item with these tags in its envelope.
func item(t *testing.T, root string, stamp time.Time, tags ...string) string {
	t.Helper()
	id, err := archive.NewID(stamp, tags...)
	if err != nil {
		t.Fatal(err)
	}
	msg := "Subject: " + id + "\r\n\r\nbody\r\n"
	env, _ := json.Marshal(archive.Envelope{Version: 1, ID: id, Source: "wrapper", ArchivedAt: stamp, Tags: tags,
		MailFrom: &archive.MailFrom{Addr: "a@example.com"}, Message: archive.Message{Size: int64(len(msg))}})
	if err := os.WriteFile(filepath.Join(root, id+".eml"), []byte(msg), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, id+".json"), env, 0o640); err != nil {
		t.Fatal(err)
	}
	return id
}

func run(t *testing.T, cmd cli.Command, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cmd.Run(&cli.Env{Ctx: context.Background(), Stdout: &out, Stderr: &errb, Program: "mailarchive " + cmd.Name}, args)
	return code, out.String(), errb.String()
}

// plan returns the action of each item.
func plan(t *testing.T, root, policy string) map[string]string {
	t.Helper()
	code, out, errs := run(t, retention.Command, "-d", root, "--policy", policy, "--all", "--json", "plan")
	if code != 0 {
		t.Fatalf("plan: %d %q %q", code, out, errs)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e retention.Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("plan output %q: %v", sc.Text(), err)
		}
		got[e.ID] = e.Action + "/" + e.Where
	}
	return got
}

// verifyClean walks the archive and fails on any damage.
func verifyClean(t *testing.T, root string) int {
	t.Helper()
	r, err := archive.OpenReader(root, archive.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = r.Walk(func(it archive.Item) error {
		n++
		f, err := it.Open()
		if err != nil {
			t.Errorf("verify %s: %v", it.ID, err)
			return nil
		}
		f.Close()
		return nil
	}, func(p archive.Problem) { t.Errorf("verify: %v", p) })
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Retention over both tiers: items past their period are disposed of (and
// recorded), held items survive, the bucket enforces its own retain-until.
func TestRetentionBothTiers(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	srv.Bucket(t, "arch", true)
	st := srv.Store(t, "s3://arch/m")
	root := t.TempDir()
	policy := filepath.Join(t.TempDir(), "retention.conf")
	os.WriteFile(policy, []byte("default 1d\nkeep 10y tag=keep\n"), 0o644)
	old := time.Now().Add(-10 * 24 * time.Hour)

	// Remote items first: uploaded with the shortest retain-until.
	rExpired := item(t, root, old, "r")
	rHeld := item(t, root, old.Add(time.Second), "r", "held")
	rKeep := item(t, root, old.Add(2*time.Second), "keep")
	p, err := retention.Load(policy)
	if err != nil {
		t.Fatal(err)
	}
	d, err := filer.NewS3(context.Background(), root, filer.S3Options{URL: "s3://arch/m", Store: st, Policy: p, MinRetain: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := filer.Run(filer.Options{Root: root, To: d})
	if err != nil || rep.Filed != 3 || len(rep.Problems) != 0 {
		t.Fatalf("filer: %+v %v", rep, err)
	}
	lExpired := item(t, root, old, "l")
	lHeld := item(t, root, old, "l", "held")
	lKeep := item(t, root, old, "keep")
	lYoung := item(t, root, time.Now(), "l")
	if n := verifyClean(t, root); n != 7 {
		t.Fatalf("verify saw %d items", n)
	}

	code, out, errs := run(t, retention.HoldCommand, "-d", root, "--matter", "case-1", "--query", "tag:held", "add")
	if code != 0 || !strings.Contains(out, "2 items held") {
		t.Fatalf("hold add: %d %q %q", code, out, errs)
	}
	recHeld, _ := archive.ReadRemoteRecord(root, rHeld)
	if info, err := st.Head(context.Background(), recHeld.EMLKey, recHeld.EMLVersion); err != nil || !info.LegalHold {
		t.Errorf("bucket legal hold: %+v %v", info, err)
	}
	if code, out, _ := run(t, retention.HoldCommand, "-d", root, "list"); code != 0 || !strings.Contains(out, "case-1\t2 items") {
		t.Errorf("hold list: %d %q", code, out)
	}

	want := map[string]string{
		rExpired: "wait/bucket", rHeld: "held/bucket", rKeep: "keep/bucket",
		lExpired: "dispose/local", lHeld: "held/local", lKeep: "keep/local", lYoung: "keep/local",
	}
	if got := plan(t, root, policy); !equal(got, want) {
		t.Errorf("plan\n got %v\nwant %v", got, want)
	}
	// The bucket's retain-until passes; rKeep is retained 10 years.
	time.Sleep(3 * time.Second)
	want[rExpired] = "dispose/bucket"
	if got := plan(t, root, policy); !equal(got, want) {
		t.Errorf("plan after retain-until\n got %v\nwant %v", got, want)
	}
	recExpired, _ := archive.ReadRemoteRecord(root, rExpired)
	code, out, errs = run(t, retention.Command, "-d", root, "--policy", policy, "-v", "apply")
	if code != 0 || !strings.Contains(out, "disposed 2;") {
		t.Fatalf("apply: %d %q %q", code, out, errs)
	}
	delete(want, rExpired)
	delete(want, lExpired)
	if got := plan(t, root, policy); !equal(got, want) {
		t.Errorf("plan after apply\n got %v\nwant %v", got, want)
	}
	if _, err := st.Head(context.Background(), recExpired.EMLKey, recExpired.EMLVersion); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("disposed object version still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, lExpired+".eml")); err == nil {
		t.Error("disposed local item still there")
	}
	// The server still refuses to delete what is retained.
	recKeep, _ := archive.ReadRemoteRecord(root, rKeep)
	if err := st.DeleteVersion(context.Background(), recKeep.EMLKey, recKeep.EMLVersion); !s3test.IsDenied(err) {
		t.Errorf("delete retained version: %v, want 403", err)
	}
	if n := verifyClean(t, root); n != 5 {
		t.Errorf("verify after apply saw %d items, want 5", n)
	}
	audit, _ := os.ReadFile(filepath.Join(root, "audit", "retention.jsonl"))
	if strings.Count(string(audit), `"event":"dispose"`) != 2 || !strings.Contains(string(audit), `"event":"hold"`) ||
		!strings.Contains(string(audit), `"rule":"default 1d"`) {
		t.Errorf("audit:\n%s", audit)
	}

	// Released, the held items go at the next apply.
	if code, out, errs := run(t, retention.HoldCommand, "-d", root, "--matter", "case-1", "rm"); code != 0 {
		t.Fatalf("hold rm: %d %q %q", code, out, errs)
	}
	if info, err := st.Head(context.Background(), recHeld.EMLKey, recHeld.EMLVersion); err != nil || info.LegalHold {
		t.Errorf("legal hold not cleared: %+v %v", info, err)
	}
	code, out, errs = run(t, retention.Command, "-d", root, "--policy", policy, "apply")
	if code != 0 || !strings.Contains(out, "disposed 2;") {
		t.Errorf("apply after release: %d %q %q", code, out, errs)
	}
	if n := verifyClean(t, root); n != 3 {
		t.Errorf("verify at the end saw %d items, want 3", n)
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestCommandErrors(t *testing.T) {
	root := t.TempDir()
	for _, tc := range []struct {
		cmd  cli.Command
		args []string
		err  string
	}{
		{retention.Command, []string{"-d", root}, "want plan or apply"},
		{retention.Command, []string{"-d", root, "--policy", "/nonexistent", "plan"}, "no such file"},
		{retention.HoldCommand, []string{"-d", root, "add"}, "needs --matter and --query"},
		{retention.HoldCommand, []string{"-d", root, "--matter", "../x", "--query", "id:x", "add"}, "matter"},
		{retention.HoldCommand, []string{"-d", root, "--matter", "m", "--query", "subject:x", "add"}, "unknown field"},
		{retention.HoldCommand, []string{"-d", root, "--matter", "m", "rm"}, "no hold"},
		{retention.HoldCommand, []string{"-d", root, "frobnicate"}, "want add, rm or list"},
	} {
		code, _, errs := run(t, tc.cmd, tc.args...)
		if code != cli.ExitError || !strings.Contains(errs, tc.err) {
			t.Errorf("%v: %d %q, want %q", tc.args, code, errs, tc.err)
		}
	}
}
