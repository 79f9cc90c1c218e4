package readcmd

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/cli"
)

type result struct {
	status      int
	stdout, err string
}

func run(t *testing.T, c cli.Command, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	st := c.Run(&cli.Env{Ctx: context.Background(), Stdout: &out, Stderr: &errb, Program: "mailarchive " + c.Name}, args)
	return result{st, out.String(), errb.String()}
}

const msgA = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: budget meeting\r\nMessage-ID: <a1@example.org>\r\n\r\nthe budget is fine\r\n"

func archiveWith(t *testing.T) (string, map[string]string) {
	root := t.TempDir()
	ids := map[string]string{}
	put := func(name string, stamp time.Time, env archive.Envelope, msg string) {
		id, err := archivetest.PutItem(root, stamp, env, []byte(msg))
		if err != nil {
			t.Fatal(err)
		}
		ids[name] = id
	}
	put("a", time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC), archive.Envelope{Source: "proxy", Outcome: "accepted",
		MailFrom: &archive.MailFrom{Addr: "alice@example.org"}, RcptTo: []archive.Rcpt{{Addr: "bob@example.net", Accepted: true}, {Addr: "audit@example.net", Accepted: true}},
		QueueID: "4AAA"}, msgA)
	put("a-milter", time.Date(2026, 3, 1, 9, 0, 1, 0, time.UTC), archive.Envelope{Source: "milter", Outcome: "accepted",
		MailFrom: &archive.MailFrom{Addr: "alice@example.org"}, RcptTo: []archive.Rcpt{{Addr: "bob@example.net", Accepted: true}},
		QueueID: "4AAA"}, msgA)
	put("b", time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC), archive.Envelope{Source: "wrapper", Outcome: "accepted",
		Env: map[string]string{"SENDER": "carol@example.org", "RECIPIENT": "bob@example.net"}},
		"From carol@example.org  Mon Mar  2 09:00:00 2026\nSubject: lunch\n\nFrom the kitchen: soup\n")
	return root, ids
}

func TestIndexAndSearch(t *testing.T) {
	root, ids := archiveWith(t)
	// search before any index: the catalog is built, with a note.
	r := run(t, Search, "-d", root, "--ids", "budget")
	if r.status != cli.ExitOK || !strings.Contains(r.err, "indexing the archive first") {
		t.Fatalf("first search: %+v", r)
	}
	if got := strings.Fields(r.stdout); len(got) != 2 {
		t.Errorf("--ids: %q", r.stdout)
	}
	r = run(t, Index, "-d", root)
	if r.status != cli.ExitOK || !strings.Contains(r.stdout, "index: 0 added") {
		t.Fatalf("index: %+v", r)
	}
	r = run(t, Search, "-d", root, "--json", "--sort", "oldest", "from:alice@example.org")
	var hits []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var h map[string]any
		if err := json.Unmarshal([]byte(l), &h); err != nil {
			t.Fatalf("--json line %q: %v", l, err)
		}
		hits = append(hits, h)
	}
	if len(hits) != 2 || hits[0]["id"] != ids["a"] || hits[0]["copies"] == nil {
		t.Fatalf("--json: %s", r.stdout)
	}
	r = run(t, Search, "-d", root, "rcpt:audit@example.net")
	if r.status != cli.ExitOK || !strings.Contains(r.stdout, ids["a"]) || !strings.Contains(r.stdout, "proxy (copies: milter)") ||
		!strings.HasPrefix(r.stdout, "DATE") {
		t.Errorf("table: %+v", r)
	}
	r = run(t, Search, "-d", root, "--", "from:carol", "AND", "NOT", "subject:budget")
	if r.status != cli.ExitOK || !strings.Contains(r.stdout, ids["b"]) {
		t.Errorf("wrapper sender: %+v", r)
	}
	r = run(t, Search, "-d", root, "nothingmatches")
	if r.status != cli.ExitFindings || !strings.Contains(r.err, "nothing found") {
		t.Errorf("nothing found: %+v", r)
	}
	r = run(t, Search, "-d", root, "subject:budget", "AND", "(lunch")
	if r.status != cli.ExitError || !strings.Contains(r.err, "( is never closed at position 20") ||
		!strings.Contains(r.err, "  subject:budget AND (lunch\n  "+strings.Repeat(" ", 19)+"^") {
		t.Errorf("syntax error: %+v", r)
	}
	if r := run(t, Search, "-d", root); r.status != cli.ExitError {
		t.Errorf("no query: %+v", r)
	}
	if r := run(t, Search, "-d", root, "--sort", "random", "x"); r.status != cli.ExitError {
		t.Errorf("bad sort: %+v", r)
	}
}

func TestIndexProblems(t *testing.T) {
	root, ids := archiveWith(t)
	os.Remove(filepath.Join(root, ids["b"]+".eml"))
	r := run(t, Index, "-d", root)
	if r.status != cli.ExitFindings || !strings.Contains(r.err, ids["b"]+".json: envelope without message") {
		t.Errorf("index with a missing .eml: %+v", r)
	}
	r = run(t, Index, "-d", root, "--json")
	var res map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res["problems"].([]any)) != 1 {
		t.Errorf("index --json: %q %v", r.stdout, err)
	}
	// A corrupted catalog: search rebuilds it, and finds everything.
	os.WriteFile(filepath.Join(root, "index", "catalog.sqlite"), []byte("garbage"), 0o640)
	os.Remove(filepath.Join(root, "index", "catalog.sqlite-wal"))
	r = run(t, Search, "-d", root, "--ids", "budget")
	if r.status != cli.ExitOK || len(strings.Fields(r.stdout)) != 2 || !strings.Contains(r.err, "rebuilding") {
		t.Errorf("search over a corrupted catalog: %+v", r)
	}
	if r := run(t, Index, "-d", filepath.Join(root, "missing")); r.status != cli.ExitError || !strings.Contains(r.err, "no such file") {
		t.Errorf("missing root: %+v", r)
	}
}

func TestShow(t *testing.T) {
	root, ids := archiveWith(t)
	r := run(t, Show, "-d", root, "--raw", ids["a"])
	if r.status != cli.ExitOK || r.stdout != msgA {
		t.Errorf("--raw: %+v", r)
	}
	r = run(t, Show, "-d", root, ids["b"])
	for _, w := range []string{"Source:      wrapper", "Sender:      carol@example.org", "Subject:     lunch", "From the kitchen: soup"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("show lacks %q:\n%s", w, r.stdout)
		}
	}
	r = run(t, Show, "-d", root, "--headers", ids["a"])
	if r.stdout != strings.SplitAfter(msgA, "\r\n\r\n")[0] {
		t.Errorf("--headers: %q", r.stdout)
	}
	r = run(t, Show, "-d", root, "--envelope", ids["a"])
	if b, _ := os.ReadFile(filepath.Join(root, ids["a"]+".json")); r.stdout != string(b) {
		t.Errorf("--envelope: %q", r.stdout)
	}
	if r := run(t, Show, "-d", root, "--text", ids["a"]); strings.TrimSpace(r.stdout) != "the budget is fine" {
		t.Errorf("--text: %q", r.stdout)
	}
	if r := run(t, Show, "-d", root, "20260301T090000Z.aaaaaaaaaaaaaaaa"); r.status != cli.ExitError || !strings.Contains(r.err, "no such item") {
		t.Errorf("unknown ID: %+v", r)
	}
	if r := run(t, Show, "-d", root, "not-an-id"); r.status != cli.ExitError || !strings.Contains(r.err, "not an archive ID") {
		t.Errorf("bad ID: %+v", r)
	}
}

func TestExportAndStats(t *testing.T) {
	root, ids := archiveWith(t)
	out := filepath.Join(t.TempDir(), "x.zip")
	r := run(t, Export, "-d", root, "--format", "zip", "-o", out, "from:alice")
	if r.status != cli.ExitOK || !strings.Contains(r.err, "exported 2 items") {
		t.Fatalf("export: %+v", r)
	}
	zr, err := zip.OpenReader(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
	}
	zr.Close()
	want := []string{ids["a"] + ".eml", ids["a"] + ".json", ids["a-milter"] + ".eml", ids["a-milter"] + ".json", "MANIFEST"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("zip holds %v, want %v", names, want)
	}
	if r := run(t, Export, "-d", root, "--format", "mbox", "-o", out+".mbox", "nothingmatches"); r.status != cli.ExitFindings {
		t.Errorf("export of nothing: %+v", r)
	}
	if r := run(t, Export, "-d", root, "--format", "tar", "-o", out, "*"); r.status != cli.ExitError {
		t.Errorf("bad format: %+v", r)
	}
	if r := run(t, Export, "-d", root, "--format", "zip", "-o", out, "*"); r.status != cli.ExitError || !strings.Contains(r.err, "exists") {
		t.Errorf("export over an existing file: %+v", r)
	}
	// stats: one item arrives after the last index.
	archivetest.PutItem(root, time.Date(2026, 3, 3, 0, 0, 0, 0, time.UTC), archive.Envelope{Source: "proxy"}, []byte("Subject: late\r\n\r\n"))
	r = run(t, Stats, "-d", root, "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if r.status != cli.ExitFindings || st["items"] != 3.0 || st["not_indexed"] != 1.0 || st["last_update"] == nil {
		t.Errorf("stats: %+v", r)
	}
	r = run(t, Stats, "-d", root)
	if !strings.Contains(r.stdout, "2026-03-01") || !strings.Contains(r.stdout, "not indexed yet: 1") {
		t.Errorf("stats table:\n%s", r.stdout)
	}
}

// TestRootOnOthersArchive: root must not leave a root-owned catalog in an
// archive that belongs to another user.
func TestRootOnOthersArchive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (the refusal is for root only)")
	}
	root, _ := archiveWith(t)
	if err := os.Chown(root, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	r := run(t, Index, "-d", root)
	if r.status != cli.ExitError || !strings.Contains(r.err, "belongs to nobody") {
		t.Errorf("index as root: %+v", r)
	}
	r = run(t, Search, "-d", root, "budget")
	if r.status != cli.ExitError || !strings.Contains(r.err, "runuser -u nobody -- mailarchive index") {
		t.Errorf("search as root without a catalog: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(root, "index")); err == nil {
		t.Error("root created ROOT/index")
	}
}
