package readcmd

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postfix-archive/mailarchive/internal/cli"
)

const statsUsage = `Usage: mailarchive stats [-d ROOT] [--json] [--days N]

Items by day (UTC, from the IDs) and hook point, their bytes, how many
items the catalog does not hold yet (or still holds after they left the
archive), and when the catalog was last brought up to date.
Exit status: 0, or 1 when the catalog is behind the archive or the archive
has damaged items; 2 on errors.
`

func runStats(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, statsUsage)
	c := addCommon(fs, dir)
	asJSON := fs.Bool("json", false, "one JSON object")
	days := fs.Int("days", 0, "show only the last `N` days (0: all)")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	r, cat, status := c.open(e)
	if cat == nil {
		return status
	}
	defer cat.Close()
	st, err := cat.Stats(e.Ctx, r)
	if err != nil {
		return e.Errorf("%v", err)
	}
	if *days > 0 && len(st.Days) > *days {
		st.Days = st.Days[len(st.Days)-*days:]
	}
	status = cli.ExitOK
	if st.NotIndexed > 0 || st.Gone > 0 || st.Damaged > 0 {
		status = cli.ExitFindings
	}
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
		return status
	}
	sources := map[string]bool{}
	for _, d := range st.Days {
		for s := range d.BySource {
			sources[s] = true
		}
	}
	var cols []string
	for s := range sources {
		cols = append(cols, s)
	}
	sort.Strings(cols)
	tw := tabwriter.NewWriter(e.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"DAY", "ITEMS", "BYTES"}
	for _, s := range cols {
		if s == "" {
			s = "unknown"
		}
		head = append(head, strings.ToUpper(s))
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, d := range st.Days {
		row := []string{d.Day, fmt.Sprint(d.Items), humanBytes(d.Bytes)}
		for _, s := range cols {
			row = append(row, fmt.Sprint(d.BySource[s]))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	last := "never"
	if st.LastUpdate != nil {
		last = st.LastUpdate.Local().Format(time.DateTime+" MST") + fmt.Sprintf(" (%s ago)", time.Since(*st.LastUpdate).Round(time.Second))
	}
	fmt.Fprintf(e.Stdout, "\nindexed: %d items, %s; not parsable: %d\n", st.Items, humanBytes(st.Bytes), st.Unparsed)
	fmt.Fprintf(e.Stdout, "archive: %d items; not indexed yet: %d; indexed but gone: %d; damaged: %d\n", st.InArchive, st.NotIndexed, st.Gone, st.Damaged)
	fmt.Fprintf(e.Stdout, "catalog: %s, last brought up to date %s\n", cat.Path(), last)
	return status
}
