package retention_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/retention"
	"github.com/postfix-archive/mailarchive/sealog"
)

// TestApplyTombstones: with a sealed log, apply needs the signer key, and
// each disposal is tombstoned first, so verify stays clean; holds and
// disposals are in the audit trail.
func TestApplyTombstones(t *testing.T) {
	root := t.TempDir()
	old := time.Now().Add(-10 * 24 * time.Hour)
	gone := item(t, root, old, "l")
	kept := item(t, root, old.Add(time.Second), "keep")
	policy := filepath.Join(t.TempDir(), "retention.conf")
	os.WriteFile(policy, []byte("default 1d\nkeep 10y tag=keep\n"), 0o644)
	skey, _, _ := sealog.GenerateKeys("ret.example/mail")
	keyFile := filepath.Join(t.TempDir(), "signer.key")
	os.WriteFile(keyFile, []byte(skey+"\n"), 0o600)
	s, _ := sealog.ParseSigner(skey)
	if _, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: root, Signer: s}); err != nil {
		t.Fatal(err)
	}
	if code, _, errs := run(t, retention.Command, "-d", root, "--policy", policy, "apply"); code != 2 || !strings.Contains(errs, "--signer") {
		t.Fatalf("apply without --signer on a sealed archive: %d %q", code, errs)
	}
	if code, out, errs := run(t, retention.HoldCommand, "-d", root, "--matter", "case-9", "--query", "tag:keep", "add"); code != 0 {
		t.Fatalf("hold: %d %q %q", code, out, errs)
	}
	code, out, errs := run(t, retention.Command, "-d", root, "--policy", policy, "--signer", keyFile, "apply")
	if code != 0 || !strings.Contains(out, "disposed 1") {
		t.Fatalf("apply: %d %q %q", code, out, errs)
	}
	rep, err := sealog.Verify(context.Background(), sealog.VerifyOptions{Root: root, Verifier: s.Verifier})
	if err != nil || !rep.Clean() {
		t.Fatalf("verify after disposal: %v %v", rep.Findings, err)
	}
	_, pending, err := sealog.ReadAudit(root, time.Time{})
	var actions []string
	for _, e := range pending {
		actions = append(actions, e.Action+":"+strings.Join(e.IDs, ","))
	}
	if err != nil || strings.Join(actions, " ") != "hold: dispose:"+gone {
		t.Fatalf("audit trail: %v %v", actions, err)
	}
	_ = kept
}
