package catalog

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/filer"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/query"
)

var ctx = context.Background()

type fixture struct {
	t    *testing.T
	root string
	r    *archive.Reader
	path string
	ids  map[string]string // name -> ID
}

func newFixture(t *testing.T) *fixture {
	root := t.TempDir()
	r, err := archive.OpenReader(root, archive.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, root: root, r: r, path: DefaultPath(root), ids: map[string]string{}}
}

func (f *fixture) put(name string, stamp time.Time, env archive.Envelope, msg string) string {
	f.t.Helper()
	id, err := archivetest.PutItem(f.root, stamp, env, []byte(msg))
	if err != nil {
		f.t.Fatal(err)
	}
	f.ids[name] = id
	return id
}

func (f *fixture) update(opt UpdateOptions) *Result {
	f.t.Helper()
	res, err := Update(ctx, f.r, f.path, opt)
	if err != nil {
		f.t.Fatalf("Update: %v", err)
	}
	return res
}

func (f *fixture) file() {
	f.t.Helper()
	rep, err := filer.Run(filer.Options{Root: f.root})
	if err != nil || len(rep.Problems) > 0 {
		f.t.Fatalf("filer: %v %v", err, rep.Problems)
	}
}

// search returns the names of the items found, sorted.
func (f *fixture) search(q string) []string {
	f.t.Helper()
	c, err := OpenRead(f.path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer c.Close()
	n, err := query.Parse(q, query.Options{Now: time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC), Location: time.UTC})
	if err != nil {
		f.t.Fatal(err)
	}
	ids, err := c.IDs(ctx, n, SearchOptions{})
	if err != nil {
		f.t.Fatalf("search %q: %v", q, err)
	}
	byID := map[string]string{}
	for name, id := range f.ids {
		byID[id] = name
	}
	var names []string
	for _, id := range ids {
		names = append(names, byID[id])
	}
	sort.Strings(names)
	return names
}

func day(d int) time.Time { return time.Date(2026, 3, d, 10, 0, 0, 0, time.UTC) }

// The same message seen at three hook points, and others.
func hookFixture(t *testing.T) *fixture {
	f := newFixture(t)
	msg := "Received: from a.example by mx.example.org (Postfix) with ESMTP id 4QID000001; Fri, 13 Mar 2026 10:00:00 +0000\r\n" +
		"From: =?UTF-8?Q?J=C3=B6rg?= <jorg@example.org>\r\nTo: team@example.net\r\nSubject: quarterly figures\r\n" +
		"Message-ID: <q1@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nthe numbers are r=C3=A9sum=C3=A9 ready\r\n"
	f.put("proxy", day(13), archive.Envelope{Source: "proxy", Outcome: "accepted", MailFrom: &archive.MailFrom{Addr: "jorg@example.org"},
		RcptTo:  []archive.Rcpt{{Addr: "team@example.net", Accepted: true}, {Addr: "auditor@example.net", Accepted: true}},
		QueueID: "4QID000001"}, msg)
	f.put("milter", day(13).Add(time.Second), archive.Envelope{Source: "milter", Outcome: "accepted", MailFrom: &archive.MailFrom{Addr: "jorg@example.org"},
		RcptTo:  []archive.Rcpt{{Addr: "team@example.net", Accepted: true}, {Addr: "auditor@example.net", Accepted: true}},
		QueueID: "4QID000001", Macros: map[string]string{"i": "4QID000001"}}, msg)
	f.put("wrapper", day(13).Add(2*time.Second), archive.Envelope{Source: "wrapper", Outcome: "accepted", Tags: []string{"inbox"},
		Env: map[string]string{"SENDER": "jorg@example.org", "RECIPIENT": "auditor@example.net"}},
		"From jorg@example.org  Fri Mar 13 10:00:02 2026\n"+msg)
	f.put("resent", day(14), archive.Envelope{Source: "proxy", Outcome: "accepted", MailFrom: &archive.MailFrom{Addr: "jorg@example.org"},
		RcptTo: []archive.Rcpt{{Addr: "team@example.net", Accepted: true}}, QueueID: "4QID000009"},
		strings.Replace(msg, "4QID000001", "4QID000009", 1))
	f.put("invoice", day(1), archive.Envelope{Source: "proxy", Outcome: "rejected", MailFrom: &archive.MailFrom{Addr: "billing@vendor.example"},
		RcptTo: []archive.Rcpt{{Addr: "accounts@example.net", Accepted: false}}},
		"From: billing@vendor.example\r\nTo: accounts@example.net\r\nCc: boss@example.net\r\nSubject: Invoice 2026-03\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>Please pay the <b>overdue</b> amount</p>\r\n"+
			"--b\r\nContent-Type: application/pdf; name=\"invoice-march.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n")
	f.put("noheader", day(2), archive.Envelope{Source: "proxy", Outcome: "accepted", MailFrom: &archive.MailFrom{Addr: ""},
		RcptTo: []archive.Rcpt{{Addr: "postmaster@example.net", Accepted: true}}}, "garbage without header\r\nzyxwv\r\n")
	return f
}

func TestSearch(t *testing.T) {
	f := hookFixture(t)
	res := f.update(UpdateOptions{})
	if res.Added != 6 || res.Unparsed != 1 || len(res.Problems) != 0 {
		t.Fatalf("Update: %+v", res)
	}
	for _, tt := range []struct {
		q    string
		want string
	}{
		{"from:jorg@example.org", "milter proxy resent wrapper"},
		{"from:jörg", "milter proxy resent wrapper"},
		{"from:JORG@Example.ORG", "milter proxy resent wrapper"},
		{"from:jorg@example", "milter proxy resent wrapper"},
		{"from:billing@vendor.example OR from:nobody@example.org", "invoice"},
		{"to:team@example.net", "milter proxy resent wrapper"},
		{"to:team@example.net NOT rcpt:team@example.net", "wrapper"},
		{"from:jorg", "milter proxy resent wrapper"},
		{"rcpt:auditor@example.net", "milter proxy wrapper"},
		{"bcc:auditor@example.net", "milter proxy wrapper"},
		{"to:auditor@example.net", "milter proxy wrapper"},
		{"to:boss@example.net", ""},
		{"cc:boss@example.net", "invoice"},
		{"subject:quarterly", "milter proxy resent wrapper"},
		{"subject:invoice", "invoice"},
		{"body:résumé", "milter proxy resent wrapper"},
		{"resume", "milter proxy resent wrapper"},
		{"overdue", "invoice"},
		{`"pay the overdue"`, "invoice"},
		{`"overdue pay"`, ""},
		{"overd*", "invoice"},
		{"zyxwv", "noheader"},
		{"msgid:<q1@example.org>", "milter proxy resent wrapper"},
		{"id:q1@example.org", "milter proxy resent wrapper"},
		{"queueid:4QID000001", "milter proxy wrapper"},
		{"queueid:4qid000001", "milter proxy wrapper"},
		{"source:wrapper", "wrapper"},
		{"tag:inbox", "wrapper"},
		{"outcome:rejected", "invoice"},
		{"has:attachment", "invoice"},
		{"attachment:invoice-march.pdf", "invoice"},
		{"attachment:march", "invoice"},
		{"date:2026-03-13", "milter proxy wrapper"},
		{"date:2026-03-01..2026-03-02", "invoice noheader"},
		{"date:..2026-03-13", "invoice milter noheader proxy wrapper"},
		{"size:>100000", ""},
		{"size:<100", "noheader"},
		{"quarterly AND NOT source:proxy", "milter wrapper"},
		{"quarterly NOT resent", "milter proxy resent wrapper"},
		{"NOT quarterly", "invoice noheader"},
		{"overdue OR zyxwv", "invoice noheader"},
		{"(overdue OR quarterly) date:2026-03-14..", "resent"},
		{"source:milter OR source:wrapper", "milter wrapper"},
		{"*", "invoice milter noheader proxy resent wrapper"},
		{"nothingmatchesthis", ""},
		{"from:jorg AND (subject:quarterly OR has:attachment) AND NOT queueid:4QID000009", "milter proxy wrapper"},
	} {
		if got := strings.Join(f.search(tt.q), " "); got != tt.want {
			t.Errorf("search %q = [%s], want [%s]", tt.q, got, tt.want)
		}
	}
}

func TestCopies(t *testing.T) {
	f := hookFixture(t)
	f.update(UpdateOptions{})
	c, err := OpenRead(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n, _ := query.Parse("msgid:q1@example.org", query.Options{})
	got := map[string][]string{}
	err = c.Search(ctx, n, SearchOptions{Copies: true, Sort: Oldest}, func(h Hit) error {
		for _, cp := range h.Copies {
			got[h.Source+h.ID[:0]] = append(got[h.Source], cp.Source)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// proxy, milter and wrapper share the queue ID chain; "resent" has the
	// same Message-ID but another queue ID: a second sending, not a copy.
	want := map[string]string{"proxy": "milter wrapper", "milter": "proxy wrapper", "wrapper": "proxy milter"}
	for src, w := range want {
		if g := strings.Join(got[src], " "); g != w {
			t.Errorf("copies of the %s item: [%s], want [%s]", src, g, w)
		}
	}
}

func TestIncremental(t *testing.T) {
	f := hookFixture(t)
	f.update(UpdateOptions{})
	f.file()
	res := f.update(UpdateOptions{})
	if res.Added != 0 || res.Moved != 6 || res.Removed != 0 {
		t.Fatalf("after filing: %+v", res)
	}
	if got := f.search("*"); len(got) != 6 {
		t.Fatalf("after filing: %v", got)
	}
	// Days whose directories are unchanged are not read again. Their
	// times must be in the past for that (see finish): age them.
	past := time.Now().Add(-time.Hour)
	days, _ := f.r.Days()
	for _, d := range days {
		os.Chtimes(filepath.Join(f.root, d), past, past)
	}
	f.update(UpdateOptions{})
	res = f.update(UpdateOptions{})
	if res.Unchanged != 0 || res.Added != 0 {
		t.Fatalf("nothing changed, but: %+v", res)
	}
	f.put("new", day(15), archive.Envelope{Source: "proxy", MailFrom: &archive.MailFrom{Addr: "x@example.org"}}, "Subject: fresh\r\n\r\nnew\r\n")
	res = f.update(UpdateOptions{})
	if res.Added != 1 {
		t.Fatalf("one new item: %+v", res)
	}
	// A removed item (retention) leaves the catalog.
	it, err := f.r.Locate(f.ids["invoice"])
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(it.JSONPath)
	os.Remove(it.EMLPath)
	res = f.update(UpdateOptions{})
	if res.Removed != 1 {
		t.Fatalf("one removed item: %+v", res)
	}
	if got := f.search("overdue"); len(got) != 0 {
		t.Fatalf("removed item still found: %v", got)
	}
	res = f.update(UpdateOptions{Rebuild: true})
	if res.Added != 6 {
		t.Fatalf("rebuild: %+v", res)
	}
}

func TestBadInput(t *testing.T) {
	f := hookFixture(t)
	// A damaged .json: the message is still indexed, the problem counted.
	os.WriteFile(filepath.Join(f.root, f.ids["invoice"]+".json"), []byte(`{"version":1,"id":`), 0o640)
	// An .eml missing: reported, not indexed.
	os.Remove(filepath.Join(f.root, f.ids["noheader"]+".eml"))
	// An unreadable .eml (the tests run as root, so the open is faked).
	unreadable := f.ids["resent"]
	open := func(it archive.Item) (io.ReadCloser, error) {
		if it.ID == unreadable {
			return nil, &os.PathError{Op: "open", Path: it.EMLPath, Err: os.ErrPermission}
		}
		return it.Open()
	}
	res := f.update(UpdateOptions{open: open})
	if res.Added != 4 || res.Unparsed != 1 || len(res.Problems) != 2 {
		t.Fatalf("Update: %+v", res)
	}
	var msgs []string
	for _, p := range res.Problems {
		msgs = append(msgs, p.Error())
	}
	all := strings.Join(msgs, "\n")
	for _, w := range []string{"envelope without message", "permission denied"} {
		if !strings.Contains(all, w) {
			t.Errorf("problems %q do not say %q", all, w)
		}
	}
	if got := f.search("overdue"); len(got) != 1 {
		t.Errorf("item with a damaged envelope not found by its text: %v", got)
	}
	// Readable again: the next run indexes it; nothing was lost.
	res = f.update(UpdateOptions{})
	if res.Added != 1 || len(res.Problems) != 1 {
		t.Fatalf("second Update: %+v", res)
	}
}

func TestCatalogDamage(t *testing.T) {
	f := hookFixture(t)
	f.update(UpdateOptions{})
	// Deleted: OpenRead says so, Update rebuilds.
	os.Remove(f.path)
	os.Remove(f.path + "-wal")
	os.Remove(f.path + "-shm")
	if _, err := OpenRead(f.path); !errors.Is(err, ErrNoCatalog) {
		t.Fatalf("OpenRead of a deleted catalog: %v", err)
	}
	if res := f.update(UpdateOptions{}); res.Added != 6 {
		t.Fatalf("after deletion: %+v", res)
	}
	// Overwritten with garbage: detected, rebuilt, with a warning.
	os.Remove(f.path + "-wal")
	os.Remove(f.path + "-shm")
	os.WriteFile(f.path, []byte(strings.Repeat("not a database ", 500)), 0o640)
	if _, err := OpenRead(f.path); !errors.Is(err, ErrDamaged) {
		t.Fatalf("OpenRead of a garbage catalog: %v", err)
	}
	var warned string
	res := f.update(UpdateOptions{Warn: func(s string) { warned = s }})
	if res.Added != 6 || !strings.Contains(warned, "rebuilding") {
		t.Fatalf("after garbage: %+v, warning %q", res, warned)
	}
	// Made by a newer version: left alone.
	c, _ := OpenRead(f.path)
	c.db.Exec(`PRAGMA user_version = 99`)
	c.Close()
	if _, err := OpenRead(f.path); !errors.Is(err, ErrNewer) {
		t.Fatalf("OpenRead of a newer catalog: %v", err)
	}
	if _, err := Update(ctx, f.r, f.path, UpdateOptions{}); !errors.Is(err, ErrNewer) {
		t.Fatalf("Update of a newer catalog: %v", err)
	}
	// Made by an older version: rebuilt.
	db, err := sql.Open("sqlite", "file:"+f.path)
	if err != nil {
		t.Fatal(err)
	}
	db.Exec(`PRAGMA user_version = 1`)
	db.Close()
	if _, err := OpenRead(f.path); !errors.Is(err, ErrOutdated) {
		t.Fatalf("OpenRead of an old catalog: %v", err)
	}
	if res := f.update(UpdateOptions{}); res.Added != 6 {
		t.Fatalf("after version change: %+v", res)
	}
	if got := f.search("*"); len(got) != 6 {
		t.Fatalf("after all that: %v", got)
	}
}

// TestConcurrentUpdates: two Updates at once (two cron runs) run one
// after the other; every item is indexed once.
func TestConcurrentUpdates(t *testing.T) {
	f := hookFixture(t)
	var wg sync.WaitGroup
	results := make([]*Result, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := Update(ctx, f.r, f.path, UpdateOptions{})
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		}()
	}
	wg.Wait()
	if results[0] == nil || results[1] == nil || results[0].Added+results[1].Added != 6 {
		t.Fatalf("results %+v %+v", results[0], results[1])
	}
	if got := f.search("*"); len(got) != 6 {
		t.Fatalf("%v", got)
	}
}

// TestFilerDuringUpdate: the filer runs while items are being indexed;
// every item ends in the catalog once, and the next run records where the
// items went.
func TestFilerDuringUpdate(t *testing.T) {
	f := newFixture(t)
	for i := range 300 {
		f.put(strings.Repeat("x", 0)+time.Duration(i).String(), day(1+i%20).Add(time.Duration(i)*time.Second),
			archive.Envelope{Source: "proxy", MailFrom: &archive.MailFrom{Addr: "a@example.org"}},
			"Subject: item\r\n\r\nbody words here\r\n")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		filer.Run(filer.Options{Root: f.root})
	}()
	res := f.update(UpdateOptions{Workers: 1})
	<-done
	if res.Added != 300 {
		t.Fatalf("during filing: %+v", res)
	}
	res = f.update(UpdateOptions{})
	if res.Added != 0 || res.Removed != 0 || len(res.Problems) != 0 {
		t.Fatalf("after filing: %+v", res)
	}
	c, _ := OpenRead(f.path)
	defer c.Close()
	var inRoot int
	c.db.QueryRow(`SELECT count(*) FROM items WHERE dir = ''`).Scan(&inRoot)
	if inRoot != 0 {
		t.Errorf("%d items still recorded in the root after filing", inRoot)
	}
	if got := f.search("body"); len(got) != 300 {
		t.Errorf("found %d items", len(got))
	}
}

func openReader(root string) (*archive.Reader, error) {
	return archive.OpenReader(root, archive.ReaderOptions{})
}

// TestAtRest: after Update the catalog is in rollback-journal mode, so
// that readers who may not write (the archive group) can open it; a
// search by the owner leaves it so.
func TestAtRest(t *testing.T) {
	f := hookFixture(t)
	f.update(UpdateOptions{})
	f.search("*")
	c, err := OpenRead(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mode string
	c.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode)
	if mode != "delete" {
		t.Errorf("journal_mode at rest = %q, want delete", mode)
	}
}
