package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoDir builds the demo and the two programs it starts into a fresh
// directory laid out as the repository is (bin/NAME), for the demo to run
// in.
func demoDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for name, pkg := range map[string]string{"demo": ".", "smtpsink": "../../cmd/smtpsink", "proxy_archiver": "../../cmd/proxy_archiver"} {
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

// TestDemo: the demo runs to the end, and however it ends, cut short
// included, nothing it started is left running.
func TestDemo(t *testing.T) {
	dir := demoDir(t)
	t.Run("to the end", func(t *testing.T) {
		cmd := exec.Command("bin/demo")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "byte for byte") {
			t.Fatalf("demo: %v\n%s", err, out)
		}
		wantNoneLeft(t, dir)
	})
	for _, tc := range []struct {
		name string
		sig  syscall.Signal // sent once the demo waits (--keep); 0: close its output instead
	}{
		{"SIGTERM", syscall.SIGTERM},
		{"SIGINT", syscall.SIGINT},
		{"SIGHUP", syscall.SIGHUP},
		{"SIGKILL", syscall.SIGKILL},
		{"output closed (make demo | head -1)", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--keep"}
			if tc.sig == 0 {
				args = nil
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
			wait := "Press ^C"
			if tc.sig == 0 {
				wait = "== proxy_archiver on" // the sink and the proxy run
			}
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("demo output ended before %q: %v", wait, err)
				}
				if strings.Contains(line, wait) {
					break
				}
			}
			if len(running(dir)) != 2 {
				t.Fatalf("running: %v, want the sink and the proxy", running(dir))
			}
			if tc.sig == 0 {
				stdout.(io.Closer).Close() // like head exiting
			} else {
				cmd.Process.Signal(tc.sig)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the demo did not end")
			}
			wantNoneLeft(t, dir)
		})
	}
}
