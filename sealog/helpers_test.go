package sealog_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/filer"
	"github.com/postfix-archive/mailarchive/sealog"
)

// testArchive is an archive root with a key pair.
type testArchive struct {
	t      *testing.T
	root   string
	signer *sealog.Signer
	vkey   string
	now    time.Time
}

func newArchive(t *testing.T) *testArchive {
	t.Helper()
	skey, vkey, err := sealog.GenerateKeys("archive.example/mail")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sealog.ParseSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return &testArchive{t: t, root: t.TempDir(), signer: s, vkey: vkey,
		now: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
}

// addItem writes a complete item stamped at, in the root, as a writer does
// (the .eml first, the .json last).
func (a *testArchive) addItem(at time.Time, body string) string {
	a.t.Helper()
	id, err := archive.NewID(at)
	if err != nil {
		a.t.Fatal(err)
	}
	a.writeItem(a.root, id, body)
	return id
}

func (a *testArchive) writeItem(dir, id, body string) {
	a.t.Helper()
	eml := []byte("Subject: " + body + "\r\n\r\n" + body + "\r\n")
	sum := sha256.Sum256(eml)
	env := archive.Envelope{Version: 1, ID: id, Source: archive.SourceProxy, ArchivedAt: a.now,
		Outcome: archive.OutcomeAccepted, MailFrom: &archive.MailFrom{Addr: "a@example.org"},
		Message: archive.Message{Size: int64(len(eml)), SHA256: hex.EncodeToString(sum[:]), Subject: body}}
	js, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		a.t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id+".eml"), eml, 0o640); err != nil {
		a.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, id+".json"), append(js, '\n'), 0o640); err != nil {
		a.t.Fatal(err)
	}
}

// file runs the filer over the root.
func (a *testArchive) file() {
	a.t.Helper()
	rep, err := filer.Run(filer.Options{Root: a.root, Now: func() time.Time { return a.now }})
	if err != nil || len(rep.Problems) > 0 {
		a.t.Fatalf("filer: %v %v", err, rep.Problems)
	}
}

func (a *testArchive) seal() sealog.SealResult {
	a.t.Helper()
	res, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: a.root, Signer: a.signer,
		SealAfter: time.Hour, Now: func() time.Time { return a.now }})
	if err != nil {
		a.t.Fatalf("seal: %v", err)
	}
	if len(res.Problems) > 0 {
		a.t.Fatalf("seal problems: %v", res.Problems)
	}
	return res
}

func (a *testArchive) verify(external []byte) *sealog.Report {
	a.t.Helper()
	v, err := sealog.LoadVerifier(a.vkey)
	if err != nil {
		a.t.Fatal(err)
	}
	rep, err := sealog.Verify(context.Background(), sealog.VerifyOptions{Root: a.root, Verifier: v, External: external})
	if err != nil {
		a.t.Fatalf("verify: %v", err)
	}
	return rep
}

func (a *testArchive) mustClean(rep *sealog.Report) {
	a.t.Helper()
	if !rep.Clean() {
		for _, f := range rep.Findings {
			a.t.Errorf("finding: %v", f)
		}
		a.t.FailNow()
	}
}

// path of an item's file wherever it is.
func (a *testArchive) path(id, ext string) string {
	a.t.Helper()
	rd, err := archive.OpenReader(a.root, archive.ReaderOptions{})
	if err != nil {
		a.t.Fatal(err)
	}
	it, err := rd.Locate(id)
	if err != nil {
		a.t.Fatal(err)
	}
	if ext == ".eml" {
		return it.EMLPath
	}
	return it.JSONPath
}

func (a *testArchive) checkpoint() []byte {
	a.t.Helper()
	b, err := os.ReadFile(filepath.Join(a.root, "log", "checkpoint"))
	if err != nil {
		a.t.Fatal(err)
	}
	return b
}

// days fills three days with n items each, files and seals them, with the
// clock ending a day after the last.
func (a *testArchive) days(n int) []string {
	a.t.Helper()
	var ids []string
	for d := 0; d < 3; d++ {
		for i := 0; i < n; i++ {
			ids = append(ids, a.addItem(a.now.Add(time.Duration(i)*time.Minute), fmt.Sprintf("day %d item %d", d, i)))
		}
		a.now = a.now.Add(24 * time.Hour)
		a.file()
		a.seal()
	}
	a.now = a.now.Add(24 * time.Hour)
	a.seal()
	return ids
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func openReader(t *testing.T, root string) *archive.Reader {
	t.Helper()
	rd, err := archive.OpenReader(root, archive.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rd
}
