package sealog_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/sealog"
)

// bucket is an in-memory object store behind the "memtest" scheme.
var (
	bucketMu sync.Mutex
	bucket   = map[string]string{}
)

type memObjects struct{}

func (memObjects) GetObject(_ context.Context, key, version string) (io.ReadCloser, error) {
	bucketMu.Lock()
	defer bucketMu.Unlock()
	b, ok := bucket[key+"?"+version]
	if !ok {
		return nil, errors.New("no such object")
	}
	return io.NopCloser(strings.NewReader(b)), nil
}

func init() {
	archive.RegisterRemote("memtest", func(*archive.Destination) (archive.ObjectReader, error) { return memObjects{}, nil })
}

// TestVerifyRemoteItems: items the filer moved to object storage verify
// clean (their .json fetched byte for byte), and an object altered in the
// bucket is found.
func TestVerifyRemoteItems(t *testing.T) {
	a := newArchive(t)
	ids := a.days(2)
	if err := archive.WriteDestination(a.root, archive.Destination{URL: "memtest://b/" + t.Name()}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids[:3] {
		eml, js := a.path(id, ".eml"), a.path(id, ".json")
		msg, _ := os.ReadFile(eml)
		env, _ := os.ReadFile(js)
		sum := sha256.Sum256(msg)
		pid, _ := archive.ParseID(id)
		key := t.Name() + "/" + archive.DatedDir(pid.Stamp, false) + "/" + id
		rec := &archive.RemoteRecord{Version: 1, ID: id, URL: "memtest://b/" + t.Name(), EMLKey: key + ".eml", EMLVersion: "1",
			JSONKey: key + ".json", JSONVersion: "1", Size: int64(len(msg)), SHA256: hex.EncodeToString(sum[:]),
			Envelope: string(env), JSONSHA256: jsonSum(env), UploadedAt: time.Now()}
		bucketMu.Lock()
		bucket[rec.EMLKey+"?1"], bucket[rec.JSONKey+"?1"] = string(msg), string(env)
		bucketMu.Unlock()
		if err := archive.WriteRemoteRecord(a.root, rec); err != nil {
			t.Fatal(err)
		}
		os.Remove(js)
		os.Remove(eml)
		if _, err := os.Stat(filepath.Dir(eml)); err != nil {
			t.Fatal(err)
		}
	}
	rep := a.verify(a.checkpoint())
	a.mustClean(rep)
	if rep.Items != len(ids) {
		t.Fatalf("items %d, want %d", rep.Items, len(ids))
	}
	// A proof of a remote item holds too.
	b, err := sealog.MakeProof(a.root, "", ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(b.EML) == 0 || len(b.JSON) == 0 {
		t.Fatal("proof bundle of a remote item without its files")
	}
	// The envelope object rewritten in the bucket.
	pid, _ := archive.ParseID(ids[1])
	key := t.Name() + "/" + archive.DatedDir(pid.Stamp, false) + "/" + ids[1] + ".json?1"
	bucketMu.Lock()
	bucket[key] = strings.Replace(bucket[key], "accepted", "rejected", 1)
	bucketMu.Unlock()
	rep = a.verify(nil)
	if len(rep.Findings) != 1 || rep.Findings[0].Kind != sealog.FindAlteredJSON || rep.Findings[0].ID != ids[1] {
		t.Fatalf("findings %v", rep.Findings)
	}
}

func jsonSum(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
