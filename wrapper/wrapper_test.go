package wrapper_test

import (
	"github.com/postfix-archive/mailarchive/internal/buildinfo"

	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/wrapper"
)

const testMessage = "From alice@example.org  Tue Nov 24 13:05:01 2026\n" +
	"Return-Path: <alice@example.org>\n" +
	"X-Original-To: bob@example.net\n" +
	"Delivered-To: bob@example.net\n" +
	"Message-Id: <1@example.org>\n" +
	"Subject: hello\n" +
	"\n" +
	"body line\r\n" +
	"last line without newline"

var postfixEnv = []string{
	"PATH=/usr/bin:/bin",
	"HOME=/home/bob",
	"SHELL=/bin/sh",
	"LOGNAME=bob",
	"USER=bob",
	"SENDER=alice@example.org",
	"RECIPIENT=bob+ext@example.net",
	"ORIGINAL_RECIPIENT=bob+ext@example.net",
	"EXTENSION=ext",
	"DOMAIN=example.net",
	"LOCAL=bob+ext",
	"CLIENT_ADDRESS=192.0.2.7",
	"CLIENT_HOSTNAME=mx.example.org",
	"CLIENT_HELO=mx.example.org",
	"CLIENT_PROTOCOL=ESMTP",
	"SASL_METHOD=PLAIN",
	"SASL_USERNAME=alice",
	"MAIL_CONFIG=/etc/postfix",
}

type result struct {
	code   int
	stdout string
	stderr string
}

func run(t *testing.T, stdin io.Reader, env []string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := wrapper.Main(args, wrapper.IO{Stdin: stdin, Stdout: &out, Stderr: &errb, Environ: env})
	return result{code, out.String(), errb.String()}
}

// items returns the complete items (ID with .eml and .json) in root.
func items(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if _, err := os.Stat(filepath.Join(root, id+".eml")); err != nil {
				t.Errorf("%s.json without .eml", id)
			}
			ids = append(ids, id)
		}
	}
	return ids
}

func checkItem(t *testing.T, root, id string, want []byte) *archive.Envelope {
	t.Helper()
	got, err := os.ReadFile(filepath.Join(root, id+".eml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("item %s: .eml differs from the input (%d vs %d bytes)", id, len(got), len(want))
	}
	env, err := archive.ReadEnvelope(filepath.Join(root, id+".json"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want)
	if env.ID != id || env.Version != 1 || env.Source != "wrapper" ||
		env.Message.Size != int64(len(want)) || env.Message.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("item %s: envelope %+v", id, env)
	}
	return env
}

func tmpEmpty(t *testing.T, root string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, "tmp"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in tmp/: %s", e.Name())
	}
}

// deliverScript copies stdin to $OUT/msg and its arguments to $OUT/args, then
// exits with $CODE (default 0).
func deliverScript(t *testing.T, out string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "deliver")
	script := "#!/bin/sh\n" +
		"printf '%s\\n' \"$@\" > '" + out + "/args'\n" +
		"cat > '" + out + "/msg'\n" +
		"exit ${CODE:-0}\n"
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestArchiveThenDeliver(t *testing.T) {
	root := filepath.Join(t.TempDir(), "archive")
	out := t.TempDir()
	deliver := deliverScript(t, out)
	// COMMAND's own flags, even ones the archiver has, are COMMAND's.
	r := run(t, strings.NewReader(testMessage), postfixEnv,
		"-d", root, "x", "bob", deliver, "-d", "--version", "--help", "bob")
	if r.code != 0 {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if r.stdout != "" || r.stderr != "" {
		t.Errorf("output on success: %q %q", r.stdout, r.stderr)
	}
	args, _ := os.ReadFile(filepath.Join(out, "args"))
	if string(args) != "-d\n--version\n--help\nbob\n" {
		t.Errorf("COMMAND got args %q", args)
	}
	delivered, _ := os.ReadFile(filepath.Join(out, "msg"))
	if string(delivered) != testMessage {
		t.Errorf("COMMAND got %q", delivered)
	}
	ids := items(t, root)
	if len(ids) != 1 {
		t.Fatalf("items %v", ids)
	}
	env := checkItem(t, root, ids[0], []byte(testMessage))
	pid, err := archive.ParseID(ids[0])
	if err != nil || len(pid.Tags) != 2 || pid.Tags[0] != "x" || pid.Tags[1] != "bob" {
		t.Errorf("ID %s: tags %q, %v", ids[0], pid.Tags, err)
	}
	if len(env.Tags) != 2 || env.Tags[0] != "x" || env.Tags[1] != "bob" {
		t.Errorf("envelope tags %q", env.Tags)
	}
	wantEnv := map[string]string{
		"USER": "bob", "SENDER": "alice@example.org", "RECIPIENT": "bob+ext@example.net",
		"ORIGINAL_RECIPIENT": "bob+ext@example.net", "EXTENSION": "ext", "DOMAIN": "example.net",
		"LOCAL": "bob+ext", "CLIENT_ADDRESS": "192.0.2.7", "CLIENT_HOSTNAME": "mx.example.org",
		"CLIENT_HELO": "mx.example.org", "CLIENT_PROTOCOL": "ESMTP", "SASL_METHOD": "PLAIN",
		"SASL_USERNAME": "alice",
	}
	if len(env.Env) != len(wantEnv) {
		t.Errorf("env %v, want %v", env.Env, wantEnv)
	}
	for k, v := range wantEnv {
		if env.Env[k] != v {
			t.Errorf("env[%s] = %q, want %q", k, env.Env[k], v)
		}
	}
	c := env.Client
	if c == nil || c.Addr != "192.0.2.7" || c.Name != "mx.example.org" || c.Helo != "mx.example.org" ||
		c.Proto != "ESMTP" || c.Auth != "alice" {
		t.Errorf("client %+v", c)
	}
	if env.MailFrom != nil || env.RcptTo != nil || env.Outcome != "" {
		t.Errorf("invented SMTP fields: %+v %+v %q", env.MailFrom, env.RcptTo, env.Outcome)
	}
	if env.Message.MessageID != "<1@example.org>" || env.Message.Subject != "hello" {
		t.Errorf("message fields %+v", env.Message)
	}
	tmpEmpty(t, root)
}

func TestNoDeliveryEnvironment(t *testing.T) {
	root := t.TempDir()
	r := run(t, strings.NewReader("x"), []string{"PATH=/usr/bin:/bin"}, "-d", root, "a", "b", "true")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	env := checkItem(t, root, items(t, root)[0], []byte("x"))
	if env.Env != nil || env.Client != nil {
		t.Errorf("env %v client %+v", env.Env, env.Client)
	}
}

func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		command []string
		want    int
		stderr  string
	}{
		{"ok", []string{"sh", "-c", "cat >/dev/null"}, 0, ""},
		{"bounce", []string{"sh", "-c", "cat >/dev/null; exit 67"}, 67, ""},
		{"defer", []string{"sh", "-c", "exit 75"}, 75, ""},
		{"one", []string{"false"}, 1, ""},
		{"signal", []string{"sh", "-c", "kill -KILL $$"}, 75, "killed by signal killed"},
		{"not found", []string{"/nonexistent/deliver"}, 75, "cannot start"},
		{"not executable", []string{"/etc/passwd"}, 75, "cannot start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			r := run(t, strings.NewReader(testMessage), nil, append([]string{"-d", root, "t1", "t2"}, tc.command...)...)
			if r.code != tc.want || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("exit %d stderr %q, want %d and %q", r.code, r.stderr, tc.want, tc.stderr)
			}
			// Whatever COMMAND did, the message was archived first.
			if ids := items(t, root); len(ids) != 1 {
				t.Errorf("items %v", ids)
			} else {
				checkItem(t, root, ids[0], []byte(testMessage))
			}
		})
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want int
		out  string
		err  string
	}{
		{"help", []string{"--help"}, 0, "mailbox_command = /usr/local/bin/archiver local \"$USER\" /usr/bin/procmail -a \"$EXTENSION\"", ""},
		{"help short", []string{"-h"}, 0, "Exit status", ""},
		{"version", []string{"--version"}, 0, buildinfo.String("archiver"), ""},
		{"no operands", nil, 75, "", "want TAG1 TAG2 COMMAND"},
		{"no command", []string{"a", "b"}, 75, "", "got 2 operand"},
		{"unknown flag", []string{"--bogus", "a", "b", "c"}, 75, "", "unknown flag"},
		{"empty dir", []string{"-d", "", "a", "b", "c"}, 75, "", "must not be empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, strings.NewReader(""), nil, tc.args...)
			if r.code != tc.want || !strings.Contains(r.stdout, tc.out) || !strings.Contains(r.stderr, tc.err) {
				t.Errorf("exit %d stdout %q stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tc.want, tc.out, tc.err)
			}
		})
	}
}

// A message that cannot be archived is not delivered.
func TestArchiveFailureDefers(t *testing.T) {
	out := t.TempDir()
	deliver := deliverScript(t, out)
	notDir := filepath.Join(t.TempDir(), "file")
	os.WriteFile(notDir, nil, 0o644)
	r := run(t, strings.NewReader(testMessage), nil, "-d", filepath.Join(notDir, "archive"), "a", "b", deliver)
	if r.code != 75 || !strings.Contains(r.stderr, "not archived") {
		t.Errorf("exit %d stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(out, "msg")); err == nil {
		t.Error("COMMAND ran although the message was not archived")
	}
}

type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("connection reset by gremlins")
	}
	n := min(len(p), r.n)
	for i := range p[:n] {
		p[i] = 'x'
	}
	r.n -= n
	return n, nil
}

func TestStdinErrorDefers(t *testing.T) {
	root := t.TempDir()
	out := t.TempDir()
	r := run(t, &failingReader{n: 100000}, nil, "-d", root, "a", "b", deliverScript(t, out))
	if r.code != 75 || !strings.Contains(r.stderr, "gremlins") {
		t.Errorf("exit %d stderr %q", r.code, r.stderr)
	}
	if ids := items(t, root); len(ids) != 0 {
		t.Errorf("items %v", ids)
	}
	tmpEmpty(t, root)
	if _, err := os.Stat(filepath.Join(out, "msg")); err == nil {
		t.Error("COMMAND ran although the message was not archived")
	}
}

// Postfix may deliver a message twice: two complete items.
func TestDeliveredTwice(t *testing.T) {
	root := t.TempDir()
	for range 2 {
		if r := run(t, strings.NewReader(testMessage), postfixEnv, "-d", root, "x", "bob", "sh", "-c", "cat >/dev/null"); r.code != 0 {
			t.Fatal(r)
		}
	}
	ids := items(t, root)
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("items %v", ids)
	}
	for _, id := range ids {
		checkItem(t, root, id, []byte(testMessage))
	}
}

// patternReader yields n bytes of a repeating pattern without holding them.
type patternReader struct{ n, off int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.off)]
	for i := range p {
		p[i] = byte((r.off + int64(i)) % 251)
	}
	r.off += int64(len(p))
	return len(p), nil
}

// A large message streams through: the item and what COMMAND reads agree.
func TestLargeMessage(t *testing.T) {
	const size = 64<<20 + 12345
	root := t.TempDir()
	h := sha256.New()
	io.Copy(h, &patternReader{n: size})
	want := hex.EncodeToString(h.Sum(nil))
	r := run(t, &patternReader{n: size}, nil, "-d", root, "a", "b", "sh", "-c", "sha256sum")
	if r.code != 0 || !strings.HasPrefix(r.stdout, want) {
		t.Fatalf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	env, err := archive.ReadEnvelope(filepath.Join(root, items(t, root)[0]+".json"))
	if err != nil || env.Message.Size != size || env.Message.SHA256 != want {
		t.Errorf("envelope %+v %v", env, err)
	}
}
