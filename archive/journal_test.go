package archive

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The journal's tests: the memWriter's commit, its failures, and above
// all what a crash (SIGKILL of a writer process at each step) and a power
// loss (every file the journal's fdatasync did not cover is gone) leave:
// every message acknowledged is an item with its bytes, and no reader sees
// a partial item.

// msgN is a distinct message.
func msgN(i int) []byte {
	return []byte(fmt.Sprintf("Subject: message %d\r\nMessage-ID: <%d@example.com>\r\n\r\n%s", i, i, strings.Repeat("body line\r\n", 20+i)))
}

// quietJournal stops the checkpointer from firing during a test that
// wants the journal to keep its records.
func quietJournal(s *Store) { s.journal.age = time.Hour }

// abandon closes the journal's segments as a process's death would: the
// kernel drops the flocks, nothing else happens.
func abandon(s *Store) {
	j := s.journal
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, seg := range append(append([]*segment{j.active}, j.spare...), j.retired...) {
		if seg != nil {
			seg.f.Close()
		}
	}
	j.active, j.spare, j.retired = nil, nil, nil
	j.downUntil = time.Now().Add(time.Hour)
}

// powerLoss removes every file of the archive but the journal, and marks
// the segments as written in another boot: what is left is exactly what
// the journal's fdatasyncs made durable (the checkpoint did not run).
func powerLoss(t *testing.T, root string) {
	t.Helper()
	for _, dir := range []string{root, filepath.Join(root, "tmp")} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	jdir := filepath.Join(root, journalDirName)
	ents, _ := os.ReadDir(jdir)
	for _, e := range ents {
		f, err := os.OpenFile(filepath.Join(jdir, e.Name()), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		hdr, ok := readSegHeader(f)
		if !ok {
			t.Fatalf("segment %s: no valid header", e.Name())
		}
		hdr.boot = [16]byte{'o', 'l', 'd', 'b', 'o', 'o', 't'}
		hdr.seq++
		if _, err := f.WriteAt(hdr.marshal(), int64(hdr.seq%2)*slotSize); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// checkWhole checks what every reader relies on: each item's .json has its
// .eml with the size and hash it states; and returns the items by ID.
func checkWhole(t *testing.T, s *Store) map[string]item {
	t.Helper()
	out := map[string]item{}
	for _, n := range rootNames(t, s) {
		if id, ok := strings.CutSuffix(n, ".json"); ok {
			out[id] = readItem(t, s, id)
		}
	}
	return out
}

func TestJournalCommit(t *testing.T) {
	s := newTestStore(t)
	if s.journal == nil {
		t.Fatal("no journal on the tests' filesystem")
	}
	w, err := s.Create("inbox")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(sampleMsg[:40]))
	w.Write([]byte(sampleMsg[40:]))
	env := fullEnvelope()
	if err := w.Prepare(env); err != nil {
		t.Fatal(err)
	}
	if got := names(t, s.tmp); len(got) != 1 {
		t.Errorf("tmp/ after Prepare = %q, want the .eml only (the envelope is in the journal)", got)
	}
	if exists(s.Path(w.ID(), ".json")) {
		t.Error("the item is visible after Prepare")
	}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	it := readItem(t, s, w.ID())
	if string(it.eml) != sampleMsg || it.env.QueueID != "4ABCD1234" || it.env.Recovered || !equalStrings(it.env.Tags, []string{"inbox"}) {
		t.Errorf("item = %+v", it.env)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ after Commit = %q, want nothing", got)
	}
	if err := w.Abort(); err != nil || !exists(s.Path(w.ID(), ".eml")) {
		t.Errorf("Abort after Commit = %v, or removed the item", err)
	}
	if err := s.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if put, errs := s.replayJournal(true); len(put) != 0 || len(errs) != 0 {
		t.Errorf("replay after a checkpoint = %v, %v; want nothing", put, errs)
	}
}

func TestJournalAbortAndClose(t *testing.T) {
	s := newTestStore(t)
	quietJournal(s)
	a, _ := s.Create()
	a.Write(msgN(1))
	a.Prepare(&Envelope{Source: SourceProxy})
	if err := a.Abort(); err != nil {
		t.Fatal(err)
	}
	c, _ := s.Create()
	c.Write(msgN(2))
	c.Prepare(&Envelope{Source: SourceProxy, MailFrom: &MailFrom{Addr: "c@example.com"}})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := rootNames(t, s); len(got) != 0 {
		t.Errorf("root = %q, want nothing visible", got)
	}
	// Same boot: the sweep makes the closed item.
	s2 := newTestStoreAt(t, s.root)
	rep := s2.Recover()
	checkRecovered(t, rep, c.ID())
	if it := checkWhole(t, s2)[c.ID()]; string(it.eml) != string(msgN(2)) || it.env.MailFrom == nil || it.env.MailFrom.Addr != "c@example.com" {
		t.Errorf("closed item after Recover: %+v", it.env)
	}
}

// TestJournalAbortPowerLoss: after a power loss the journal brings back a
// closed item and not an aborted one.
func TestJournalAbortPowerLoss(t *testing.T) {
	s := newTestStore(t)
	quietJournal(s)
	a, _ := s.Create()
	a.Write(msgN(1))
	a.Prepare(&Envelope{Source: SourceProxy})
	a.Abort()
	c, _ := s.Create()
	c.Write(msgN(2))
	c.Prepare(&Envelope{Source: SourceProxy})
	c.Close()
	time.Sleep(20 * time.Millisecond) // the abort record's background fdatasync
	abandon(s)
	powerLoss(t, s.root)
	s2 := newTestStoreAt(t, s.root)
	s2.Recover()
	items := checkWhole(t, s2)
	if _, ok := items[c.ID()]; !ok || len(items) != 1 {
		t.Errorf("after a power loss: items %v, want only the closed one %s", len(items), c.ID())
	}
}

// newTestStoreAt opens another store on root (as another process would).
func newTestStoreAt(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(root, Options{Host: "archive.test", Logger: newTestStore(t).log, JournalSegmentSize: testSegment})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJournalPowerLoss: with every file but the journal gone, replay
// brings back each item as far as its writer got.
func TestJournalPowerLoss(t *testing.T) {
	s := newTestStore(t)
	quietJournal(s)
	var committed, prepared, synced, aborted string
	for i, what := range []string{"committed", "prepared", "synced", "aborted", "unsynced"} {
		w, _ := s.Create()
		w.Write(msgN(i))
		env := &Envelope{Source: SourceProxy, MailFrom: &MailFrom{Addr: what + "@example.com"}, Outcome: OutcomeAccepted}
		switch what {
		case "committed":
			w.Prepare(env)
			env.QueueID = "Q1"
			if err := w.Commit(env); err != nil {
				t.Fatal(err)
			}
			committed = w.ID()
		case "prepared":
			w.Prepare(env)
			prepared = w.ID()
		case "synced":
			w.Sync()
			synced = w.ID()
		case "aborted":
			w.Prepare(env)
			w.Abort()
			aborted = w.ID()
		}
	}
	// The lazy commit record is made durable by a background fdatasync;
	// let it land, as a crash a moment later would find it.
	time.Sleep(50 * time.Millisecond)
	abandon(s)
	powerLoss(t, s.root)

	s2 := newTestStoreAt(t, s.root) // Open replays
	s2.Recover()
	items := checkWhole(t, s2)
	want := map[string]int{committed: 0, prepared: 1, synced: 2}
	if len(items) != len(want) {
		t.Errorf("after the power loss: %d items, want %d", len(items), len(want))
	}
	for id, i := range want {
		it, ok := items[id]
		if !ok {
			t.Errorf("item %d (%s) not replayed", i, id)
			continue
		}
		if string(it.eml) != string(msgN(i)) || !it.env.Recovered {
			t.Errorf("item %d: %d bytes, recovered %v", i, len(it.eml), it.env.Recovered)
		}
	}
	if it := items[committed]; it.env != nil && it.env.QueueID != "Q1" {
		t.Errorf("committed item replayed with envelope %+v, want the final one", it.env)
	}
	if it := items[prepared]; it.env != nil && (it.env.MailFrom == nil || it.env.MailFrom.Addr != "prepared@example.com") {
		t.Errorf("prepared item replayed without the envelope of Prepare: %+v", it.env)
	}
	if it := items[synced]; it.env != nil && it.env.Outcome != OutcomeUnknown {
		t.Errorf("synced item: outcome %q, want unknown", it.env.Outcome)
	}
	if _, ok := items[aborted]; ok {
		t.Error("the aborted item was replayed")
	}
	// The journal is checkpointed: another power loss and replay bring
	// back nothing new, and the items stay.
	if put, errs := s2.replayJournal(true); len(put) != 0 || len(errs) != 0 {
		t.Errorf("second replay = %v, %v", put, errs)
	}
}

// TestJournalCarryForward: a checkpoint while an item waits between
// Prepare and Commit keeps its record (copied forward), so a power loss
// after the checkpoint still finds the message and its envelope.
func TestJournalCarryForward(t *testing.T) {
	s := newTestStore(t)
	quietJournal(s)
	w, _ := s.Create()
	w.Write(msgN(7))
	w.Prepare(&Envelope{Source: SourceProxy, MailFrom: &MailFrom{Addr: "held@example.com"}})
	for i := 0; i < 3; i++ { // three generations later
		if err := s.Checkpoint(); err != nil {
			t.Fatal(err)
		}
		o, _ := s.Create()
		o.Write(msgN(100 + i))
		o.Commit(&Envelope{})
	}
	abandon(s)
	powerLoss(t, s.root)
	s2 := newTestStoreAt(t, s.root)
	s2.Recover()
	it, ok := checkWhole(t, s2)[w.ID()]
	if !ok {
		t.Fatal("the held item was lost by the checkpoints")
	}
	if string(it.eml) != string(msgN(7)) || it.env.MailFrom == nil || it.env.MailFrom.Addr != "held@example.com" {
		t.Errorf("held item: %+v", it.env)
	}
}

// TestJournalBig: a message over what the journal takes, even after
// Prepare, is made durable by its own fsyncs; and Reopen's file shows what
// was committed.
func TestJournalBig(t *testing.T) {
	s := newTestStore(t)
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), testSegment/4/64+10)
	w, _ := s.Create()
	w.Write(big[:1000])
	w.Prepare(&Envelope{Source: SourceProxy})
	w.Write(big[1000:]) // over the limit after Prepare
	if fw := w.(*fileWriter); !fw.classic {
		t.Error("a big message is still journaled")
	}
	if err := w.Commit(&Envelope{Source: SourceProxy}); err != nil {
		t.Fatal(err)
	}
	if it := readItem(t, s, w.ID()); !bytes.Equal(it.eml, big) {
		t.Errorf("big item: %d bytes, want %d", len(it.eml), len(big))
	}

	r, _ := s.Create("wrapper")
	f, err := r.Reopen()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r.Write([]byte(sampleMsg))
	if err := r.Commit(&Envelope{Source: SourceWrapper}); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(sampleMsg)+10)
	n, _ := f.Read(b)
	if string(b[:n]) != sampleMsg {
		t.Errorf("Reopen's file holds %q", b[:n])
	}
	readItem(t, s, r.ID())
}

// TestJournalFails: the journal's writer's failures, each with the error
// that names what failed, nothing visible, and, after Close, an item once
// the fault is gone.
func TestJournalFails(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(ff *faultFS)
		wantErr string
		errno   error
	}{
		// The commit's own record is not waited for after Prepare, so
		// the journal's faults strike at Prepare.
		{"journal write EIO", func(ff *faultFS) { ff.journalWriteErr = syscall.EIO }, "archive: write journal: input/output error", syscall.EIO},
		{"journal fdatasync EIO", func(ff *faultFS) { ff.datasyncErr = syscall.EIO }, "archive: fdatasync journal: input/output error", syscall.EIO},
		{"create .json ENOSPC", func(ff *faultFS) { ff.createErr[".json"] = syscall.ENOSPC }, "archive: create tmp/ID.json: no space left on device", syscall.ENOSPC},
		{"write .json ENOSPC", func(ff *faultFS) { ff.writeErr[".json"], ff.writeOK[".json"] = syscall.ENOSPC, 10 }, "archive: write tmp/ID.json: no space left on device", syscall.ENOSPC},
		{"rename .eml EIO", func(ff *faultFS) { ff.renameErr[".eml"] = syscall.EIO }, "archive: rename tmp/ID.eml: input/output error", syscall.EIO},
		{"rename .json EIO", func(ff *faultFS) { ff.renameErr[".json"] = syscall.EIO }, "archive: rename tmp/ID.json: input/output error", syscall.EIO},
	}
	for _, tc := range cases {
		for _, ending := range []string{"Abort", "Close"} {
			t.Run(tc.name+"/"+ending, func(t *testing.T) {
				s := newTestStore(t)
				ff := newFaultFS(s)
				w, _ := s.Create()
				w.Write([]byte(sampleMsg))
				atPrepare := strings.HasPrefix(tc.name, "journal")
				if atPrepare {
					tc.setup(ff)
				}
				perr := w.Prepare(fullEnvelope())
				if !atPrepare {
					if perr != nil {
						t.Fatal(perr)
					}
					tc.setup(ff)
				}
				err := w.Commit(fullEnvelope())
				want := strings.ReplaceAll(tc.wantErr, "ID", w.ID())
				if err == nil || err.Error() != want || !errors.Is(err, tc.errno) {
					t.Fatalf("Commit = %v, want %q", err, want)
				}
				if exists(s.Path(w.ID(), ".json")) {
					t.Error("the item is visible after a failed Commit")
				}
				if ending == "Abort" {
					if err := w.Abort(); err != nil {
						t.Errorf("Abort: %v", err)
					}
					ff.clear()
					if rep := s.Recover(); len(rep.Recovered) != 0 {
						t.Errorf("Recover after Abort made %v", rep.Recovered)
					}
					if got := rootNames(t, s); len(got) != 0 {
						t.Errorf("root after Abort = %q", got)
					}
					return
				}
				w.Close() // may fail too, while the fault lasts: the journal keeps it
				ff.clear()
				rep := s.Recover()
				if len(rep.Errors) != 0 {
					t.Errorf("Recover: %v", rep.Errors)
				}
				it, ok := checkWhole(t, s)[w.ID()]
				if !ok {
					t.Fatalf("no item after Close and Recover: root %q tmp %q", rootNames(t, s), names(t, s.tmp))
				}
				if string(it.eml) != sampleMsg {
					t.Errorf("item holds %d bytes", len(it.eml))
				}
			})
		}
	}
}

// TestJournalNoSegment: when no segment can be made (a tiny or full
// filesystem), writers fall back to fsyncing their own files.
func TestJournalNoSegment(t *testing.T) {
	s := newTestStore(t)
	os.MkdirAll(s.journal.dir, 0o750)
	os.Chmod(s.journal.dir, 0o500) // no new segment can be made
	t.Cleanup(func() { os.Chmod(s.journal.dir, 0o750) })
	if os.Geteuid() == 0 {
		// root ignores the mode: take the directory's place instead.
		os.Remove(s.journal.dir)
		os.WriteFile(s.journal.dir, nil, 0o600)
		t.Cleanup(func() { os.Remove(s.journal.dir) })
	}
	w, _ := s.Create()
	w.Write([]byte(sampleMsg))
	if err := w.Prepare(&Envelope{Source: SourceProxy}); err != nil {
		t.Fatalf("Prepare without a journal = %v, want the fsync path", err)
	}
	if err := w.Commit(&Envelope{Source: SourceProxy}); err != nil {
		t.Fatal(err)
	}
	readItem(t, s, w.ID())
	if fw := w.(*fileWriter); !fw.classic || fw.journaled {
		t.Error("the item went through the journal that is down")
	}
}

// The crash tests: a helper process writes items and is killed by SIGKILL
// at a step; the parent checks that every item whose Prepare or Commit
// returned (the moments a hook point tells the MTA) is an item with its
// bytes after Recover, that nothing partial is visible, and that the same
// holds after a power loss on top of the crash.

// killPoints are the steps the journal adds.
var killPoints = []string{"journal-written", "journal-synced", "commit-durable", "commit-between-renames", "checkpoint-synced", "segment-made", "between-items"}

func TestJournalHelperProcess(t *testing.T) {
	dir := os.Getenv("ARCHIVE_JOURNAL_HELPER")
	if dir == "" {
		return
	}
	at := os.Getenv("ARCHIVE_KILL_AT")
	nth, _ := strconv.Atoi(os.Getenv("ARCHIVE_KILL_NTH"))
	seen := 0
	killPoint = func(name string) {
		if name == at {
			if seen++; seen == nth {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
	}
	s, err := Open(dir, Options{Host: "helper.example", JournalSegmentSize: 64 << 10})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	s.journal.age = time.Hour
	noCheckpoint := os.Getenv("ARCHIVE_NO_CHECKPOINT") != ""
	for i := 0; i < 12; i++ {
		w, err := s.Create()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		w.Write(msgN(i))
		env := &Envelope{Source: SourceProxy, MailFrom: &MailFrom{Addr: "p@example.com"}}
		if err := w.Prepare(env); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Printf("acked %s %d\n", w.ID(), i) // the MTA may take it now
		if err := w.Commit(env); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if i%4 == 3 && !noCheckpoint {
			s.Checkpoint()
		}
		killPoint("between-items")
	}
	fmt.Println("done")
	os.Exit(0)
}

func TestJournalCrash(t *testing.T) {
	for _, at := range killPoints {
		for _, nth := range []int{1, 3} {
			for _, power := range []bool{false, true} {
				name := fmt.Sprintf("%s/%d", at, nth)
				if power {
					name += "/power-loss"
				}
				if power && at == "checkpoint-synced" {
					continue // the power-loss runs have no checkpoint (it would make files durable that the simulation then removes)
				}
				t.Run(name, func(t *testing.T) {
					root := t.TempDir()
					cmd := exec.Command(os.Args[0], "-test.run=^TestJournalHelperProcess$")
					cmd.Env = append(os.Environ(), "ARCHIVE_JOURNAL_HELPER="+root, "ARCHIVE_KILL_AT="+at, "ARCHIVE_KILL_NTH="+strconv.Itoa(nth))
					if power {
						cmd.Env = append(cmd.Env, "ARCHIVE_NO_CHECKPOINT=1")
					}
					out, err := cmd.Output()
					var ee *exec.ExitError
					if err != nil && !errors.As(err, &ee) {
						t.Fatal(err)
					}
					acked := map[string]int{}
					killed := true
					sc := bufio.NewScanner(bytes.NewReader(out))
					for sc.Scan() {
						f := strings.Fields(sc.Text())
						switch {
						case len(f) == 3 && f[0] == "acked":
							acked[f[1]], _ = strconv.Atoi(f[2])
						case len(f) == 1 && f[0] == "done":
							killed = false
						case strings.HasPrefix(sc.Text(), "error:"):
							t.Fatalf("helper: %s", sc.Text())
						}
					}
					if killed && (ee == nil || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL) {
						t.Fatalf("helper neither finished nor was killed: %v\n%s", err, out)
					}
					if !killed && at != "segment-made" && at != "checkpoint-synced" {
						t.Fatalf("kill point %s #%d never reached", at, nth)
					}
					if power {
						powerLoss(t, root)
					}
					s := newTestStoreAt(t, root)
					rep := s.Recover()
					if len(rep.Errors) != 0 {
						t.Errorf("Recover: %v", rep.Errors)
					}
					items := checkWhole(t, s)
					for id, i := range acked {
						it, ok := items[id]
						if !ok {
							t.Errorf("acknowledged message %d (%s) has no item", i, id)
						} else if !bytes.Equal(it.eml, msgN(i)) {
							t.Errorf("item %d holds %d bytes, want %d", i, len(it.eml), len(msgN(i)))
						}
					}
					if got := names(t, s.tmp); len(got) != 0 {
						t.Errorf("tmp/ after Recover = %q", got)
					}
					// No message bytes were thrown away: every .eml left is an item's.
					for _, n := range rootNames(t, s) {
						if id, ok := strings.CutSuffix(n, ".eml"); ok && !exists(s.Path(id, ".json")) {
							t.Errorf("%s in the root without its .json", n)
						}
					}
					// Nothing is left for a second recovery.
					if rep := s.Recover(); len(rep.Recovered) != 0 || len(rep.Errors) != 0 {
						t.Errorf("second Recover = %+v", rep)
					}
				})
			}
		}
	}
}

// TestJournalDoneMark: a process that ends with its items in files (the
// wrapper's, one item each) leaves the done mark after its records, so the
// next process appends without replaying anything.
func TestJournalDoneMark(t *testing.T) {
	root := t.TempDir()
	for i := 0; i < 3; i++ {
		s := newTestStoreAt(t, root)
		w, _ := s.Create("wrapper")
		w.Write(msgN(i))
		if err := w.Commit(&Envelope{Source: SourceWrapper}); err != nil {
			t.Fatal(err)
		}
		abandon(s) // the process execs the delivery command
	}
	ents, _ := os.ReadDir(filepath.Join(root, journalDirName))
	if len(ents) != 1 {
		t.Fatalf("journal holds %d files, want one segment taken in turn", len(ents))
	}
	f, err := os.Open(filepath.Join(root, journalDirName, ents[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr, _ := readSegHeader(f)
	fi, _ := f.Stat()
	end, n := scanEnd(f, hdr, fi.Size())
	if n == 0 || hdr.done != end {
		t.Errorf("segment: %d records end at %d, done mark at %d", n, end, hdr.done)
	}
}
