// Command smtpsink accepts SMTP mail and records each message as
// DIR/NNNNNN.eml (the bytes as received) and DIR/NNNNNN.json (the envelope).
// It is the final destination in end-to-end tests and in "make demo".
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/postfix-archive/mailarchive/internal/buildinfo"
	"github.com/postfix-archive/mailarchive/internal/logging"
	"github.com/postfix-archive/mailarchive/internal/smtpsink"
)

const usage = `Usage: smtpsink -d DIR [-l ADDR] [--reject-rcpt SUBSTRING]...

Accept every SMTP message and store it in DIR as NNNNNN.eml (the DATA bytes,
dot-unstuffed, line ends as received) and NNNNNN.json (HELO, XFORWARD
attributes, MAIL FROM and RCPT TO with their parameters, client address).
Runs until SIGTERM or SIGINT.

Example:
  smtpsink -l 127.0.0.1:2526 -d /tmp/sink --reject-rcpt nobody@

Options:
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := pflag.NewFlagSet("smtpsink", pflag.ContinueOnError)
	fs.SortFlags = false
	listen := fs.StringP("listen", "l", "127.0.0.1:2526", "address to listen on")
	dir := fs.StringP("dir", "d", "", "directory to store messages in (required)")
	reject := fs.StringArray("reject-rcpt", nil, "refuse recipients containing `SUBSTRING` with 550 5.1.1 (repeatable)")
	hostname := fs.String("hostname", smtpsink.DefaultHostname, "name in the greeting and EHLO reply")
	verbose := fs.BoolP("verbose", "v", false, "log every connection (same as --log-level=debug)")
	logOpts := logging.AddFlags(fs)
	version := fs.Bool("version", false, "print the version and exit")
	printUsage := func(w io.Writer) {
		fmt.Fprint(w, usage)
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	fs.Usage = func() {} // printed below, to stdout for --help
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printUsage(os.Stdout)
			return 0
		}
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
		printUsage(os.Stderr)
		return 2
	}
	if *version {
		fmt.Println(buildinfo.String("smtpsink"))
		return 0
	}
	if *dir == "" || fs.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "smtpsink: -d DIR is required and there are no arguments")
		printUsage(os.Stderr)
		return 2
	}

	if *verbose {
		logOpts.Level = "debug"
	}
	log, err := logOpts.Logger(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "smtpsink:", err)
		return 2
	}

	srv := &smtpsink.Server{Dir: *dir, Hostname: *hostname, Logger: log}
	if len(*reject) > 0 {
		subs := *reject
		srv.RejectRcpt = func(addr string) bool {
			for _, s := range subs {
				if strings.Contains(addr, s) {
					return true
				}
			}
			return false
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := srv.Listen(*listen); err != nil {
		log.Error("start", "err", err)
		return 1
	}
	log.Info("listening", "addr", srv.Addr(), "dir", *dir)
	<-ctx.Done()
	if err := srv.Close(); err != nil {
		log.Error("close", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}
