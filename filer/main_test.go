package filer

import (
	"github.com/postfix-archive/mailarchive/internal/buildinfo"

	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runMain(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestMainUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string
		err  string
	}{
		{[]string{"--help"}, 0, "Exit status", ""},
		{[]string{"--version"}, 0, buildinfo.String("filer"), ""},
		{nil, 2, "", "want one archive root"},
		{[]string{"a", "b"}, 2, "", "got 2 arguments"},
		{[]string{"--bogus", "a"}, 2, "", "unknown flag"},
		{[]string{"--older-than", "soon", "a"}, 2, "", "invalid argument"},
		{[]string{"--older-than", "-1h", "a"}, 2, "", "negative"},
		{[]string{"/nonexistent/archive"}, 1, "", "no such file"},
	} {
		code, out, errs := runMain(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errs, tc.err) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, code, out, errs, tc.code, tc.out, tc.err)
		}
	}
}

func TestMainRun(t *testing.T) {
	root := t.TempDir()
	old := writeItem(t, root, time.Now().Add(-48*time.Hour))
	young := writeItem(t, root, time.Now())

	code, out, errs := runMain("-n", "--older-than", "24h", root)
	if code != 0 || !strings.Contains(out, "would file 1,") || errs != "" {
		t.Errorf("dry run: exit %d %q %q", code, out, errs)
	}
	code, out, errs = runMain("-v", "--older-than=24h", root)
	if code != 0 || !strings.Contains(out, "filed 1, finished 0, deduplicated 0; skipped 1 (recent 1, incomplete 0, foreign 0); recovered 0; problems 0") ||
		!strings.Contains(out, "filed "+old+" -> ") || !strings.Contains(out, "recent "+young) {
		t.Errorf("exit %d %q %q", code, out, errs)
	}
	// Quiet when nothing is wrong.
	code, out, _ = runMain("-q", root)
	if code != 0 || out != "" {
		t.Errorf("quiet: exit %d %q", code, out)
	}
	// Problems: exit 1, reported on stderr, summary even with -q.
	orphan := writeItem(t, root, time.Now())
	os.Remove(filepath.Join(root, orphan+".eml"))
	code, out, errs = runMain("-q", root)
	if code != 1 || !strings.Contains(errs, "problem: "+orphan) || !strings.Contains(out, "problems 1") {
		t.Errorf("problems: exit %d %q %q", code, out, errs)
	}
	// Locked: exit 3, nothing done.
	unlock, err := lock(root)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	code, _, errs = runMain(root)
	if code != 3 || !strings.Contains(errs, "another filer") {
		t.Errorf("locked: exit %d %q", code, errs)
	}
	if code, out, errs := runMain("-q", root); code != 3 || out+errs != "" {
		t.Errorf("locked, quiet: exit %d %q %q", code, out, errs)
	}
}

func TestMainDest(t *testing.T) {
	root, dest := t.TempDir(), t.TempDir()
	id := writeItem(t, root, t0)
	if code, out, errs := runMain("--dest", dest, root); code != 0 {
		t.Fatalf("exit %d %q %q", code, out, errs)
	}
	checkFiled(t, root, dest, map[string]string{id: ""})
}
