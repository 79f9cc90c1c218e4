package main_test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

type testUser struct {
	name     string
	uid, gid int
}

func (u testUser) cred() *syscall.Credential {
	return &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}}
}

// requireRoot skips tests that create users and install set-ID binaries.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		postfixtest.SkipOrFatal(t, "needs root: creates users and installs a setuid binary")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		postfixtest.SkipOrFatal(t, "needs useradd")
	}
}

// addUser creates a throwaway system user (and group) for one test.
func addUser(t *testing.T, prefix string) testUser {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	name := prefix + hex.EncodeToString(b[:])
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/bin/false", name).CombinedOutput()
	if err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		exec.Command("userdel", name).Run()
		exec.Command("groupdel", name).Run() // when userdel left it
	})
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return testUser{name, uid, gid}
}

// openDir returns a fresh temporary directory that every user may traverse
// (t.TempDir and its parent are 0700).
func openDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{d, filepath.Dir(d)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// installed is an archiver installed by install.sh under a test directory.
type installed struct {
	owner testUser
	base  string // world-searchable
	bin   string // the setuid archiver
	root  string // the archive root
}

func install(t *testing.T) installed {
	t.Helper()
	requireRoot(t)
	in := installed{owner: addUser(t, "mao"), base: openDir(t)}
	in.root = filepath.Join(in.base, "archive")
	bindir := filepath.Join(in.base, "bin")
	built := filepath.Join(t.TempDir(), "archiver")
	if err := build(built, in.root); err != nil {
		t.Fatal(err)
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "wrapper", "install.sh")
	// A binary built for another archive is refused.
	if out, err := exec.Command(script, "--user", in.owner.name, "--archive-dir", in.root,
		"--bindir", bindir, "--binary", archiver()).CombinedOutput(); err == nil {
		t.Fatalf("install.sh accepted a binary built for another archive: %s", out)
	}
	out, err := exec.Command(script, "--user", in.owner.name, "--archive-dir", in.root,
		"--bindir", bindir, "--binary", built).CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh: %v: %s", err, out)
	}
	in.bin = filepath.Join(bindir, "archiver")
	return in
}

// asUser runs a shell command as u and reports whether it succeeded.
func asUser(t *testing.T, u testUser, script string) (bool, string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred()}
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

func TestPrivilegeModel(t *testing.T) {
	in := install(t)
	bob := addUser(t, "mad")

	fi, err := os.Stat(in.bin)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != os.ModeSetuid|os.ModeSetgid || fi.Mode().Perm() != 0o755 ||
		int(st.Uid) != in.owner.uid || int(st.Gid) != in.owner.gid {
		t.Fatalf("installed binary: mode %v owner %d:%d", fi.Mode(), st.Uid, st.Gid)
	}

	// The delivery command records who it runs as, what it received, and
	// whether it can reach the archive.
	out := filepath.Join(in.base, "out")
	os.Mkdir(out, 0o700)
	os.Chown(out, bob.uid, bob.gid)
	deliver := filepath.Join(in.base, "deliver.sh")
	os.WriteFile(deliver, []byte(`#!/bin/sh
out=$1 root=$2
echo "$(id -u) $(id -ru) $(id -g) $(id -rg)" > "$out/ids"
cat > "$out/msg"
ls "$root" > /dev/null 2>&1 && echo listed >> "$out/breach"
ls "$root/tmp" > /dev/null 2>&1 && echo listed-tmp >> "$out/breach"
echo tampered 2>/dev/null >> /dev/stdin && echo wrote-stdin >> "$out/breach"
exit 0
`), 0o755)

	msg := "From alice@example.org  Tue Nov 24 13:05:01 2026\nSubject: secret\n\nfor bob only\n"
	env := []string{"PATH=/usr/bin:/bin", "USER=" + bob.name, "SENDER=alice@example.org", "RECIPIENT=" + bob.name + "@example.net"}
	code, _, stderr := runBinary(t, in.bin, msg, env, bob.cred(), "x", bob.name, deliver, out, in.root)
	if code != 0 {
		t.Fatalf("archiver as %s: exit %d: %s", bob.name, code, stderr)
	}

	// The item is written, complete, and belongs to the archive owner.
	ids := completeItems(t, in.root)
	if len(ids) != 1 {
		t.Fatalf("items %v", ids)
	}
	id := ids[0]
	for _, ext := range []string{".eml", ".json"} {
		fi, err := os.Stat(filepath.Join(in.root, id+ext))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != 0o640 || int(st.Uid) != in.owner.uid || int(st.Gid) != in.owner.gid {
			t.Errorf("%s%s: mode %v owner %d:%d, want 0640 %d:%d", id, ext, fi.Mode(), st.Uid, st.Gid, in.owner.uid, in.owner.gid)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(in.root, id+".eml")); string(got) != msg {
		t.Errorf("archived %q", got)
	}

	// COMMAND ran with bob's IDs only, on the archived bytes, and could not
	// reach the archive.
	ids2, _ := os.ReadFile(filepath.Join(out, "ids"))
	want := strings.Repeat(strconv.Itoa(bob.uid)+" ", 2) + strconv.Itoa(bob.gid) + " " + strconv.Itoa(bob.gid) + "\n"
	if string(ids2) != want {
		t.Errorf("COMMAND ran as %q, want %q", ids2, want)
	}
	if got, _ := os.ReadFile(filepath.Join(out, "msg")); string(got) != msg {
		t.Errorf("COMMAND got %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(out, "breach")); err == nil {
		t.Errorf("COMMAND reached the archive: %s", b)
	}

	// bob cannot list, read, change or delete any item, his own included.
	item := filepath.Join(in.root, id)
	for _, probe := range []string{
		"ls " + in.root,
		"ls " + in.root + "/tmp",
		"cat " + item + ".eml",
		"cat " + item + ".json",
		"echo x >> " + item + ".eml",
		"rm -f " + item + ".eml",
		"mv " + item + ".json " + out + "/",
		"touch " + in.root + "/planted",
	} {
		if ok, outp := asUser(t, bob, probe); ok {
			t.Errorf("as %s, %q succeeded: %s", bob.name, probe, outp)
		}
	}
	if got := completeItems(t, in.root); len(got) != 1 {
		t.Errorf("items after probes: %v", got)
	}
	// Root, though, may archive wherever it likes (and keeps root for COMMAND).
	// (The archiver still works as the archive owner, so the owner must be
	// able to write there.)
	rootOut := filepath.Join(in.base, "root-archive")
	os.Mkdir(rootOut, 0o750)
	os.Chown(rootOut, in.owner.uid, in.owner.gid)
	code, _, stderr = runBinary(t, in.bin, msg, env, nil, "-d", rootOut, "x", "root", "sh", "-c", "cat >/dev/null; test $(id -u) = 0")
	if code != 0 || len(completeItems(t, rootOut)) != 1 {
		t.Errorf("setuid archiver run by root with -d: exit %d: %s", code, stderr)
	}

	// An unprivileged caller cannot point the archive owner elsewhere.
	other := filepath.Join(in.base, "other")
	code, _, stderr = runBinary(t, in.bin, msg, env, bob.cred(), "-d", other, "x", bob.name, "true")
	if code != 75 || !strings.Contains(stderr, "only be changed by root") {
		t.Errorf("-d as %s: exit %d: %s", bob.name, code, stderr)
	}
	if _, err := os.Stat(other); err == nil {
		t.Errorf("-d as %s created %s", bob.name, other)
	}
	// The default spelled out is fine.
	code, _, stderr = runBinary(t, in.bin, msg, env, bob.cred(), "-d", in.root+"/", "x", bob.name, "true")
	if code != 0 {
		t.Errorf("-d with the built-in directory: exit %d: %s", code, stderr)
	}
}

// When the archive cannot be written, even setuid, nothing is delivered and
// Postfix is told to retry.
func TestPrivilegedArchiveFailureDefers(t *testing.T) {
	in := install(t)
	bob := addUser(t, "mad")
	os.Chmod(in.root, 0o500) // even the owner cannot add
	defer os.Chmod(in.root, 0o2750)
	marker := filepath.Join(in.base, "delivered")
	code, _, stderr := runBinary(t, in.bin, "Subject: x\n\nx\n", nil, bob.cred(), "x", bob.name, "/bin/sh", "-c", "touch "+marker)
	if code != 75 || !strings.Contains(stderr, "not archived") {
		t.Errorf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("delivered although not archived")
	}
}

type syscallStat = syscall.Stat_t

func asCred(u testUser) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: u.cred()}
}
