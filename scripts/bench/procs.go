package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// freeAddr returns a loopback address with a port free right now.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs a long-lived peer in its own process group, logging to a file
// in the work directory, and waits until addr (if any) accepts connections.
func (b *bench) start(name, addr string, prog string, args ...string) (*exec.Cmd, error) {
	c := exec.Command(prog, args...)
	logf, err := os.Create(filepath.Join(b.work, name+".log"))
	if err != nil {
		return nil, err
	}
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	b.procs = append(b.procs, c)
	if addr != "" {
		if err := waitListen(addr, 10*time.Second); err != nil {
			stopProc(c)
			log, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("%s: %v\n%s", name, err, log)
		}
	}
	return c, nil
}

// stop ends a peer started by start.
func (b *bench) stop(c *exec.Cmd) {
	stopProc(c)
	for i, p := range b.procs {
		if p == c {
			b.procs = append(b.procs[:i], b.procs[i+1:]...)
			break
		}
	}
}

func stopProc(c *exec.Cmd) {
	if c.Process == nil || c.ProcessState != nil {
		return
	}
	c.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		c.Process.Kill()
		<-done
	}
}

func waitListen(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listening on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procStatus reads a "VmRSS"/"VmHWM" field of /proc/PID/status in bytes.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseInt(f[0], 10, 64)
			return n << 10
		}
	}
	return -1
}

// timed runs a command to completion and returns its wall time.
func timed(prog string, args ...string) (time.Duration, error) {
	c := exec.Command(prog, args...)
	t0 := time.Now()
	out, err := c.CombinedOutput()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("%s %s: %v\n%s", prog, strings.Join(args, " "), err, tailStr(string(out), 2000))
	}
	return d, nil
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
