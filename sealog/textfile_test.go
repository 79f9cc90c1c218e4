package sealog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The textfile is replaced atomically, so it must never replace a device,
// a directory or a link: verify --textfile /dev/null as root once turned
// /dev/null into a plain file.
func TestWriteTextfileRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "verify.prom")
	if err := WriteTextfile(p, &Report{}, true, time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), "mailarchive_verify_completed 1") {
		t.Errorf("textfile:\n%s", b)
	}
	if err := WriteTextfile(p, &Report{}, false, time.Unix(2, 0)); err != nil {
		t.Fatalf("rewrite of a regular file: %v", err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	link := filepath.Join(dir, "link")
	os.Symlink(p, link)
	for _, bad := range []string{sub, link} {
		if err := WriteTextfile(bad, &Report{}, true, time.Unix(3, 0)); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Error("the link was replaced")
	}
}
