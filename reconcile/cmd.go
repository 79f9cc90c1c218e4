package reconcile

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/internal/cli"
)

// Command is `mailarchive reconcile`.
var Command = cli.Command{Name: "reconcile", Summary: "list what Postfix accepted that the archive lacks", Run: run}

func run(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, `Usage: mailarchive reconcile -d ROOT [--maillog FILE] [--since WHEN] [--json]

The completeness check: reads Postfix's mail log (syslog or maillog_file
format; - for standard input), groups the items of each message across hook
points (the milter's queue_id, the proxy's XFORWARD IDENT, the queue ID in
the wrapper's Received: line) and lists every message Postfix accepted with
no item at a hook point in use, and every item Postfix has no record of.
A message still in Postfix's queue at the end of the log is not missing yet.
Exit status: 0 complete, 1 something is missing or unmatched, 2 error.`)
	maillog := fs.String("maillog", "/var/log/mail.log", "Postfix's mail log `FILE`")
	since := fs.String("since", "", "only log lines and items from `WHEN` on (YYYY-MM-DD, RFC 3339, or a duration like 24h)")
	hooks := fs.String("hooks", "", "hook points in use, comma-separated (proxy,milter,wrapper; default: those with items in the log's time span)")
	wrapper := fs.String("wrapper-match", "archiver", "text of the delivery lines that ran the delivery wrapper")
	filed := fs.String("filed", "", "the dated tree's root `DIR`, if not ROOT")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	now := time.Now()
	var from time.Time
	if *since != "" {
		var err error
		if d, derr := time.ParseDuration(*since); derr == nil {
			from = now.Add(-d)
		} else if from, err = time.ParseInLocation("2006-01-02", *since, time.Local); err != nil {
			if from, err = time.Parse(time.RFC3339, *since); err != nil {
				return e.Errorf("--since %q: want YYYY-MM-DD, RFC 3339 or a duration", *since)
			}
		}
	}
	var in = e.Stdin
	if *maillog != "-" {
		f, err := os.Open(*maillog)
		if err != nil {
			return e.Errorf("%v", err)
		}
		defer f.Close()
		in = f
	}
	var hl []string
	if *hooks != "" {
		for _, h := range strings.Split(*hooks, ",") {
			switch h {
			case "proxy", "milter", "wrapper":
				hl = append(hl, h)
			default:
				return e.Errorf("--hooks: unknown hook point %q (proxy, milter, wrapper)", h)
			}
		}
	}
	rep, err := Run(e.Ctx, Options{Root: *dir, Filed: *filed, Log: in, Now: now, Since: from, Hooks: hl, WrapperMatch: *wrapper})
	if err != nil {
		return e.Errorf("%v", err)
	}
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		enc.Encode(rep)
	} else {
		for _, m := range rep.Missing {
			fmt.Fprintf(e.Stdout, "missing %s: queue %s from <%s> %s at %s (items: %s)\n", strings.Join(m.Missing, ","),
				strings.Join(m.QueueIDs, ">"), m.From, m.MessageID, m.Time.Format(time.RFC3339), strings.Join(m.Items, " "))
		}
		for _, u := range rep.Unmatched {
			fmt.Fprintf(e.Stdout, "unmatched %s item %s (queue_id %q ident %q): no Postfix record\n", u.Source, u.ID, u.QueueID, u.Ident)
		}
		fmt.Fprintf(e.Stdout, "%d messages in %d log lines (%s .. %s), hooks %s: %d complete, %d missing, %d items unmatched\n",
			rep.Messages, rep.LogLines, rep.LogFrom.Format(time.RFC3339), rep.LogTo.Format(time.RFC3339),
			strings.Join(rep.Hooks, ","), rep.Complete, len(rep.Missing), len(rep.Unmatched))
	}
	if rep.Incomplete {
		return cli.ExitFindings
	}
	return cli.ExitOK
}
