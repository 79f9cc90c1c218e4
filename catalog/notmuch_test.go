package catalog

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/mailgen"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
	"github.com/postfix-archive/mailarchive/query"
)

// TestNotmuchDifferential: for queries that mean the same to notmuch and
// to us, the IDs found are the same over one corpus (the archive's .eml
// files given to notmuch as a Maildir). Envelope-only queries (rcpt:,
// queueid:, source:) have no notmuch counterpart and are tested elsewhere.
func TestNotmuchDifferential(t *testing.T) {
	nm := postfixtest.RequireCommand(t, "notmuch")
	root, maildir := t.TempDir(), t.TempDir()
	for _, d := range []string{"cur", "new", "tmp"} {
		os.Mkdir(filepath.Join(maildir, d), 0o755)
	}
	g := mailgen.New(7, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), 17*time.Minute)
	var msgs []mailgen.Msg
	for range 400 {
		m := g.Next()
		id, err := archivetest.PutItem(root, m.Stamp, m.Env, m.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(maildir, "cur", id+":2,"), m.Bytes, 0o644); err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	cfg := filepath.Join(t.TempDir(), "notmuch-config")
	os.WriteFile(cfg, []byte("[database]\npath="+maildir+"\n[user]\nname=Test\nprimary_email=test@example.org\n"+
		"[new]\ntags=\nignore=\n[search]\nexclude_tags=\n[maildir]\nsynchronize_flags=false\n"), 0o644)
	env := append(os.Environ(), "NOTMUCH_CONFIG="+cfg, "TZ=UTC")
	run := func(args ...string) string {
		t.Helper()
		c := exec.Command(nm, args...)
		c.Env = env
		out, err := c.Output()
		if err != nil {
			t.Fatalf("notmuch %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("new", "--quiet")

	f := &fixture{t: t, root: root, path: DefaultPath(root)}
	var err error
	if f.r, err = openReader(root); err != nil {
		t.Fatal(err)
	}
	f.update(UpdateOptions{})
	cat, err := OpenRead(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()

	m, m2 := msgs[10], msgs[123]
	var withAtt mailgen.Msg
	for _, x := range msgs {
		if x.Attachment != "" {
			withAtt = x
			break
		}
	}
	rare := m.Body[len(m.Body)-1]
	pairs := []struct{ ours, theirs string }{
		{"from:" + m.From, "from:" + m.From},
		{"to:" + m.To[0], "to:" + m.To[0]},
		{"subject:" + m.Subject[0], "subject:" + m.Subject[0]},
		{"body:" + rare, "body:" + rare},
		{rare, rare},
		{g.Words[0], g.Words[0]},
		{`"` + m.Body[3] + " " + m.Body[4] + `"`, `"` + m.Body[3] + " " + m.Body[4] + `"`},
		{`body:"` + m2.Body[0] + " " + m2.Body[1] + " " + m2.Body[2] + `"`, `body:"` + m2.Body[0] + " " + m2.Body[1] + " " + m2.Body[2] + `"`},
		{m.Subject[1][:3] + "*", m.Subject[1][:3] + "*"},
		{"date:2026-02-02..2026-02-03", "date:2026-02-02..2026-02-03"},
		{"date:2026-02-03", "date:2026-02-03"},
		{"attachment:" + withAtt.Attachment, "attachment:" + withAtt.Attachment},
		{"has:attachment", "tag:attachment"},
		{"msgid:" + m2.MessageID, "id:" + m2.MessageID},
		{"from:" + m.From + " AND subject:" + m.Subject[0], "from:" + m.From + " AND subject:" + m.Subject[0]},
		{"from:" + m.From + " OR from:" + m2.From, "from:" + m.From + " OR from:" + m2.From},
		{g.Words[1] + " AND NOT " + g.Words[2], g.Words[1] + " AND NOT " + g.Words[2]},
		{"(" + g.Words[3] + " OR " + g.Words[4] + ") date:2026-02-01..2026-02-02",
			"(" + g.Words[3] + " OR " + g.Words[4] + ") AND date:2026-02-01..2026-02-02"},
	}
	for _, p := range pairs {
		n, err := query.Parse(p.ours, query.Options{Location: time.UTC})
		if err != nil {
			t.Fatalf("%q: %v", p.ours, err)
		}
		ids, err := cat.IDs(ctx, n, SearchOptions{})
		if err != nil {
			t.Fatalf("%q: %v", p.ours, err)
		}
		var theirs []string
		for _, l := range strings.Split(strings.TrimSpace(run("search", "--output=files", p.theirs)), "\n") {
			if l != "" {
				id, _, _ := strings.Cut(filepath.Base(l), ":")
				theirs = append(theirs, id)
			}
		}
		sort.Strings(ids)
		sort.Strings(theirs)
		if strings.Join(ids, " ") != strings.Join(theirs, " ") {
			t.Errorf("%q: we found %d items, notmuch (%q) %d\nours:   %v\ntheirs: %v", p.ours, len(ids), p.theirs, len(theirs), ids, theirs)
		} else if len(ids) == 0 {
			t.Errorf("%q: neither found anything: the query tests nothing", p.ours)
		} else {
			t.Logf("%q: %d items, same as notmuch", p.ours, len(ids))
		}
	}
}
