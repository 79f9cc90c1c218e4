package sealog_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/sealog"
)

func TestSealVerifyAcrossDays(t *testing.T) {
	a := newArchive(t)
	ids := a.days(5)
	rep := a.verify(a.checkpoint())
	a.mustClean(rep)
	if rep.Items != len(ids) || rep.Days != 3 || rep.Unlogged != 0 {
		t.Fatalf("items %d days %d unlogged %d, want %d 3 0", rep.Items, rep.Days, rep.Unlogged, len(ids))
	}
	// A second seal with nothing new appends nothing.
	if res := a.seal(); res.Appended != 0 || len(res.Days) != 0 {
		t.Fatalf("second seal appended %d, sealed %v", res.Appended, res.Days)
	}
	// Items still in the root are logged but their day is not sealed yet.
	id := a.addItem(a.now, "unfiled")
	if res := a.seal(); res.Appended != 1 || len(res.Days) != 0 {
		t.Fatalf("seal of an unfiled item: %+v", res)
	}
	a.mustClean(a.verify(nil))
	a.now = a.now.Add(48 * time.Hour)
	a.file()
	res := a.seal()
	if len(res.Days) != 1 {
		t.Fatalf("the day of %s was not sealed: %+v", id, res)
	}
	a.mustClean(a.verify(a.checkpoint()))
}

// TestLateAndSince: an item that turns up in a sealed day and is then
// logged is reported late (not inserted); --since limits the re-hashing.
func TestLateAndSince(t *testing.T) {
	a := newArchive(t)
	ids := a.days(2)
	first := a.path(ids[0], ".eml")
	late, _ := archive.NewID(mustStamp(t, ids[0]))
	a.writeItem(filepath.Dir(first), late, "recovered after the seal")
	a.seal()
	rep := a.verify(nil)
	if len(rep.Findings) != 1 || rep.Findings[0].Kind != sealog.FindLate || rep.Findings[0].ID != late {
		t.Fatalf("findings %v", rep.Findings)
	}
	v, _ := sealog.LoadVerifier(a.vkey)
	// Alter an item of the first day: --since the second day does not re-hash it.
	os.WriteFile(first, []byte("changed"), 0o640)
	day2 := filepath.ToSlash(filepath.Dir(mustRel(t, a.root, a.path(ids[2], ".eml"))))
	rep, err := sealog.Verify(context.Background(), sealog.VerifyOptions{Root: a.root, Verifier: v, Since: strings.ReplaceAll(day2, "/", "-")})
	if err != nil || !rep.Clean() || rep.Items != 4 {
		t.Fatalf("--since %s: items %d, %v %v", day2, rep.Items, rep.Findings, err)
	}
}

func mustRel(t *testing.T, base, p string) string {
	t.Helper()
	r, err := filepath.Rel(base, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
