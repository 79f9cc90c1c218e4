// Package daemon is the start-up and shutdown wiring that the long-running
// archivers (proxy_archiver, milter_archiver) share, written once so that
// their mains stay thin and behave alike:
//
//   - the flags --log-format, --log-level, --log-target, --metrics-listen
//     and --version, parsed with one convention (exit 0 for --help and
//     --version, 2 for a usage error);
//   - the logger: to stderr (journald, or a file the operator redirects it
//     to), or to syslog with facility mail, so that the lines land next to
//     Postfix's in the mail log;
//   - a warning when run as root;
//   - SIGTERM and SIGINT: stop serving, give work in flight a bounded time,
//     exit 0;
//   - the Prometheus /metrics and /healthz listener.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/internal/buildinfo"
	"github.com/postfix-archive/mailarchive/internal/logging"
	"github.com/postfix-archive/mailarchive/internal/metrics"
)

// Log targets.
const (
	TargetStderr = "stderr"
	TargetSyslog = "syslog"
)

// Flags are the parsed shared flags of a daemon.
type Flags struct {
	Name          string // the program's name: syslog tag, messages
	Log           *logging.Options
	LogTarget     string
	MetricsListen string

	fs      *pflag.FlagSet
	version *bool

	// For tests: the syslog socket, the effective user ID and where
	// messages go before the logger exists.
	syslogPath string
	euid       int
	stderr     io.Writer
}

// AddFlags registers the shared flags on fs, whose name is the program's.
// Call it after the program's own flags, so that they come first in --help
// when fs does not sort.
func AddFlags(fs *pflag.FlagSet) *Flags {
	f := &Flags{Name: fs.Name(), fs: fs, syslogPath: DevLog, euid: os.Geteuid(), stderr: os.Stderr}
	f.Log = logging.AddFlags(fs)
	fs.StringVar(&f.LogTarget, "log-target", TargetStderr, "log `TARGET`: stderr, or syslog (via "+DevLog+", facility mail, tag "+f.Name+": next to Postfix's lines in the mail log)")
	fs.StringVar(&f.MetricsListen, "metrics-listen", "", "serve Prometheus /metrics and /healthz on `ADDR` (host:port; default off)")
	f.version = fs.Bool("version", false, "print the version and exit")
	return f
}

// Parse parses args with the usage text (printed before the flag list on
// --help). done says the program should exit with code: 0 after --help or
// --version, 2 after a usage error (already reported on stderr).
func (f *Flags) Parse(args []string, usage string) (code int, done bool) {
	f.fs.Usage = func() {
		fmt.Fprint(f.stderr, usage)
		f.fs.PrintDefaults()
	}
	f.fs.SetOutput(f.stderr)
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0, true
		}
		fmt.Fprintf(f.stderr, "%s: %v (see --help)\n", f.Name, err)
		return 2, true
	}
	if *f.version {
		fmt.Println(buildinfo.String(f.Name))
		return 0, true
	}
	if f.fs.NArg() > 0 {
		fmt.Fprintf(f.stderr, "%s: unexpected arguments: %q (see --help)\n", f.Name, f.fs.Args())
		return 2, true
	}
	if err := f.check(); err != nil {
		fmt.Fprintf(f.stderr, "%s: %v\n", f.Name, err)
		return 2, true
	}
	return 0, false
}

// Usagef reports a usage error found by the program after Parse, and
// returns the exit code for it.
func (f *Flags) Usagef(format string, args ...any) int {
	fmt.Fprintf(f.stderr, "%s: %s\n", f.Name, fmt.Sprintf(format, args...))
	return 2
}

func (f *Flags) check() error {
	if _, err := f.Log.Logger(io.Discard); err != nil {
		return err
	}
	switch f.LogTarget {
	case TargetStderr, TargetSyslog:
		return nil
	}
	return fmt.Errorf("--log-target %q: want stderr or syslog", f.LogTarget)
}

// Daemon is a started daemon: its logger, its signal context and what to
// close when it ends.
type Daemon struct {
	Name string
	Log  *slog.Logger

	ctx     context.Context
	stop    context.CancelFunc
	signals chan os.Signal
	closers []func() error
}

// Start builds the logger, warns when running as root, and starts catching
// SIGTERM and SIGINT (Context is done on the first). An error (no syslog
// socket) has already been reported on stderr; exit 1. Close the Daemon
// when done.
func (f *Flags) Start() (*Daemon, error) {
	d := &Daemon{Name: f.Name}
	switch f.LogTarget {
	case TargetSyslog:
		w, err := dialSyslog(f.syslogPath, f.Name, f.stderr)
		if err != nil {
			fmt.Fprintf(f.stderr, "%s: %v\n", f.Name, err)
			return nil, err
		}
		o := *f.Log
		o.NoTime = true // syslog stamps each line
		log, err := o.Logger(w)
		if err != nil {
			return nil, err
		}
		d.Log = slog.New(&syslogHandler{inner: log.Handler(), w: w})
		d.closers = append(d.closers, w.Close)
	default:
		log, err := f.Log.Logger(f.stderr)
		if err != nil {
			return nil, err
		}
		d.Log = log
	}
	warnIfRoot(d.Log, f.Name, f.euid)

	d.ctx, d.stop = context.WithCancel(context.Background())
	d.signals = make(chan os.Signal, 1)
	signal.Notify(d.signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case sig := <-d.signals:
			d.Log.Info("signal received: shutting down", "signal", sig.String())
			d.stop()
		case <-d.ctx.Done():
		}
	}()
	return d, nil
}

// warnIfRoot warns that the daemon runs as root: it needs no privilege,
// and what it creates in the archive as root (directories, items) the
// archive's owner can then not use.
func warnIfRoot(log *slog.Logger, name string, euid int) {
	if euid != 0 {
		return
	}
	log.Warn("running as root: run "+name+" as the archive's owner instead (User= in its systemd unit, or runuser -u mailarchive -- "+name+" ...); it needs no privilege, and files it creates as root are not the owner's", "uid", euid)
}

// Context is done once SIGTERM or SIGINT arrived (or Close was called).
func (d *Daemon) Context() context.Context { return d.ctx }

// ServeMetrics serves /metrics and /healthz (healthy while health returns
// nil) on the --metrics-listen address, for the given source ("proxy",
// "milter"), until Close. Without --metrics-listen it returns nil (no
// metrics: every method of a nil *metrics.Metrics does nothing).
func (d *Daemon) ServeMetrics(f *Flags, source string, health func() error) (*metrics.Metrics, error) {
	if f.MetricsListen == "" {
		return nil, nil
	}
	met := metrics.New(source)
	hs, err := met.Serve(f.MetricsListen, health)
	if err != nil {
		d.Log.Error("cannot serve metrics", "err", err)
		return nil, err
	}
	d.closers = append(d.closers, hs.Close)
	d.Log.Info("serving /metrics and /healthz", "addr", hs.Addr)
	return met, nil
}

// Run runs serve until it fails (exit 1) or a signal arrives. Then it
// calls shutdown with timeout to let work in flight finish, waits a little
// for serve to return, and returns 0. A second signal during the shutdown
// kills the process at once (the signals' default action).
func (d *Daemon) Run(serve func() error, shutdown func(context.Context) error, timeout time.Duration) int {
	served := make(chan error, 1)
	go func() { served <- serve() }()
	select {
	case err := <-served:
		d.Log.Error("serving failed", "err", err)
		return 1
	case <-d.ctx.Done():
	}
	signal.Stop(d.signals)
	signal.Reset(syscall.SIGTERM, syscall.SIGINT)
	d.Log.Info("shutting down: finishing work in flight", "timeout", timeout)
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := shutdown(sctx); err != nil {
		d.Log.Warn("shutdown timed out: work still in flight was aborted (Postfix retries it)", "err", err)
	}
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		d.Log.Warn("serving did not end after shutdown")
	}
	d.Log.Info("stopped")
	return 0
}

// Close stops catching signals and closes the metrics listener and the
// syslog connection.
func (d *Daemon) Close() {
	signal.Stop(d.signals)
	d.stop()
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}
