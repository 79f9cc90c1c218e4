package retention

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/internal/cli"
)

// Command is "mailarchive retention plan|apply".
var Command = cli.Command{Name: "retention", Summary: "list (plan) or dispose of (apply) items past their retention period", Run: runRetention}

// HoldCommand is "mailarchive hold add|rm|list".
var HoldCommand = cli.Command{Name: "hold", Summary: "place, release and list legal holds (--matter NAME --query Q)", Run: runHold}

const retentionUsage = `Usage: mailarchive retention plan  [-d ROOT] [--policy FILE] [--all] [--json]
       mailarchive retention apply [-d ROOT] [--policy FILE] [-v] [--json]

plan lists the items whose retention period has ended, what will happen to
each and why (the policy rule, the legal holds, the bucket's retain-until);
--all lists every item. apply disposes of the items plan marks "dispose":
each disposal is recorded first (ROOT/audit/retention.jsonl), then the
item's object versions are deleted from the bucket (the server refuses while
they are locked or held) and its local files removed. Held items are never
disposed of, whatever the bucket would allow.

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
	policy := fs.String("policy", DefaultPolicyFile, "retention policy `FILE`")
	all := fs.Bool("all", false, "plan: list every item, not only those past their period")
	asJSON := fs.Bool("json", false, "one JSON object per line")
	verbose := fs.BoolP("verbose", "v", false, "apply: one line per item disposed of")
	if done, code := cli.Parse(e, fs, args); done {
		return code
	}
	if fs.NArg() != 1 || (fs.Arg(0) != "plan" && fs.Arg(0) != "apply") {
		return e.Errorf("want plan or apply (try --help)")
	}
	p, err := Load(*policy)
	if err != nil {
		return e.Errorf("%v", err)
	}
	o := Options{Root: *dir, Policy: p}
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
		err := Plan(o, func(en Entry) error {
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
		fmt.Fprintf(e.Stdout, "apply: disposed %d; kept %d, held %d, waiting for the bucket %d; problems %d\n",
			rep.Disposed, rep.Kept, rep.Held, rep.Waiting, len(rep.Problems))
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
Holds live in ROOT/holds/NAME.json; adding and removing is recorded in
ROOT/audit/retention.jsonl.

Query terms (all must match): id:ID, from:ADDR, from:@DOMAIN, to:ADDR,
to:@DOMAIN, tag:TAG, source:proxy|milter|wrapper.
`

func runHold(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, holdUsage)
	matter := fs.String("matter", "", "the hold's `NAME` (A-Z a-z 0-9 . _ -)")
	query := fs.String("query", "", "add: the items to hold, `Q`")
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	if done, code := cli.Parse(e, fs, args); done {
		return code
	}
	if fs.NArg() != 1 {
		return e.Errorf("want add, rm or list (try --help)")
	}
	o := Options{Root: *dir}
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
		hs, err := Holds(*dir, CompileQuery)
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
