package filer

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

var t0 = time.Date(2026, 11, 24, 13, 5, 1, 0, time.UTC)

// writeItem writes a complete item directly (no fsync: tests and benchmarks
// need many, fast) and returns its ID.
func writeItem(tb testing.TB, root string, stamp time.Time, tags ...string) string {
	tb.Helper()
	id, err := archive.NewID(stamp, tags...)
	if err != nil {
		tb.Fatal(err)
	}
	writeFiles(tb, root, id, "Subject: "+id+"\n\nbody\n")
	return id
}

func writeFiles(tb testing.TB, dir, id, msg string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, id+".eml"), []byte(msg), 0o640); err != nil {
		tb.Fatal(err)
	}
	env := fmt.Sprintf(`{"version":1,"id":%q,"source":"wrapper","archived_at":"2026-11-24T13:05:01Z","message":{"size":%d,"sha256":"x"}}`+"\n", id, len(msg))
	if err := os.WriteFile(filepath.Join(dir, id+".json"), []byte(env), 0o640); err != nil {
		tb.Fatal(err)
	}
}

// storeItem archives a message through the real store.
func storeItem(t *testing.T, st *archive.Store, msg string, tags ...string) string {
	t.Helper()
	w, err := st.Create(tags...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&archive.Envelope{Source: archive.SourceWrapper}); err != nil {
		t.Fatal(err)
	}
	return w.ID()
}

// tree lists every regular file under dir as relative paths.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, rel)
		}
		return nil
	})
	sort.Strings(files)
	return files
}

// checkFiled checks that every ID is complete exactly once, in its dated
// directory under dest, with its original content, and gone from root.
func checkFiled(t *testing.T, root, dest string, want map[string]string) {
	t.Helper()
	if dest == "" {
		dest = root
	}
	for id, msg := range want {
		d := filepath.Join(dest, datedRel(t, id))
		got, err := os.ReadFile(filepath.Join(d, id+".eml"))
		if err != nil {
			t.Errorf("%s: %v", id, err)
			continue
		}
		if msg != "" && string(got) != msg {
			t.Errorf("%s: .eml %q, want %q", id, got, msg)
		}
		env, err := archive.ReadEnvelope(filepath.Join(d, id+".json"))
		if err != nil || env.ID != id {
			t.Errorf("%s: envelope %+v %v", id, env, err)
		}
		for _, ext := range []string{".eml", ".json"} {
			if _, err := os.Lstat(filepath.Join(root, id+ext)); err == nil {
				t.Errorf("%s%s still in the root", id, ext)
			}
		}
	}
	// Nothing but the wanted items in the dated tree.
	n := 0
	for _, f := range tree(t, dest) {
		if strings.Count(f, "/") == 3 {
			if strings.Contains(f, ".part") {
				t.Errorf("partial copy left: %s", f)
			}
			n++
		}
	}
	if n != 2*len(want) {
		t.Errorf("%d files in the dated tree, want %d: %v", n, 2*len(want), tree(t, dest))
	}
}

func datedRel(t *testing.T, id string) string {
	t.Helper()
	pid, err := archive.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	return pid.Stamp.UTC().Format("2006/01/02")
}
