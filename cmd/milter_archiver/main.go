// Command milter_archiver is a milter that archives every message Postfix
// shows it, durably, before Postfix may accept the message.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/buildinfo"
	"github.com/postfix-archive/mailarchive/internal/logging"
	"github.com/postfix-archive/mailarchive/internal/metrics"
	"github.com/postfix-archive/mailarchive/milter"
)

const usageText = `Usage: milter_archiver [flags]

A milter that archives every message Postfix receives, before Postfix
accepts it. If a message cannot be archived, Postfix is told to try again
later (451 4.3.0), so nothing enters the queue unarchived.

Postfix main.cf (see postfix-examples/milter/main.cf):

    smtpd_milters = inet:127.0.0.1:10030
    non_smtpd_milters = $smtpd_milters
    milter_default_action = tempfail
    milter_protocol = 6

Flags:
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := pflag.NewFlagSet("milter_archiver", pflag.ContinueOnError)
	listen := fs.StringP("listen", "l", "inet:127.0.0.1:10030", "listen on `ADDR`: inet:HOST:PORT or unix:/path/to/socket, as in smtpd_milters")
	socketMode := fs.String("socket-mode", "0660", "octal `MODE` of a unix socket")
	dir := fs.StringP("archive-dir", "d", "/var/spool/mailarchive", "archive root `DIR`")
	onErr := fs.String("on-archive-error", "tempfail", "when a message cannot be archived: tempfail (client retries) or accept (deliver unarchived, log an error)")
	addHeader := fs.Bool("add-header", false, "add \"X-Archive-ID: ID\" to each archived message")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long to wait for messages in flight")
	recoverEvery := fs.Duration("recover-interval", 5*time.Minute, "how often to recover items left under tmp/ by a crashed writer (0: only at start-up)")
	metricsListen := fs.String("metrics-listen", "", "serve Prometheus /metrics and /healthz on `ADDR` (host:port; default off)")
	logOpts := logging.AddFlags(fs)
	debug := fs.Bool("debug", false, "log at debug level (same as --log-level=debug)")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "milter_archiver: %v (see --help)\n", err)
		return 2
	}
	if *version {
		fmt.Println(buildinfo.String("milter_archiver"))
		return 0
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "milter_archiver: unexpected arguments: %q\n", fs.Args())
		return 2
	}
	policy, err := milter.ParsePolicy(*onErr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "milter_archiver:", err)
		return 2
	}
	mode, err := strconv.ParseUint(*socketMode, 8, 32)
	if err != nil || mode > 0o777 {
		fmt.Fprintf(os.Stderr, "milter_archiver: --socket-mode %q: want an octal mode such as 0660\n", *socketMode)
		return 2
	}

	if *debug {
		logOpts.Level = "debug"
	}
	log, err := logOpts.Logger(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "milter_archiver:", err)
		return 2
	}
	// go-milter logs protocol errors with the log package: route them here.
	slog.SetDefault(log)

	store, err := archive.Open(*dir, archive.Options{Logger: log})
	if err != nil {
		log.Error("cannot open the archive", "err", err)
		return 1
	}
	store.Recover()

	ln, err := milter.Listen(*listen, os.FileMode(mode))
	if err != nil {
		log.Error("cannot listen", "err", err)
		return 1
	}
	var met *metrics.Metrics
	if *metricsListen != "" {
		met = metrics.New("milter")
		// Healthy while a message could be archived now.
		hs, err := met.Serve(*metricsListen, store.Probe)
		if err != nil {
			log.Error("cannot serve metrics", "err", err)
			return 1
		}
		defer hs.Close()
		log.Info("serving /metrics and /healthz", "addr", hs.Addr)
	}
	srv := milter.NewServer(milter.Config{
		Store:          store,
		Logger:         log,
		OnArchiveError: policy,
		AddHeader:      *addHeader,
		Metrics:        met,
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go store.RecoverEvery(ctx, *recoverEvery)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("milter_archiver started", "version", buildinfo.String("milter_archiver"),
		"listen", *listen, "archive_dir", *dir, "on_archive_error", policy.String(), "add_header", *addHeader)

	select {
	case err := <-served:
		log.Error("serving failed", "err", err)
		return 1
	case <-ctx.Done():
	}
	stop()
	log.Info("shutting down: finishing messages in flight", "timeout", *shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown timed out; messages still in flight were aborted (Postfix retries them)", "err", err)
	}
	<-served
	log.Info("stopped")
	return 0
}
