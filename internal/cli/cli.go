// Package cli is what mailarchive's subcommands share: exit statuses, the
// archive-directory flag and usage errors, so that every subcommand behaves
// the same for scripts.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"github.com/spf13/pflag"
)

// Exit statuses, the same for every subcommand.
const (
	ExitOK       = 0 // done; a search found something; a check found nothing wrong
	ExitFindings = 1 // a search found nothing, or a check found problems
	ExitError    = 2 // bad arguments, or the work could not be done
)

// DefaultArchiveDir is the archive root when -d is not given.
const DefaultArchiveDir = "/var/spool/mailarchive"

// Env is what a subcommand runs with: its streams and a context that is
// cancelled on SIGINT/SIGTERM.
type Env struct {
	Ctx    context.Context
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Program is "mailarchive SUBCOMMAND", for messages.
	Program string
}

// Errorf prints "mailarchive SUB: message" to stderr and returns ExitError.
func (e *Env) Errorf(format string, args ...any) int {
	fmt.Fprintf(e.Stderr, "%s: %s\n", e.Program, fmt.Sprintf(format, args...))
	return ExitError
}

// Command is one subcommand of mailarchive.
type Command struct {
	Name    string
	Summary string // one line for mailarchive --help
	Run     func(e *Env, args []string) int
}

// FlagSet returns a flag set for a subcommand with -d/--archive-dir and
// -h/--help already defined; usage is the text printed above the flags.
func FlagSet(e *Env, usage string) (*pflag.FlagSet, *string) {
	fs := pflag.NewFlagSet(e.Program, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	dir := fs.StringP("archive-dir", "d", envOr("MAILARCHIVE_DIR", DefaultArchiveDir), "the archive root `ROOT` (default from $MAILARCHIVE_DIR)")
	fs.BoolP("help", "h", false, "show this help and exit")
	fs.Usage = func() { fmt.Fprint(e.Stdout, usage+"\nFlags:\n"+fs.FlagUsages()) }
	return fs, dir
}

// Parse parses args; it returns done=true with the exit status when the
// subcommand must stop: --help (0) or a usage error (2, said on stderr).
func Parse(e *Env, fs *pflag.FlagSet, args []string) (done bool, status int) {
	err := fs.Parse(args)
	if errors.Is(err, pflag.ErrHelp) || (err == nil && fs.Lookup("help") != nil && fs.Lookup("help").Value.String() == "true") {
		fs.Usage()
		return true, ExitOK
	}
	if err != nil {
		fmt.Fprintf(e.Stderr, "%s: %v (try --help)\n", e.Program, err)
		return true, ExitError
	}
	return false, 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// CheckOwner refuses to run as root on an archive that belongs to another
// user: directories and files root created there (the filer's dated
// directories, the catalog) would be root's, and the archive owner's later
// runs and writers could not use them. tool names the command to run as
// that user instead.
func CheckOwner(tool string, dirs ...string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		fi, err := os.Stat(d)
		if err != nil {
			continue // the command reports it
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
			owner := strconv.FormatUint(uint64(st.Uid), 10)
			name := "uid " + owner
			if u, err := user.LookupId(owner); err == nil {
				owner, name = u.Username, u.Username
			}
			return fmt.Errorf("%s belongs to %s: run %s as that user (runuser -u %s -- %s ...), not as root", d, name, tool, owner, tool)
		}
	}
	return nil
}
