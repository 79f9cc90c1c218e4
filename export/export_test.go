package export_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/export"
	"github.com/postfix-archive/mailarchive/internal/archivetest"
	"github.com/postfix-archive/mailarchive/internal/postfixtest"
)

// Messages an mbox must carry unchanged: From_ lines of every depth in
// the body, the wrapper's own leading From_ line, CRLF and LF, a message
// without a final line end, an empty message.
var messages = []struct {
	sender string
	msg    string
}{
	{"alice@example.org", "Subject: a\r\n\r\nFrom the start\r\n>From once\r\n>>From twice\r\nFrom\r\n From not at start\r\n"},
	{"", "From MAILER-DAEMON  Tue Dec  1 12:00:00 2026\nSubject: wrapper\n\nFrom here\n"},
	{"bob@example.net", "Subject: lf only\n\nline\n\n\nFrom after blank lines\n"},
	{"carol@example.net", "Subject: no final newline\r\n\r\nlast line without end"},
	{"dave@example.net", ""},
	{"eve@example.net", "Subject: big\r\n\r\n" + strings.Repeat("From x\r\n"+strings.Repeat("y", 100<<10)+"\r\n", 3)},
}

func items(t *testing.T) (*archive.Reader, []archive.Item, [][]byte) {
	root := t.TempDir()
	var want [][]byte
	for i, m := range messages {
		env := archive.Envelope{Source: "proxy", MailFrom: &archive.MailFrom{Addr: m.sender}}
		if _, err := archivetest.PutItem(root, time.Date(2026, 3, 1, 0, 0, i, 0, time.UTC), env, []byte(m.msg)); err != nil {
			t.Fatal(err)
		}
		want = append(want, []byte(m.msg))
	}
	r, err := archive.OpenReader(root, archive.ReaderOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var its []archive.Item
	if err := r.Walk(func(it archive.Item) error { its = append(its, it); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	return r, its, want
}

func exportAll(t *testing.T, r *archive.Reader, its []archive.Item, path string, opt export.Options) *export.Writer {
	w, err := export.Create(path, nil, opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range its {
		if err := w.Add(r, it); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return w
}

// readMbox is Python's mailbox module reading the mbox, each message's
// bytes with the mboxrd quoting taken off again.
const readMbox = `
import json, mailbox, re, sys
box = mailbox.mbox(sys.argv[1], create=False)
for key in box.keys():
    raw = box.get_bytes(key)
    raw = re.sub(rb'(?m)^>(>*From )', rb'\1', raw)
    print(json.dumps({"from": box.get_message(key).get_from(), "hex": raw.hex()}))
`

func TestMboxRoundTrip(t *testing.T) {
	py := postfixtest.RequireCommand(t, "python3")
	r, its, want := items(t)
	path := filepath.Join(t.TempDir(), "out.mbox")
	exportAll(t, r, its, path, export.Options{Format: export.MBox})
	out, err := exec.Command(py, "-c", readMbox, path).CombinedOutput()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("python read %d messages, want %d:\n%s", len(lines), len(want), out)
	}
	for i, l := range lines {
		var got struct{ From, Hex string }
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatal(err)
		}
		b, _ := hex.DecodeString(got.Hex)
		w := want[i]
		if len(w) > 0 && w[len(w)-1] != '\n' {
			w = append(w, '\n') // documented: an mbox cannot end a message without a line end
		}
		if !bytes.Equal(b, w) {
			t.Errorf("message %d read back as\n%q\nwant\n%q", i, b, w)
		}
		sender := messages[i].sender
		if sender == "" {
			sender = "MAILER-DAEMON"
		}
		if !strings.HasPrefix(got.From, sender+" ") {
			t.Errorf("message %d From_ line %q, want sender %s", i, got.From, sender)
		}
	}
}

func TestZipManifest(t *testing.T) {
	r, its, want := items(t)
	path := filepath.Join(t.TempDir(), "out.zip")
	extra := func(it archive.Item) ([]export.File, error) {
		return []export.File{{Suffix: ".note", Open: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader("note for " + it.ID)), nil
		}}}, nil
	}
	exportAll(t, r, its, path, export.Options{Format: export.Zip, Extra: extra})
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name] = b
	}
	checkManifest(t, files, len(its)*3)
	for i, it := range its {
		if !bytes.Equal(files[it.ID+".eml"], want[i]) {
			t.Errorf("%s.eml in the zip differs from the archived bytes", it.ID)
		}
		env, _ := os.ReadFile(it.JSONPath)
		if !bytes.Equal(files[it.ID+".json"], env) {
			t.Errorf("%s.json in the zip differs from the archived envelope", it.ID)
		}
	}
}

// checkManifest: every file but MANIFEST is listed once with its sha256
// and size, and nothing else is.
func checkManifest(t *testing.T, files map[string][]byte, n int) {
	t.Helper()
	m, ok := files[export.ManifestName]
	if !ok {
		t.Fatal("no MANIFEST")
	}
	listed := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(m))
	for sc.Scan() {
		var sum, name string
		var size int
		if _, err := fmt.Sscanf(sc.Text(), "%s %d %s", &sum, &size, &name); err != nil {
			t.Fatalf("MANIFEST line %q: %v", sc.Text(), err)
		}
		b, ok := files[name]
		h := sha256.Sum256(b)
		if !ok || hex.EncodeToString(h[:]) != sum || len(b) != size {
			t.Errorf("MANIFEST line %q does not match the file (%d bytes)", sc.Text(), len(b))
		}
		listed[name] = true
	}
	if len(listed) != n || len(files) != n+1 {
		t.Errorf("MANIFEST lists %d files, the export has %d besides it, want %d", len(listed), len(files)-1, n)
	}
}

func TestEMLDir(t *testing.T) {
	r, its, want := items(t)
	dir := filepath.Join(t.TempDir(), "out")
	exportAll(t, r, its, dir, export.Options{Format: export.EML})
	files := map[string][]byte{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		files[e.Name()] = b
	}
	checkManifest(t, files, len(its)*2)
	for i, it := range its {
		if !bytes.Equal(files[it.ID+".eml"], want[i]) {
			t.Errorf("%s.eml differs from the archived bytes", it.ID)
		}
	}
	// Never over an existing export.
	if _, err := export.Create(dir, nil, export.Options{Format: export.EML}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("export into a non-empty directory: %v", err)
	}
	f := filepath.Join(t.TempDir(), "x.mbox")
	os.WriteFile(f, []byte("keep"), 0o640)
	if _, err := export.Create(f, nil, export.Options{Format: export.MBox}); err == nil {
		t.Error("export over an existing file succeeded")
	}
}

// TestMovedDuringExport: the filer moves an item after it was found; the
// export locates it again.
func TestMovedDuringExport(t *testing.T) {
	r, its, want := items(t)
	it := its[0]
	day := filepath.Join(r.Root(), archive.DatedDir(it.Stamp, false))
	os.MkdirAll(day, 0o750)
	for _, ext := range []string{".eml", ".json"} {
		if err := os.Rename(filepath.Join(r.Root(), it.ID+ext), filepath.Join(day, it.ID+ext)); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "out")
	exportAll(t, r, its[:1], dir, export.Options{Format: export.EML})
	if b, _ := os.ReadFile(filepath.Join(dir, it.ID+".eml")); !bytes.Equal(b, want[0]) {
		t.Errorf("moved item exported as %q", b)
	}
}

// TestMismatch: an .eml changed after archiving is exported as it is and
// reported.
func TestMismatch(t *testing.T) {
	r, its, _ := items(t)
	os.WriteFile(its[0].EMLPath, []byte("tampered"), 0o640)
	w := exportAll(t, r, its, filepath.Join(t.TempDir(), "out.zip"), export.Options{Format: export.Zip})
	if len(w.Mismatches) != 1 || w.Mismatches[0] != its[0].ID {
		t.Errorf("Mismatches = %v", w.Mismatches)
	}
}
