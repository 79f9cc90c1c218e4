package retention_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/postfix-archive/mailarchive/internal/readcmd"
	"github.com/postfix-archive/mailarchive/internal/s3test"
	"github.com/postfix-archive/mailarchive/objstore"
	"github.com/postfix-archive/mailarchive/retention"
	"github.com/postfix-archive/mailarchive/retention/policy"
	"github.com/postfix-archive/mailarchive/sealog"
	"github.com/postfix-archive/mailarchive/sealog/sealcmd"
	"golang.org/x/mod/sumdb/note"
)

// item writes a complete item with these tags in its envelope.
func item(t *testing.T, root string, stamp time.Time, tags ...string) string {
	t.Helper()
	id, err := archive.NewID(stamp, tags...)
	if err != nil {
		t.Fatal(err)
	}
	msg := "Subject: " + id + "\r\n\r\nbody\r\n"
	sum := sha256.Sum256([]byte(msg))
	env, _ := json.Marshal(archive.Envelope{Version: 1, ID: id, Source: "wrapper", ArchivedAt: stamp, Tags: tags,
		MailFrom: &archive.MailFrom{Addr: "a@example.com"},
		Message:  archive.Message{Size: int64(len(msg)), SHA256: hex.EncodeToString(sum[:])}})
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
func plan(t *testing.T, root, polFile string) map[string]string {
	t.Helper()
	code, out, errs := run(t, retention.Command, "-d", root, "--policy", polFile, "--all", "--json", "plan")
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

// keys makes the log's key pair; the signer is also written to a file for
// the command line.
func keys(t *testing.T) (*sealog.Signer, note.Verifier, string) {
	skey, vkey, err := sealog.GenerateKeys("test.example/mailarchive")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sealog.ParseSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := sealog.LoadVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "signer.key")
	os.WriteFile(path, []byte(skey+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "verifier.key"), []byte(vkey+"\n"), 0o644)
	return s, v, path
}

// sealVerify seals the log and verifies the archive against it: clean,
// with every item re-hashed (those in the bucket fetched from it).
func sealVerify(t *testing.T, root string, s *sealog.Signer, v note.Verifier) *sealog.Report {
	t.Helper()
	if res, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: root, Signer: s}); err != nil || len(res.Problems) > 0 {
		t.Fatalf("seal: %+v %v", res, err)
	}
	rep, err := sealog.Verify(context.Background(), sealog.VerifyOptions{Root: root, Verifier: v})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Clean() {
		t.Errorf("verify: %v", rep.Findings)
	}
	return rep
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
	polFile := filepath.Join(t.TempDir(), "retention.conf")
	os.WriteFile(polFile, []byte("default 1d\nkeep 10y tag=keep\n"), 0o644)
	old := time.Now().Add(-10 * 24 * time.Hour)

	// Remote items first: uploaded with the shortest retain-until.
	rExpired := item(t, root, old, "r")
	rHeld := item(t, root, old.Add(time.Second), "r", "held")
	rKeep := item(t, root, old.Add(2*time.Second), "keep")
	p, err := policy.Load(polFile)
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
	signer, verifier, signerFile := keys(t)
	if rep := sealVerify(t, root, signer, verifier); rep.Items != 7 {
		t.Errorf("verify checked %d items, want 7", rep.Items)
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
	if got := plan(t, root, polFile); !equal(got, want) {
		t.Errorf("plan\n got %v\nwant %v", got, want)
	}
	// The bucket's retain-until passes; rKeep is retained 10 years.
	time.Sleep(3 * time.Second)
	want[rExpired] = "dispose/bucket"
	if got := plan(t, root, polFile); !equal(got, want) {
		t.Errorf("plan after retain-until\n got %v\nwant %v", got, want)
	}
	recExpired, _ := archive.ReadRemoteRecord(root, rExpired)
	if code, _, errs := run(t, retention.Command, "-d", root, "--policy", polFile, "--signer", "/nonexistent", "apply"); code != cli.ExitError || !strings.Contains(errs, "tombstone") {
		t.Errorf("apply without the signer: %d %q", code, errs)
	}
	code, out, errs = run(t, retention.Command, "-d", root, "--policy", polFile, "--signer", signerFile, "-v", "apply")
	if code != 0 || !strings.Contains(out, "disposed 2;") {
		t.Fatalf("apply: %d %q %q", code, out, errs)
	}
	delete(want, rExpired)
	delete(want, lExpired)
	if got := plan(t, root, polFile); !equal(got, want) {
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
	// Verify still passes: the disposed items have tombstones.
	sealVerify(t, root, signer, verifier)
	tombs := tombstones(t, root, signer)
	for _, id := range []string{rExpired, lExpired} {
		if !strings.Contains(tombs[id], "retention: default 1d") {
			t.Errorf("%s: tombstone %q", id, tombs[id])
		}
	}
	committed, pending, err := sealog.ReadAudit(root, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, e := range append(committed, pending...) {
		actions[e.Action]++
	}
	if actions["hold"] != 1 || actions["dispose"] != 1 {
		t.Errorf("audit trail: %v", actions)
	}

	// Released, the held items go at the next apply.
	if code, out, errs := run(t, retention.HoldCommand, "-d", root, "--matter", "case-1", "rm"); code != 0 {
		t.Fatalf("hold rm: %d %q %q", code, out, errs)
	}
	if info, err := st.Head(context.Background(), recHeld.EMLKey, recHeld.EMLVersion); err != nil || info.LegalHold {
		t.Errorf("legal hold not cleared: %+v %v", info, err)
	}
	code, out, errs = run(t, retention.Command, "-d", root, "--policy", polFile, "--signer", signerFile, "apply")
	if code != 0 || !strings.Contains(out, "disposed 2;") {
		t.Errorf("apply after release: %d %q %q", code, out, errs)
	}
	if n := verifyClean(t, root); n != 3 {
		t.Errorf("verify at the end saw %d items, want 3", n)
	}
	sealVerify(t, root, signer, verifier)
}

// tombstones reads the reasons of the log's tombstone leaves.
func tombstones(t *testing.T, root string, s *sealog.Signer) map[string]string {
	t.Helper()
	lg, err := sealog.OpenLog(sealog.LogDir(root), sealog.ItemOrigin(s.Name()), s)
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	es, err := lg.Entries(0, lg.Size())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range es {
		if l, err := sealog.ParseLeaf(e); err == nil && l.Kind == sealog.KindTombstone {
			out[l.ID] = l.Reason
		}
	}
	return out
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
		{retention.HoldCommand, []string{"-d", root, "--matter", "m", "--query", "subject:(x", "add"}, "query"},
		{retention.HoldCommand, []string{"-d", root, "--matter", "m", "rm"}, "no hold"},
		{retention.HoldCommand, []string{"-d", root, "frobnicate"}, "want add, rm or list"},
	} {
		code, _, errs := run(t, tc.cmd, tc.args...)
		if code != cli.ExitError || !strings.Contains(errs, tc.err) {
			t.Errorf("%v: %d %q, want %q", tc.args, code, errs, tc.err)
		}
	}
}

// verify checks that the objects' locks still cover the policy; apply
// extends them when the polFile is lengthened; a version deleted from an
// unlocked bucket is reported gone.
func TestVerifyLocks(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	srv.Bucket(t, "arch", true)
	srv.Bucket(t, "open", false)
	st := srv.Store(t, "s3://arch/m")
	root := t.TempDir()
	polFile := filepath.Join(t.TempDir(), "retention.conf")
	os.WriteFile(polFile, []byte("default 1y\n"), 0o644)
	now := time.Now()
	a, b := item(t, root, now.Add(-time.Hour)), item(t, root, now.Add(-2*time.Hour))
	p, _ := policy.Load(polFile)
	d, err := filer.NewS3(context.Background(), root, filer.S3Options{URL: "s3://arch/m", Store: st, Policy: p})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := filer.Run(filer.Options{Root: root, To: d}); err != nil || rep.Filed != 2 {
		t.Fatalf("filer: %+v %v", rep, err)
	}
	ctx := context.Background()
	fs, n, err := retention.VerifyLocks(ctx, retention.Options{Root: root, Policy: p})
	if err != nil || len(fs) != 0 || n != 2 {
		t.Fatalf("clean: %v %d %v", fs, n, err)
	}
	signer, verifier, signerFile := keys(t)
	sealVerify(t, root, signer, verifier)

	// The polFile lengthened: verify says the locks fall short.
	os.WriteFile(polFile, []byte("default 5y\n"), 0o644)
	p, _ = policy.Load(polFile)
	fs, _, err = retention.VerifyLocks(ctx, retention.Options{Root: root, Policy: p})
	if err != nil || len(fs) != 4 || fs[0].Kind != retention.FindLockShort {
		t.Errorf("lengthened policy: %v %v", fs, err)
	}
	// mailarchive verify says so too.
	vkey := filepath.Join(filepath.Dir(signerFile), "verifier.key")
	code, out, errs := run(t, sealcmd.Verify, "-d", root, "--key", vkey, "--policy", polFile, "--textfile", "")
	if code != 1 || strings.Count(out, "lock-short") != 4 {
		t.Errorf("mailarchive verify: %d %q %q", code, out, errs)
	}
	code, out, errs = run(t, retention.Command, "-d", root, "--policy", polFile, "--signer", signerFile, "apply")
	if code != 0 || !strings.Contains(out, "retention extended 2;") {
		t.Fatalf("apply: %d %q %q", code, out, errs)
	}
	if fs, _, err := retention.VerifyLocks(ctx, retention.Options{Root: root, Policy: p}); err != nil || len(fs) != 0 {
		t.Errorf("after extending: %v %v", fs, err)
	}
	if code, out, errs := run(t, sealcmd.Verify, "-d", root, "--key", vkey, "--policy", polFile, "--textfile", ""); code != 0 {
		t.Errorf("mailarchive verify after extending: %d %q %q", code, out, errs)
	}
	for _, id := range []string{a, b} {
		rec, _ := archive.ReadRemoteRecord(root, id)
		info, err := st.Head(ctx, rec.EMLKey, rec.EMLVersion)
		if err != nil || info.Lock.RetainUntil.Before(stampOf(t, id).AddDate(5, 0, 0)) || !rec.RetainUntil.Equal(info.Lock.RetainUntil) {
			t.Errorf("%s: lock %+v, record %v, %v", id, info.Lock, rec.RetainUntil, err)
		}
	}

	// An unlocked bucket: a version deleted behind the archive's back.
	root2 := t.TempDir()
	c := item(t, root2, now)
	open := srv.Store(t, "s3://open/x")
	d, err = filer.NewS3(ctx, root2, filer.S3Options{URL: "s3://open/x", Store: open, AllowUnlocked: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := filer.Run(filer.Options{Root: root2, To: d}); err != nil || rep.Filed != 1 {
		t.Fatalf("filer: %+v %v", rep, err)
	}
	rec, _ := archive.ReadRemoteRecord(root2, c)
	if err := open.DeleteVersion(ctx, rec.EMLKey, rec.EMLVersion); err != nil {
		t.Fatal(err)
	}
	fs, _, err = retention.VerifyLocks(ctx, retention.Options{Root: root2})
	if err != nil || len(fs) != 1 || fs[0].Kind != retention.FindObjectGone {
		t.Errorf("deleted version: %v %v", fs, err)
	}
	// The server down: verify cannot be done (an error, not "clean").
	srv.Kill()
	if _, _, err := retention.VerifyLocks(ctx, retention.Options{Root: root}); !errors.Is(err, objstore.ErrUnavailable) {
		t.Errorf("server down: %v", err)
	}
}

func stampOf(t *testing.T, id string) time.Time {
	pid, err := archive.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	return pid.Stamp
}

// The read side works the same for items in the bucket: index, search,
// show, export through mailarchive's own commands, with only -d ROOT and
// the credentials.
func TestReadSideInBucket(t *testing.T) {
	srv := s3test.Start(t)
	srv.Env(t)
	srv.Bucket(t, "arch", true)
	root := t.TempDir()
	local := item(t, root, time.Now().Add(-time.Minute), "x")
	remote := item(t, root, time.Now().Add(-48*time.Hour), "x")
	// Indexed while both are local: the catalog must follow the move.
	if code, sout, serr := run(t, readcmd.Index, "-d", root); code != 0 {
		t.Fatalf("index: %d %q %q", code, sout, serr)
	}
	var out, errb bytes.Buffer
	if code := filer.Main([]string{"--to", "s3://arch/m", "--older-than", "24h", root}, &out, &errb); code != 0 {
		t.Fatalf("filer: %d %q %q", code, out.String(), errb.String())
	}
	if _, err := archive.ReadRemoteRecord(root, remote); err != nil {
		t.Fatalf("not in the bucket: %v", err)
	}
	code, sout, serr := run(t, readcmd.Search, "-d", root, "--ids", "tag:x")
	if code != 0 || !strings.Contains(sout, remote) || !strings.Contains(sout, local) {
		t.Errorf("search: %d %q %q", code, sout, serr)
	}
	// The catalog records where each item lives, once index (run after
	// every filer run) has seen the move.
	if code, sout, serr := run(t, readcmd.Index, "-d", root); code != 0 {
		t.Fatalf("index: %d %q %q", code, sout, serr)
	}
	code, sout, serr = run(t, readcmd.Search, "-d", root, "--json", "tag:x")
	for _, line := range strings.Split(strings.TrimSpace(sout), "\n") {
		var h struct{ ID, Location string }
		if err := json.Unmarshal([]byte(line), &h); err != nil {
			t.Fatalf("search --json: %v: %q (%d %q)", err, line, code, serr)
		}
		switch {
		case h.ID == local && h.Location != "":
			t.Errorf("local item's location = %q", h.Location)
		case h.ID == remote && !strings.HasPrefix(h.Location, "s3://arch/m/") || h.ID == remote && !strings.HasSuffix(h.Location, remote+".eml"):
			t.Errorf("bucket item's location = %q", h.Location)
		}
	}
	code, sout, serr = run(t, readcmd.Show, "-d", root, "--raw", remote)
	if code != 0 || sout != "Subject: "+remote+"\r\n\r\nbody\r\n" {
		t.Errorf("show --raw: %d %q %q", code, sout, serr)
	}
	code, sout, _ = run(t, readcmd.Show, "-d", root, "--envelope", remote)
	if code != 0 || !strings.Contains(sout, `"id":"`+remote+`"`) {
		t.Errorf("show --envelope: %d %q", code, sout)
	}
	mbox := filepath.Join(t.TempDir(), "out.mbox")
	if code, sout, serr := run(t, readcmd.Export, "-d", root, "--format", "mbox", "-o", mbox, "tag:x"); code != 0 {
		t.Errorf("export: %d %q %q", code, sout, serr)
	}
	if b, _ := os.ReadFile(mbox); !strings.Contains(string(b), "Subject: "+remote) || !strings.Contains(string(b), "Subject: "+local) {
		t.Errorf("export lacks an item:\n%s", b)
	}
}
