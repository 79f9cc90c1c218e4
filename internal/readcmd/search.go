package readcmd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/postfix-archive/mailarchive/audit"
	"github.com/postfix-archive/mailarchive/catalog"
	"github.com/postfix-archive/mailarchive/internal/cli"
)

const searchUsage = `Usage: mailarchive search [-d ROOT] [--json|--ids] [--limit N] [--sort newest|oldest|rank] QUERY...

Finds archived items. The query is the rest of the command line (after --
when it starts with a dash), in the style of notmuch:

  from:ADDR-OR-NAME   envelope sender and From:
  rcpt:ADDR           envelope recipients only (finds Bcc recipients; also bcc:)
  to:ADDR  cc:ADDR    To: / Cc: and the envelope recipients
  subject:WORD        body:WORD        attachment:NAME     has:attachment
  msgid:<ID> (id:)    queueid:QUEUEID  (any Postfix queue ID the item carries)
  source:proxy|milter|wrapper   outcome:accepted|rejected|tempfailed|unknown
  tag:TAG             size:>1M  size:<=10k  size:1k..2M
  date:2026-01-01..2026-03-31  date:2026-03  date:yesterday  date:7d..
  WORD  "a phrase"  prefix*   (words of every header and the decoded text)
  AND  OR  NOT  ( )   (adjacent terms are ANDed)   *  (everything)

Dates are the archive stamps (when the message was archived), in local time.
Items that hold the same message seen at several hook points (same
Message-ID and queue-ID chain) are marked as copies.

Output: a table (date, ID, sender, first recipients, subject, source);
--json: one JSON object a line; --ids: one ID a line.
Exit status: 0 found, 1 nothing found, 2 error (a query syntax error shows
where it is).
`

func runSearch(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, searchUsage)
	c := addCommon(fs, dir)
	asJSON := fs.Bool("json", false, "JSON Lines: one object per item")
	ids := fs.Bool("ids", false, "one bare ID a line")
	limit := fs.Int("limit", 0, "at most `N` items (0: all)")
	sort := fs.String("sort", "newest", "order: newest, oldest or rank (best match first)")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	if *asJSON && *ids {
		return e.Errorf("--json and --ids exclude each other")
	}
	so := catalog.Sort(*sort)
	if so != catalog.Newest && so != catalog.Oldest && so != catalog.Rank {
		return e.Errorf("--sort %q: want newest, oldest or rank", *sort)
	}
	q, st := queryArgs(e, fs.Args(), "finds")
	if q == nil {
		return st
	}
	r, cat, st := c.open(e)
	if cat == nil {
		return st
	}
	defer cat.Close()
	var err error
	width := terminal(e.Stdout)
	var tw *tabwriter.Writer
	out := bufio.NewWriterSize(e.Stdout, 64<<10)
	defer out.Flush()
	if !*asJSON && !*ids {
		tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "DATE\tID\tSENDER\tRECIPIENTS\tSUBJECT\tSOURCE")
	}
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	found := 0
	opt := catalog.SearchOptions{Sort: so, Limit: *limit, Copies: true}
	// What the search returned goes into the audit trail.
	var returned []string
	if *ids {
		err = cat.SearchIDs(e.Ctx, q, opt, func(id string) error {
			found++
			returned = append(returned, id)
			_, err := fmt.Fprintln(out, id)
			return err
		})
	} else {
		err = cat.Search(e.Ctx, q, opt, func(h catalog.Hit) error {
			found++
			returned = append(returned, h.ID)
			if *asJSON {
				if h.Rcpts == nil {
					h.Rcpts = []string{}
				}
				return enc.Encode(h)
			}
			_, err := fmt.Fprintln(tw, tableRow(h, width))
			return err
		})
	}
	if tw != nil {
		tw.Flush()
	}
	out.Flush()
	if err != nil {
		return e.Errorf("%v", err)
	}
	if err := audit.Record(r.Root(), audit.Search, strings.Join(fs.Args(), " "), returned); err != nil {
		return e.Errorf("cannot record the search in the audit trail: %v", err)
	}
	if found == 0 {
		if tw != nil {
			fmt.Fprintf(e.Stderr, "%s: nothing found\n", e.Program)
		}
		return cli.ExitFindings
	}
	return cli.ExitOK
}

func tableRow(h catalog.Hit, width int) string {
	sender := h.Sender
	if sender == "" {
		sender = "<>"
	}
	rcpts := strings.Join(h.Rcpts[:min(2, len(h.Rcpts))], ", ")
	if len(h.Rcpts) > 2 {
		rcpts += fmt.Sprintf(" +%d", len(h.Rcpts)-2)
	}
	subject := strings.Join(strings.Fields(h.Subject), " ")
	source := h.Source
	if source == "" {
		source = "?"
	}
	if len(h.Copies) > 0 {
		var cs []string
		for _, c := range h.Copies {
			cs = append(cs, c.Source)
		}
		source += " (copies: " + strings.Join(cs, ",") + ")"
	}
	if width > 0 {
		sender, rcpts, subject = clip(sender, 30), clip(rcpts, 40), clip(subject, max(20, width-150))
	}
	return strings.Join([]string{h.Date.Local().Format("2006-01-02 15:04"), h.ID, sender, rcpts, subject, source}, "\t")
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
