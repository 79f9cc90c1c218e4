package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeObjects is an in-memory bucket.
type fakeObjects map[string]string

func (f fakeObjects) GetObject(_ context.Context, key, version string) (io.ReadCloser, error) {
	b, ok := f[key+"?"+version]
	if !ok {
		return nil, errors.New("no such object")
	}
	return io.NopCloser(strings.NewReader(b)), nil
}

// moveRemote turns a local root item into one in the fake bucket, as the
// filer's S3 destination does: record first, then the local files go.
func moveRemote(t *testing.T, root string, objs fakeObjects, id string, removeJSON bool) {
	t.Helper()
	pid, _ := ParseID(id)
	msg, _ := os.ReadFile(filepath.Join(root, id+".eml"))
	env, _ := os.ReadFile(filepath.Join(root, id+".json"))
	sum := sha256.Sum256(msg)
	day := DatedDir(pid.Stamp, false)
	rec := &RemoteRecord{ID: id, URL: "s3://b/p", EMLKey: "p/" + day + "/" + id + ".eml", EMLVersion: "v1",
		JSONKey: "p/" + day + "/" + id + ".json", JSONVersion: "v2", Size: int64(len(msg)),
		SHA256: hex.EncodeToString(sum[:]), Envelope: string(env), UploadedAt: time.Now()}
	js := sha256.Sum256(env)
	rec.JSONSHA256 = hex.EncodeToString(js[:])
	objs[rec.EMLKey+"?v1"] = string(msg)
	if err := WriteRemoteRecord(root, rec); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(root, id+".eml"))
	if removeJSON {
		os.Remove(filepath.Join(root, id+".json"))
	}
}

func TestRemoteItems(t *testing.T) {
	s := newTestStore(t)
	root := s.Root()
	day1 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	local := commitAt(t, s, day1, "local")
	remote := commitAt(t, s, day1.Add(time.Hour), "remote")
	half := commitAt(t, s, day1.Add(48*time.Hour), "half") // the filer stopped between its removals
	objs := fakeObjects{}
	moveRemote(t, root, objs, remote, true)
	moveRemote(t, root, objs, half, false)
	if err := WriteDestination(root, Destination{URL: "s3://b/p", Endpoint: "http://127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	l, err := mustReader(t, root, objs).ListRoot()
	if err != nil || len(l.Foreign) != 0 {
		t.Errorf("ListRoot: foreign %v %v", l.Foreign, err)
	}

	r := mustReader(t, root, objs)
	got := map[string]string{}
	err = r.Walk(func(it Item) error {
		f, err := it.Open()
		if err != nil {
			t.Errorf("%s: %v", it.ID, err)
			return nil
		}
		b, _ := io.ReadAll(f)
		f.Close()
		env, err := it.Envelope()
		if err != nil || env.ID != it.ID {
			t.Errorf("%s: envelope %v %v", it.ID, env, err)
		}
		got[it.ID] = string(b)
		if (it.Remote != nil) != (it.ID != local) {
			t.Errorf("%s: remote %v", it.ID, it.Remote)
		}
		return nil
	}, func(p Problem) { t.Errorf("problem %v", p) })
	if err != nil {
		t.Fatal(err)
	}
	if got[local] != "local" || got[remote] != "remote" || got[half] != "half" || len(got) != 3 {
		t.Errorf("walk read %v", got)
	}
	days, _ := r.Days()
	if strings.Join(days, ",") != "2026/11/20,2026/11/22" {
		t.Errorf("days %v", days)
	}
	n := 0
	r.WalkDay("2026/11/20", func(it Item) error { n++; return nil }, nil)
	if n != 1 { // the local item is still in the root
		t.Errorf("WalkDay saw %d items", n)
	}
	for _, id := range []string{remote, half} {
		it, err := r.Locate(id)
		if err != nil || it.Remote == nil || !strings.HasPrefix(it.EMLPath, "s3://b/p/") {
			t.Errorf("Locate %s: %+v %v", id, it, err)
		}
	}

	// A bucket object that is not what the filer confirmed is an error.
	it, _ := r.Locate(remote)
	objs[it.Remote.EMLKey+"?v1"] = "forged"
	if _, err := it.Open(); err == nil || !strings.Contains(err.Error(), "the filer confirmed") {
		t.Errorf("forged object: %v", err)
	}
	// Without a client for the scheme, opening says so.
	r2, _ := OpenReader(root, ReaderOptions{})
	it, _ = r2.Locate(remote)
	if _, err := it.Open(); !errors.Is(err, ErrNoRemoteClient) {
		t.Errorf("no client: %v", err)
	}
}

func mustReader(t *testing.T, root string, objs ObjectReader) *Reader {
	r, err := OpenReader(root, ReaderOptions{Objects: objs})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDestinationFile(t *testing.T) {
	root := t.TempDir()
	if d, err := ReadDestination(root); d != nil || err != nil {
		t.Errorf("none: %v %v", d, err)
	}
	os.WriteFile(filepath.Join(root, DestinationFile), []byte("{"), 0o640)
	if _, err := ReadDestination(root); err == nil {
		t.Error("torn .destination read")
	}
	os.WriteFile(filepath.Join(root, DestinationFile), []byte(`{"version":1}`), 0o640)
	if _, err := ReadDestination(root); err == nil || !strings.Contains(err.Error(), "no url") {
		t.Errorf("no url: %v", err)
	}
	want := Destination{URL: "s3://b/p", Endpoint: "http://127.0.0.1:9000", PathStyle: true}
	if err := WriteDestination(root, want); err != nil {
		t.Fatal(err)
	}
	want.Version = Version
	if d, err := ReadDestination(root); err != nil || *d != want {
		t.Errorf("%+v %v", d, err)
	}
}
