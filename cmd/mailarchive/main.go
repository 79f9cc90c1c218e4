// Command mailarchive is everything after capture: find, show, export,
// prove and keep the archived messages. Each subcommand's logic lives in
// its own package; this file only dispatches.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/postfix-archive/mailarchive/internal/buildinfo"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/internal/readcmd"
	"github.com/postfix-archive/mailarchive/reconcile"
	"github.com/postfix-archive/mailarchive/retention"
	"github.com/postfix-archive/mailarchive/sealog/sealcmd"
)

// commands, in the order --help lists them. Each helper package adds its
// subcommands here, one line each.
var commands = []cli.Command{
	readcmd.Index,
	readcmd.Search,
	readcmd.Show,
	sealcmd.Export, // readcmd.Export with --with-proofs
	readcmd.Stats,
	sealcmd.Keygen,
	sealcmd.Seal,
	sealcmd.Verify,
	sealcmd.Proof,
	sealcmd.VerifyProof,
	sealcmd.Audit,
	reconcile.Command,
	retention.Command,
	retention.HoldCommand,
}

const usageHead = `Usage: mailarchive COMMAND [flags] [ARGS]

The read side of the Postfix mail archive: search, show, export, prove and
keep what proxy_archiver, milter_archiver and archiver captured. Every command
takes -d/--archive-dir ROOT (default /var/spool/mailarchive) and --help.
Exit status: 0 success, 1 nothing found or problems found, 2 error.

Commands:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := stdout
		if len(args) == 0 {
			w = stderr
		}
		fmt.Fprint(w, usageHead)
		for _, c := range commands {
			fmt.Fprintf(w, "  %-13s %s\n", c.Name, c.Summary)
		}
		fmt.Fprint(w, "\nRun 'mailarchive COMMAND --help' for a command's flags.\n")
		if len(args) == 0 {
			return cli.ExitError
		}
		return cli.ExitOK
	}
	if args[0] == "--version" || args[0] == "version" {
		fmt.Fprintln(stdout, buildinfo.String("mailarchive"))
		return cli.ExitOK
	}
	for _, c := range commands {
		if c.Name != args[0] {
			continue
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return c.Run(&cli.Env{Ctx: ctx, Stdin: stdin, Stdout: stdout, Stderr: stderr,
			Program: "mailarchive " + c.Name}, args[1:])
	}
	fmt.Fprintf(stderr, "mailarchive: unknown command %q (try --help)\n", args[0])
	return cli.ExitError
}
