package filer

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/s3test"
	"github.com/postfix-archive/mailarchive/objstore"
	"github.com/postfix-archive/mailarchive/sealog"
)

// TestMain lets the crash test run the filer as a child process it can
// kill -9.
func TestMain(m *testing.M) {
	if os.Getenv("FILER_TEST_MAIN") == "1" {
		os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// s3env starts versitygw with a locked bucket "arch" and returns it and a
// client for s3://arch/mail.
func s3env(t *testing.T) (*s3test.Server, *objstore.Store) {
	srv := s3test.Start(t)
	srv.Env(t)
	srv.Bucket(t, "arch", true)
	return srv, srv.Store(t, "s3://arch/mail")
}

// listKeys lists every key of the bucket.
func listKeys(t *testing.T, st *objstore.Store) map[string]bool {
	t.Helper()
	keys := map[string]bool{}
	p := s3.NewListObjectsV2Paginator(st.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(st.Bucket)})
	for p.HasMorePages() {
		out, err := p.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			keys[aws.ToString(o.Key)] = true
		}
	}
	return keys
}

// checkUploaded checks that each item is readable through the read API
// with its bytes, lives in the bucket under COMPLIANCE lock until at least
// wantUntil(id), has its version IDs recorded, and is gone from the root.
func checkUploaded(t *testing.T, root string, st *objstore.Store, want map[string]string, wantUntil func(string) time.Time) {
	t.Helper()
	r, err := archive.OpenReader(root, archive.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	err = r.Walk(func(it archive.Item) error {
		msg, ok := want[it.ID]
		if !ok {
			if it.Remote != nil {
				t.Errorf("walk found %s in the bucket, not wanted", it.ID)
			}
			return nil
		}
		seen++
		if it.Remote == nil {
			t.Errorf("%s: not remote (%s)", it.ID, it.EMLPath)
			return nil
		}
		f, err := it.Open()
		if err != nil {
			t.Errorf("%s: %v", it.ID, err)
			return nil
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if msg != "" && string(b) != msg {
			t.Errorf("%s: read %q, want %q", it.ID, b, msg)
		}
		env, err := it.Envelope()
		if err != nil || env.ID != it.ID {
			t.Errorf("%s: envelope %+v %v", it.ID, env, err)
		}
		for key, ver := range map[string]string{it.Remote.EMLKey: it.Remote.EMLVersion, it.Remote.JSONKey: it.Remote.JSONVersion} {
			info, err := st.Head(context.Background(), key, ver)
			if err != nil || ver == "" {
				t.Errorf("%s: head %s version %q: %v", it.ID, key, ver, err)
				continue
			}
			if info.Lock.Mode != "COMPLIANCE" || (wantUntil != nil && info.Lock.RetainUntil.Before(wantUntil(it.ID))) {
				t.Errorf("%s: %s lock %+v", it.ID, key, info.Lock)
			}
		}
		for _, ext := range []string{".eml", ".json"} {
			if exists(filepath.Join(root, it.ID+ext)) {
				t.Errorf("%s%s still in the root", it.ID, ext)
			}
		}
		return nil
	}, func(p archive.Problem) { t.Errorf("walk: %v", p) })
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Errorf("walk saw %d items, want %d", seen, len(want))
	}
}

func stampOf(t *testing.T, id string) time.Time {
	pid, err := archive.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	return pid.Stamp
}

func TestS3FileAll(t *testing.T) {
	_, st := s3env(t)
	root := t.TempDir()
	policy := filepath.Join(t.TempDir(), "retention.conf")
	os.WriteFile(policy, []byte("default 2y\nkeep 10y tag=legal\n"), 0o644)
	want := map[string]string{}
	for i := range 6 {
		tag := "x"
		if i%2 == 0 {
			tag = "legal"
		}
		id := writeItem(t, root, time.Now().Add(-time.Duration(i)*24*time.Hour), tag)
		// The policy looks at the envelope's tags, as the store writes them.
		env, _ := archive.ReadEnvelope(filepath.Join(root, id+".json"))
		env.Tags = []string{tag}
		b, _ := json.Marshal(env)
		os.WriteFile(filepath.Join(root, id+".json"), b, 0o640)
		want[id] = ""
	}
	code, out, errs := runMain("-v", "--to", "s3://arch/mail", "--policy", policy, root)
	if code != 0 || !strings.Contains(out, "filed 6,") || errs != "" {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	until := func(id string) time.Time {
		years := 2
		if strings.HasSuffix(id, ".legal") {
			years = 10
		}
		return stampOf(t, id).AddDate(years, 0, 0).Truncate(time.Second)
	}
	checkUploaded(t, root, st, want, until)
	keys := listKeys(t, st)
	for id := range want {
		for _, ext := range []string{".eml", ".json"} {
			if k := st.Key(id, stampOf(t, id), ext); !keys[k] || !strings.HasPrefix(k, "mail/") {
				t.Errorf("bucket lacks %s", k)
			}
		}
	}
	d, err := archive.ReadDestination(root)
	if err != nil || d == nil || d.URL != "s3://arch/mail" || d.Endpoint == "" || !d.PathStyle {
		t.Errorf(".destination %+v %v", d, err)
	}
	// Idempotent; the archive's items cannot be deleted or overwritten.
	if code, out, errs := runMain("--to", "s3://arch/mail", root); code != 0 || !strings.Contains(out, "filed 0,") {
		t.Errorf("second run: %d %q %q", code, out, errs)
	}
	id := firstKey(want)
	rec, err := archive.ReadRemoteRecord(root, id)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.DeleteVersion(ctx, rec.EMLKey, rec.EMLVersion); !s3test.IsDenied(err) {
		t.Errorf("delete an archived version: %v, want 403", err)
	}
	if err := st.SetRetention(ctx, rec.EMLKey, rec.EMLVersion, objstore.Lock{Mode: "COMPLIANCE", RetainUntil: time.Now().Add(time.Hour)}); !s3test.IsDenied(err) {
		t.Errorf("shorten an archived version: %v, want 403", err)
	}
	if _, err := st.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("arch"), Key: aws.String(rec.EMLKey),
		Body: strings.NewReader("forged"), IfNoneMatch: aws.String("*")}); err == nil {
		t.Error("overwrote an archived object")
	}
	// A PUT without If-None-Match makes a new version on top; the archived
	// version stays as it was, and it is the one the archive reads.
	if _, err := st.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("arch"), Key: aws.String(rec.EMLKey),
		Body: strings.NewReader("forged")}); err != nil {
		t.Logf("plain PUT over an archived key: %v", err)
	}
	body, err := st.GetObject(ctx, rec.EMLKey, rec.EMLVersion)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "Subject: "+id+"\n\nbody\n" {
		t.Errorf("archived version now reads %q", b)
	}
	r, _ := archive.OpenReader(root, archive.ReaderOptions{})
	if it, err := r.Locate(id); err != nil {
		t.Error(err)
	} else if f, err := it.Open(); err != nil {
		t.Errorf("reading the archived version after a forged PUT: %v", err)
	} else {
		f.Close()
	}
	// Another destination for the same root is refused.
	if code, _, errs := runMain("--to", "s3://other/x", root); code != ExitRefused || !strings.Contains(errs, "files into s3://arch/mail") {
		t.Errorf("other destination: %d %q", code, errs)
	}
}

func TestS3KeepLocal(t *testing.T) {
	_, st := s3env(t)
	root := t.TempDir()
	young := writeItem(t, root, time.Now().Add(-time.Hour))
	old := writeItem(t, root, time.Now().Add(-72*time.Hour))
	code, out, errs := runMain("--to", "s3://arch/mail", "--keep-local", "48h", root)
	if code != 0 || !strings.Contains(out, "filed 1,") || !strings.Contains(out, "kept local 1") {
		t.Fatalf("exit %d %q %q", code, out, errs)
	}
	if !exists(filepath.Join(root, young+".eml")) || exists(filepath.Join(root, old+".eml")) {
		t.Error("kept the wrong local copy")
	}
	if _, err := archive.ReadRemoteRecord(root, young); err != nil {
		t.Errorf("kept item not recorded: %v", err)
	}
	// Read locally while kept.
	r, _ := archive.OpenReader(root, archive.ReaderOptions{})
	if it, err := r.Locate(young); err != nil || it.Remote != nil {
		t.Errorf("kept item: %+v %v", it, err)
	}
	if code, out, _ := runMain("--to", "s3://arch/mail", root); code != 0 || !strings.Contains(out, "filed 1,") {
		t.Errorf("run without --keep-local: %d %q", code, out)
	}
	checkUploaded(t, root, st, map[string]string{young: "", old: ""}, nil)
}

func TestS3Refused(t *testing.T) {
	srv, _ := s3env(t)
	srv.Bucket(t, "plain", false)
	root := t.TempDir()
	id := writeItem(t, root, t0)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		err  string
	}{
		{"unlocked", []string{"--to", "s3://plain/x"}, nil, ExitRefused, "no Object Lock"},
		{"missing bucket", []string{"--to", "s3://nope/x"}, nil, ExitRefused, "bucket nope does not exist"},
		{"bad secret", []string{"--to", "s3://arch/x"}, map[string]string{"AWS_SECRET_ACCESS_KEY": "wrong"}, ExitRefused, "SignatureDoesNotMatch"},
		{"unknown key", []string{"--to", "s3://arch/x"}, map[string]string{"AWS_ACCESS_KEY_ID": "nobody"}, ExitRefused, "access key"},
		{"bad url", []string{"--to", "s3:/arch"}, nil, ExitUsage, "want s3://"},
		{"bad mode", []string{"--to", "s3://arch/x", "--lock-mode", "strict"}, nil, ExitUsage, "lock-mode"},
		{"flag without --to", []string{"--keep-local", "1h"}, nil, ExitUsage, "needs --to"},
		{"with --dest", []string{"--to", "s3://arch/x", "--dest", "/tmp"}, nil, ExitUsage, "exclude"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			code, _, errs := runMain(append(tc.args, root)...)
			if code != tc.code || !strings.Contains(errs, tc.err) {
				t.Errorf("exit %d %q, want %d %q", code, errs, tc.code, tc.err)
			}
			if !exists(filepath.Join(root, id+".eml")) || !exists(filepath.Join(root, id+".json")) {
				t.Fatal("local copy gone")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(root, archive.DestinationFile)); err == nil {
		t.Error("a refused destination was recorded")
	}
	// Unlocked on purpose.
	code, out, errs := runMain("--to", "s3://plain/x", "--allow-unlocked", root)
	if code != 0 || !strings.Contains(out, "filed 1,") {
		t.Errorf("--allow-unlocked: %d %q %q", code, out, errs)
	}
}

// The server down or hanging: the filer keeps the local copies, says so
// (exit 5), and the next run uploads.
func TestS3Unavailable(t *testing.T) {
	srv, st := s3env(t)
	root := t.TempDir()
	want := map[string]string{}
	for i := range 3 {
		want[writeItem(t, root, t0.Add(time.Duration(i)*time.Second))] = ""
	}
	before := tree(t, root)
	srv.Kill()
	code, _, errs := runMain("--to", "s3://arch/mail", root)
	if code != ExitUnavailable || !strings.Contains(errs, "connection refused") || !strings.Contains(errs, "kept locally") {
		t.Errorf("server down: exit %d %q", code, errs)
	}
	stall := s3test.Stall(t)
	start := time.Now()
	code, _, errs = runMain("--to", "s3://arch/mail", "--endpoint", stall, "--timeout", "1s", root)
	if code != ExitUnavailable || !strings.Contains(errs, "kept locally") || !strings.Contains(errs, "no answer in time") {
		t.Errorf("server hangs: exit %d %q", code, errs)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("a hanging server held the filer %v", d)
	}
	if after := tree(t, root); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("root changed: %v -> %v", before, after)
	}
	srv.Restart()
	if code, out, errs := runMain("--to", "s3://arch/mail", root); code != 0 || !strings.Contains(out, "filed 3,") {
		t.Fatalf("after restart: %d %q %q", code, out, errs)
	}
	checkUploaded(t, root, st, want, nil)

	// Down in the middle of a run: what was confirmed is gone locally,
	// the rest stays.
	for i := range 50 {
		want[writeItem(t, root, t0.Add(time.Duration(100+i)*time.Second))] = ""
	}
	go func() { time.Sleep(150 * time.Millisecond); srv.Kill() }()
	code, out, errs := runMain("--to", "s3://arch/mail", "--concurrency", "2", root)
	t.Logf("killed mid-run: exit %d %q %q", code, out, errs)
	srv.Restart()
	if code, out, errs := runMain("--to", "s3://arch/mail", root); code != 0 {
		t.Fatalf("after restart: %d %q %q", code, out, errs)
	}
	checkUploaded(t, root, st, want, nil)
}

// A run that stopped after uploading the .eml (or both) finishes the item;
// an object under the item's key with other bytes is a problem, and the
// local copy stays.
func TestS3Resume(t *testing.T) {
	_, st := s3env(t)
	root := t.TempDir()
	ctx := context.Background()
	lock := objstore.Lock{Mode: "COMPLIANCE", RetainUntil: time.Now().Add(time.Hour)}
	put := func(id, ext string) {
		p := filepath.Join(root, id+ext)
		sum, _, err := fileSHA256(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(ctx, st.Key(id, stampOf(t, id), ext), p, sum, lock); err != nil {
			t.Fatal(err)
		}
	}
	emlOnly := writeItem(t, root, t0)
	put(emlOnly, ".eml")
	both := writeItem(t, root, t0)
	put(both, ".eml")
	put(both, ".json")
	conflict := writeItem(t, root, t0)
	other := filepath.Join(t.TempDir(), "x")
	os.WriteFile(other, []byte("another message"), 0o640)
	sum, _, _ := fileSHA256(other)
	st.Put(ctx, st.Key(conflict, t0, ".eml"), other, sum, lock)

	code, out, errs := runMain("--to", "s3://arch/mail", root)
	if code != ExitProblems || !strings.Contains(out, "filed 2,") || !strings.Contains(errs, "a different item under the same ID") {
		t.Fatalf("exit %d %q %q", code, out, errs)
	}
	checkUploaded(t, root, st, map[string]string{emlOnly: "", both: ""}, func(string) time.Time { return stampOf(t, emlOnly).AddDate(7, 0, 0) })
	if !exists(filepath.Join(root, conflict+".eml")) || !exists(filepath.Join(root, conflict+".json")) {
		t.Error("conflicting item's local copy gone")
	}

	// A run that stopped between removing the .eml and the .json.
	id := writeItem(t, root, t0.Add(time.Hour))
	b, _ := os.ReadFile(filepath.Join(root, id+".json"))
	if code, _, _ := runMain("--to", "s3://arch/mail", root); code != ExitProblems {
		t.Fatalf("exit %d", code)
	}
	os.WriteFile(filepath.Join(root, id+".json"), b, 0o640)
	code, out, errs = runMain("--to", "s3://arch/mail", root)
	if code != ExitProblems || !strings.Contains(out, "finished 1,") {
		t.Errorf("finish: %d %q %q", code, out, errs)
	}
	if exists(filepath.Join(root, id+".json")) {
		t.Error(".json not removed")
	}
}

// kill -9 of the filer in the middle of uploading: the bucket never holds
// an ID.json without its ID.eml, nothing is lost locally, and the next run
// completes every item.
func TestS3CrashMidUpload(t *testing.T) {
	srv, st := s3env(t)
	_ = srv
	root := t.TempDir()
	want := map[string]string{}
	for i := range 300 {
		id := writeItem(t, root, t0.Add(time.Duration(i)*time.Minute))
		want[id] = "Subject: " + id + "\n\nbody\n"
	}
	cmd := exec.Command(os.Args[0], "-v", "--to", "s3://arch/mail", "--concurrency", "8", root)
	cmd.Env = append(os.Environ(), "FILER_TEST_MAIN=1")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	uploaded := 0
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "uploaded ") {
			uploaded++
			if uploaded == 20 {
				break
			}
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	go io.Copy(io.Discard, stdout)
	cmd.Wait()
	if uploaded < 20 {
		t.Fatalf("the filer ended before 20 uploads (%d)", uploaded)
	}
	// The bucket: every .json has its .eml.
	keys := listKeys(t, st)
	jsons, emls := 0, 0
	for k := range keys {
		if strings.HasSuffix(k, ".json") {
			jsons++
			if !keys[strings.TrimSuffix(k, ".json")+".eml"] {
				t.Errorf("bucket holds %s without its .eml", k)
			}
		} else {
			emls++
		}
	}
	// Locally: every item is whole in the root, or recorded as uploaded.
	done := 0
	for id := range want {
		local := exists(filepath.Join(root, id+".json"))
		_, err := archive.ReadRemoteRecord(root, id)
		if err == nil {
			done++
		}
		if !local && err != nil {
			t.Errorf("%s: neither local nor recorded", id)
		}
		if local && exists(filepath.Join(root, id+".eml")) == false && err != nil {
			t.Errorf("%s: local .json without .eml and no record", id)
		}
	}
	t.Logf("killed after %d uploads: %d .eml and %d .json in the bucket, %d recorded", uploaded, emls, jsons, done)
	if done == len(want) {
		t.Fatal("the kill came too late to test anything")
	}
	code, out, errs := runMain("--to", "s3://arch/mail", root)
	if code != 0 {
		t.Fatalf("next run: %d %q %q", code, out, errs)
	}
	checkUploaded(t, root, st, want, nil)
	var left []string
	for _, f := range tree(t, root) {
		if !strings.HasPrefix(f, archive.RemoteDir+"/") && f != LockName && f != archive.DestinationFile {
			left = append(left, f)
		}
	}
	if len(left) > 0 {
		t.Errorf("left in the root: %v", left)
	}
}

func TestS3DryRun(t *testing.T) {
	_, st := s3env(t)
	root := t.TempDir()
	writeItem(t, root, t0)
	before := tree(t, root)
	code, out, errs := runMain("-n", "-v", "--to", "s3://arch/mail", root)
	if code != 0 || !strings.Contains(out, "would upload") {
		t.Errorf("exit %d %q %q", code, out, errs)
	}
	if after := tree(t, root); strings.Join(after, ",") != strings.Join(before, ",") || len(listKeys(t, st)) != 0 {
		t.Errorf("dry run changed something: %v", after)
	}
}

// The sealed log goes to the bucket too, each file once, locked.
func TestS3Log(t *testing.T) {
	_, st := s3env(t)
	root := t.TempDir()
	stamp := time.Now().Add(-72 * time.Hour)
	// sealog wants envelopes that describe their messages.
	sealable := func(stamp time.Time) {
		id := writeItem(t, root, stamp)
		sum, size, _ := fileSHA256(filepath.Join(root, id+".eml"))
		env, _ := archive.ReadEnvelope(filepath.Join(root, id+".json"))
		env.Message.Size, env.Message.SHA256 = size, fmt.Sprintf("%x", sum)
		eb, _ := json.Marshal(env)
		os.WriteFile(filepath.Join(root, id+".json"), eb, 0o640)
	}
	for i := range 3 {
		sealable(stamp.Add(time.Duration(i) * time.Second))
	}
	skey, _, err := sealog.GenerateKeys("test.example/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := sealog.ParseSigner(skey)
	if _, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: root, Signer: signer}); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runMain("-v", "--to", "s3://arch/mail", root)
	if code != 0 || !strings.Contains(out, "filed 3,") || !strings.Contains(out, "files of the sealed log") {
		t.Fatalf("exit %d %q %q", code, out, errs)
	}
	keys := listKeys(t, st)
	var logKeys []string
	for k := range keys {
		if strings.HasPrefix(k, "mail/log/") {
			logKeys = append(logKeys, k)
		}
	}
	if !hasPrefix(keys, "mail/log/checkpoints/") || !hasPrefix(keys, "mail/log/tile/entries/") || !hasPrefix(keys, "mail/log/tile/0/") {
		t.Errorf("log keys %v", logKeys)
	}
	for _, k := range logKeys {
		info, err := st.Head(context.Background(), k, "")
		if err != nil || info.Lock.Mode != "COMPLIANCE" || info.Lock.RetainUntil.Before(time.Now().AddDate(7, 0, -1)) {
			t.Errorf("%s: %+v %v", k, info, err)
		}
		if strings.HasSuffix(k, "/checkpoint") || strings.Contains(k, "/lock") || strings.Contains(k, "logged-ids") {
			t.Errorf("mutable log file uploaded: %s", k)
		}
	}
	// Once only; new log files after the next seal.
	code, out, _ = runMain("-v", "--to", "s3://arch/mail", root)
	if code != 0 || strings.Contains(out, "files of the sealed log") {
		t.Errorf("second run uploaded log files again: %q", out)
	}
	sealable(time.Now())
	if _, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: root, Signer: signer}); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runMain("-v", "--to", "s3://arch/mail", root)
	if code != 0 || !strings.Contains(out, "files of the sealed log") {
		t.Errorf("after another seal: %d %q %q", code, out, errs)
	}
}

func hasPrefix(keys map[string]bool, p string) bool {
	for k := range keys {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}
