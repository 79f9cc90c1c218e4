// Command milter_archiver is a milter that archives every message Postfix
// shows it, durably, before Postfix may accept the message.
package main

import (
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/buildinfo"
	"github.com/postfix-archive/mailarchive/internal/daemon"
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

On a unix socket in Postfix's (chrooted) queue directory, with main.cf
saying smtpd_milters = unix:/milter/archive.sock:

    milter_archiver -l unix:/var/spool/postfix/milter/archive.sock --socket-group postfix

Flags:
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := pflag.NewFlagSet("milter_archiver", pflag.ContinueOnError)
	listen := fs.StringP("listen", "l", "inet:127.0.0.1:10030", "listen on `ADDR`: inet:HOST:PORT or unix:/path/to/socket, as in smtpd_milters")
	socketMode := fs.String("socket-mode", "0660", "octal `MODE` of a unix socket")
	socketGroup := fs.String("socket-group", "", "give a unix socket (and the directory it creates for it) `GROUP`, one that user postfix is in (default: the archiver's own group)")
	dir := fs.StringP("archive-dir", "d", "/var/spool/mailarchive", "archive root `DIR`")
	onErr := fs.String("on-archive-error", "tempfail", "when a message cannot be archived: tempfail (client retries) or pass (deliver unarchived, log an error; accept is the same)")
	addHeader := fs.Bool("add-header", false, "add \"X-Archive-ID: ID\" to each archived message")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long to wait for messages in flight")
	recoverEvery := fs.Duration("recover-interval", 5*time.Minute, "how often to recover items left under tmp/ by a crashed writer (0: only at start-up)")
	df := daemon.AddFlags(fs)
	debug := fs.Bool("debug", false, "log at debug level (same as --log-level=debug)")
	if code, done := df.Parse(args, usageText); done {
		return code
	}
	policy, err := archive.ParsePolicy(*onErr)
	if err != nil {
		return df.Usagef("%v", err)
	}
	mode, err := strconv.ParseUint(*socketMode, 8, 32)
	if err != nil || mode > 0o777 {
		return df.Usagef("--socket-mode %q: want an octal mode such as 0660", *socketMode)
	}
	sock := milter.Socket{Mode: os.FileMode(mode), GID: -1}
	if *socketGroup != "" {
		if sock.GID, err = milter.LookupGroup(*socketGroup); err != nil {
			return df.Usagef("--socket-group: %v", err)
		}
	}
	if *debug {
		df.Log.Level = "debug"
	}

	d, err := df.Start()
	if err != nil {
		return 1
	}
	defer d.Close()
	log := d.Log
	// go-milter logs protocol errors with the log package: route them here.
	slog.SetDefault(log)

	store, err := archive.Open(*dir, archive.Options{Logger: log})
	if err != nil {
		log.Error("cannot open the archive", "err", err)
		return 1
	}
	store.Recover()

	ln, err := milter.Listen(*listen, sock)
	if err != nil {
		log.Error("cannot listen", "err", err)
		return 1
	}
	// Healthy while a message could be archived now.
	met, err := d.ServeMetrics(df, "milter", store.Probe)
	if err != nil {
		return 1
	}
	srv := milter.NewServer(milter.Config{
		Store:          store,
		Logger:         log,
		OnArchiveError: policy,
		AddHeader:      *addHeader,
		Metrics:        met,
	})
	go store.RecoverEvery(d.Context(), *recoverEvery)
	log.Info("milter_archiver started", "version", buildinfo.String("milter_archiver"),
		"listen", *listen, "archive_dir", *dir, "on_archive_error", policy.String(), "add_header", *addHeader)
	return d.Run(func() error { return srv.Serve(ln) }, srv.Shutdown, *shutdownTimeout)
}
