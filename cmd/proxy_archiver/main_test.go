package main_test

import (
	"bufio"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

func build(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "proxy_archiver")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestFlags(t *testing.T) {
	bin := build(t)
	for _, tt := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--help"}, 0, "content_filter"},
		{[]string{"--version"}, 0, "proxy_archiver "},
		{[]string{"--on-archive-error=maybe"}, 2, "tempfail or pass"},
		{[]string{"--no-such-flag"}, 2, "unknown flag"},
		{[]string{"extra"}, 2, "unexpected arguments"},
	} {
		out, err := exec.Command(bin, tt.args...).CombinedOutput()
		if c := exitCode(err); c != tt.code || !strings.Contains(string(out), tt.out) {
			t.Errorf("%v: exit %d, output %q; want exit %d with %q", tt.args, c, out, tt.code, tt.out)
		}
	}
}

// TestSIGTERM: the binary stops accepting, closes an idle connection with
// 421 and exits 0.
func TestSIGTERM(t *testing.T) {
	bin := build(t)
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	go func() {
		for {
			c, err := down.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("220 down ESMTP\r\n"))
			defer c.Close()
		}
	}()
	cmd := exec.Command(bin, "-l", "127.0.0.1:0", "-s", down.Addr().String(), "-d", t.TempDir())
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The start-up line names the address it listens on.
	sc := bufio.NewScanner(stderr)
	re := regexp.MustCompile(`listen=(\S+)`)
	var addr string
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			addr = m[1]
			break
		}
	}
	if addr == "" {
		t.Fatal("no start-up line with the listen address")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "220") {
		t.Fatalf("greeting %q", l)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if l, _ := r.ReadString('\n'); !strings.HasPrefix(l, "421 4.3.2") {
		t.Fatalf("idle connection got %q on SIGTERM, want 421 4.3.2", l)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if exitCode(err) != 0 {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
}
