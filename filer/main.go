package filer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/internal/buildinfo"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/objstore"
	"github.com/postfix-archive/mailarchive/retention/policy"
)

// Exit statuses of the filer command.
const (
	ExitOK       = 0 // every complete, old enough item filed
	ExitProblems = 1 // some items left in place for a reason to look at, or the run failed
	ExitUsage    = 2 // bad arguments
	ExitLocked   = 3 // another filer holds the root's lock; nothing done
	// With --to s3://...:
	ExitRefused     = 4 // bad credentials or permissions, no such bucket, a bucket without Object Lock
	ExitUnavailable = 5 // the server is down or too slow; items kept locally, retry later
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

With --to s3://BUCKET/PREFIX the items go into an S3 bucket instead, as
PREFIX/YYYY/MM/DD/ID.eml then ID.json, each with its SHA-256, never
overwriting (If-None-Match: *), under Object Lock (COMPLIANCE, or --lock-mode
governance) retained until the date the retention policy (--policy) gives.
An item's local copy is removed only after HeadObject confirms checksum, lock
mode and retain-until, and ROOT/remote/ records its keys and version IDs
(--keep-local DURATION keeps local copies that long, for fast reads). A bucket
without Object Lock is refused unless --allow-unlocked. The root remembers
the destination in ROOT/.destination, so readers (mailarchive) need only
-d ROOT and the credentials. Credentials and region come from the
environment or ~/.aws/{config,credentials} as for the AWS CLI; the endpoint
of a self-hosted server from --endpoint, AWS_ENDPOINT_URL_S3 or
AWS_ENDPOINT_URL (path-style addressing for an IP address or localhost, or
with --path-style).

  AWS_ENDPOINT_URL=http://127.0.0.1:7070 filer --to s3://archive/mail ROOT

Run it as the archive's owner, e.g. every 10 minutes from /etc/cron.d:

  */10 * * * * mailarchive /usr/local/bin/filer -q /var/spool/mailarchive

Exit status:
  0  done (items skipped as recent, incomplete or foreign are not problems)
  1  problems: some items were left in place (conflicting copies, a .json
     whose .eml is nowhere, I/O errors) or the run failed; see stderr
  2  usage error, or run as root on an archive owned by another user
  3  another filer holds the lock on ROOT; nothing was done
  4  --to: the server refused us (credentials, permissions, no such bucket)
     or the bucket has no Object Lock; nothing was uploaded
  5  --to: the server is down or did not answer in time; the items not
     uploaded are kept locally and the next run retries

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
	var so S3Options
	var cfg objstore.Config
	var policyFile, lockMode string
	fs.StringVar(&so.URL, "to", "", "upload into the bucket `s3://BUCKET/PREFIX` instead of the local dated tree")
	fs.StringVar(&cfg.Endpoint, "endpoint", "", "`URL` of a self-hosted S3 server (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL)")
	fs.StringVar(&cfg.Region, "region", "", "the bucket's `REGION` (default from the environment or ~/.aws/config)")
	fs.BoolVar(&cfg.PathStyle, "path-style", false, "path-style addressing (automatic for an IP address or localhost)")
	fs.StringVar(&lockMode, "lock-mode", "compliance", "Object Lock `MODE`: compliance (nobody can shorten or delete) or governance")
	fs.BoolVar(&so.AllowUnlocked, "allow-unlocked", false, "upload into a bucket without Object Lock (no WORM protection)")
	fs.DurationVar(&so.KeepLocal, "keep-local", 0, "keep the local copy of uploaded items until they are `DURATION` old")
	fs.StringVar(&policyFile, "policy", policy.DefaultFile, "retention policy `FILE` that gives each object's retain-until (missing default: 7 years)")
	fs.DurationVar(&so.MinRetain, "min-retain", 24*time.Hour, "retain every object at least `DURATION` from now (for items already past their period)")
	fs.IntVar(&so.Concurrency, "concurrency", 8, "uploads at once")
	fs.DurationVar(&cfg.Timeout, "timeout", 60*time.Second, "give up on a request after `DURATION`")
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
	if so.URL == "" {
		for _, name := range []string{"endpoint", "region", "path-style", "lock-mode", "allow-unlocked", "keep-local", "policy", "min-retain", "concurrency", "timeout"} {
			if fs.Changed(name) {
				fmt.Fprintf(stderr, "filer: --%s needs --to\n", name)
				return ExitUsage
			}
		}
	} else {
		if opt.Dest != "" || opt.LocalTime {
			fmt.Fprintln(stderr, "filer: --to and --dest/--local-time exclude each other (the bucket's keys are dated in UTC)")
			return ExitUsage
		}
		so.LockMode = strings.ToUpper(lockMode)
		if so.LockMode != "COMPLIANCE" && so.LockMode != "GOVERNANCE" {
			fmt.Fprintf(stderr, "filer: --lock-mode %q: want compliance or governance\n", lockMode)
			return ExitUsage
		}
		if so.KeepLocal < 0 || so.MinRetain < 0 || so.Concurrency < 1 || so.Concurrency > 256 || cfg.Timeout <= 0 {
			fmt.Fprintln(stderr, "filer: --keep-local and --min-retain must not be negative, --timeout must be positive, --concurrency 1..256")
			return ExitUsage
		}
		if _, _, err := objstore.ParseURL(so.URL); err != nil {
			fmt.Fprintf(stderr, "filer: --to: %v\n", err)
			return ExitUsage
		}
		p, err := policy.Load(policyFile)
		if err != nil {
			fmt.Fprintf(stderr, "filer: %v\n", err)
			return ExitUsage
		}
		so.Policy, so.DryRun = p, opt.DryRun
	}
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
	if so.URL != "" {
		if code := openS3(&opt, so, cfg, stderr); code != ExitOK {
			return code
		}
	}
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
	for _, p := range rep.Problems {
		switch {
		case errors.Is(p, ErrRefused):
			return ExitRefused
		case errors.Is(p, ErrUnavailable):
			return ExitUnavailable
		}
	}
	if len(rep.Problems) > 0 {
		return ExitProblems
	}
	return ExitOK
}

// openS3 makes opt.To the bucket; a bad configuration, a refusing or
// unreachable server is said here, with its exit status.
func openS3(opt *Options, so S3Options, cfg objstore.Config, stderr io.Writer) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	opt.Ctx = ctx
	_ = cancel // lives as long as the process
	cfg.URL = so.URL
	st, err := objstore.Open(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "filer: %v\n", err)
		return ExitUsage
	}
	so.Store = st
	d, err := NewS3(ctx, opt.Root, so)
	switch {
	case errors.Is(err, ErrRefused):
		fmt.Fprintf(stderr, "%v; nothing uploaded\n", err)
		return ExitRefused
	case errors.Is(err, ErrUnavailable):
		fmt.Fprintf(stderr, "%v; nothing uploaded, every item kept locally, the next run retries\n", err)
		return ExitUnavailable
	case err != nil:
		fmt.Fprintln(stderr, err)
		return ExitProblems
	}
	opt.To = d
	return ExitOK
}
