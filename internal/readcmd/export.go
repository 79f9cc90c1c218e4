package readcmd

import (
	"fmt"
	"strings"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/audit"
	"github.com/postfix-archive/mailarchive/catalog"
	"github.com/postfix-archive/mailarchive/export"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/query"
)

const exportUsage = `Usage: mailarchive export [-d ROOT] --format mbox|eml|zip -o PATH QUERY...

Exports the items a query finds (see mailarchive search --help; * for all),
oldest first. The message bytes exported are the archived bytes.

  mbox  one mboxrd file: a "From SENDER DATE" line per message (envelope
        sender, archive time), lines starting with >*"From " get one more
        '>' (readers of mboxrd take it off again). A message that does not
        end in a line end gets one (an mbox cannot hold it otherwise).
  eml   a new directory of ID.eml + ID.json, and a MANIFEST
  zip   a zip of ID.eml + ID.json, and a MANIFEST

MANIFEST: one line per file, "SHA256 SIZE NAME". -o - writes an mbox or a
zip to stdout. Existing files are never overwritten. Memory stays small
whatever the size of the export; a progress bar shows on a terminal.
Exit status: 0 exported, 1 nothing found or an item did not match its
envelope's size/sha256 (exported as archived, listed on stderr), 2 error.
`

// ExportOptions let other subcommands extend an export (e.g. with proofs).
type ExportOptions struct {
	Extra   func(it archive.Item) ([]export.File, error)
	Trailer func() ([]export.NamedFile, error)
	// Proofs, if set, adds --with-proofs: given the archive root, it
	// returns the Extra and Trailer that add each item's proof.
	Proofs func(root string) (ExportOptions, error)
}

func runExport(e *cli.Env, args []string) int {
	return RunExport(e, args, ExportOptions{})
}

// RunExport is mailarchive export with extra files per item.
func RunExport(e *cli.Env, args []string, xo ExportOptions) int {
	fs, dir := cli.FlagSet(e, exportUsage)
	c := addCommon(fs, dir)
	format := fs.String("format", "", "mbox, eml or zip (required)")
	out := fs.StringP("output", "o", "", "the file or directory `PATH` to create (required; - for stdout)")
	limit := fs.Int("limit", 0, "at most `N` items (0: all)")
	withProofs := false
	if xo.Proofs != nil {
		fs.BoolVar(&withProofs, "with-proofs", false, "add ID.proof for every item, the checkpoint and VERIFY.txt (eml, zip)")
	}
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	if withProofs {
		px, err := xo.Proofs(*dir)
		if err != nil {
			return e.Errorf("--with-proofs: %v", err)
		}
		xo.Extra, xo.Trailer = px.Extra, px.Trailer
	}
	f, err := export.ParseFormat(*format)
	if err != nil {
		return e.Errorf("--format: %v", err)
	}
	if *out == "" {
		return e.Errorf("-o PATH is required")
	}
	q, st := queryArgs(e, fs.Args(), "exports")
	if q == nil {
		return st
	}
	r, cat, st := c.open(e)
	if cat == nil {
		return st
	}
	defer cat.Close()
	return exportQuery(e, r, cat, q, strings.Join(fs.Args(), " "), f, *out, *limit, xo)
}

func exportQuery(e *cli.Env, r *archive.Reader, cat *catalog.Catalog, q query.Node, qtext string, f export.Format, out string, limit int, xo ExportOptions) int {
	total, err := cat.Count(e.Ctx, q)
	if err != nil {
		return e.Errorf("%v", err)
	}
	if limit > 0 {
		total = min(total, limit)
	}
	if total == 0 {
		fmt.Fprintf(e.Stderr, "%s: nothing found, nothing exported\n", e.Program)
		return cli.ExitFindings
	}
	prog := newProgress(e.Stderr, "items", total)
	var ids []string
	w, err := export.Create(out, e.Stdout, export.Options{Format: f, Extra: xo.Extra, Trailer: xo.Trailer,
		Progress: func(n int, b int64) { prog.update(n, b, false) }})
	if err != nil {
		return e.Errorf("%v", err)
	}
	err = cat.SearchIDs(e.Ctx, q, catalog.SearchOptions{Sort: catalog.Oldest, Limit: limit}, func(id string) error {
		it, err := r.Locate(id)
		if err != nil {
			return err
		}
		ids = append(ids, id)
		return w.Add(r, it)
	})
	cerr := w.Close()
	if aerr := audit.Record(r.Root(), audit.Export, qtext, ids); aerr != nil {
		return e.Errorf("cannot record the export in the audit trail: %v", aerr)
	}
	prog.update(w.Items(), w.Bytes(), true)
	if err != nil {
		return e.Errorf("%v (the export at %s is incomplete)", err, out)
	}
	if cerr != nil {
		return e.Errorf("%v", cerr)
	}
	if out != "-" {
		fmt.Fprintf(e.Stderr, "%s: exported %d items (%s) to %s\n", e.Program, w.Items(), humanBytes(w.Bytes()), out)
	}
	for _, id := range w.Mismatches {
		fmt.Fprintf(e.Stderr, "%s: %s: the message does not match its envelope's size or sha256 (exported as archived)\n", e.Program, id)
	}
	if len(w.Mismatches) > 0 {
		return cli.ExitFindings
	}
	return cli.ExitOK
}
