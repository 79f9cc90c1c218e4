package main_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/postfix-archive/mailarchive/archive"
)

// binDir holds the archiver built for these tests, in a directory every
// user may traverse (the privilege tests run it as other users).
var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		d, err := os.MkdirTemp("", "archiver-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(d)
		os.Chmod(d, 0o755)
		if err := build(filepath.Join(d, "archiver"), ""); err != nil {
			fmt.Fprintln(os.Stderr, "building archiver:", err)
			return 1
		}
		binDir = d
		return m.Run()
	}())
}

// build builds the archiver into out, with archiveDir as its built-in
// archive root when set. Static, as install.sh documents: a setuid binary
// should not depend on the dynamic loader.
func build(out, archiveDir string) error {
	args := []string{"build", "-trimpath", "-o", out}
	if archiveDir != "" {
		args = append(args, "-ldflags", "-X github.com/postfix-archive/mailarchive/wrapper.DefaultArchiveDir="+archiveDir)
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func archiver() string { return filepath.Join(binDir, "archiver") }

// runArchiver runs the built binary; cred, when set, runs it as that user.
func runArchiver(t *testing.T, stdin string, env []string, cred *syscall.Credential, args ...string) (int, string, string) {
	t.Helper()
	return runBinary(t, archiver(), stdin, env, cred, args...)
}

func runBinary(t *testing.T, bin, stdin string, env []string, cred *syscall.Credential, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// completeItems lists the IDs of complete items in root and fails on any
// other entry besides tmp/ and what filer puts there.
func completeItems(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range ents {
		name := e.Name()
		switch {
		case name == "tmp" && e.IsDir(), name == ".wal" && e.IsDir(), name == ".filer.lock":
			// writes in progress, the writers' journal, the filer's lock
		case e.IsDir() && len(name) == 4 && strings.Trim(name, "0123456789") == "": // the dated tree filer makes
		case strings.HasSuffix(name, ".json"):
			id := strings.TrimSuffix(name, ".json")
			if _, err := os.Stat(filepath.Join(root, id+".eml")); err != nil {
				t.Errorf("%s without .eml", name)
			}
			ids = append(ids, id)
		case strings.HasSuffix(name, ".eml"):
		default:
			t.Errorf("unexpected entry %q in the archive root", name)
		}
	}
	return ids
}

func TestVersion(t *testing.T) {
	code, out, _ := runArchiver(t, "", nil, nil, "--version")
	if code != 0 || !strings.HasPrefix(out, "archiver ") {
		t.Errorf("exit %d, %q", code, out)
	}
}

// Tags are hostile input: whatever they are, the item lands in the root
// under an ID that decodes back to them (truncated only when too long to
// fit a file name), and the envelope keeps them whole.
func TestHostileTags(t *testing.T) {
	long := strings.Repeat("é/.", 10<<10/4)
	for _, tc := range []struct {
		name string
		tag  string
	}{
		{"dotdot path", "../../etc"},
		{"slash", "a/b"},
		{"dot", "."},
		{"dotdot", ".."},
		{"empty", ""},
		{"percent", "%2F"},
		{"newline", "a\nb"},
		{"non-ASCII", "Grüße-日本"},
		{"long", long},
		{"long ASCII", strings.Repeat("a", 10<<10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			root := filepath.Join(parent, "archive")
			msg := "Subject: tags\n\nbody\n"
			code, _, stderr := runArchiver(t, msg, nil, nil, "-d", root, tc.tag, tc.tag, "sh", "-c", "cat >/dev/null")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 1 {
				t.Errorf("files beside the archive root: %v", ents)
			}
			ids := completeItems(t, root)
			if len(ids) != 1 {
				t.Fatalf("items %v", ids)
			}
			id := ids[0]
			if len(id) > 200 {
				t.Errorf("ID is %d bytes long", len(id))
			}
			pid, err := archive.ParseID(id)
			if err != nil {
				t.Fatalf("ID %q does not parse: %v", id, err)
			}
			if len(pid.Tags) == 0 || !strings.HasPrefix(tc.tag, pid.Tags[0]) {
				t.Errorf("ID %q: tags %q", id, pid.Tags)
			}
			if len(tc.tag) < 40 && (len(pid.Tags) != 2 || pid.Tags[0] != tc.tag || pid.Tags[1] != tc.tag) {
				t.Errorf("ID %q: tags %q, want two of %q", id, pid.Tags, tc.tag)
			}
			env, err := archive.ReadEnvelope(filepath.Join(root, id+".json"))
			if err != nil {
				t.Fatal(err)
			}
			if len(env.Tags) != 2 || env.Tags[0] != tc.tag || env.Tags[1] != tc.tag {
				t.Errorf("envelope tags %q", env.Tags)
			}
			got, _ := os.ReadFile(filepath.Join(root, id+".eml"))
			if string(got) != msg {
				t.Errorf(".eml %q", got)
			}
		})
	}
}
