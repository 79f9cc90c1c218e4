package readcmd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/audit"
	"github.com/postfix-archive/mailarchive/catalog"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/mimetext"
)

const showUsage = `Usage: mailarchive show [-d ROOT] [--raw|--headers|--envelope|--text] ID

Shows one archived item, read from the files (the catalog is not needed):
by default the envelope (who sent it to whom, at which hook point, queue
IDs, outcome) and a decoded view of the message (header fields with encoded
words decoded, the text of its text and HTML parts, its attachments).

  --raw       the archived message bytes, exactly
  --headers   the message's header section as archived
  --envelope  the envelope (ID.json) as archived
  --text      the decoded text only

Exit status: 0 shown, 2 no such item or it cannot be read.
`

func runShow(e *cli.Env, args []string) int {
	fs, dir := cli.FlagSet(e, showUsage)
	c := addCommon(fs, dir)
	raw := fs.Bool("raw", false, "the archived message bytes, exactly")
	headers := fs.Bool("headers", false, "the header section as archived")
	envelope := fs.Bool("envelope", false, "the envelope (ID.json) as archived")
	text := fs.Bool("text", false, "the decoded text only")
	if done, st := cli.Parse(e, fs, args); done {
		return st
	}
	modes := 0
	for _, b := range []bool{*raw, *headers, *envelope, *text} {
		if b {
			modes++
		}
	}
	if modes > 1 {
		return e.Errorf("--raw, --headers, --envelope and --text exclude each other")
	}
	if fs.NArg() != 1 {
		return e.Errorf("want one ID (try --help)")
	}
	r, err := c.reader(e)
	if err != nil {
		return e.Errorf("%v", err)
	}
	it, err := r.Locate(fs.Arg(0))
	if err != nil && !(errors.Is(err, archive.ErrMissingMessage) && *envelope) {
		return e.Errorf("%v", err)
	}
	if err := audit.Record(r.Root(), audit.Show, fs.Arg(0), []string{it.ID}); err != nil {
		return e.Errorf("cannot record the access in the audit trail: %v", err)
	}
	switch {
	case *envelope:
		b, err := it.EnvelopeBytes()
		if err != nil {
			return e.Errorf("%v", err)
		}
		if _, err := e.Stdout.Write(b); err != nil {
			return e.Errorf("%v", err)
		}
		return cli.ExitOK
	case *raw:
		f, err := it.Open() // the item may be in object storage: not by path
		if err != nil {
			return e.Errorf("%v", err)
		}
		defer f.Close()
		if _, err := io.Copy(e.Stdout, f); err != nil {
			return e.Errorf("%v", err)
		}
		return cli.ExitOK
	case *headers:
		f, err := it.Open()
		if err != nil {
			return e.Errorf("%v", err)
		}
		defer f.Close()
		if err := copyHeader(e.Stdout, f); err != nil {
			return e.Errorf("%s: %v", it.ID, err)
		}
		return cli.ExitOK
	}
	f, err := it.Open()
	if err != nil {
		return e.Errorf("%v", err)
	}
	defer f.Close()
	doc := mimetext.Extract(f, mimetext.Options{MaxText: 64 << 20})
	if *text {
		fmt.Fprintln(e.Stdout, doc.Text)
		return cli.ExitOK
	}
	env, envErr := it.Envelope()
	rec := catalog.View(it, env, doc)
	w := bufio.NewWriter(e.Stdout)
	defer w.Flush()
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%-12s %s\n", k+":", v)
		}
	}
	line("ID", it.ID)
	if envErr != nil {
		line("Envelope", "UNREADABLE: "+envErr.Error())
	} else {
		line("Source", env.Source)
		line("Archived", env.ArchivedAt.Local().Format("2006-01-02 15:04:05 MST"))
		line("Host", env.Host)
		sender := rec.Sender
		if sender == "" && (env.MailFrom != nil || env.Env["SENDER"] != "") {
			sender = "<>"
		}
		line("Sender", sender)
		line("Recipients", strings.Join(rec.Rcpts, ", "))
		line("Queue IDs", strings.Join(rec.QueueIDs, " "))
		line("Outcome", env.Outcome)
		if env.Reply != "" {
			line("Reply", strings.ReplaceAll(env.Reply, "\n", " / "))
		}
		if cl := env.Client; !cl.IsZero() {
			line("Client", strings.TrimSpace(fmt.Sprintf("%s [%s] helo=%s auth=%s", cl.Name, cl.Addr, cl.Helo, cl.Auth)))
		}
		line("Tags", strings.Join(env.Tags, " "))
		line("Size", fmt.Sprintf("%d bytes, sha256 %s", env.Message.Size, env.Message.SHA256))
		if env.Recovered {
			line("Recovered", "yes (rebuilt by a recovery sweep; may be incomplete)")
		}
	}
	fmt.Fprintln(w)
	line("From", doc.From)
	line("To", doc.To)
	line("Cc", doc.Cc)
	line("Subject", doc.Subject)
	line("Date", doc.Date)
	line("Message-ID", doc.MessageID)
	for _, a := range doc.Attachments {
		name := a.Name
		if name == "" {
			name = "(no name)"
		}
		line("Attachment", fmt.Sprintf("%s (%s, %s)", name, a.Type, humanBytes(a.Size)))
	}
	if doc.Problem != "" {
		line("Problem", doc.Problem)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, doc.Text)
	return cli.ExitOK
}

// copyHeader writes the header section (after a leading mbox From_ line,
// which it keeps) up to and including the empty line that ends it.
func copyHeader(w io.Writer, r io.Reader) error {
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if _, werr := w.Write(line); werr != nil {
			return werr
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			return nil
		}
	}
}
