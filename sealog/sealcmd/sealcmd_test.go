package sealcmd_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/internal/cli"
	"github.com/postfix-archive/mailarchive/sealog/sealcmd"
)

func run(t *testing.T, c cli.Command, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	st := c.Run(&cli.Env{Ctx: context.Background(), Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
		Program: "mailarchive " + c.Name}, args)
	return st, out.String(), errb.String()
}

func addItem(t *testing.T, root string, at time.Time) string {
	t.Helper()
	id, _ := archive.NewID(at)
	eml := []byte("Subject: cli\r\n\r\nbody\r\n")
	sum := sha256.Sum256(eml)
	js, _ := json.Marshal(archive.Envelope{Version: 1, ID: id, ArchivedAt: at, Outcome: "accepted",
		Message: archive.Message{Size: int64(len(eml)), SHA256: hex.EncodeToString(sum[:])}})
	os.WriteFile(filepath.Join(root, id+".eml"), eml, 0o640)
	os.WriteFile(filepath.Join(root, id+".json"), js, 0o640)
	return id
}

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o750)
	skey, vkey := filepath.Join(dir, "signer.key"), filepath.Join(dir, "verifier.pub")

	if st, _, e := run(t, sealcmd.Keygen, "--signer", skey); st != cli.ExitError || !strings.Contains(e, "required") {
		t.Fatalf("keygen without --verifier: %d %q", st, e)
	}
	st, out, e := run(t, sealcmd.Keygen, "--signer", skey, "--verifier", vkey, "--name", "test.example/mail")
	if st != 0 || !strings.HasPrefix(out, "test.example/mail+") {
		t.Fatalf("keygen: %d %q %q", st, out, e)
	}
	if fi, _ := os.Stat(skey); fi.Mode().Perm() != 0o600 {
		t.Fatalf("signer key mode %v", fi.Mode())
	}
	if st, _, _ := run(t, sealcmd.Keygen, "--signer", skey, "--verifier", vkey); st != cli.ExitError {
		t.Fatal("keygen overwrote existing keys")
	}
	os.Chmod(skey, 0o640)
	if st, _, e := run(t, sealcmd.Seal, "-d", root, "--signer", skey); st != cli.ExitError || !strings.Contains(e, "0600") {
		t.Fatalf("seal with a group-readable key: %d %q", st, e)
	}
	os.Chmod(skey, 0o600)

	id := addItem(t, root, time.Now().Add(-time.Hour))
	if st, out, e := run(t, sealcmd.Seal, "-d", root, "--signer", skey, "--json"); st != 0 || !strings.Contains(out, `"appended": 1`) {
		t.Fatalf("seal: %d %q %q", st, out, e)
	}
	prom := filepath.Join(dir, "verify.prom")
	if st, out, e := run(t, sealcmd.Verify, "-d", root, "--key", vkey, "--textfile", prom); st != 0 || !strings.HasPrefix(out, "clean:") {
		t.Fatalf("verify: %d %q %q", st, out, e)
	}
	if b, _ := os.ReadFile(prom); !strings.Contains(string(b), "mailarchive_verify_clean 1") {
		t.Fatalf("textfile: %s", b)
	}
	bundle := filepath.Join(dir, "proof.json")
	if st, _, e := run(t, sealcmd.Proof, "-d", root, id, "-o", bundle); st != 0 {
		t.Fatalf("proof: %d %q", st, e)
	}
	if st, out, _ := run(t, sealcmd.VerifyProof, bundle, "--key", vkey); st != 0 || !strings.HasPrefix(out, "OK: "+id) {
		t.Fatalf("verify-proof: %d %q", st, out)
	}
	if st, out, _ := run(t, sealcmd.Audit, "-d", root); st != 0 || !strings.Contains(out, "proof") || !strings.Contains(out, "(pending)") {
		t.Fatalf("audit: %d %q", st, out)
	}
	// Tampered: verify and verify-proof say so with exit 1.
	os.WriteFile(filepath.Join(root, id+".eml"), []byte("Subject: cli\r\n\r\nBODY\r\n"), 0o640)
	if st, out, _ := run(t, sealcmd.Verify, "-d", root, "--key", vkey, "--textfile", prom, "--json"); st != cli.ExitFindings || !strings.Contains(out, `"kind": "altered-eml"`) {
		t.Fatalf("verify of a tampered item: %d %q", st, out)
	}
	if b, _ := os.ReadFile(prom); !strings.Contains(string(b), `mailarchive_verify_findings{kind="altered-eml"} 1`) {
		t.Fatalf("textfile: %s", b)
	}
	b, _ := os.ReadFile(bundle)
	os.WriteFile(bundle, bytes.Replace(b, []byte(`"leaf_index": 0`), []byte(`"leaf_index": 1`), 1), 0o644)
	if st, out, _ := run(t, sealcmd.VerifyProof, bundle, "--key", vkey); st != cli.ExitFindings || !strings.HasPrefix(out, "FAILED") {
		t.Fatalf("verify-proof of a bad bundle: %d %q", st, out)
	}
	// Could not verify: exit 2, and the textfile says so.
	if st, _, _ := run(t, sealcmd.Verify, "-d", filepath.Join(dir, "nope"), "--key", vkey, "--textfile", prom); st != cli.ExitError {
		t.Fatal("verify of a missing root")
	}
	if b, _ := os.ReadFile(prom); !strings.Contains(string(b), "mailarchive_verify_completed 0") {
		t.Fatalf("textfile: %s", b)
	}
	if st, _, _ := run(t, sealcmd.Verify, "-d", root, "--key", "garbage"); st != cli.ExitError {
		t.Fatal("verify with a bad key")
	}
	if st, _, _ := run(t, sealcmd.Proof, "-d", root, "20261124T130501Z.aaaaaaaaaaaaaaaa", "-o", bundle); st != cli.ExitFindings {
		t.Fatal("proof of an unknown ID")
	}
}

func TestExportWithProofs(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.Mkdir(root, 0o750)
	skey, vkey := filepath.Join(dir, "signer.key"), filepath.Join(dir, "verifier.pub")
	if st, _, e := run(t, sealcmd.Keygen, "--signer", skey, "--verifier", vkey); st != 0 {
		t.Fatal(e)
	}
	var ids []string
	for i := 0; i < 3; i++ {
		ids = append(ids, addItem(t, root, time.Now().Add(-time.Duration(i+1)*time.Minute)))
	}
	if st, _, e := run(t, sealcmd.Seal, "-d", root, "--signer", skey); st != 0 {
		t.Fatal(e)
	}
	unlogged := addItem(t, root, time.Now())
	out := filepath.Join(dir, "out")
	// An item not in the log yet cannot be proved: the export says so.
	if st, _, e := run(t, sealcmd.Export, "-d", root, "--format", "eml", "-o", out, "--with-proofs", "*"); st != cli.ExitError || !strings.Contains(e, "run seal first") {
		t.Fatalf("export of an unlogged item with proofs: %d %q", st, e)
	}
	os.RemoveAll(out)
	os.Remove(filepath.Join(root, unlogged+".eml"))
	os.Remove(filepath.Join(root, unlogged+".json"))
	if st, _, e := run(t, sealcmd.Export, "-d", root, "--format", "eml", "-o", out, "--with-proofs", "--index", filepath.Join(dir, "cat2.sqlite"), "*"); st != 0 {
		t.Fatalf("export: %d %q", st, e)
	}
	manifest, _ := os.ReadFile(filepath.Join(out, "MANIFEST"))
	for _, name := range []string{"checkpoint", "VERIFY.txt"} {
		if !strings.Contains(string(manifest), " "+name+"\n") {
			t.Fatalf("MANIFEST lacks %s:\n%s", name, manifest)
		}
	}
	for _, id := range ids {
		st, o, e := run(t, sealcmd.VerifyProof, filepath.Join(out, id+".proof"), "--key", vkey)
		if st != 0 {
			t.Fatalf("verify-proof %s: %d %q %q", id, st, o, e)
		}
	}
	// The detached proof fails when its message is changed.
	os.WriteFile(filepath.Join(out, ids[0]+".eml"), []byte("x"), 0o640)
	if st, _, _ := run(t, sealcmd.VerifyProof, filepath.Join(out, ids[0]+".proof"), "--key", vkey); st != cli.ExitFindings {
		t.Fatal("a changed exported message still verifies")
	}
	// Both exports are in the audit trail (the failed one wrote files too).
	_, o, _ := run(t, sealcmd.Audit, "-d", root, "--json")
	if strings.Count(o, `"action":"export"`) != 2 {
		t.Fatalf("audit trail: %s", o)
	}
}
