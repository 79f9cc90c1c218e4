package main_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The binary execs COMMAND in place: COMMAND reads the archived message
// from its first byte, its exit status is the archiver's, and a command
// that cannot be started defers (75) with the message archived.
func TestExecInPlace(t *testing.T) {
	root := t.TempDir()
	msg := "From alice@example.org Wed Nov 25 00:00:00 2026\nSubject: x\n\nbody\n"
	out := filepath.Join(t.TempDir(), "delivered")
	env := []string{"PATH=/usr/bin:/bin", "OUT=" + out}
	tests := []struct {
		name string
		cmd  []string
		code int
		err  string
	}{
		{"copies stdin", []string{"sh", "-c", `cat > "$OUT"`}, 0, ""},
		{"exit status passed on", []string{"sh", "-c", "cat >/dev/null; exit 67"}, 67, ""},
		{"missing command", []string{"/nonexistent/deliver"}, 75, "cannot start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"-d", root, "x", "y"}, tt.cmd...)
			code, _, stderr := runArchiver(t, msg, env, nil, args...)
			if code != tt.code || !strings.Contains(stderr, tt.err) {
				t.Fatalf("exit %d, stderr %q; want %d with %q", code, stderr, tt.code, tt.err)
			}
		})
	}
	got, err := os.ReadFile(out)
	if err != nil || string(got) != msg {
		t.Fatalf("COMMAND read %q, %v; want the whole message", got, err)
	}
	// Every run archived the message first, the failed start included.
	if ids := completeItems(t, root); len(ids) != len(tests) {
		t.Fatalf("%d items for %d runs", len(ids), len(tests))
	}
}

// TestExecSignal: a command killed by a signal is seen as killed by it by
// the caller (Postfix defers such a delivery with 4.3.0).
func TestExecSignal(t *testing.T) {
	cmd := exec.Command(archiver(), "-d", t.TempDir(), "x", "y", "sh", "-c", "kill -KILL $$")
	cmd.Stdin = strings.NewReader("Subject: x\n\nbody\n")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("err %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("wait status %v, want killed by SIGKILL", ws)
	}
}
