package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoDir builds the demo and the programs it runs into a fresh directory
// laid out as the repository is (bin/NAME), for the demo to run in.
func demoDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, pkg := range map[string]string{"demo": ".", "smtpsink": "../../cmd/smtpsink", "proxy_archiver": "../../cmd/proxy_archiver",
		"filer": "../../cmd/filer", "mailarchive": "../../cmd/mailarchive"} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "bin", name), pkg).CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir
}

// running lists the processes whose executable is under dir/bin/, other
// than the demo.
func running(dir string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err == nil && strings.HasPrefix(exe, filepath.Join(dir, "bin")+"/") && filepath.Base(exe) != "demo" {
			found = append(found, filepath.Base(exe)+" (pid "+strings.Split(p, "/")[2]+")")
		}
	}
	return found
}

// wantNoneLeft fails if a program the demo started outlives it.
func wantNoneLeft(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := running(dir)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still running after the demo ended: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantSteps are the officer's steps the demo must show, in order: the
// start of each command line and its exit status (-1: not a command the
// demo runs, so no status).
var wantSteps = []struct {
	cmd  string
	exit int
}{
	{"bin/filer demo-out/archive", 0},
	{"bin/mailarchive index -d demo-out/archive", 0},
	{"bin/mailarchive search -d demo-out/archive from:alice@example.org", 0},
	{"bin/mailarchive search -d demo-out/archive body:", 0},
	{"bin/mailarchive search -d demo-out/archive rcpt:dave@example.net", 0},
	{"bin/mailarchive show -d demo-out/archive ", 0},
	{"bin/mailarchive keygen --signer demo-out/keys/signer.key --verifier demo-out/keys/verifier.pub", 0},
	{"bin/mailarchive seal -d demo-out/archive --signer demo-out/keys/signer.key", 0},
	{"bin/mailarchive verify -d demo-out/archive --key demo-out/keys/verifier.pub", 0},
	{"cp -a demo-out/archive demo-out/tampered", -1},
	{"bin/mailarchive verify -d demo-out/tampered --key demo-out/keys/verifier.pub", 1},
	{"bin/mailarchive proof -d demo-out/archive ", 0},
	{"bin/mailarchive verify-proof demo-out/proof.json --key demo-out/keys/verifier.pub", 0},
	{"bin/mailarchive export -d demo-out/archive --format mbox -o demo-out/alice.mbox from:alice@example.org", 0},
}

type shownStep struct {
	n       int
	heading string
	cmd     string
	exit    int
}

// parseSteps reads the numbered steps from the demo's output: each is
// "== N. HEADING", "   $ COMMAND LINE", the output, and "   (exit status
// N)" when the demo ran a command.
func parseSteps(t *testing.T, out string) []shownStep {
	t.Helper()
	var steps []shownStep
	for _, block := range strings.Split(out, "\n== ")[1:] {
		lines := strings.Split(block, "\n")
		var s shownStep
		if _, err := fmt.Sscanf(lines[0], "%d.", &s.n); err != nil {
			continue // not a numbered step
		}
		s.heading, s.exit = lines[0], -1
		if len(lines) < 2 || !strings.HasPrefix(lines[1], "   $ ") {
			t.Fatalf("step %q: no command line after the heading", lines[0])
		}
		s.cmd = strings.TrimPrefix(lines[1], "   $ ")
		for _, l := range lines[2:] {
			if _, err := fmt.Sscanf(l, "   (exit status %d)", &s.exit); err == nil {
				break
			}
		}
		steps = append(steps, s)
	}
	return steps
}

// runTool runs dir/bin/NAME ARGS in dir and returns its exit status.
func runTool(t *testing.T, dir, name string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join("bin", name), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestDemo: the demo runs to the end and shows every step of the officer's
// session with the right exit status, what it leaves behind checks out
// when checked again, and however it ends, cut short included, nothing it
// started is left running.
func TestDemo(t *testing.T) {
	dir := demoDir(t)
	t.Run("to the end", func(t *testing.T) {
		cmd := exec.Command("bin/demo")
		cmd.Dir = dir
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "byte for byte") {
			t.Fatalf("demo: %v\n%s", err, out)
		}
		// Well under a minute even on a loaded machine; it takes about a
		// second on an idle one.
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("the demo took %v", d)
		}
		wantNoneLeft(t, dir)
		steps := parseSteps(t, string(out))
		if len(steps) != len(wantSteps) {
			t.Fatalf("the demo shows %d steps, want %d:\n%s", len(steps), len(wantSteps), out)
		}
		for i, s := range steps {
			w := wantSteps[i]
			if s.n != i+1 || !strings.HasPrefix(s.cmd, w.cmd) || s.exit != w.exit {
				t.Errorf("step %d: %q runs %q, exit %d; want number %d, %q..., exit %d", s.n, s.heading, s.cmd, s.exit, i+1, w.cmd, w.exit)
			}
			if len(strings.TrimSpace(strings.TrimPrefix(s.heading, fmt.Sprintf("%d.", s.n)))) < 20 {
				t.Errorf("step %d: the heading %q does not say what it shows", s.n, s.heading)
			}
		}

		// What the demo leaves checks out on its own, not only by what
		// the demo printed.
		key := "demo-out/keys/verifier.pub"
		if code, o := runTool(t, dir, "mailarchive", "verify", "-d", "demo-out/archive", "--key", key, "--textfile", ""); code != 0 {
			t.Errorf("verify of the demo's archive: exit %d\n%s", code, o)
		}
		if code, o := runTool(t, dir, "mailarchive", "verify", "-d", "demo-out/tampered", "--key", key, "--textfile", ""); code != 1 || !strings.Contains(o, "altered-eml") {
			t.Errorf("verify of the tampered copy: exit %d, want 1 with altered-eml\n%s", code, o)
		}
		if code, o := runTool(t, dir, "mailarchive", "verify-proof", "demo-out/proof.json", "--key", key); code != 0 {
			t.Errorf("verify-proof of the demo's bundle: exit %d\n%s", code, o)
		}
		for file, want := range map[string]string{"verify.prom": "mailarchive_verify_clean 1", "verify-tampered.prom": "mailarchive_verify_clean 0"} {
			if b, err := os.ReadFile(filepath.Join(dir, "demo-out", file)); err != nil || !strings.Contains(string(b), want) {
				t.Errorf("demo-out/%s: %v, want it to hold %q:\n%s", file, err, want, b)
			}
		}
		if fi, err := os.Stat(filepath.Join(dir, "demo-out/keys/signer.key")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("the signer key: %v %v, want mode 0600 in demo-out/keys", fi, err)
		}
	})
	t.Run("a step that misbehaves fails the demo", func(t *testing.T) { testLies(t, dir) })
	for _, tc := range []struct {
		name        string
		sig         syscall.Signal // sent once the demo prints wait; 0: close its output instead
		wait        string         // "": "Press ^C" (--keep)
		wantRunning int            // programs running when wait shows
	}{
		{"SIGTERM", syscall.SIGTERM, "", 2},
		{"SIGINT", syscall.SIGINT, "", 2},
		{"SIGHUP", syscall.SIGHUP, "", 2},
		{"SIGKILL", syscall.SIGKILL, "", 2},
		{"output closed (make demo | head -1)", 0, "== proxy_archiver on", 2}, // the sink and the proxy run
		{"output closed during the officer's steps", 0, "   $ bin/mailarchive index", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args, wait := []string{"--keep"}, "Press ^C"
			if tc.wait != "" {
				args, wait = nil, tc.wait
			}
			cmd := exec.Command("bin/demo", args...)
			cmd.Dir = dir
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			r := bufio.NewReader(stdout)
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("demo output ended before %q: %v", wait, err)
				}
				if strings.Contains(line, wait) {
					break
				}
			}
			if n := len(running(dir)); n < tc.wantRunning {
				t.Fatalf("running: %v, want %d programs", running(dir), tc.wantRunning)
			}
			if tc.sig == 0 {
				stdout.(io.Closer).Close() // like head exiting
			} else {
				cmd.Process.Signal(tc.sig)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err == nil {
					t.Error("the demo ended with status 0, though cut short")
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the demo did not end")
			}
			wantNoneLeft(t, dir)
		})
	}
}

// lyingTool stands in for bin/mailarchive: it runs the real one
// (mailarchive.real) but misbehaves as $LIE says.
const lyingTool = `#!/bin/sh
real="$(dirname "$0")/mailarchive.real"
case "$LIE:$1:$*" in
verify-tampered:verify:*tampered*) "$real" "$@"; exit 0 ;;
search-empty:search:*) exit 0 ;;
seal-fails:seal:*) echo "mailarchive seal: no space left on device" >&2; exit 2 ;;
show-wrong:show:*) shift; exec "$real" show --text "$@" ;;
proof-silent:verify-proof:*) exit 0 ;;
export-nothing:export:*) exit 0 ;;
esac
exec "$real" "$@"
`

// testLies runs the demo with a bin/mailarchive that misbehaves in one
// step at a time: each time the demo must fail (exit 1) and say which
// step and what was wrong.
func testLies(t *testing.T, built string) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "bin"), 0o755)
	for _, name := range []string{"demo", "smtpsink", "proxy_archiver", "filer", "mailarchive"} {
		to := name
		if name == "mailarchive" {
			to = "mailarchive.real"
		}
		if err := os.Link(filepath.Join(built, "bin", name), filepath.Join(dir, "bin", to)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "mailarchive"), []byte(lyingTool), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		lie  string
		want []string // in the demo's error; nil: the demo succeeds
	}{
		{"none", nil},
		{"verify-tampered", []string{"step 11 (", "mailarchive exited 0, want 1"}},
		{"search-empty", []string{"step 3: search from:alice@example.org found [], want ["}},
		{"seal-fails", []string{"step 8 (", "mailarchive exited 2, want 0"}},
		{"show-wrong", []string{"step 6: the output lacks"}},
		{"proof-silent", []string{`step 13: the output lacks "OK: `}},
		{"export-nothing", []string{"step 14: ", "alice.mbox: no such file"}},
	} {
		t.Run(tc.lie, func(t *testing.T) {
			cmd := exec.Command("bin/demo")
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "LIE="+tc.lie)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			defer wantNoneLeft(t, dir)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("demo (nothing lies): %v\n%s%s", err, out, stderr.String())
				}
				return
			}
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("demo: exit %d, want 1; stderr %q\n%s", code, stderr.String(), out)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("demo: stderr %q, want it to say %q", stderr.String(), w)
				}
			}
			if strings.Contains(string(out), "Every step did what it should") {
				t.Errorf("the demo claims success after failing:\n%s", out)
			}
		})
	}
}
