package archive

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// commitAt writes a complete item whose ID has the given stamp.
func commitAt(t *testing.T, s *Store, at time.Time, body string) string {
	t.Helper()
	s.now = func() time.Time { return at }
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, body)
	if err := w.Commit(&Envelope{Source: SourceProxy}); err != nil {
		t.Fatal(err)
	}
	return w.ID()
}

// file moves an item as the filer does: .eml first, .json last.
func fileItem(t *testing.T, root, id string, stamp time.Time, moveJSON bool) {
	t.Helper()
	dir := filepath.Join(root, DatedDir(stamp, false))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, id+".eml"), filepath.Join(dir, id+".eml")); err != nil {
		t.Fatal(err)
	}
	if moveJSON {
		if err := os.Rename(filepath.Join(root, id+".json"), filepath.Join(dir, id+".json")); err != nil {
			t.Fatal(err)
		}
	}
}

func walkIDs(t *testing.T, r *Reader) (ids []string, problems []Problem) {
	t.Helper()
	err := r.Walk(func(it Item) error {
		f, err := it.Open()
		if err != nil {
			return err
		}
		f.Close()
		if _, err := it.Envelope(); err != nil {
			return err
		}
		ids = append(ids, it.ID)
		return nil
	}, func(p Problem) { problems = append(problems, p) })
	if err != nil {
		t.Fatal(err)
	}
	return ids, problems
}

// Walk and Locate find items in the root, filed, and half-filed (the filer
// between its two moves), and report damage without stopping.
func TestReaderWalkAndLocate(t *testing.T) {
	s := newTestStore(t)
	d1 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	d2 := time.Date(2026, 11, 21, 23, 59, 59, 0, time.UTC)
	inRoot := commitAt(t, s, d2, "root\r\n")
	filed := commitAt(t, s, d1, "filed\r\n")
	half := commitAt(t, s, d1, "half\r\n")
	noEML := commitAt(t, s, d2, "gone\r\n")
	orphan := commitAt(t, s, d1, "orphan\r\n")
	fileItem(t, s.root, filed, d1, true)
	fileItem(t, s.root, half, d1, false)
	os.Remove(s.Path(noEML, ".eml"))
	fileItem(t, s.root, orphan, d1, true)
	os.Remove(filepath.Join(s.root, DatedDir(d1, false), orphan+".json"))
	// Things that are not items: a writer's .eml alone, tmp/, foreign names.
	mustWrite(t, filepath.Join(s.root, "20261124T130501Z.aaaaaaaaaaaaaaaa.eml"), []byte("x"))
	mustWrite(t, filepath.Join(s.root, "notes.txt"), []byte("x"))
	os.Mkdir(filepath.Join(s.root, "index"), 0o750)

	r, err := OpenReader(s.root, ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ids, problems := walkIDs(t, r)
	slices.Sort(ids)
	want := []string{inRoot, filed, half}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Errorf("Walk = %q, want %q", ids, want)
	}
	var gotErrs []error
	for _, p := range problems {
		gotErrs = append(gotErrs, p.Err)
		if p.ID != noEML && p.ID != orphan {
			t.Errorf("problem for %s: %v", p.ID, p)
		}
	}
	if len(problems) != 2 || !slices.Contains(gotErrs, ErrMissingMessage) || !slices.Contains(gotErrs, ErrOrphanMessage) {
		t.Errorf("problems = %v", problems)
	}
	for _, id := range []string{inRoot, filed, half} {
		it, err := r.Locate(id)
		if err != nil {
			t.Errorf("Locate(%s): %v", id, err)
			continue
		}
		f, err := it.Open()
		if err != nil {
			t.Errorf("Open(%s): %v", id, err)
			continue
		}
		f.Close()
	}
	if _, err := r.Locate(noEML); !errors.Is(err, ErrMissingMessage) {
		t.Errorf("Locate(no .eml) = %v", err)
	}
	if _, err := r.Locate("20261124T130501Z.bbbbbbbbbbbbbbbb"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Locate(unknown) = %v", err)
	}
	if _, err := r.Locate("../etc/passwd"); err == nil {
		t.Error("Locate accepted a path")
	}
	l, err := r.ListRoot()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(l.Foreign, []string{"notes.txt"}) {
		t.Errorf("Foreign = %q", l.Foreign)
	}
	days, _ := r.Days()
	if !slices.Equal(days, []string{DatedDir(d1, false)}) {
		t.Errorf("Days = %q", days)
	}
}

// Items filed by local time (filer --local-time) are found a day away.
func TestLocateLocalTime(t *testing.T) {
	s := newTestStore(t)
	at := time.Date(2026, 11, 20, 23, 30, 0, 0, time.UTC)
	id := commitAt(t, s, at, "x\r\n")
	dir := filepath.Join(s.root, "2026", "11", "21")
	os.MkdirAll(dir, 0o750)
	os.Rename(s.Path(id, ".eml"), filepath.Join(dir, id+".eml"))
	os.Rename(s.Path(id, ".json"), filepath.Join(dir, id+".json"))
	r, _ := OpenReader(s.root, ReaderOptions{})
	if it, err := r.Locate(id); err != nil || it.Dir != "2026/11/21" {
		t.Errorf("Locate = %+v, %v", it, err)
	}
}

func TestOpenReaderErrors(t *testing.T) {
	if _, err := OpenReader("", ReaderOptions{}); err == nil {
		t.Error("empty root accepted")
	}
	if _, err := OpenReader(filepath.Join(t.TempDir(), "missing"), ReaderOptions{}); err == nil {
		t.Error("missing root accepted")
	}
}
