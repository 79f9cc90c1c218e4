package sealog_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/sealog"
)

// TestTamperMatrix: each way of tampering with a sealed archive is found
// and named by verify; the archive verifies clean before.
func TestTamperMatrix(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(a *testArchive, ids []string) []byte // returns the checkpoint kept outside, if any
		want   string
		id     int // index in ids of the item the finding names, -1 for none
	}{
		{"byte flipped in an .eml", func(a *testArchive, ids []string) []byte {
			p := a.path(ids[1], ".eml")
			b, _ := os.ReadFile(p)
			b[3] ^= 1
			os.WriteFile(p, b, 0o640)
			return nil
		}, sealog.FindAlteredEML, 1},
		{".eml and .json rewritten consistently", func(a *testArchive, ids []string) []byte {
			dir := filepath.Dir(a.path(ids[2], ".eml"))
			a.writeItem(dir, ids[2], "a better story")
			return nil
		}, sealog.FindAlteredEML, 2},
		{".json alone rewritten", func(a *testArchive, ids []string) []byte {
			p := a.path(ids[3], ".json")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"accepted"`, `"rejected"`, 1)), 0o640)
			return nil
		}, sealog.FindAlteredJSON, 3},
		{"item deleted", func(a *testArchive, ids []string) []byte {
			eml, js := a.path(ids[4], ".eml"), a.path(ids[4], ".json")
			os.Remove(eml)
			os.Remove(js)
			return nil
		}, sealog.FindRemoved, 4},
		{"forged item added to a sealed day", func(a *testArchive, ids []string) []byte {
			it := a.path(ids[0], ".json")
			forged, _ := archive.NewID(mustStamp(t, ids[0]))
			a.writeItem(filepath.Dir(it), forged, "forged")
			return nil
		}, sealog.FindInserted, -1},
		{"a day's directory removed", func(a *testArchive, ids []string) []byte {
			os.RemoveAll(filepath.Dir(a.path(ids[0], ".eml")))
			return nil
		}, sealog.FindDayRemoved, -1},
		{"log truncated", func(a *testArchive, ids []string) []byte {
			matches, _ := filepath.Glob(filepath.Join(a.root, "log", "tile", "entries", "*"))
			for _, m := range matches {
				os.RemoveAll(m)
			}
			return nil
		}, sealog.FindTruncated, -1},
		{"whole log rebuilt and signed with another key", func(a *testArchive, ids []string) []byte {
			os.RemoveAll(filepath.Join(a.root, "log"))
			skey, _, _ := sealog.GenerateKeys("archive.example/mail")
			a.signer, _ = sealog.ParseSigner(skey)
			a.seal()
			return nil
		}, sealog.FindRewritten, -1},
		{"rollback to an older checkpoint", func(a *testArchive, ids []string) []byte {
			logDir := filepath.Join(a.root, "log")
			backup := filepath.Join(t.TempDir(), "log")
			copyDir(t, logDir, backup)
			a.addItem(a.now, "after the backup")
			a.seal()
			kept := a.checkpoint() // the officer's copy
			os.RemoveAll(logDir)
			copyDir(t, backup, logDir)
			return kept
		}, sealog.FindRollback, -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := newArchive(t)
			ids := a.days(5)
			a.mustClean(a.verify(a.checkpoint()))
			ext := c.tamper(a, ids)
			if c.name == "whole log rebuilt and signed with another key" {
				a.signer = nil
			}
			rep := a.verify(ext)
			found := false
			for _, f := range rep.Findings {
				t.Logf("finding: %v", f)
				if f.Kind == c.want && (c.id < 0 || f.ID == ids[c.id]) {
					found = true
				}
			}
			if !found {
				t.Fatalf("verify did not report %s; findings: %v", c.want, rep.Findings)
			}
		})
	}
}

func mustStamp(t *testing.T, id string) time.Time {
	t.Helper()
	pid, err := archive.ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	return pid.Stamp
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o750)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, fi.Mode())
	})
	if err != nil {
		t.Fatal(err)
	}
}
