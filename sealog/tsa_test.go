package sealog_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/postfix-archive/mailarchive/sealog"
)

// startTSA runs an RFC 3161 time-stamping authority on loopback with its
// own self-signed certificate.
func startTSA(t *testing.T) (url string, roots *x509.CertPool, hits *int) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test TSA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping},
		BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		body, _ := io.ReadAll(r.Body)
		req, err := timestamp.ParseRequest(body)
		if err != nil || r.Header.Get("Content-Type") != "application/timestamp-query" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		ts := timestamp.Timestamp{HashAlgorithm: req.HashAlgorithm, HashedMessage: req.HashedMessage,
			Time: time.Now(), Policy: asn1.ObjectIdentifier{1, 2, 3, 4}, SerialNumber: big.NewInt(int64(n)),
			AddTSACertificate: true}
		resp, err := ts.CreateResponseWithOpts(cert, key, crypto.SHA256)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/timestamp-reply")
		w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, roots, &n
}

func TestTimestampAndPublish(t *testing.T) {
	url, roots, hits := startTSA(t)
	a := newArchive(t)
	pub := t.TempDir()
	cmdOut := filepath.Join(t.TempDir(), "mailed")
	id := a.addItem(a.now, "stamped")
	for i, target := range []string{pub, "cat > " + cmdOut} {
		if i == 1 {
			a.addItem(a.now, "second")
		}
		res, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: a.root, Signer: a.signer, TSA: url,
			Publish: target, Now: func() time.Time { return a.now }})
		if err != nil || res.Timestamps != 1 || !res.Published {
			t.Fatalf("seal %d: %+v %v", i, res, err)
		}
	}
	if *hits != 2 {
		t.Fatalf("TSA asked %d times, want 2", *hits)
	}
	// Published: the directory got the first checkpoint, the command the second.
	first, _ := os.ReadFile(filepath.Join(pub, "checkpoint.1"))
	second, _ := os.ReadFile(cmdOut)
	if !strings.Contains(string(first), "\n1\n") || string(second) != string(a.checkpoint()) {
		t.Fatalf("published %q and %q", first, second)
	}
	// A seal with nothing new neither publishes nor stamps again.
	res, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: a.root, Signer: a.signer, TSA: url,
		Publish: "false", Now: func() time.Time { return a.now }})
	if err != nil || res.Published || res.Timestamps != 0 {
		t.Fatalf("idle seal: %+v %v", res, err)
	}
	// The proof bundle carries the token, which verify-proof checks.
	b, err := sealog.MakeProof(a.root, "", id)
	if err != nil || len(b.Timestamp) == 0 {
		t.Fatalf("proof: %v, token %d bytes", err, len(b.Timestamp))
	}
	data, _ := json.Marshal(b)
	v, _ := sealog.LoadVerifier(a.vkey)
	got, err := sealog.VerifyProof(data, v, roots)
	if err != nil || got.Timestamp.IsZero() {
		t.Fatalf("verify-proof: %+v %v", got, err)
	}
	// A token for another checkpoint is refused.
	b.Timestamp, _ = os.ReadFile(filepath.Join(a.root, "log", "checkpoints", "1.tsr"))
	data, _ = json.Marshal(b)
	if _, err := sealog.VerifyProof(data, v, roots); err == nil {
		t.Fatal("a token of another checkpoint verifies")
	}
	// And a TSA the officer does not trust is refused.
	_, otherRoots, _ := startTSA(t)
	b.Timestamp, _ = os.ReadFile(filepath.Join(a.root, "log", "checkpoints", "2.tsr"))
	data, _ = json.Marshal(b)
	if _, err := sealog.VerifyProof(data, v, otherRoots); err == nil {
		t.Fatal("a token from an untrusted TSA verifies")
	}
	// A failing publish command is an error, retried by the next seal.
	a.addItem(a.now, "third")
	if _, err := sealog.Seal(context.Background(), sealog.SealOptions{Root: a.root, Signer: a.signer,
		Publish: "exit 3", Now: func() time.Time { return a.now }}); err == nil {
		t.Fatal("a failing publish command is not an error")
	}
	res, err = sealog.Seal(context.Background(), sealog.SealOptions{Root: a.root, Signer: a.signer,
		Publish: pub, Now: func() time.Time { return a.now }})
	if err != nil || !res.Published {
		t.Fatalf("retry of publish: %+v %v", res, err)
	}
}

func TestTombstone(t *testing.T) {
	a := newArchive(t)
	ids := a.days(3)
	rd := openReader(t, a.root)
	eml, js := a.path(ids[0], ".eml"), a.path(ids[0], ".json")
	if _, err := sealog.AppendTombstones(a.root, rd, a.signer, []sealog.Tombstone{{ID: ids[0], Reason: "retention 7y"}}); err != nil {
		t.Fatal(err)
	}
	a.mustClean(a.verify(nil)) // tombstoned, still present: fine
	os.Remove(eml)
	os.Remove(js)
	a.mustClean(a.verify(a.checkpoint()))
	// Without a tombstone the same removal is reported.
	os.Remove(a.path(ids[1], ".eml"))
	rep := a.verify(nil)
	if len(rep.Findings) != 1 || rep.Findings[0].Kind != sealog.FindRemoved || rep.Findings[0].ID != ids[1] {
		t.Fatalf("findings %v", rep.Findings)
	}
}
