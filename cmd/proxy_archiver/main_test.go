package main_test

import (
	"bufio"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/daemon/daemontest"
)

func TestFlags(t *testing.T) {
	daemontest.CheckFlags(t, daemontest.Build(t, "proxy_archiver"), []daemontest.FlagCase{
		{Args: []string{"--help"}, Code: 0, Out: "content_filter"},
		{Args: []string{"--version"}, Code: 0, Out: "proxy_archiver "},
		{Args: []string{"--on-archive-error=maybe"}, Code: 2, Out: "tempfail or pass"},
		{Args: []string{"--no-such-flag"}, Code: 2, Out: "unknown flag"},
		{Args: []string{"extra"}, Code: 2, Out: "unexpected arguments"},
	})
}

// TestSIGTERM: the binary stops accepting, closes an idle connection with
// 421 and exits 0.
func TestSIGTERM(t *testing.T) {
	bin := daemontest.Build(t, "proxy_archiver")
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
		if daemontest.ExitCode(err) != 0 {
			t.Fatalf("exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
}
