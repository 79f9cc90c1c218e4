package main_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/daemon/daemontest"
	"github.com/postfix-archive/mailarchive/milter"
)

func TestFlags(t *testing.T) {
	daemontest.CheckFlags(t, daemontest.Build(t, "milter_archiver"), []daemontest.FlagCase{
		{Args: []string{"--help"}, Code: 0, Out: "--socket-group GROUP"},
		{Args: []string{"--help"}, Code: 0, Out: "--log-target TARGET"},
		{Args: []string{"--version"}, Code: 0, Out: "milter_archiver "},
		{Args: []string{"--on-archive-error=maybe"}, Code: 2, Out: "want tempfail or pass"},
		{Args: []string{"--socket-mode=rw"}, Code: 2, Out: "want an octal mode"},
		{Args: []string{"--socket-group=no-such-group-here"}, Code: 2, Out: `--socket-group: milter: socket group "no-such-group-here"`},
		{Args: []string{"--log-target=journal"}, Code: 2, Out: "want stderr or syslog"},
		{Args: []string{"--no-such-flag"}, Code: 2, Out: "unknown flag"},
		{Args: []string{"extra"}, Code: 2, Out: "unexpected arguments"},
	})
}

// TestUnixSocket: -l unix:DIR/milter/archive.sock with --socket-group
// creates the missing directory and the socket in that group, warns when
// run as root, and on SIGTERM removes the socket and exits 0.
func TestUnixSocket(t *testing.T) {
	bin := daemontest.Build(t, "milter_archiver")
	gid := os.Getgid()
	group := strconv.Itoa(gid)
	if g, err := milter.LookupGroup("nogroup"); err == nil && os.Geteuid() == 0 {
		gid, group = g, "nogroup" // root may give any group: one that is not ours
	}
	base := t.TempDir()
	sockDir := filepath.Join(base, "spool", "milter")
	sock := filepath.Join(sockDir, "archive.sock")
	var log archivetest.SyncBuffer
	cmd := exec.Command(bin, "-l", "unix:"+sock, "--socket-group", group, "--socket-mode", "0660", "-d", filepath.Join(base, "archive"))
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket: %v\n%s", err, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for path, mode := range map[string]os.FileMode{sockDir: 0o750 | os.ModeDir | os.ModeSetgid, sock: 0o660 | os.ModeSocket} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
			t.Errorf("%s: %v group %d, want %v group %d", path, fi.Mode(), fi.Sys().(*syscall.Stat_t).Gid, mode, gid)
		}
	}
	if root := os.Geteuid() == 0; root != strings.Contains(log.String(), "running as root") {
		t.Errorf("root %v, log:\n%s", root, log.String())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if daemontest.ExitCode(err) != 0 {
			t.Fatalf("exit: %v\n%s", err, log.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if !strings.Contains(log.String(), "signal received: shutting down") {
		t.Errorf("log:\n%s", log.String())
	}
}
