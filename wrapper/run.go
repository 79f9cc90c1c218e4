package wrapper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// forwarded are the signals passed on to COMMAND while it runs, so that
// stopping the archiver stops the delivery and the archiver reports its end.
var forwarded = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP}

// runCommand runs COMMAND with the archived message on its standard input
// and returns the exit status to report: COMMAND's own when it exited, 75
// when it could not start or was killed by a signal.
//
// A signal death becomes 75 and not 128+N: the message is archived and the
// delivery did not finish, which is a temporary failure (the delivery agent
// was killed, ran out of memory, hit a time limit); Postfix defers and
// retries rather than bouncing mail over it.
func runCommand(argv []string, msg *os.File, id string, p IO) int {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = msg
	cmd.Stdout = p.Stdout
	cmd.Stderr = p.Stderr
	cmd.Env = p.Environ
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(p.Stderr, "archiver: archived as %s, but cannot start %s: %v; exit 75, Postfix will retry\n",
			id, quote(argv), err)
		return ExitTempFail
	}
	// The child has its own copy of the descriptor.
	msg.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case err := <-done:
			return exitStatus(err, argv, id, p)
		}
	}
}

// execCommand replaces the process with COMMAND, its standard input the
// archived message from its first byte. It returns only if that fails.
func execCommand(argv []string, msg *os.File, id string, p IO) int {
	fail := func(err error) int {
		fmt.Fprintf(p.Stderr, "archiver: archived as %s, but cannot start %s: %v; exit 75, Postfix will retry\n",
			id, quote(argv), err)
		return ExitTempFail
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fail(err)
	}
	env := p.Environ
	if env == nil {
		env = []string{}
	}
	// Dup2 leaves the new descriptor without close-on-exec, so COMMAND
	// inherits it as fd 0; msg itself closes on exec.
	if err := unix.Dup2(int(msg.Fd()), 0); err != nil {
		return fail(fmt.Errorf("stdin: %w", err))
	}
	return fail(syscall.Exec(path, argv, env))
}

// exitStatus maps COMMAND's end to the archiver's exit status.
func exitStatus(err error, argv []string, id string, p IO) int {
	if err == nil {
		return ExitOK
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		fmt.Fprintf(p.Stderr, "archiver: archived as %s; waiting for %s: %v; exit 75\n", id, quote(argv), err)
		return ExitTempFail
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		fmt.Fprintf(p.Stderr, "archiver: archived as %s; %s killed by signal %v; exit 75, Postfix will retry\n",
			id, quote(argv), ws.Signal())
		return ExitTempFail
	}
	return ee.ExitCode()
}
