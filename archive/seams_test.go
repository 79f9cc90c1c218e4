package archive

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A prepared item whose commit never happens is recovered with the
// provisional envelope: sender, recipients and client survive.
func TestPrepareThenCrash(t *testing.T) {
	s := newTestStore(t)
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, sampleMsg)
	env := fullEnvelope()
	env.Outcome, env.Reply, env.QueueID = OutcomeUnknown, "", ""
	if err := w.Prepare(env); err != nil {
		t.Fatal(err)
	}
	if err := w.Prepare(env); err == nil {
		t.Error("second Prepare accepted")
	}
	if exists(s.Path(w.ID(), ".json")) {
		t.Fatal("prepared item visible before its commit")
	}
	w.Close() // as if the commit failed after the MTA took the message
	checkRecovered(t, s.Recover(), w.ID())
	it := readItem(t, s, w.ID())
	if !it.env.Recovered || it.env.MailFrom == nil || it.env.MailFrom.Addr != "j@example.com" ||
		len(it.env.RcptTo) != 2 || it.env.Client == nil || it.env.Outcome != OutcomeUnknown {
		t.Errorf("recovered envelope lost the prepared one: %+v", it.env)
	}
	if string(it.eml) != sampleMsg {
		t.Errorf("message: %q", it.eml)
	}
}

// Commit after Prepare replaces the provisional envelope with the final one
// and leaves no scratch file.
func TestPrepareThenCommit(t *testing.T) {
	s := newTestStore(t)
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, sampleMsg)
	prov := fullEnvelope()
	prov.Outcome = OutcomeUnknown
	if err := w.Prepare(prov); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(fullEnvelope()); err != nil {
		t.Fatal(err)
	}
	it := readItem(t, s, w.ID())
	if it.env.Outcome != OutcomeAccepted || it.env.Recovered || it.env.Message.Size != int64(len(sampleMsg)) {
		t.Errorf("envelope: %+v", it.env)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ after commit: %q", got)
	}
}

// The final envelope's rewrite failing leaves the provisional one, so
// recovery still has the envelope.
func TestPrepareCommitFails(t *testing.T) {
	s := newTestStore(t)
	ff := newFaultFS(s)
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, sampleMsg)
	if err := w.Prepare(fullEnvelope()); err != nil {
		t.Fatal(err)
	}
	ff.createErr[".json"] = syscall.ENOSPC
	if err := w.Commit(fullEnvelope()); err == nil || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("Commit = %v", err)
	}
	w.Close()
	s.fs = osFS
	checkRecovered(t, s.Recover(), w.ID())
	if it := readItem(t, s, w.ID()); it.env.MailFrom == nil || it.env.Source != SourceProxy {
		t.Errorf("envelope lost: %+v", it.env)
	}
}

// Recovery that cannot write its rebuilt envelope keeps the writer's, and
// never leaves the message in the root without one (issue 9, recover.go).
func TestRecoverReplaceFailsKeepsWritersEnvelope(t *testing.T) {
	s := newTestStore(t)
	ff := newFaultFS(s)
	env := fullEnvelope()
	env.ID = "placeholder"
	id := leftover(t, s, []byte(sampleMsg), nil)
	env.ID = id
	b, _ := env.MarshalJSON()
	mustWrite(t, filepath.Join(s.tmp, id+".json"), b)
	ff.createErr[".json"] = syscall.EDQUOT
	rep := s.Recover()
	if len(rep.Errors) != 1 {
		t.Fatalf("Recover = %+v", rep)
	}
	if got, err := ReadEnvelope(filepath.Join(s.tmp, id+".json")); err != nil || got.MailFrom == nil {
		t.Fatalf("writer's envelope gone after a failed recovery: %v %+v", err, got)
	}
	if exists(s.Path(id, ".eml")) || exists(s.Path(id, ".json")) {
		t.Error("root touched by a failed recovery")
	}
	s.fs = osFS
	checkRecovered(t, s.Recover(), id)
	if it := readItem(t, s, id); it.env.MailFrom == nil || !it.env.Recovered {
		t.Errorf("envelope: %+v", it.env)
	}
}

// A stale scratch file from a crash mid-replace is cleaned up with the rest.
func TestRecoverStaleScratch(t *testing.T) {
	s := newTestStore(t)
	id := leftover(t, s, []byte(sampleMsg), []byte(`{"version":1,"id":"x"`))
	mustWrite(t, filepath.Join(s.tmp, id+scratchSuffix), []byte(`{"torn`))
	rep := s.Recover()
	checkRecovered(t, rep, id)
	if len(rep.Foreign) != 0 {
		t.Errorf("scratch reported foreign: %q", rep.Foreign)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ = %q", got)
	}
}

// Each waiter of the group sync gets the result of the fsync that covered
// it, never a later or earlier one's.
func TestGroupSyncErrorsPerBatch(t *testing.T) {
	g := newGroupSync()
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	var calls int
	var mu sync.Mutex
	fsync := func() error {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		started <- struct{}{}
		if n == 1 {
			<-release
			return errors.New("first fsync failed")
		}
		return nil
	}
	first := make(chan error, 1)
	go func() { first <- g.sync(fsync) }()
	<-started // fsync 1 running
	second := make(chan error, 3)
	for range 3 {
		go func() { second <- g.sync(fsync) }()
	}
	// Let the three register behind fsync 1.
	for deadline := time.Now().Add(5 * time.Second); ; {
		g.mu.Lock()
		waiting := g.next != nil
		g.mu.Unlock()
		if waiting || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	if err := <-first; err == nil {
		t.Error("the failed fsync's waiter got success")
	}
	for range 3 {
		if err := <-second; err != nil {
			t.Errorf("a later batch got an earlier fsync's error: %v", err)
		}
	}
	if calls != 2 {
		t.Errorf("%d fsyncs, want 2 (one per batch)", calls)
	}
}

func TestProbe(t *testing.T) {
	s := newTestStore(t)
	for range 3 {
		if err := s.Probe(); err != nil {
			t.Fatal(err)
		}
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("probe left behind: %q", got)
	}
	// A probe left by a crash is no item, not foreign, and goes once old.
	p := filepath.Join(s.tmp, probePrefix+"1-abc")
	mustWrite(t, p, []byte("\n"))
	old := time.Now().Add(-time.Minute)
	os.Chtimes(p, old, old)
	rep := s.Recover()
	if len(rep.Foreign) != 0 || !slices.Contains(rep.Removed, filepath.Base(p)) {
		t.Errorf("Recover = %+v", rep)
	}
	os.RemoveAll(s.tmp)
	os.WriteFile(s.tmp, nil, 0o600)
	if err := s.Probe(); err == nil || !strings.Contains(err.Error(), "archive not writable") {
		t.Errorf("tmp/ not a directory: %v", err)
	}
}

func TestReopen(t *testing.T) {
	s := newTestStore(t)
	w, _ := s.Create()
	io.WriteString(w, sampleMsg)
	f, err := w.Reopen()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := w.Commit(nil); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	if string(b) != sampleMsg {
		t.Errorf("reopened: %q", b)
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]Policy{"tempfail": PolicyTempfail, "pass": PolicyPass, "accept": PolicyPass} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParsePolicy("Tempfail"); err == nil {
		t.Error("ParsePolicy accepted a misspelling")
	}
	if PolicyPass.String() != "pass" || PolicyTempfail.String() != "tempfail" {
		t.Error("String")
	}
}
