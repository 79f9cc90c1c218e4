// Command proxy_archiver is an SMTP pass-through proxy for Postfix's
// content_filter chain that archives every message it relays.
package main

import (
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/buildinfo"
	"github.com/postfix-archive/mailarchive/internal/daemon"
	"github.com/postfix-archive/mailarchive/internal/metrics"
	"github.com/postfix-archive/mailarchive/proxy"
)

const usage = `Usage: proxy_archiver [flags]

An SMTP pass-through proxy for Postfix's content_filter chain. It relays
every byte between Postfix's smtp client and the reinjection smtpd, and
archives each message (DATA content and envelope) under --archive-dir.
The end of each message reaches the server only once its archive copy is
on disk; if it cannot be written the client gets 451 4.3.0 and retries.

Postfix (main.cf):   content_filter = archive:[127.0.0.1]:10027
Postfix (master.cf): archive unix - - n - 16 smtp
                         -o smtp_send_xforward_command=yes
                     127.0.0.1:10026 inet n - n - 16 smtpd
                         -o content_filter= ... (see the README)

  proxy_archiver -l 127.0.0.1:10027 -s 127.0.0.1:10026 -d /var/spool/mailarchive

Flags:
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := pflag.NewFlagSet("proxy_archiver", pflag.ContinueOnError)
	fs.SortFlags = false
	listen := fs.StringP("listen", "l", "127.0.0.1:10027", "address to listen on for Postfix's smtp client")
	server := fs.StringP("server", "s", "127.0.0.1:10026", "downstream SMTP server (Postfix's reinjection smtpd)")
	dir := fs.StringP("archive-dir", "d", "/var/spool/mailarchive", "archive root directory")
	onErr := fs.String("on-archive-error", "tempfail", "when a message cannot be archived: tempfail (client retries) or pass (relay it, log loudly)")
	keep := fs.Bool("keep-rejected", false, "also archive messages the server refused, with their outcome")
	maxConns := fs.Int("max-conns", 100, "maximum concurrent connections; more get 421 (0 = no limit)")
	timeout := fs.Duration("timeout", proxy.DefaultTimeout, "timeout for each read and each write on either side (like smtpd_timeout)")
	recoverEvery := fs.Duration("recover-interval", 5*time.Minute, "how often to turn what a crash (or a failed commit) left under tmp/ into recovered items (0: at start-up only)")
	shutdown := fs.Duration("shutdown-timeout", 60*time.Second, "on SIGTERM, how long transactions in flight may take to finish")
	df := daemon.AddFlags(fs)
	if code, done := df.Parse(args, usage); done {
		return code
	}
	policy, err := archive.ParsePolicy(*onErr)
	if err != nil {
		return df.Usagef("--on-archive-error: %v", err)
	}

	d, err := df.Start()
	if err != nil {
		return 1
	}
	defer d.Close()
	log := d.Log

	store, err := archive.Open(*dir, archive.Options{Logger: log})
	if err != nil {
		log.Error("cannot open the archive", "err", err)
		return 1
	}
	store.Recover()
	// Healthy while a message could be archived now, the reinjection
	// smtpd greets (it logs a clean connect/QUIT per check) and no
	// content-filter loop was seen (the server is made below).
	var srvp atomic.Pointer[proxy.Server]
	met, err := d.ServeMetrics(df, "proxy", metrics.All(
		store.Probe,
		metrics.SMTPReady(*server, 5*time.Second),
		func() error {
			if s := srvp.Load(); s != nil {
				return s.Healthy()
			}
			return nil
		}))
	if err != nil {
		return 1
	}
	cfg := proxy.Config{
		Server:         *server,
		Store:          store,
		OnArchiveError: policy,
		KeepRejected:   *keep,
		MaxConns:       *maxConns,
		Timeout:        *timeout,
		Logger:         log,
	}
	cfg.Metrics = met
	srv, err := proxy.New(cfg)
	if err != nil {
		log.Error("bad configuration", "err", err)
		return 2
	}
	srvp.Store(srv)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("cannot listen", "err", err)
		return 1
	}
	log.Info("proxy_archiver started", "version", buildinfo.String("proxy_archiver"), "listen", ln.Addr().String(),
		"server", *server, "archive_dir", *dir, "on_archive_error", *onErr)
	go store.RecoverEvery(d.Context(), *recoverEvery)
	return d.Run(func() error { return srv.Serve(ln) }, srv.Shutdown, *shutdown)
}
