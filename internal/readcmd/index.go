package readcmd

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/catalog"
	"github.com/postfix-archive/mailarchive/internal/cli"
)

const indexUsage = `Usage: mailarchive index [-d ROOT] [--rebuild] [-q] [--json]

Brings the search catalog (ROOT/index/catalog.sqlite) up to date with the
archive: indexes the items added since the last run, follows the items the
filer moved and drops the items no longer there. Only the root and the dated
directories that changed are read. Two runs at once are safe: the second
waits for the first. --rebuild recreates the catalog from the files alone;
a catalog that is damaged or was made by another version is rebuilt
automatically. The catalog is a cache: deleting it loses nothing.

Run it after each filer run (postfix-examples/filer/). Exit status: 0 done,
1 damaged or unreadable items were found (listed on stderr, not indexed,
retried next time), 2 the catalog could not be updated.
`

func runIndex(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, indexUsage)
	c := addCommon(fs, dir)
	rebuild := fs.Bool("rebuild", false, "recreate the catalog from the files")
	quiet := fs.BoolP("quiet", "q", false, "print nothing unless there are problems (for cron)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	if fs.NArg() > 0 {
		return e.Errorf("unexpected argument %q (try --help)", fs.Arg(0))
	}
	r, err := c.reader(e)
	if err != nil {
		return e.Errorf("%v", err)
	}
	if err := cli.CheckOwner("mailarchive index", *c.dir, filepath.Dir(c.catalogPath())); err != nil {
		return e.Errorf("%v", err)
	}
	prog := newProgress(e.Stderr, "items indexed", 0)
	if *quiet || *asJSON {
		prog.width = 0
	}
	res, err := catalog.Update(e.Ctx, r, c.catalogPath(), catalog.UpdateOptions{
		Rebuild:  *rebuild,
		Warn:     func(s string) { fmt.Fprintf(e.Stderr, "%s: %s\n", e.Program, s) },
		Progress: func(n int) { prog.update(n, 0, false) },
	})
	if err != nil {
		return e.Errorf("%v", err)
	}
	if prog.last != (time.Time{}) {
		prog.update(res.Added+res.Moved, 0, true)
	}
	for _, p := range res.Problems {
		fmt.Fprintf(e.Stderr, "%s: %s: %v\n", e.Program, p.Path, p.Err)
	}
	switch {
	case *asJSON:
		probs := make([]string, len(res.Problems))
		for i, p := range res.Problems {
			probs[i] = p.Error()
		}
		json.NewEncoder(e.Stdout).Encode(map[string]any{"added": res.Added, "moved": res.Moved, "removed": res.Removed,
			"unparsed": res.Unparsed, "unchanged": res.Unchanged, "problems": probs, "seconds": res.Took.Seconds()})
	case !*quiet:
		fmt.Fprintln(e.Stdout, summary(res))
	}
	if len(res.Problems) > 0 {
		return cli.ExitFindings
	}
	return cli.ExitOK
}

func summary(res *catalog.Result) string {
	parts := []string{fmt.Sprintf("%d added", res.Added), fmt.Sprintf("%d moved", res.Moved), fmt.Sprintf("%d removed", res.Removed)}
	if res.Unparsed > 0 {
		parts = append(parts, fmt.Sprintf("%d not parsable (indexed by envelope and raw header)", res.Unparsed))
	}
	if len(res.Problems) > 0 {
		parts = append(parts, fmt.Sprintf("%d problems", len(res.Problems)))
	}
	return fmt.Sprintf("index: %s in %s", strings.Join(parts, ", "), res.Took.Round(time.Millisecond))
}
