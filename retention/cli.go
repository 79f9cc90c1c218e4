package retention

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/retention/policy"
	"github.com/postfix-archive/mailarchive/sealog"
)

// Command is "mailarchive retention plan|apply".
var Command = cli.Command{Name: "retention", Summary: "list (plan) or dispose of (apply) items past their retention period", Run: runRetention}

// HoldCommand is "mailarchive hold add|rm|list".
var HoldCommand = cli.Command{Name: "hold", Summary: "place, release and list legal holds (--matter NAME --query Q)", Run: runHold}

const retentionUsage = `Usage: mailarchive retention plan  [-d ROOT] [--policy FILE] [--all] [--json]
       mailarchive retention apply [-d ROOT] [--policy FILE] [--signer FILE] [-v] [--json]

plan lists the items whose retention period has ended, what will happen to
each and why (the policy rule, the legal holds, the bucket's retain-until);
--all lists every item. apply disposes of the items plan marks "dispose":
each disposal is recorded first, as a tombstone leaf in the sealed log
(signed with --signer, the key mailarchive seal uses; verify then accepts
the item's absence and says what was disposed of, when and under which
rule) and in the audit trail; then the item's object versions are deleted
from the bucket (the server refuses while they are locked or held) and its
local files removed. Held items are never disposed of, whatever the bucket
would allow. Items in the bucket whose retain-until ends before a period the
policy has lengthened get their retention extended. Legal holds' queries
run on the search catalog, which plan and apply bring up to date first.

The policy file (default /etc/mailarchive/retention.conf; missing: keep
everything 7 years):

  default 7y
  keep 10y source=wrapper
  keep 1y tag=spam
  keep 3y sender-domain=example.com
  keep 30y recipient-domain=*.legal.example.com

Actions: keep (period not over), dispose, held (a legal hold covers it),
wait (the bucket retains it longer). Exit status: 0 done, 1 problems
(apply) , 2 error.
`

func runRetention(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, retentionUsage)
	policyFile := fs.String("policy", policy.DefaultFile, "retention policy `FILE`")
	all := fs.Bool("all", false, "plan: list every item, not only those past their period")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	verbose := fs.BoolP("verbose", "v", false, "apply: one line per item disposed of")
	signer := fs.String("signer", "/etc/mailarchive/signer.key", "apply: the log's signer key `FILE` (from mailarchive keygen)")
	index := fs.String("index", "", "the catalog `PATH` the holds' queries run on (default ROOT/index/catalog.sqlite)")
	if done, code := cli.Parse(e, fs, args); done {
		return code
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "plan" && fs.Arg(0) != "apply") {
		return e.Errorf("want plan or apply (try --help)")
	}
	p, err := policy.Load(*policyFile)
	if err != nil {
		return e.Errorf("%v", err)
	}
	o := Options{Root: *dir, Policy: p, Catalog: *index}
	print := func(en Entry) {
		if *asJSON {
			b, _ := json.Marshal(en)
			fmt.Fprintln(e.Stdout, string(b))
			return
		}
		extra := ""
		if len(en.HeldBy) > 0 {
			extra = " held by " + strings.Join(en.HeldBy, ",")
		}
		if en.BucketUntil != nil {
			extra += " bucket retains until " + en.BucketUntil.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(e.Stdout, "%-8s %s %s until %s (%s)%s\n", en.Action, en.ID, en.Where, en.Until.UTC().Format(time.RFC3339), en.Rule, extra)
	}
	if fs.Arg(0) == "plan" {
		var problems int
		counts := map[string]int{}
		err := Plan(e.Ctx, o, func(en Entry) error {
			counts[en.Action]++
			if *all || en.Action != Keep {
				print(en)
			}
			return nil
		}, func(err error) {
			problems++
			fmt.Fprintf(e.Stderr, "%s: problem: %v\n", e.Program, err)
		})
		if err != nil {
			return e.Errorf("%v", err)
		}
		if !*asJSON {
			fmt.Fprintf(e.Stdout, "plan: dispose %d, held %d, wait %d, keep %d; problems %d (policy %s)\n",
				counts[Dispose], counts[Held], counts[Wait], counts[Keep], problems, p.Name)
		}
		if problems > 0 {
			return cli.ExitFindings
		}
		return cli.ExitOK
	}
	var v func(Entry)
	if *verbose || *asJSON {
		v = print
	}
	if o.Signer, err = sealog.LoadSigner(*signer); err != nil {
		return e.Errorf("%v (apply records each disposal as a tombstone in the sealed log)", err)
	}
	rep, err := Apply(e.Ctx, o, v)
	for _, p := range rep.Problems {
		fmt.Fprintf(e.Stderr, "%s: problem: %v\n", e.Program, p)
	}
	if err != nil {
		if errors.Is(err, ErrBusy) {
			return e.Errorf("%v; nothing done, try again later", err)
		}
		return e.Errorf("%v", err)
	}
	if !*asJSON {
		fmt.Fprintf(e.Stdout, "apply: disposed %d; kept %d, held %d, waiting for the bucket %d; retention extended %d; problems %d\n",
			rep.Disposed, rep.Kept, rep.Held, rep.Waiting, rep.Extended, len(rep.Problems))
	}
	if len(rep.Problems) > 0 {
		return cli.ExitFindings
	}
	return cli.ExitOK
}

const holdUsage = `Usage: mailarchive hold add  [-d ROOT] --matter NAME --query Q
       mailarchive hold rm   [-d ROOT] --matter NAME
       mailarchive hold list [-d ROOT] [--json]

A legal hold keeps every item its query matches (now, and items that match
it later) from being disposed of, whatever its retention period, until the
hold is removed. In the bucket, add sets Object Lock legal hold on the
matching items' objects and rm clears it where no other hold needs it.
Holds live in ROOT/holds/NAME.json; placing and releasing one is recorded
in the audit trail with the IDs it concerns.

The query is mailarchive search's (from:, to:, rcpt:, subject:, date:A..B,
id:, words, AND/OR/NOT; mailarchive search --help). It runs on the search
catalog, brought up to date first; relative dates in it are taken as of
the hold's placing.
`

func runHold(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, holdUsage)
	index := fs.String("index", "", "the catalog `PATH` the query runs on (default ROOT/index/catalog.sqlite)")
	matter := fs.String("matter", "", "the hold's `NAME` (A-Z a-z 0-9 . _ -)")
	query := fs.String("query", "", "add: the items to hold, `Q`")
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	if done, code := cli.Parse(e, fs, args); done {
		return code
	}
	if fs.NArg() != 1 {
		return e.Errorf("want add, rm or list (try --help)")
	}
	o := Options{Root: *dir, Catalog: *index}
	switch fs.Arg(0) {
	case "add":
		if *matter == "" || *query == "" {
			return e.Errorf("add needs --matter and --query")
		}
		n, err := AddHold(e.Ctx, o, *matter, *query)
		if err != nil {
			return e.Errorf("%v", err)
		}
		fmt.Fprintf(e.Stdout, "hold %s: %d items held\n", *matter, n)
	case "rm":
		if *matter == "" {
			return e.Errorf("rm needs --matter")
		}
		n, err := RemoveHold(e.Ctx, o, *matter)
		if err != nil {
			return e.Errorf("%v", err)
		}
		fmt.Fprintf(e.Stdout, "hold %s: released (%d items)\n", *matter, n)
	case "list":
		hs, err := ReadHolds(*dir)
		if err != nil {
			return e.Errorf("%v", err)
		}
		for _, h := range hs {
			if *asJSON {
				b, _ := json.Marshal(h)
				fmt.Fprintln(e.Stdout, string(b))
				continue
			}
			fmt.Fprintf(e.Stdout, "%s\t%d items\tsince %s\t%s\n", h.Matter, len(h.IDs), h.Created.Format(time.RFC3339), h.Query)
		}
	default:
		return e.Errorf("want add, rm or list, not %q (try --help)", fs.Arg(0))
	}
	return cli.ExitOK
}
