// Package readcmd is mailarchive's read side: the index, search, show,
// export and stats subcommands. Each is a cli.Command; the work is done
// by catalog, query, mimetext and export, so other subcommands can reuse
// it (OpenCatalog, ParseQuery).
package readcmd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/catalog"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/query"
)

// The read side's subcommands.
var (
	Index  = cli.Command{Name: "index", Summary: "bring the search catalog up to date (incremental; --rebuild)", Run: runIndex}
	Search = cli.Command{Name: "search", Summary: "find items: from:, rcpt:, subject:, date:, words, AND/OR/NOT ...", Run: runSearch}
	Show   = cli.Command{Name: "show", Summary: "show one item: envelope and decoded message, or --raw bytes", Run: runShow}
	Export = cli.Command{Name: "export", Summary: "export the items of a query as mbox, eml files or zip", Run: runExport}
	Stats  = cli.Command{Name: "stats", Summary: "items by day and hook point, bytes, what is not indexed yet", Run: runStats}
)

// common are the flags every read subcommand has besides -d.
type common struct {
	dir   *string
	index *string
	filed *string
}

func addCommon(fs *pflag.FlagSet, dir *string) *common {
	return &common{
		dir:   dir,
		index: fs.String("index", "", "the catalog `PATH` (default ROOT/index/catalog.sqlite)"),
		filed: fs.String("filed", "", "the dated tree's root `DIR`, if the filer files elsewhere (filer --dest)"),
	}
}

func (c *common) reader(e *cli.Env) (*archive.Reader, error) {
	r, err := archive.OpenReader(*c.dir, archive.ReaderOptions{Filed: *c.filed})
	if err != nil {
		return nil, err
	}
	// After a power loss, items of the last moments may look damaged
	// until the journal is replayed: say so rather than let a reader
	// take it for tampering.
	if n, err := r.PendingReplay(); err == nil && n > 0 {
		fmt.Fprintf(e.Stderr, "%s: warning: %d records: %v\n", e.Program, n, archive.ErrNotReplayed)
	}
	return r, nil
}

// open opens the archive and its catalog (building it if need be); on
// failure it has said why and returns the exit status.
func (c *common) open(e *cli.Env) (*archive.Reader, *catalog.Catalog, int) {
	r, err := c.reader(e)
	if err != nil {
		return nil, nil, e.Errorf("%v", err)
	}
	cat, err := OpenCatalog(e, r, c.catalogPath())
	if err != nil {
		return nil, nil, e.Errorf("%v", err)
	}
	return r, cat, 0
}

// queryArgs parses the arguments left after the flags as a query.
func queryArgs(e *cli.Env, args []string, what string) (query.Node, int) {
	if len(args) == 0 {
		return nil, e.Errorf("no query (try --help; * %s everything)", what)
	}
	return ParseQuery(e, args)
}

func (c *common) catalogPath() string {
	if *c.index != "" {
		return *c.index
	}
	return catalog.DefaultPath(*c.dir)
}

// OpenCatalog opens the catalog for searching. A catalog that is missing,
// from another version or damaged is (re)built first when we may write
// it, with a note on stderr; otherwise the error says to run index.
func OpenCatalog(e *cli.Env, r *archive.Reader, path string) (*catalog.Catalog, error) {
	c, err := catalog.OpenRead(path)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, catalog.ErrNoCatalog) && !errors.Is(err, catalog.ErrOutdated) && !errors.Is(err, catalog.ErrDamaged) {
		return nil, err
	}
	if oerr := cli.CheckOwner("mailarchive index", r.Root(), filepath.Dir(path)); oerr != nil {
		return nil, fmt.Errorf("%v (%v)", err, oerr)
	}
	fmt.Fprintf(e.Stderr, "%s: %v; indexing the archive first\n", e.Program, err)
	res, uerr := catalog.Update(e.Ctx, r, path, catalog.UpdateOptions{
		Warn: func(s string) { fmt.Fprintf(e.Stderr, "%s: %s\n", e.Program, s) }})
	if uerr != nil {
		return nil, fmt.Errorf("%v (and indexing failed: %v; run 'mailarchive index' as the archive's owner)", err, uerr)
	}
	fmt.Fprintf(e.Stderr, "%s: %s\n", e.Program, summary(res))
	return catalog.OpenRead(path)
}

// ParseQuery parses the rest of a command line as a query. Syntax errors
// show the query with a caret under the position.
func ParseQuery(e *cli.Env, args []string) (query.Node, int) {
	q := strings.Join(args, " ")
	n, err := query.Parse(q, query.Options{})
	if err != nil {
		var se *query.SyntaxError
		if errors.As(err, &se) {
			fmt.Fprintf(e.Stderr, "%s: %v\n  %s\n", e.Program, err, strings.ReplaceAll(se.Caret(), "\n", "\n  "))
			return nil, cli.ExitError
		}
		return nil, e.Errorf("%v", err)
	}
	return n, 0
}

// terminal returns the width of w if it is a terminal, else 0.
func terminal(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	if ws.Col == 0 {
		return 80
	}
	return int(ws.Col)
}

// progress draws a bar on a terminal, at most ten times a second.
type progress struct {
	w     io.Writer
	width int
	total int
	what  string
	last  time.Time
	start time.Time
}

func newProgress(w io.Writer, what string, total int) *progress {
	return &progress{w: w, width: terminal(w), total: total, what: what, start: time.Now()}
}

func (p *progress) update(done int, bytes int64, final bool) {
	if p.width == 0 || (!final && time.Since(p.last) < 100*time.Millisecond) {
		return
	}
	p.last = time.Now()
	info := fmt.Sprintf(" %s %d", p.what, done)
	if p.total > 0 {
		info += fmt.Sprintf("/%d", p.total)
	}
	if bytes > 0 {
		info += ", " + humanBytes(bytes)
	}
	bar := ""
	if n := p.width - len(info) - 4; p.total > 0 && n >= 10 {
		fill := min(n, n*done/p.total)
		bar = "[" + strings.Repeat("=", fill) + strings.Repeat(" ", n-fill) + "]"
	}
	fmt.Fprintf(p.w, "\r%s%s", bar, info)
	if final {
		fmt.Fprint(p.w, "\n")
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
