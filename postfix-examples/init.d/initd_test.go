// Package initd_test runs postfix-examples/init.d/mailarchive, the way to
// run the daemons without systemd, and checks that they run with the
// settings of their systemd units.
//
// The script needs root (it changes user) and Debian's start-stop-daemon
// (dpkg's): without them it skips, and under CI=true it fails.
package initd_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// procStatus reads the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		kv[k] = strings.TrimSpace(v)
	}
	return kv
}

func TestInitScript(t *testing.T) {
	if os.Geteuid() != 0 {
		postfixtest.SkipOrFatal(t, "the init script changes user: needs root")
	}
	if _, err := exec.LookPath("start-stop-daemon"); err != nil {
		postfixtest.SkipOrFatal(t, "no start-stop-daemon (Debian's dpkg has it)")
	}
	owner, err := user.Lookup("daemon") // stands in for mailarchive: the test creates no users
	if err != nil {
		postfixtest.SkipOrFatal(t, "no user daemon")
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	grp, err := user.LookupGroupId(owner.Gid)
	if err != nil {
		t.Fatal(err)
	}

	// The daemons run as the owner: it must reach their binaries.
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(base, "bin")
	for _, name := range []string{"milter_archiver", "proxy_archiver"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "../../cmd/"+name).CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
	}
	archive := filepath.Join(base, "archive")
	if err := os.Mkdir(archive, 0o750); err != nil {
		t.Fatal(err)
	}
	os.Chown(archive, uid, gid)
	milterAddr, proxyAddr := freeAddr(t), freeAddr(t)
	defaults := filepath.Join(base, "default")
	os.WriteFile(defaults, []byte(fmt.Sprintf(`DAEMONS="milter_archiver proxy_archiver"
ARCHIVE_USER=%s
ARCHIVE_GROUP=%s
ARCHIVE_DIR=%s
BINDIR=%s
RUNDIR=%s
LOGDIR=%s
MILTER_ARGS="-l inet:%s"
PROXY_ARGS="-l %s -s 127.0.0.1:1"
`, owner.Username, grp.Name, archive, bin, filepath.Join(base, "run"), filepath.Join(base, "log"), milterAddr, proxyAddr)), 0o644)

	script := func(action string) (string, int) {
		cmd := exec.Command("sh", "./mailarchive", action)
		cmd.Env = append(os.Environ(), "MAILARCHIVE_DEFAULTS="+defaults)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	pids := func() map[string]int {
		m := map[string]int{}
		for _, name := range []string{"milter_archiver", "proxy_archiver"} {
			b, err := os.ReadFile(filepath.Join(base, "run", name+".pid"))
			if err != nil {
				continue
			}
			m[name], _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		return m
	}
	t.Cleanup(func() {
		script("stop")
		for _, pid := range pids() { // a test that failed half-way
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	})

	if out, code := script("start"); code != 0 {
		logs, _ := exec.Command("sh", "-c", "tail -n 20 "+filepath.Join(base, "log")+"/*").CombinedOutput()
		t.Fatalf("start: exit %d\n%s\n%s", code, out, logs)
	}
	running := pids()
	if len(running) != 2 {
		t.Fatalf("pid files: %v", running)
	}
	for name, pid := range running {
		st := procStatus(t, pid)
		// Uid and Gid: real, effective, saved, filesystem.
		wantUID, wantGID := strings.Repeat(owner.Uid+"\t", 3)+owner.Uid, strings.Repeat(owner.Gid+"\t", 3)+owner.Gid
		if st["Uid"] != wantUID || st["Gid"] != wantGID || st["Umask"] != "0027" {
			t.Errorf("%s: Uid %q Gid %q Umask %q, want %s, %s, 0027 (the unit's User=, Group=, UMask=)", name, st["Uid"], st["Gid"], st["Umask"], owner.Uid, owner.Gid)
		}
		if cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); cwd != "/" {
			t.Errorf("%s: working directory %s", name, cwd)
		}
		// The units' flags: the metrics listener is on by default.
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if args := strings.ReplaceAll(string(cmdline), "\x00", " "); !strings.Contains(args, "-d "+archive) {
			t.Errorf("%s: command line %q", name, args)
		}
	}
	for _, addr := range []string{milterAddr, proxyAddr} {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("nothing listens on %s: %v", addr, err)
		}
		c.Close()
	}
	if out, code := script("status"); code != 0 || strings.Count(out, "is running") != 2 {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	// Started a second time: still one of each.
	if out, code := script("start"); code != 0 || pids()["milter_archiver"] != running["milter_archiver"] {
		t.Errorf("second start: exit %d, pids %v then %v\n%s", code, running, pids(), out)
	}

	if out, code := script("stop"); code != 0 {
		t.Fatalf("stop: exit %d\n%s", code, out)
	}
	for name, pid := range running {
		// Gone, or a zombie that init has not reaped yet.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if f := strings.Fields(string(b)); err == nil && len(f) > 2 && f[2] != "Z" {
			t.Errorf("%s (pid %d) still running after stop: %s", name, pid, b)
		}
	}
	// SIGTERM: each daemon finished cleanly and said so in its log.
	for name := range running {
		b, _ := os.ReadFile(filepath.Join(base, "log", name+".log"))
		if !strings.Contains(string(b), "signal received: shutting down") || !strings.Contains(string(b), "msg=stopped") {
			t.Errorf("%s log:\n%s", name, b)
		}
	}
	if out, code := script("status"); code != 3 {
		t.Errorf("status after stop: exit %d, want 3\n%s", code, out)
	}

	// A daemon that cannot start is reported, not taken for started.
	os.WriteFile(defaults, []byte(fmt.Sprintf("DAEMONS=milter_archiver\nARCHIVE_USER=%s\nARCHIVE_GROUP=%s\nBINDIR=%s\nRUNDIR=%s\nLOGDIR=%s\nMILTER_ARGS=\"-l nonsense\"\n",
		owner.Username, grp.Name, bin, filepath.Join(base, "run"), filepath.Join(base, "log"))), 0o644)
	if out, code := script("start"); code == 0 || !strings.Contains(out, "milter_archiver is not running: see") {
		t.Errorf("start with a bad -l: exit %d\n%s", code, out)
	}
}
