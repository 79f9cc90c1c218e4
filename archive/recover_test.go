package archive

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

var recoverAt = time.Date(2026, 11, 25, 8, 0, 0, 250_000_000, time.UTC)

// leftover puts a crashed writer's files under tmp/ and returns the ID.
func leftover(t *testing.T, s *Store, eml []byte, json []byte, tags ...string) string {
	t.Helper()
	id, err := NewID(time.Date(2026, 11, 24, 13, 5, 1, 0, time.UTC), tags...)
	if err != nil {
		t.Fatal(err)
	}
	if eml != nil {
		mustWrite(t, filepath.Join(s.tmp, id+".eml"), eml)
	}
	if json != nil {
		mustWrite(t, filepath.Join(s.tmp, id+".json"), json)
	}
	return id
}

// fullEnvelope is what a proxy writer would have committed.
func fullEnvelope() *Envelope {
	return &Envelope{
		Source:     SourceProxy,
		ArchivedAt: time.Date(2026, 11, 24, 13, 5, 1, 500_000_000, time.UTC),
		Host:       "writer.example",
		Peer:       &Peer{Addr: "127.0.0.1", Port: 40000},
		Client:     &Client{Addr: "192.0.2.1", Port: 5555, Name: "mx.example.net", Helo: "mx.example.net", Proto: "ESMTP"},
		Helo:       "localhost",
		MailFrom:   &MailFrom{Addr: "j@example.com", Params: []string{"SIZE=300"}},
		RcptTo:     []Rcpt{{Addr: "a@example.org", Accepted: true, Reply: "250 2.1.5 Ok"}, {Addr: "b@example.org", Reply: "550 5.1.1 no"}},
		QueueID:    "4ABCD1234",
		Reply:      "250 2.0.0 Ok: queued as 4ABCD1234",
		Outcome:    OutcomeAccepted,
	}
}

func checkRecovered(t *testing.T, rep RecoverReport, ids ...string) {
	t.Helper()
	got := slices.Sorted(slices.Values(rep.Recovered))
	want := slices.Sorted(slices.Values(ids))
	if !equalStrings(got, want) {
		t.Errorf("Recovered = %q, want %q", got, want)
	}
	if len(rep.Errors) > 0 {
		t.Errorf("Recover errors: %v", rep.Errors)
	}
}

// (a) and (i): a crashed writer's tmp/ID.eml alone becomes an item with a
// minimal envelope: recovered, outcome unknown, the tags from the ID.
func TestRecoverEMLOnly(t *testing.T) {
	s := newTestStore(t)
	s.now = func() time.Time { return recoverAt }
	tags := []string{"a/b", "", "x.y", "Jörg"}
	id := leftover(t, s, []byte(sampleMsg), nil, tags...)
	rep := s.Recover()
	checkRecovered(t, rep, id)
	if rep.Busy != 0 || len(rep.Removed) != 0 || len(rep.Foreign) != 0 {
		t.Errorf("Recover = %+v", rep)
	}
	it := readItem(t, s, id)
	if string(it.eml) != sampleMsg {
		t.Error("recovered .eml differs")
	}
	env := it.env
	if !env.Recovered || env.Outcome != OutcomeUnknown || env.Host != "archive.test" || !env.ArchivedAt.Equal(recoverAt) {
		t.Errorf("envelope = %+v", env)
	}
	if !equalStrings(env.Tags, tags) {
		t.Errorf("tags = %q, want %q from the ID", env.Tags, tags)
	}
	if env.MailFrom != nil || env.RcptTo != nil || env.Client != nil || env.QueueID != "" {
		t.Errorf("minimal envelope invents fields: %+v", env)
	}
	if env.Message.Subject != "Grüße café" || env.Message.MessageID != "<20261124130501.abc@example.com>" ||
		env.Message.From != "Jörg <j@example.com>" || env.Message.Date == "" {
		t.Errorf("message fields = %+v", env.Message)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ = %q", got)
	}
	// A second sweep finds nothing to do.
	if rep := s.Recover(); len(rep.Recovered)+len(rep.Removed)+rep.Busy+len(rep.Errors) != 0 {
		t.Errorf("second Recover = %+v", rep)
	}
}

// TestRecoverMinimalEnvelopeInventsNothing: "Fields that a hook point cannot
// know are omitted, never invented." Recovery cannot know the source.
func TestRecoverMinimalEnvelopeInventsNothing(t *testing.T) {
	s := newTestStore(t)
	id := leftover(t, s, []byte(sampleMsg), nil)
	checkRecovered(t, s.Recover(), id)
	raw := readItem(t, s, id).raw
	if v, ok := raw["source"]; ok && v != SourceProxy && v != SourceMilter && v != SourceWrapper {
		t.Errorf(`recovered envelope has "source": %q; want it omitted or one of proxy, milter, wrapper`, v)
	}
	for k := range raw {
		switch k {
		case "version", "id", "source", "archived_at", "host", "tags", "outcome", "message", "recovered":
		default:
			t.Errorf("minimal envelope has %q", k)
		}
	}
}

// TestRecoverArchivedAtUTC: archived_at is UTC, whatever the local zone.
func TestRecoverArchivedAtUTC(t *testing.T) {
	s := newTestStore(t)
	s.now = func() time.Time { return recoverAt.In(time.FixedZone("CET", 3600)) }
	id := leftover(t, s, []byte(sampleMsg), nil)
	checkRecovered(t, s.Recover(), id)
	if got := readItem(t, s, id).raw["archived_at"].(string); !archivedAtRE.MatchString(got) {
		t.Errorf("archived_at = %q, want RFC 3339 UTC with fraction (2026-11-25T08:00:00.25Z)", got)
	}
}

// (b): the writer got as far as a complete tmp/ID.json: its envelope is kept.
func TestRecoverCompleteJSON(t *testing.T) {
	s := newTestStore(t)
	s.now = func() time.Time { return recoverAt }
	ff := newFaultFS(s)
	ff.renameErr[".eml"] = syscall.EIO // crash after the .json, before the renames
	w, err := s.Create("inbox")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(sampleMsg))
	env := fullEnvelope()
	if err := w.Commit(env); err == nil {
		t.Fatal("Commit succeeded")
	}
	w.Close()
	s.fs = osFS
	id := w.ID()
	if !exists(filepath.Join(s.tmp, id+".json")) || !exists(filepath.Join(s.tmp, id+".eml")) {
		t.Fatalf("setup: tmp/ = %q", names(t, s.tmp))
	}

	checkRecovered(t, s.Recover(), id)
	it := readItem(t, s, id)
	want := *env
	want.Recovered = true
	got := *it.env
	if !got.Recovered {
		t.Error("recovered not set")
	}
	if !jsonEqual(t, got, want) {
		t.Errorf("recovered envelope lost the writer's fields:\n got %s\nwant %s", mustJSON(t, got), mustJSON(t, want))
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ = %q", got)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func jsonEqual(t *testing.T, a, b any) bool { return mustJSON(t, a) == mustJSON(t, b) }

// (c): a torn tmp/ID.json, or one of another item, gives a minimal envelope.
func TestRecoverTornJSON(t *testing.T) {
	full, err := json.Marshal(fullEnvelope())
	if err != nil {
		t.Fatal(err)
	}
	for name, js := range map[string][]byte{
		"torn":     full[:len(full)/2],
		"empty":    {},
		"garbage":  []byte("\x00\x00\x00\x00"),
		"other id": []byte(`{"version":1,"id":"20200101T000000Z.aaaaaaaaaaaaaaaa","source":"proxy","outcome":"accepted"}`),
		"no id":    full, // fullEnvelope has no ID: not the writer's finished envelope
	} {
		t.Run(name, func(t *testing.T) {
			s := newTestStore(t)
			s.now = func() time.Time { return recoverAt }
			id := leftover(t, s, []byte(sampleMsg), js, "t1")
			checkRecovered(t, s.Recover(), id)
			env := readItem(t, s, id).env
			if !env.Recovered || env.Outcome != OutcomeUnknown || env.Source != "" || env.MailFrom != nil ||
				!env.ArchivedAt.Equal(recoverAt) || !equalStrings(env.Tags, []string{"t1"}) {
				t.Errorf("envelope = %+v, want a minimal one", env)
			}
		})
	}
}

// (d): a crash between the two renames: ROOT/ID.eml and tmp/ID.json.
func TestRecoverBetweenRenames(t *testing.T) {
	s := newTestStore(t)
	ff := newFaultFS(s)
	ff.renameErr[".json"] = syscall.EIO
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(sampleMsg))
	if err := w.Commit(fullEnvelope()); err == nil {
		t.Fatal("Commit succeeded")
	}
	w.Close()
	s.fs = osFS
	id := w.ID()
	if !exists(s.Path(id, ".eml")) || !exists(filepath.Join(s.tmp, id+".json")) {
		t.Fatalf("setup: root %q tmp %q", rootNames(t, s), names(t, s.tmp))
	}
	checkRecovered(t, s.Recover(), id)
	it := readItem(t, s, id)
	if !it.env.Recovered || it.env.Source != SourceProxy || it.env.QueueID != "4ABCD1234" || string(it.eml) != sampleMsg {
		t.Errorf("envelope = %+v", it.env)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ = %q", got)
	}
}

// (e): a live writer is never touched, wherever its commit stands.
func TestRecoverLiveWriter(t *testing.T) {
	s := newFileStore(t)
	w, err := s.Create("live")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(sampleMsg[:60]))

	// A writer that has created but not yet written: fresh and locked.
	w0, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}

	// A writer whose commit failed between the renames and that has not
	// yet decided between Abort and Close: it still holds the lock.
	ff := newFaultFS(s)
	ff.renameErr[".json"] = syscall.EIO
	w2, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w2.Write([]byte(sampleMsg))
	if err := w2.Commit(&Envelope{Source: SourceProxy}); err == nil {
		t.Fatal("Commit succeeded")
	}
	s.fs = osFS

	sweeper, err := Open(s.root, Options{Logger: s.log})
	if err != nil {
		t.Fatal(err)
	}
	sweeper.now = func() time.Time { return time.Now().Add(time.Hour) } // the empty one is old, but locked
	rep := sweeper.Recover()
	if rep.Busy != 3 || len(rep.Recovered) != 0 || len(rep.Removed) != 0 || len(rep.Errors) != 0 {
		t.Errorf("Recover with three live writers = %+v, want Busy 3 and nothing done", rep)
	}
	if got := names(t, s.tmp); len(got) != 3 {
		t.Errorf("tmp/ = %q, want the three writers' files", got)
	}
	if exists(s.Path(w2.ID(), ".json")) {
		t.Error("the sweep completed an item whose writer is alive")
	}

	// The writers carry on undisturbed.
	w.Write([]byte(sampleMsg[60:]))
	if err := w.Commit(&Envelope{Source: SourceWrapper}); err != nil {
		t.Fatal(err)
	}
	if it := readItem(t, s, w.ID()); string(it.eml) != sampleMsg || it.env.Recovered {
		t.Errorf("live writer's item: %+v", it.env)
	}
	if err := w0.Commit(&Envelope{Source: SourceProxy}); err != nil {
		t.Fatal(err)
	}
	if err := w2.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ = %q", got)
	}
}

// TestHelperProcess is not a test: TestRecoverOtherProcess runs the test
// binary with it as a writer that dies holding its lock.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv("ARCHIVE_TEST_HELPER_DIR")
	if dir == "" {
		return
	}
	s, err := Open(dir, Options{Host: "helper.example"})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	w, err := s.Create("helper")
	if err == nil {
		_, err = w.Write([]byte(sampleMsg))
	}
	if err == nil {
		err = w.Sync()
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(w.ID())
	time.Sleep(time.Minute) // until killed
	os.Exit(0)
}

// (e) across processes: the writer's flock is seen from another process,
// and is gone when that process is killed.
func TestRecoverOtherProcess(t *testing.T) {
	s := newTestStore(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "ARCHIVE_TEST_HELPER_DIR="+s.root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Scan()
		line <- sc.Text()
	}()
	var id string
	select {
	case id = <-line:
	case <-time.After(20 * time.Second):
		t.Fatal("helper process said nothing")
	}
	if _, err := ParseID(id); err != nil {
		t.Fatalf("helper process: %q", id)
	}

	rep := s.Recover()
	if rep.Busy != 1 || len(rep.Recovered) != 0 || len(rep.Errors) != 0 {
		t.Errorf("Recover while the other process writes = %+v, want Busy 1", rep)
	}
	if !exists(filepath.Join(s.tmp, id+".eml")) {
		t.Fatal("the live writer's file is gone")
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	rep = s.Recover()
	checkRecovered(t, rep, id)
	it := readItem(t, s, id)
	if string(it.eml) != sampleMsg || !it.env.Recovered || !equalStrings(it.env.Tags, []string{"helper"}) {
		t.Errorf("item after the writer was killed: %+v", it.env)
	}
}

// (f): an empty tmp/ID.eml holds no message bytes: removed when old,
// skipped (counted busy) when it may belong to a writer about to lock it.
func TestRecoverEmpty(t *testing.T) {
	s := newTestStore(t)
	old := leftover(t, s, []byte{}, nil)
	oldWithJSON := leftover(t, s, []byte{}, []byte(`{"version":1}`))
	fresh := leftover(t, s, []byte{}, nil)
	mtime := time.Now()
	for _, id := range []string{old, oldWithJSON} {
		os.Chtimes(filepath.Join(s.tmp, id+".eml"), mtime.Add(-11*time.Second), mtime.Add(-11*time.Second))
	}
	os.Chtimes(filepath.Join(s.tmp, fresh+".eml"), mtime.Add(-9*time.Second), mtime.Add(-9*time.Second))
	s.now = func() time.Time { return mtime }

	rep := s.Recover()
	removed := slices.Sorted(slices.Values(rep.Removed))
	if want := slices.Sorted(slices.Values([]string{old + ".eml", oldWithJSON + ".eml"})); !equalStrings(removed, want) {
		t.Errorf("Removed = %q, want %q", removed, want)
	}
	if rep.Busy != 1 || len(rep.Recovered) != 0 || len(rep.Errors) != 0 {
		t.Errorf("Recover = %+v, want the fresh one busy", rep)
	}
	if got := names(t, s.tmp); !equalStrings(got, []string{fresh + ".eml"}) {
		t.Errorf("tmp/ = %q, want only the fresh empty file", got)
	}
	if got := rootNames(t, s); len(got) != 0 {
		t.Errorf("root = %q", got)
	}
}

// (g): a tmp/ID.json with no message anywhere is removed.
func TestRecoverJSONOnly(t *testing.T) {
	s := newTestStore(t)
	id := leftover(t, s, nil, []byte(`{"version":1`))
	rep := s.Recover()
	if !equalStrings(rep.Removed, []string{id + ".json"}) || len(rep.Recovered) != 0 || len(rep.Errors) != 0 {
		t.Errorf("Recover = %+v, want %s.json removed", rep, id)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ = %q", got)
	}
	if got := rootNames(t, s); len(got) != 0 {
		t.Errorf("root = %q", got)
	}
}

// A tmp/ID.json whose item is complete in the root (a stale view) is left
// alone, and so is the item.
func TestRecoverJSONOfCommittedItem(t *testing.T) {
	s := newTestStore(t)
	id := commit(t, s, []byte(sampleMsg), 4096, nil)
	mustWrite(t, filepath.Join(s.tmp, id+".json"), []byte("{}"))
	rep := s.Recover()
	if len(rep.Recovered) != 0 || len(rep.Errors) != 0 {
		t.Errorf("Recover = %+v", rep)
	}
	if it := readItem(t, s, id); it.env.Recovered || string(it.eml) != sampleMsg {
		t.Errorf("committed item changed: %+v", it.env)
	}
}

// (h): what is not ours in tmp/ is reported and left alone.
func TestRecoverForeign(t *testing.T) {
	s := newTestStore(t)
	id, _ := NewID(time.Now())
	foreign := map[string]string{
		"README":                                 "not ours",
		"notes.eml":                              "From: x\r\n\r\nnot an ID",
		id + ".txt":                              "wrong extension",
		id + ".eml.partial":                      "someone else's temp file",
		"20261124T130501Z.eml":                   "no unique part",
		"20261124T130501Z.abcdefghijklmnop..eml": "empty tag component",
	}
	for name, content := range foreign {
		mustWrite(t, filepath.Join(s.tmp, name), []byte(content))
	}
	dirID, _ := NewID(time.Now())
	if err := os.Mkdir(filepath.Join(s.tmp, dirID+".eml"), 0o750); err != nil {
		t.Fatal(err)
	}
	linkID, _ := NewID(time.Now())
	target := filepath.Join(t.TempDir(), "target")
	mustWrite(t, target, []byte(sampleMsg))
	if err := os.Symlink(target, filepath.Join(s.tmp, linkID+".eml")); err != nil {
		t.Fatal(err)
	}
	before := names(t, s.tmp)

	rep := s.Recover()
	if len(rep.Recovered) != 0 || len(rep.Removed) != 0 || len(rep.Errors) != 0 || rep.Busy != 0 {
		t.Errorf("Recover = %+v", rep)
	}
	if got := slices.Sorted(slices.Values(rep.Foreign)); !equalStrings(got, before) {
		t.Errorf("Foreign = %q, want %q", got, before)
	}
	if got := names(t, s.tmp); !equalStrings(got, before) {
		t.Errorf("tmp/ = %q, want it untouched: %q", got, before)
	}
	for name, content := range foreign {
		if b, err := os.ReadFile(filepath.Join(s.tmp, name)); err != nil || string(b) != content {
			t.Errorf("%s changed: %q, %v", name, b, err)
		}
	}
	if got := rootNames(t, s); len(got) != 0 {
		t.Errorf("root = %q", got)
	}
}

// A recovery step that fails keeps the bytes, reports the error, makes
// nothing visible, and a later sweep finishes the job.
func TestRecoverFails(t *testing.T) {
	for _, step := range []string{"create .json", "rename .eml", "rename .json"} {
		t.Run(step, func(t *testing.T) {
			s := newTestStore(t)
			s.now = func() time.Time { return recoverAt }
			ff := newFaultFS(s)
			switch step {
			case "create .json":
				ff.createErr[".json"] = syscall.ENOSPC
			case "rename .eml":
				ff.renameErr[".eml"] = syscall.EIO
			case "rename .json":
				ff.renameErr[".json"] = syscall.EIO
			}
			id := leftover(t, s, []byte(sampleMsg), nil)
			rep := s.Recover()
			if len(rep.Errors) != 1 || len(rep.Recovered) != 0 || !strings.Contains(rep.Errors[0].Error(), id) {
				t.Errorf("Recover = %+v, want one error naming %s", rep, id)
			}
			if exists(s.Path(id, ".json")) {
				t.Error("item visible after a failed recovery")
			}
			s.fs = osFS
			checkRecovered(t, s.Recover(), id)
			if it := readItem(t, s, id); string(it.eml) != sampleMsg || !it.env.Recovered {
				t.Errorf("item: %+v", it.env)
			}
		})
	}
}

// A sweep whose last steps fail reports it, naming the item, and keeps the
// bytes.
func TestRecoverLateFailures(t *testing.T) {
	t.Run("fsync root", func(t *testing.T) {
		s := newTestStore(t)
		ff := newFaultFS(s)
		ff.syncDirErr["root"] = syscall.EIO
		id := leftover(t, s, []byte(sampleMsg), nil)
		rep := s.Recover()
		want := "archive: recover " + id + ": fsync root: "
		if len(rep.Errors) != 1 || !strings.HasPrefix(rep.Errors[0].Error(), want) {
			t.Errorf("Recover = %+v, want an error %q", rep, want)
		}
		if b, err := os.ReadFile(s.Path(id, ".eml")); err != nil || string(b) != sampleMsg {
			t.Errorf("bytes lost: %v", err)
		}
	})
	t.Run("remove torn json", func(t *testing.T) {
		s := newTestStore(t)
		s.fs.remove = func(name string) error { return &os.PathError{Op: "remove", Path: name, Err: syscall.EROFS} }
		id := leftover(t, s, []byte(sampleMsg), []byte("{"))
		rep := s.Recover()
		if len(rep.Errors) != 1 || !strings.Contains(rep.Errors[0].Error(), id) {
			t.Errorf("Recover = %+v, want one error naming %s", rep, id)
		}
		if b, err := os.ReadFile(filepath.Join(s.tmp, id+".eml")); err != nil || string(b) != sampleMsg {
			t.Errorf("bytes lost: %v", err)
		}
	})
}

// A tmp/ID.json whose item already has its .json in the root (a writer or
// filer moved on since the listing) is left alone.
func TestRecoverStaleJSON(t *testing.T) {
	s := newTestStore(t)
	id := leftover(t, s, nil, []byte("{}"))
	mustWrite(t, s.Path(id, ".json"), []byte("{}"))
	rep := s.Recover()
	if len(rep.Removed)+len(rep.Recovered)+len(rep.Errors) != 0 {
		t.Errorf("Recover = %+v", rep)
	}
	if !exists(filepath.Join(s.tmp, id+".json")) || !exists(s.Path(id, ".json")) {
		t.Error("files touched")
	}
}

func TestRecoverNoTmp(t *testing.T) {
	s := newTestStore(t)
	if err := os.Remove(s.tmp); err != nil {
		t.Fatal(err)
	}
	if rep := s.Recover(); len(rep.Errors) != 1 || !strings.HasPrefix(rep.Errors[0].Error(), "archive: recover: ") {
		t.Errorf("Recover without tmp/ = %+v", rep)
	}
}

// TestRecoverNeverDeletesBytes runs one sweep over every kind of leftover
// and checks that every non-empty message is afterwards an item, byte for
// byte.
func TestRecoverNeverDeletesBytes(t *testing.T) {
	s := newTestStore(t)
	s.now = func() time.Time { return time.Now().Add(time.Hour) }
	want := map[string]string{} // ID -> message bytes
	for i := range 20 {
		msg := fmt.Sprintf("Subject: %d\r\n\r\n%s", i, strings.Repeat("x", i*1000))
		var js []byte
		switch i % 4 {
		case 1:
			js = []byte("{")
		case 2:
			js = []byte("{}")
		case 3:
			js = nil
			id, _ := NewID(time.Now(), fmt.Sprint(i))
			mustWrite(t, s.Path(id, ".eml"), []byte(msg)) // between the renames
			mustWrite(t, filepath.Join(s.tmp, id+".json"), []byte("{"))
			want[id] = msg
			continue
		}
		want[leftover(t, s, []byte(msg), js, fmt.Sprint(i))] = msg
	}
	leftover(t, s, []byte{}, nil)     // empty: may go
	leftover(t, s, nil, []byte("{}")) // no message: may go
	rep := s.Recover()
	if len(rep.Errors) > 0 {
		t.Fatal(rep.Errors)
	}
	for id, msg := range want {
		if b, err := os.ReadFile(s.Path(id, ".eml")); err != nil || string(b) != msg {
			t.Errorf("message %s lost: %v", id, err)
		}
		if !exists(s.Path(id, ".json")) {
			t.Errorf("message %s not made an item", id)
		}
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ = %q", got)
	}
}
