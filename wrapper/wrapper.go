// Package wrapper is the mailbox_command hook point: it archives the message
// on standard input through the shared store, then runs the real delivery
// command on the archived bytes and exits with its status, so Postfix's
// defer and bounce logic works unchanged (README.md, "archiver").
//
// Every failure before the delivery command starts exits 75 (EX_TEMPFAIL):
// Postfix keeps the message and retries, nothing is lost and nothing is
// delivered unarchived.
package wrapper

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/internal/buildinfo"
)

// DefaultArchiveDir is the archive root used when -d is not given, and the
// only one an unprivileged caller gets when the archiver is installed setuid.
// Packagers set it at link time:
//
//	go build -ldflags "-X github.com/postfix-archive/mailarchive/wrapper.DefaultArchiveDir=/srv/mailarchive"
var DefaultArchiveDir = "/var/spool/mailarchive"

// Exit statuses of the archiver besides COMMAND's own (sysexits.h).
const (
	ExitOK       = 0
	ExitTempFail = 75 // EX_TEMPFAIL: Postfix defers and retries
)

const usageText = `Usage: archiver [flags] TAG1 TAG2 COMMAND [ARGS...]

Archives the message on standard input into the archive root, with TAG1 and
TAG2 in the item's ID and the delivery environment in its envelope, then runs
COMMAND with the archived message on its standard input and exits with
COMMAND's status. A drop-in for Postfix's mailbox_command:

  mailbox_command = /usr/local/bin/archiver local "$USER" /usr/bin/procmail -a "$EXTENSION"

Flags end at the first operand: everything from TAG1 on is passed through,
so COMMAND's own flags are never taken for the archiver's.

Exit status:
  COMMAND's   the message was archived and the archiver became COMMAND
              (exec): its exit status, or its death by a signal (which
              Postfix defers), is what Postfix sees
  75          the message could not be archived, COMMAND could not be
              started, or the arguments are wrong; Postfix defers the
              message and retries later
  0           --help, --version

Flags:
`

// IO is the process context Main runs in: its standard streams and
// environment. COMMAND inherits Stdout, Stderr and Environ unchanged.
type IO struct {
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	Environ []string

	// ExecInPlace replaces the archiver with COMMAND (execve) once the
	// message is archived, instead of running COMMAND as a child and
	// waiting for it. The command then is the process Postfix started:
	// its exit status, or its death by a signal, reaches Postfix directly,
	// and no fork and wait are paid for (over a millisecond per delivery
	// in a Go program). The archiver binary sets it; tests running Main
	// in-process cannot.
	ExecInPlace bool
}

// config is the parsed command line.
type config struct {
	archiveDir    string
	archiveDirSet bool
	tags          []string
	command       []string
}

var errHelpOrVersion = errors.New("help or version shown")

// parseArgs parses the archiver's command line. Flags stop at the first
// operand; the first two operands are the tags, the rest is COMMAND.
func parseArgs(args []string, stdout io.Writer) (config, error) {
	var c config
	fs := pflag.NewFlagSet("archiver", pflag.ContinueOnError)
	fs.SetInterspersed(false)
	fs.SetOutput(io.Discard) // errors are reported by Main, once
	fs.StringVarP(&c.archiveDir, "archive-dir", "d", DefaultArchiveDir, "archive root `DIR` (ignored from unprivileged callers when installed setuid)")
	version := fs.Bool("version", false, "print the version and exit")
	help := fs.BoolP("help", "h", false, "show this help and exit")
	fs.SortFlags = false
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			*help = true
		} else {
			return c, err
		}
	}
	switch {
	case *help:
		fmt.Fprint(stdout, usageText+fs.FlagUsages())
		return c, errHelpOrVersion
	case *version:
		fmt.Fprintln(stdout, buildinfo.String("archiver"))
		return c, errHelpOrVersion
	}
	c.archiveDirSet = fs.Changed("archive-dir")
	ops := fs.Args()
	if len(ops) < 3 {
		return c, fmt.Errorf("want TAG1 TAG2 COMMAND [ARGS...], got %d operand(s)", len(ops))
	}
	if c.archiveDir == "" {
		return c, errors.New("--archive-dir must not be empty")
	}
	c.tags = []string{ops[0], ops[1]}
	c.command = ops[2:]
	return c, nil
}

// Main runs the archiver with the given arguments (without the program
// name) and returns its exit status.
func Main(args []string, p IO) int {
	c, err := parseArgs(args, p.Stdout)
	if errors.Is(err, errHelpOrVersion) {
		return ExitOK
	}
	if err != nil {
		// A broken mailbox_command must not bounce mail: defer it, and say
		// why in the text Postfix puts into its log.
		fmt.Fprintf(p.Stderr, "archiver: %v (try --help); exit 75, the message stays queued\n", err)
		return ExitTempFail
	}
	priv := currentCreds()
	if err := priv.checkArchiveDir(c); err != nil {
		fmt.Fprintf(p.Stderr, "archiver: %v; exit 75, the message stays queued\n", err)
		return ExitTempFail
	}
	if priv.privileged() {
		priv.hygiene()
	}
	msg, id, err := archiveMessage(c, p)
	if err != nil {
		fmt.Fprintf(p.Stderr, "archiver: message not archived: %v; exit 75, Postfix will retry\n", err)
		return ExitTempFail
	}
	defer msg.Close()
	if err := priv.drop(); err != nil {
		fmt.Fprintf(p.Stderr, "archiver: archived as %s, but cannot drop privileges: %v; exit 75, Postfix will retry\n", id, err)
		return ExitTempFail
	}
	if p.ExecInPlace {
		return execCommand(c.command, msg, id, p)
	}
	return runCommand(c.command, msg, id, p)
}

// quote shows a command line in messages.
func quote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, " ")
}
