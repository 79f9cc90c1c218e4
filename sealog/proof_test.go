package sealog_test

import (
	"crypto/sha256"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/postfix-archive/mailarchive/sealog"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"
)

func TestProofBundle(t *testing.T) {
	a := newArchive(t)
	ids := a.days(4)
	v, _ := sealog.LoadVerifier(a.vkey)
	for _, id := range ids {
		b, err := sealog.MakeProof(a.root, "", id)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(b)
		res, err := sealog.VerifyProof(data, v, nil)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if res.ID != id || res.TreeSize != b.TreeSize {
			t.Fatalf("result %+v", res)
		}
		// A second implementation agrees.
		cp, _ := sealog.OpenCheckpoint([]byte(b.Checkpoint), v)
		var hashes [][]byte
		for _, h := range b.Inclusion {
			hashes = append(hashes, append([]byte(nil), h[:]...))
		}
		leafHash := rfc6962.DefaultHasher.HashLeaf([]byte(b.Leaf))
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(b.LeafIndex), uint64(cp.Size), leafHash, hashes, cp.Root[:]); err != nil {
			t.Fatalf("transparency-dev/merkle rejects the proof of %s: %v", id, err)
		}
		// Tampered bundles fail.
		for name, mutate := range map[string]func(*sealog.Bundle){
			"eml":   func(b *sealog.Bundle) { b.EML = append(b.EML, 'x') },
			"json":  func(b *sealog.Bundle) { b.JSON[2] ^= 1 },
			"index": func(b *sealog.Bundle) { b.LeafIndex ^= 1 },
			"proof": func(b *sealog.Bundle) { b.Inclusion[0][0] ^= 1 },
		} {
			var c sealog.Bundle
			json.Unmarshal(data, &c)
			mutate(&c)
			bad, _ := json.Marshal(c)
			if _, err := sealog.VerifyProof(bad, v, nil); err == nil {
				t.Fatalf("a bundle with a changed %s verifies", name)
			}
		}
	}
	// Another key does not verify it.
	_, other, _ := sealog.GenerateKeys("archive.example/mail")
	ov, _ := sealog.LoadVerifier(other)
	b, _ := sealog.MakeProof(a.root, "", ids[0])
	data, _ := json.Marshal(b)
	if _, err := sealog.VerifyProof(data, ov, nil); err == nil {
		t.Fatal("a bundle verifies with another key")
	}
	os.WriteFile(filepath.Join(t.TempDir(), "p.json"), data, 0o644)
}

// TestTreeMatchesMerkle compares the log's roots and proofs with
// transparency-dev/merkle for many tree sizes.
func TestTreeMatchesMerkle(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 255, 256, 257, 600} {
		checkAgainstMerkle(t, n, int64(n/2), int64(n-1))
	}
}

func FuzzProofs(f *testing.F) {
	f.Add(uint16(10), uint16(3), uint16(5))
	f.Add(uint16(300), uint16(0), uint16(299))
	f.Fuzz(func(t *testing.T, n, i, m uint16) {
		size := int64(n%700) + 1
		checkAgainstMerkle(t, int(size), int64(i)%size, int64(m)%size)
	})
}

// checkAgainstMerkle builds a log of n leaves through sealog's appender,
// then checks its root, the inclusion proof of leaf i and the consistency
// proof from size m+1 against transparency-dev/merkle.
func checkAgainstMerkle(t *testing.T, n int, i, m int64) {
	t.Helper()
	skey, vkey, _ := sealog.GenerateKeys("fuzz/log")
	s, _ := sealog.ParseSigner(skey)
	v, _ := sealog.LoadVerifier(vkey)
	dir := t.TempDir()
	lg, err := sealog.OpenLog(dir, "fuzz/log", s)
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()
	var leaves [][]byte
	var sizes []int64
	for len(leaves) < n {
		k := min(n-len(leaves), 1+len(leaves)%97)
		var batch [][]byte
		for j := 0; j < k; j++ {
			e := sha256.Sum256([]byte{byte(len(leaves) + j), byte((len(leaves) + j) >> 8)})
			batch = append(batch, e[:])
		}
		if _, err := lg.Append(batch); err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, batch...)
		sizes = append(sizes, lg.Size())
	}
	cp, signed := lg.Checkpoint()
	if _, err := sealog.OpenCheckpoint(signed, v); err != nil {
		t.Fatal(err)
	}
	r := sealog.TileReader(dir, cp.Size)
	p, err := tlog.ProveRecord(cp.Size, i, r)
	if err != nil {
		t.Fatal(err)
	}
	var hashes [][]byte
	for _, h := range p {
		hashes = append(hashes, append([]byte(nil), h[:]...))
	}
	lh := rfc6962.DefaultHasher.HashLeaf(leaves[i])
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(cp.Size), lh, hashes, cp.Root[:]); err != nil {
		t.Fatalf("n=%d i=%d: merkle rejects the inclusion proof: %v", n, i, err)
	}
	old := m + 1
	oldRoot, err := tlog.TreeHash(old, r)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tlog.ProveTree(cp.Size, old, r)
	if err != nil {
		t.Fatal(err)
	}
	hashes = hashes[:0]
	for _, h := range tp {
		hashes = append(hashes, append([]byte(nil), h[:]...))
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(old), uint64(cp.Size), hashes, oldRoot[:], cp.Root[:]); err != nil {
		t.Fatalf("n=%d m=%d: merkle rejects the consistency proof: %v", n, old, err)
	}
	// Every intermediate checkpoint's root equals merkle's root of the prefix.
	for _, sz := range sizes {
		got, _ := tlog.TreeHash(sz, r)
		if want := merkleRoot(leaves[:sz]); string(got[:]) != string(want) {
			t.Fatalf("root of %d leaves differs from merkle's", sz)
		}
	}
}

// merkleRoot is RFC 6962's MTH, written out from the RFC with the second
// implementation's hasher.
func merkleRoot(leaves [][]byte) []byte {
	h := rfc6962.DefaultHasher
	if len(leaves) == 0 {
		return h.EmptyRoot()
	}
	if len(leaves) == 1 {
		return h.HashLeaf(leaves[0])
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return h.HashChildren(merkleRoot(leaves[:k]), merkleRoot(leaves[k:]))
}
