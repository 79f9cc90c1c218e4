package sealog_test

import (
	"testing"
	"time"
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
