package filer

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/internal/buildinfo"
	"github.com/postfix-archive/mailarchive/internal/cli"
)

// Exit statuses of the filer command.
const (
	ExitOK       = 0 // every complete, old enough item filed
	ExitProblems = 1 // some items left in place for a reason to look at, or the run failed
	ExitUsage    = 2 // bad arguments
	ExitLocked   = 3 // another filer holds the root's lock; nothing done
)

const usageText = `Usage: filer [flags] ROOT

Moves every complete item (ID.eml and ID.json) in the archive root ROOT into
ROOT/YYYY/MM/DD/ (or DEST/YYYY/MM/DD/ with --dest), dated from the ID's stamp
in UTC (--local-time: local time). Messages are never read. The .eml moves
first and the .json last; an item already at the destination is never
overwritten: identical copies are deduplicated, different ones are reported
and left in place. Incomplete items, tmp/ and foreign files are left alone.
Safe with writers running and with other filers (lock ROOT/.filer.lock);
a crash loses nothing, the next run finishes the job. Before filing, items
that crashed writers left in tmp/ are recovered (--recover=false: don't).

Run it as the archive's owner, e.g. every 10 minutes from /etc/cron.d:

  */10 * * * * mailarchive /usr/local/bin/filer -q /var/spool/mailarchive

Exit status:
  0  done (items skipped as recent, incomplete or foreign are not problems)
  1  problems: some items were left in place (conflicting copies, a .json
     whose .eml is nowhere, I/O errors) or the run failed; see stderr
  2  usage error, or run as root on an archive owned by another user
  3  another filer holds the lock on ROOT; nothing was done

Flags:
`

// Main runs the filer command with args (without the program name).
func Main(args []string, stdout, stderr io.Writer) int {
	var opt Options
	fs := pflag.NewFlagSet("filer", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.StringVar(&opt.Dest, "dest", "", "file into the dated tree under `DIR` instead of ROOT (may be another filesystem)")
	fs.DurationVar(&opt.OlderThan, "older-than", 0, "leave items younger than `DURATION` (by their ID's stamp) in place, e.g. 1h")
	fs.BoolVar(&opt.LocalTime, "local-time", false, "date the directories in local time instead of UTC")
	fs.BoolVarP(&opt.DryRun, "dry-run", "n", false, "change nothing; report what would be done")
	fs.BoolVar(&opt.Recover, "recover", true, "first turn crashed writers' leftovers in tmp/ into items")
	verbose := fs.BoolP("verbose", "v", false, "one line per item filed and per name skipped")
	quiet := fs.BoolP("quiet", "q", false, "print nothing unless there are problems (for cron)")
	version := fs.Bool("version", false, "print the version and exit")
	help := fs.BoolP("help", "h", false, "show this help and exit")
	if err := fs.Parse(args); err != nil && !errors.Is(err, pflag.ErrHelp) {
		fmt.Fprintf(stderr, "filer: %v (try --help)\n", err)
		return ExitUsage
	} else if err != nil {
		*help = true
	}
	switch {
	case *help:
		fmt.Fprint(stdout, usageText+fs.FlagUsages())
		return ExitOK
	case *version:
		fmt.Fprintln(stdout, buildinfo.String("filer"))
		return ExitOK
	}
	if fs.NArg() != 1 || fs.Arg(0) == "" {
		fmt.Fprintf(stderr, "filer: want one archive root, got %d arguments (try --help)\n", fs.NArg())
		return ExitUsage
	}
	if opt.OlderThan < 0 {
		fmt.Fprintln(stderr, "filer: --older-than must not be negative")
		return ExitUsage
	}
	opt.Root = fs.Arg(0)
	if !opt.DryRun {
		if err := cli.CheckOwner("filer", opt.Root, opt.Dest); err != nil {
			fmt.Fprintf(stderr, "filer: %v\n", err)
			return ExitUsage
		}
	}
	if *verbose {
		opt.Verbose = stdout
	}
	opt.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	opt.Now = time.Now
	rep, err := Run(opt)
	if errors.Is(err, ErrLocked) {
		if !*quiet { // under cron, overlapping runs are normal
			fmt.Fprintf(stderr, "filer: %s: %v; nothing done\n", opt.Root, err)
		}
		return ExitLocked
	}
	for _, p := range rep.Problems {
		fmt.Fprintf(stderr, "filer: problem: %v\n", p)
	}
	if err != nil {
		fmt.Fprintf(stderr, "filer: %v\n", err)
		return ExitProblems
	}
	if !*quiet || len(rep.Problems) > 0 {
		fmt.Fprintf(stdout, "filer: %s: %s\n", opt.Root, rep.Summary(opt.DryRun))
	}
	if len(rep.Problems) > 0 {
		return ExitProblems
	}
	return ExitOK
}
