package audit_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/audit"
	"github.com/postfix-archive/mailarchive/sealog"
)

func TestRecordSealList(t *testing.T) {
	root := t.TempDir()
	var many []string
	for i := 0; i < 5000; i++ { // more than one entry holds
		many = append(many, fmt.Sprintf("20261124T130501Z.%016d", i))
	}
	if err := audit.Record(root, audit.Export, `from:bob date:2026-11-01..2026-11-30 "a phrase"`, many); err != nil {
		t.Fatal(err)
	}
	if err := audit.Record(root, audit.Search, "", nil); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, "audit", "pending")); err != nil ||
		fi.Mode()&(os.ModeSetgid|os.ModeSticky|os.ModePerm) != os.ModeSetgid|os.ModeSticky|0o770 {
		t.Fatalf("audit/pending: %v %v (want group-writable, setgid, sticky)", fi.Mode(), err)
	}
	committed, pending, err := sealog.ReadAudit(root, time.Time{})
	if err != nil || len(committed) != 0 || len(pending) < 3 {
		t.Fatalf("before seal: %d committed, %d pending, %v", len(committed), len(pending), err)
	}
	skey, _, _ := sealog.GenerateKeys("audit.example/mail")
	s, _ := sealog.ParseSigner(skey)
	res, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: root, Signer: s})
	if err != nil || res.Audit != len(pending) {
		t.Fatalf("seal: %+v %v", res, err)
	}
	committed, pending, err = sealog.ReadAudit(root, time.Time{})
	if err != nil || len(pending) != 0 {
		t.Fatalf("after seal: %d pending, %v", len(pending), err)
	}
	var ids []string
	for _, e := range committed {
		if e.Action == audit.Export {
			ids = append(ids, e.IDs...)
			if e.Query != `from:bob date:2026-11-01..2026-11-30 "a phrase"` || e.User != audit.User() {
				t.Fatalf("entry %+v", e)
			}
		}
	}
	if strings.Join(ids, ",") != strings.Join(many, ",") {
		t.Fatalf("export entries hold %d IDs, want %d", len(ids), len(many))
	}
	v, _ := sealog.ParseSigner(skey)
	rep, err := sealog.Verify(context.Background(), sealog.VerifyOptions{Root: root, Verifier: v.Verifier})
	if err != nil || !rep.Clean() {
		t.Fatalf("verify: %v %v", rep.Findings, err)
	}
	// An audit trail cut short is found like the item log's.
	os.RemoveAll(filepath.Join(root, "audit", "tile", "entries"))
	rep, err = sealog.Verify(context.Background(), sealog.VerifyOptions{Root: root, Verifier: v.Verifier})
	if err != nil || len(rep.Findings) != 1 || rep.Findings[0].Kind != sealog.FindTruncated || !strings.HasPrefix(rep.Findings[0].Path, "audit/") {
		t.Fatalf("verify of a truncated audit trail: %v %v", rep.Findings, err)
	}
}
