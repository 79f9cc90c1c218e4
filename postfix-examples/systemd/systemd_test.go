// Package systemd_test checks the systemd units (this directory's and the
// filer's in ../filer/) and "make install".
//
// systemd is not a peer the project requires: the units are examples for
// the machines that have it. So TestUnitsVerify skips when systemd-analyze
// is missing, even under CI=true (unlike the Postfix tests, which fail
// there).
package systemd_test

import (
	"bufio"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// units are every unit the project ships: one copy each.
var units = []string{
	"proxy_archiver.service",
	"milter_archiver.service",
	"../filer/mailarchive-filer.service",
	"../filer/mailarchive-filer.timer",
}

// verify runs systemd-analyze verify on the unit files in dir, with the
// binaries they start looked up in bindir instead of /usr/local/bin (verify
// checks that ExecStart is executable), and wants no complaint at all: it
// exits 0 on unknown keys and bad values, and only says so.
func verify(t *testing.T, bindir string, files ...string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed; systemd is not a required peer, so this skips even under CI")
	}
	dir := t.TempDir()
	var args []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.ReplaceAll(string(b), "/usr/local/bin/", bindir+"/"))
		p := filepath.Join(dir, filepath.Base(f))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, args...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// stubBinaries makes executables named like the commands.
func stubBinaries(t *testing.T) string {
	dir := t.TempDir()
	for _, n := range []string{"proxy_archiver", "milter_archiver", "filer", "archiver", "mailarchive"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestUnitsVerify(t *testing.T) {
	verify(t, stubBinaries(t), units...)
}

// unitSettings reads a unit file's Key=Value lines (last one wins).
func unitSettings(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kv := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		kv[k] = v
	}
	return kv
}

// TestDaemonHardening pins what the daemons' units promise: docs/operations.md
// describes these settings, and a stop timeout shorter than the daemon's own
// --shutdown-timeout would SIGKILL messages in flight.
func TestDaemonHardening(t *testing.T) {
	for unit, shutdown := range map[string]time.Duration{
		"proxy_archiver.service":  60 * time.Second, // cmd/proxy_archiver --shutdown-timeout default
		"milter_archiver.service": 30 * time.Second, // cmd/milter_archiver --shutdown-timeout default
	} {
		kv := unitSettings(t, unit)
		for k, want := range map[string]string{
			"User":                    "mailarchive",
			"ProtectSystem":           "strict",
			"ReadWritePaths":          "/var/spool/mailarchive",
			"NoNewPrivileges":         "yes",
			"PrivateTmp":              "yes",
			"ProtectHome":             "yes",
			"CapabilityBoundingSet":   "",
			"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
			"SystemCallFilter":        "@system-service",
			"Restart":                 "on-failure",
			"KillSignal":              "SIGTERM",
			"SyslogFacility":          "mail",
			// Debian's real Postfix unit is postfix@-.service.
			"Before": "postfix.service postfix@-.service",
		} {
			if got, ok := kv[k]; !ok || got != want {
				t.Errorf("%s: %s=%q, want %q", unit, k, got, want)
			}
		}
		stop, err := time.ParseDuration(kv["TimeoutStopSec"])
		if err != nil || stop <= shutdown {
			t.Errorf("%s: TimeoutStopSec=%s, want more than the %v shutdown timeout", unit, kv["TimeoutStopSec"], shutdown)
		}
		if m := regexp.MustCompile(`--shutdown-timeout[ =](\S+)`).FindStringSubmatch(kv["ExecStart"]); m != nil {
			t.Errorf("%s: ExecStart sets --shutdown-timeout %s: update this test's expectation", unit, m[1])
		}
	}
}

// TestUnitDocs: every document a unit names, in Documentation= or in its
// comments, exists in this repository.
func TestUnitDocs(t *testing.T) {
	docRef := regexp.MustCompile(`(?:share/doc/mailarchive/|\bdocs/)([A-Za-z0-9_.-]+\.md)|\b(README\.md)`)
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		refs := docRef.FindAllStringSubmatch(string(b), -1)
		for _, m := range refs {
			name := m[1] + m[2]
			path := filepath.Join("../../docs", name)
			if name == "README.md" {
				path = "../../README.md"
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s names %s: %v", u, m[0], err)
			}
		}
		if len(refs) == 0 && strings.HasSuffix(u, ".service") {
			t.Errorf("%s names no documentation", u)
		}
	}
}

// TestMakeInstall runs "make install DESTDIR=tmp" as root and checks the tree:
// the binaries, the archiver set-ID to the archive owner, the archive root
// and tmp/ 2750 owned by it, the units (valid, pointing at BINDIR) and the
// docs. The owner is "daemon" here (it exists on every Debian system): the
// test must not create users.
func TestMakeInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("make install of a set-ID archiver needs root")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	owner, err := user.Lookup("daemon")
	if err != nil {
		t.Skip("no user daemon")
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)

	destdir := t.TempDir()
	cmd := exec.Command("make", "-C", "../..", "install", "DESTDIR="+destdir, "PREFIX=/opt/ma", "ARCHIVE_USER=daemon")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	type want struct {
		mode     os.FileMode
		uid, gid int
	}
	root := want{uid: 0, gid: 0}
	for path, w := range map[string]want{
		"opt/ma/bin/proxy_archiver":                      {0o755, root.uid, root.gid},
		"opt/ma/bin/milter_archiver":                     {0o755, root.uid, root.gid},
		"opt/ma/bin/filer":                               {0o755, root.uid, root.gid},
		"opt/ma/bin/mailarchive":                         {0o755, root.uid, root.gid},
		"opt/ma/bin/archiver":                            {0o755 | os.ModeSetuid | os.ModeSetgid, uid, gid},
		"var/spool/mailarchive":                          {0o750 | os.ModeDir | os.ModeSetgid, uid, gid},
		"var/spool/mailarchive/tmp":                      {0o750 | os.ModeDir | os.ModeSetgid, uid, gid},
		"etc/systemd/system/proxy_archiver.service":      {0o644, root.uid, root.gid},
		"etc/systemd/system/milter_archiver.service":     {0o644, root.uid, root.gid},
		"etc/systemd/system/mailarchive-filer.service":   {0o644, root.uid, root.gid},
		"etc/systemd/system/mailarchive-filer.timer":     {0o644, root.uid, root.gid},
		"opt/ma/share/doc/mailarchive/README.md":         {0o644, root.uid, root.gid},
		"opt/ma/share/doc/mailarchive/archive-format.md": {0o644, root.uid, root.gid},
		"opt/ma/share/doc/mailarchive/operations.md":     {0o644, root.uid, root.gid},
	} {
		fi, err := os.Lstat(filepath.Join(destdir, path))
		if err != nil {
			t.Error(err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != w.mode || int(st.Uid) != w.uid || int(st.Gid) != w.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", path, fi.Mode(), st.Uid, st.Gid, w.mode, w.uid, w.gid)
		}
	}
	if _, err := os.Stat(filepath.Join(destdir, "opt/ma/bin/smtpsink")); err == nil {
		t.Error("smtpsink (a test tool) installed")
	}

	// The archiver knows its archive, and says which build it is.
	bin := filepath.Join(destdir, "opt/ma/bin")
	out, err := exec.Command(filepath.Join(bin, "archiver"), "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `(default "/var/spool/mailarchive")`) {
		t.Errorf("archiver --help: %v\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(bin, "proxy_archiver"), "--version").CombinedOutput()
	if err != nil || !regexp.MustCompile(`^proxy_archiver \S+ \(commit [0-9a-f]{7,}\)\n$`).Match(out) {
		t.Errorf("proxy_archiver --version: %v %q", err, out)
	}

	// The units start the installed binaries, and are valid.
	unitDir := filepath.Join(destdir, "etc/systemd/system")
	var installed []string
	for _, u := range units {
		p := filepath.Join(unitDir, filepath.Base(u))
		installed = append(installed, p)
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), "/usr/local/") {
			t.Errorf("%s still names /usr/local/ with PREFIX=/opt/ma", p)
		}
	}
	if !strings.Contains(unitSettings(t, installed[0])["ExecStart"], "/opt/ma/bin/proxy_archiver ") {
		t.Errorf("proxy unit ExecStart: %q", unitSettings(t, installed[0])["ExecStart"])
	}
	t.Run("verify", func(t *testing.T) {
		// verify maps /usr/local/bin/ only; the installed units already name
		// /opt/ma/bin, which exists under destdir: map that instead.
		sa, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze not installed; systemd is not a required peer, so this skips even under CI")
		}
		dir := t.TempDir()
		var args []string
		for _, p := range installed {
			b, _ := os.ReadFile(p)
			q := filepath.Join(dir, filepath.Base(p))
			os.WriteFile(q, []byte(strings.ReplaceAll(string(b), "/opt/ma/bin/", bin+"/")), 0o644)
			args = append(args, q)
		}
		if out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, args...)...).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}
