package archive

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const sampleMsg = "Return-Path: <j@example.com>\r\n" +
	"Message-ID: <20261124130501.abc@example.com>\r\n" +
	"Date: Tue, 24 Nov 2026 13:05:01 +0000\r\n" +
	"From: =?UTF-8?B?SsO2cmc=?= <j@example.com>\r\n" +
	"To: list@example.org\r\n" +
	"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= =?ISO-8859-1?Q?_caf=E9?=\r\n" +
	"\r\n" +
	"Body line 1\r\n" +
	".leading dot, kept as is\r\n" +
	"\r\n" +
	"no final line end"

var archivedAtRE = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$`)

// commit archives msg through a fresh writer, writing it in chunks of the
// given size, and returns the item's ID.
func commit(t *testing.T, s *Store, msg []byte, chunk int, env *Envelope, tags ...string) string {
	t.Helper()
	w, err := s.Create(tags...)
	if err != nil {
		t.Fatal(err)
	}
	for rest := msg; len(rest) > 0; {
		n := min(chunk, len(rest))
		if k, err := w.Write(rest[:n]); err != nil || k != n {
			t.Fatalf("Write = %d, %v; want %d, nil", k, err, n)
		}
		rest = rest[n:]
	}
	if w.Size() != int64(len(msg)) {
		t.Errorf("Size() = %d, want %d", w.Size(), len(msg))
	}
	if env == nil {
		env = &Envelope{Source: SourceProxy}
	}
	if err := w.Commit(env); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	return w.ID()
}

func TestCommit(t *testing.T) {
	setUmask(t, 0o077)
	s := newFileStore(t)
	at := time.Date(2026, 11, 24, 14, 5, 1, 123_456_789, time.FixedZone("CET", 3600))
	s.now = func() time.Time { return at }

	w, err := s.Create("inbox", "a/b", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(w.ID(), "20261124T130501Z.") || !strings.HasSuffix(w.ID(), ".inbox.a%2Fb.%") {
		t.Errorf("ID = %q, want 20261124T130501Z.UNIQUE.inbox.a%%2Fb.%%", w.ID())
	}
	if got := names(t, s.tmp); len(got) != 1 || got[0] != w.ID()+".eml" {
		t.Errorf("tmp/ after Create = %q, want just the .eml", got)
	}
	if _, err := w.Write([]byte(sampleMsg[:100])); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(sampleMsg[100:])); err != nil {
		t.Fatal(err)
	}
	env := &Envelope{
		Source:   SourceWrapper,
		MailFrom: &MailFrom{Addr: "j@example.com", Params: []string{"SIZE=300", "BODY=8BITMIME"}},
		RcptTo:   []Rcpt{{Addr: "list@example.org", Accepted: true}},
		Outcome:  OutcomeAccepted,
	}
	if err := w.Commit(env); err != nil {
		t.Fatal(err)
	}
	id := w.ID()
	if got := rootNames(t, s); !equalStrings(got, []string{id + ".eml", id + ".json"}) {
		t.Errorf("root = %q, want the item's two files", got)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ after Commit = %q, want empty", got)
	}

	it := readItem(t, s, id)
	if string(it.eml) != sampleMsg {
		t.Errorf(".eml differs from the message written:\n%q\n%q", it.eml, sampleMsg)
	}
	if got := it.raw["archived_at"].(string); !archivedAtRE.MatchString(got) || got != "2026-11-24T13:05:01.123456789Z" {
		t.Errorf("archived_at = %q, want 2026-11-24T13:05:01.123456789Z", got)
	}
	if it.env.Host != "archive.test" {
		t.Errorf("host = %q", it.env.Host)
	}
	if it.env.Source != SourceWrapper || it.env.Outcome != OutcomeAccepted || it.env.MailFrom.Params[1] != "BODY=8BITMIME" {
		t.Errorf("caller's fields not kept: %+v", it.env)
	}
	if !equalStrings(it.env.Tags, []string{"inbox", "a/b", ""}) {
		t.Errorf("tags = %q, want the decoded tags", it.env.Tags)
	}
	if _, ok := it.raw["recovered"]; ok {
		t.Errorf("recovered present in a normal item")
	}
	want := Message{
		Size:      int64(len(sampleMsg)),
		SHA256:    sha256Hex([]byte(sampleMsg)),
		MessageID: "<20261124130501.abc@example.com>",
		Date:      "Tue, 24 Nov 2026 13:05:01 +0000",
		From:      "Jörg <j@example.com>",
		Subject:   "Grüße café",
	}
	if it.env.Message != want {
		t.Errorf("message = %+v\nwant %+v", it.env.Message, want)
	}
	// After Commit the writer is finished; the other endings do nothing.
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Commit succeeded")
	}
	if err := w.Commit(&Envelope{}); err == nil {
		t.Error("second Commit succeeded")
	}
	if err := w.Abort(); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("Close after Commit: %v", err)
	}
	if got := rootNames(t, s); len(got) != 2 {
		t.Errorf("Abort after Commit touched the item: root = %q", got)
	}
}

// TestCommitArchivedAtFraction: the contract promises archived_at "with
// fraction"; Go's time.Time drops a zero fraction.
func TestCommitArchivedAtFraction(t *testing.T) {
	s := newTestStore(t)
	s.now = func() time.Time { return time.Date(2026, 11, 24, 13, 5, 1, 0, time.UTC) }
	id := commit(t, s, []byte(sampleMsg), 4096, nil)
	if got := readItem(t, s, id).raw["archived_at"]; !archivedAtRE.MatchString(got.(string)) {
		t.Errorf("archived_at = %q at a whole second, want RFC 3339 UTC with a fraction (e.g. 2026-11-24T13:05:01.000000000Z)", got)
	}
}

func TestCommitLongTags(t *testing.T) {
	s := newTestStore(t)
	tags := []string{strings.Repeat("t/", 200), "second"}
	id := commit(t, s, []byte(sampleMsg), 4096, nil, tags...)
	checkIDShape(t, id)
	it := readItem(t, s, id)
	if !equalStrings(it.env.Tags, tags) {
		t.Errorf("envelope tags = %q, want the full tags %q", it.env.Tags, tags)
	}
	p, err := ParseID(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Tags) == 0 || !strings.HasPrefix(tags[0], p.Tags[0]) || len(p.Tags[0]) >= len(tags[0]) {
		t.Errorf("ID tags = %q, want a truncated prefix of the first tag", p.Tags)
	}
}

// TestCommitCallerTagsKept: a caller that sets Tags in the envelope keeps them.
func TestCommitCallerTagsKept(t *testing.T) {
	s := newTestStore(t)
	id := commit(t, s, []byte(sampleMsg), 4096, &Envelope{Source: SourceWrapper, Tags: []string{"full tag"}}, "x")
	if got := readItem(t, s, id).env.Tags; !equalStrings(got, []string{"full tag"}) {
		t.Errorf("tags = %q", got)
	}
}

func TestCommitMessageFields(t *testing.T) {
	bigHeader := "Subject: first\r\nMessage-ID: <big@example.com>\r\n" +
		strings.Repeat("X-Pad: "+strings.Repeat("p", 90)+"\r\n", 1500) + // ~145 KiB
		"From: after-the-cap@example.com\r\n\r\nbody\r\n"
	tests := []struct {
		name  string
		msg   string
		chunk int
		want  Message // without size and sha256
	}{
		{"utf-8 and latin-1 encoded words", sampleMsg, 4096, Message{
			MessageID: "<20261124130501.abc@example.com>", Date: "Tue, 24 Nov 2026 13:05:01 +0000",
			From: "Jörg <j@example.com>", Subject: "Grüße café",
		}},
		{"one-byte writes", sampleMsg, 1, Message{
			MessageID: "<20261124130501.abc@example.com>", Date: "Tue, 24 Nov 2026 13:05:01 +0000",
			From: "Jörg <j@example.com>", Subject: "Grüße café",
		}},
		{"latin-1 subject", "Subject: =?iso-8859-1?q?=C7a_va=3F_=E0_bient=F4t?=\r\n\r\nx", 4096,
			Message{Subject: "Ça va? à bientôt"}},
		{"unknown charset kept raw", "Subject: =?x-unknown?Q?abc?=\r\n\r\n", 4096,
			Message{Subject: "=?x-unknown?Q?abc?="}},
		{"raw 8-bit subject made valid UTF-8", "Subject: caf\xe9\r\n\r\n", 4096,
			Message{Subject: "caf\uFFFD"}},
		{"folded subject", "Subject: a\r\n  folded\r\n\tsubject\r\nFrom: x@example.com\r\n\r\n", 7,
			Message{Subject: "a folded subject", From: "x@example.com"}},
		{"LF line ends", "Message-Id: <lf@example.com>\nSubject: lf\n\nbody\n", 3,
			Message{MessageID: "<lf@example.com>", Subject: "lf"}},
		{"wrapper From line", "From j@example.com  Tue Nov 24 13:05:01 2026\n" +
			"Return-Path: <j@example.com>\nMessage-Id: <w@example.com>\nFrom: j@example.com\nSubject: via pipe\n\nbody\n", 5,
			Message{MessageID: "<w@example.com>", From: "j@example.com", Subject: "via pipe"}},
		{"header only, no empty line", "Subject: only a header\r\n", 4096, Message{Subject: "only a header"}},
		{"header only, no line end", "Subject: no line end", 4096, Message{Subject: "no line end"}},
		{"no header", "\r\nSubject: in the body\r\n", 4096, Message{}},
		{"no header, one-byte writes", "\r\nSubject: in the body\r\n", 1, Message{}},
		{"not a header", "this is not a header\r\nSubject: x\r\n\r\nbody", 4096, Message{}},
		{"leading space", " Subject: x\r\n\r\nbody", 4096, Message{}},
		{"fault after fields", "Subject: found\r\nbad line\r\nFrom: lost@example.com\r\n\r\n", 4096,
			Message{Subject: "found"}},
		{"empty message", "", 4096, Message{}},
		{"binary", "\x00\x01\x02\xff\r\n\r\n", 4096, Message{}},
		{"header over 128 KiB", bigHeader, 4096, Message{Subject: "first", MessageID: "<big@example.com>"}},
		{"header over 128 KiB, one write", bigHeader, len(bigHeader), Message{Subject: "first", MessageID: "<big@example.com>"}},
		{"end marker split", "Subject: split\r\n\r\nFrom: body@example.com\r\n", 17, Message{Subject: "split"}},
	}
	s := newTestStore(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := commit(t, s, []byte(tt.msg), max(tt.chunk, 1), nil)
			it := readItem(t, s, id)
			if string(it.eml) != tt.msg {
				t.Errorf(".eml differs from the message written")
			}
			got := it.env.Message
			got.Size, got.SHA256 = 0, ""
			if got != tt.want {
				t.Errorf("message fields = %+v\nwant %+v", got, tt.want)
			}
			m := it.raw["message"].(map[string]any)
			for _, k := range []string{"message_id", "date", "from", "subject"} {
				if v, ok := m[k]; ok && v == "" {
					t.Errorf("message.%s present but empty; absent fields must be omitted", k)
				}
			}
			if _, ok := m["size"]; !ok {
				t.Error("message.size missing")
			}
		})
	}
}

// TestSyncThenWrite: bytes written after an explicit Sync must still be
// made durable by Commit.
func TestSyncThenWrite(t *testing.T) {
	s := newTestStoreOpt(t, Options{NoJournal: true})
	ff := newFaultFS(s)
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	f := ff.file(ff.lastCreated())
	w.Write([]byte(sampleMsg[:50]))
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(sampleMsg[50:]))
	if err := w.Commit(&Envelope{Source: SourceProxy}); err != nil {
		t.Fatal(err)
	}
	if f.dirty {
		t.Errorf("Commit did not fsync the %d bytes written after Sync (the .eml had %d fsyncs)", len(sampleMsg)-50, f.syncs)
	}
}

// failure paths -----------------------------------------------------------

type failCase struct {
	name  string
	setup func(ff *faultFS)
	// wantErr is the exact error text; ID and ROOT stand for the item's ID
	// and the root directory.
	wantErr string
	errno   error
	// where the message bytes are after Close: "tmp" or "root".
	emlAfterClose string
	// mode is the store it applies to: "classic" (Options.NoJournal),
	// "journal", or "" for both.
	mode string
}

var failCases = []failCase{
	{"write ENOSPC", func(ff *faultFS) { ff.writeErr[".eml"], ff.writeOK[".eml"] = syscall.ENOSPC, 100 },
		"archive: write tmp/ID.eml: no space left on device", syscall.ENOSPC, "tmp", ""},
	{"fsync .eml EIO", func(ff *faultFS) { ff.syncErr[".eml"] = syscall.EIO },
		"archive: fsync tmp/ID.eml: input/output error", syscall.EIO, "tmp", "classic"},
	{"fsync tmp/ EIO", func(ff *faultFS) { ff.syncDirErr["tmp"] = syscall.EIO },
		"archive: fsync tmp/: input/output error", syscall.EIO, "tmp", "classic"},
	{"create .json ENOSPC", func(ff *faultFS) { ff.createErr[".json"] = syscall.ENOSPC },
		"archive: create tmp/ID.json: no space left on device", syscall.ENOSPC, "tmp", ""},
	{"create .json EACCES", func(ff *faultFS) { ff.createErr[".json"] = syscall.EACCES },
		"archive: create tmp/ID.json: permission denied", syscall.EACCES, "tmp", ""},
	{"write .json ENOSPC", func(ff *faultFS) { ff.writeErr[".json"], ff.writeOK[".json"] = syscall.ENOSPC, 20 },
		"archive: write tmp/ID.json: no space left on device", syscall.ENOSPC, "tmp", ""},
	{"fsync .json EIO", func(ff *faultFS) { ff.syncErr[".json"] = syscall.EIO },
		"archive: fsync tmp/ID.json: input/output error", syscall.EIO, "tmp", "classic"},
	{"close .json EIO", func(ff *faultFS) { ff.closeErr[".json"] = syscall.EIO },
		"archive: close tmp/ID.json: input/output error", syscall.EIO, "tmp", ""},
	{"rename .eml", func(ff *faultFS) { ff.renameErr[".eml"] = syscall.EXDEV },
		"archive: rename tmp/ID.eml: invalid cross-device link", syscall.EXDEV, "tmp", ""},
	{"rename .json", func(ff *faultFS) { ff.renameErr[".json"] = syscall.EIO },
		"archive: rename tmp/ID.json: input/output error", syscall.EIO, "root", ""},
	{"fsync root EIO", func(ff *faultFS) { ff.syncDirErr["root"] = syscall.EIO },
		"archive: fsync ROOT: input/output error", syscall.EIO, "root", "classic"},
	{"journal write EIO", func(ff *faultFS) { ff.journalWriteErr = syscall.EIO },
		"archive: write journal: input/output error", syscall.EIO, "tmp", "journal"},
	{"journal fdatasync EIO", func(ff *faultFS) { ff.datasyncErr = syscall.EIO },
		"archive: fdatasync journal: input/output error", syscall.EIO, "tmp", "journal"},
}

// storeModes are the two ways a store makes items durable.
var storeModes = []struct {
	name string
	opt  Options
}{{"journal", Options{}}, {"classic", Options{NoJournal: true}}}

// newModeStore opens a store of a mode of storeModes, with file writers.
func newModeStore(t *testing.T, opt Options) *Store {
	return newTestStoreOpt(t, opt)
}

func TestCreateFails(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EACCES, syscall.EMFILE} {
		t.Run(errno.Error(), func(t *testing.T) {
			s := newFileStore(t)
			ff := newFaultFS(s)
			ff.createErr[".eml"] = errno
			w, err := s.Create("tag")
			if err == nil {
				t.Fatalf("Create succeeded: %s", w.ID())
			}
			id := strings.TrimSuffix(filepath.Base(ff.lastCreated()), ".eml")
			want := "archive: create tmp/" + id + ".eml: " + errno.Error()
			if err.Error() != want {
				t.Errorf("Create error = %q\nwant %q", err, want)
			}
			if !errors.Is(err, errno) {
				t.Errorf("Create error %v does not wrap %v", err, errno)
			}
			if got := names(t, s.tmp); len(got) != 0 {
				t.Errorf("tmp/ = %q, want empty", got)
			}
			if got := rootNames(t, s); len(got) != 0 {
				t.Errorf("root = %q, want empty", got)
			}
		})
	}
}

func TestCommitFails(t *testing.T) {
	msg := []byte(sampleMsg)
	for _, mode := range storeModes {
		for _, tc := range failCases {
			if tc.mode != "" && tc.mode != mode.name {
				continue
			}
			for _, ending := range []string{"Abort", "Close"} {
				t.Run(mode.name+"/"+tc.name+"/"+ending, func(t *testing.T) {
					s := newModeStore(t, mode.opt)
					ff := newFaultFS(s)
					tc.setup(ff)
					w, err := s.Create("tag")
					if err != nil {
						t.Fatal(err)
					}
					id := w.ID()
					want := strings.ReplaceAll(strings.ReplaceAll(tc.wantErr, "ID", id), "ROOT", s.root)

					var written []byte // what reached the file
					n, werr := w.Write(msg[:150])
					written = append(written, msg[:n]...)
					if werr == nil {
						n, werr = w.Write(msg[150:])
						written = append(written, msg[150:150+n]...)
					}
					if werr != nil {
						if werr.Error() != want {
							t.Errorf("Write error = %q\nwant %q", werr, want)
						}
						if n, err := w.Write([]byte("more")); n != 0 || err != werr {
							t.Errorf("Write after a failed Write = %d, %v; want 0 and the same error", n, err)
						}
						if w.Err() != werr {
							t.Errorf("Err() = %v, want %v", w.Err(), werr)
						}
						if err := w.Sync(); err != werr {
							t.Errorf("Sync after a failed Write = %v, want the same error", err)
						}
					}
					if w.Size() != int64(len(written)) {
						t.Errorf("Size() = %d, %d bytes reached the file", w.Size(), len(written))
					}

					err = w.Commit(&Envelope{Source: SourceProxy, MailFrom: &MailFrom{Addr: "j@example.com"}, Outcome: OutcomeAccepted})
					if err == nil {
						t.Fatal("Commit succeeded")
					}
					if err.Error() != want {
						t.Errorf("Commit error = %q\nwant %q", err, want)
					}
					if !errors.Is(err, tc.errno) {
						t.Errorf("Commit error %v does not wrap %v", err, tc.errno)
					}
					if exists(s.Path(id, ".json")) {
						t.Errorf("%s.json is in the root after a failed Commit: the item is visible", id)
					}

					switch ending {
					case "Abort":
						if err := w.Abort(); err != nil {
							t.Errorf("Abort: %v", err)
						}
						if got := names(t, s.tmp); len(got) != 0 {
							t.Errorf("tmp/ after Abort = %q, want empty", got)
						}
						if got := rootNames(t, s); len(got) != 0 {
							t.Errorf("root after Abort = %q, want empty", got)
						}
					case "Close":
						if err := w.Close(); err != nil {
							t.Errorf("Close: %v", err)
						}
						where := s.tmp
						if tc.emlAfterClose == "root" {
							where = s.root
						}
						b, err := os.ReadFile(filepath.Join(where, id+".eml"))
						if err != nil {
							t.Fatalf("after Close the bytes are not in %s: %v", where, err)
						}
						if !bytes.Equal(b, written) {
							t.Errorf("after Close the .eml holds %d bytes, %d were written", len(b), len(written))
						}
						// A recovery sweep makes an item of them.
						s.fs = osFS
						rep := s.Recover()
						if len(rep.Errors) > 0 || rep.Busy != 0 {
							t.Errorf("Recover: %+v", rep)
						}
						if !exists(s.Path(id, ".json")) {
							t.Fatalf("no item after Close and Recover; root = %q, tmp = %q", rootNames(t, s), names(t, s.tmp))
						}
						it := readItem(t, s, id)
						if !bytes.Equal(it.eml, written) {
							t.Errorf("recovered .eml differs from the bytes written")
						}
						if got := names(t, s.tmp); len(got) != 0 {
							t.Errorf("tmp/ after Recover = %q, want empty", got)
						}
					}
					// Nothing is ever left behind as a message-less item.
					if exists(s.Path(id, ".json")) && !exists(s.Path(id, ".eml")) {
						t.Errorf("%s.json in the root without its .eml", id)
					}
				})
			}
		}
	}
}

// TestWriteShortWrite: a write that fails part-way counts and hashes only
// the bytes that reached the file.
func TestWriteShortWrite(t *testing.T) {
	s := newFileStore(t)
	ff := newFaultFS(s)
	ff.writeErr[".eml"], ff.writeOK[".eml"] = syscall.ENOSPC, 10
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	n, err := w.Write([]byte(sampleMsg))
	if n != 10 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Write = %d, %v; want 10, ENOSPC", n, err)
	}
	if w.Size() != 10 {
		t.Errorf("Size() = %d, want 10", w.Size())
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Abort succeeded")
	}
	if err := w.Commit(&Envelope{}); err == nil {
		t.Error("Commit after Abort succeeded")
	}
}

// TestAbortRemovesEverything: Abort after each commit step that succeeded
// part-way leaves nothing, and reports removal errors other than ENOENT.
func TestAbortRemoveError(t *testing.T) {
	s := newFileStore(t)
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(sampleMsg))
	s.fs.remove = func(name string) error {
		if strings.HasSuffix(name, ".eml") && filepath.Dir(name) == s.tmp {
			return &os.PathError{Op: "remove", Path: name, Err: syscall.EROFS}
		}
		return osFS.remove(name)
	}
	err = w.Abort()
	want := "archive: remove tmp/" + w.ID() + ".eml: read-only file system"
	if err == nil || err.Error() != want {
		t.Errorf("Abort = %v, want %q", err, want)
	}
}

// TestCreateRecoverRace: a recovery sweep that opens and locks a freshly
// created, still empty tmp/ID.eml in the moment between the writer's create
// and its flock must not make Create fail: the sweep lets go at once.
func TestCreateRecoverRace(t *testing.T) {
	s := newTestStore(t)
	ff := newFaultFS(s)
	ff.afterCreate = func(name string) {
		// What recoverOne does to an empty file: open, flock, stat, close.
		f, err := os.Open(name)
		if err != nil {
			t.Error(err)
			return
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Error(err)
		}
		go func() {
			time.Sleep(50 * time.Millisecond)
			f.Close()
		}()
	}
	w, err := s.Create()
	if err != nil {
		t.Fatalf("Create failed because a recovery sweep held the lock for a moment: %v", err)
	}
	w.Abort()
}

// TestAbortRecoverRace: Abort must not let go of its lock before the files
// are gone. A sweep that runs in between would recover the aborted message,
// and Abort would then remove the recovered .eml, leaving a .json in the
// root with no message.
func TestAbortRecoverRace(t *testing.T) {
	s := newTestStore(t)
	sweeper, err := Open(s.root, Options{Host: "sweeper", Logger: s.log})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	id := w.ID()
	w.Write([]byte(sampleMsg))
	var once sync.Once
	s.fs.remove = func(name string) error {
		once.Do(func() { sweeper.Recover() })
		return osFS.remove(name)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if exists(s.Path(id, ".json")) && !exists(s.Path(id, ".eml")) {
		t.Errorf("a sweep during Abort left %s.json in the root with no .eml", id)
	}
	if got := rootNames(t, s); len(got) != 0 {
		t.Errorf("root after Abort = %q, want empty", got)
	}
}

func TestCommitNoSpaceThenCloseThenRetry(t *testing.T) {
	// The proxy's path: the server accepted, Commit failed, Close keeps the
	// bytes; a later sweep (with space again) makes the item.
	s := newTestStore(t)
	ff := newFaultFS(s)
	ff.createErr[".json"] = syscall.ENOSPC
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(sampleMsg))
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(&Envelope{Source: SourceProxy}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Commit = %v, want ENOSPC", err)
	}
	w.Close()
	delete(ff.createErr, ".json")
	rep := s.Recover()
	if len(rep.Recovered) != 1 || rep.Recovered[0] != w.ID() {
		t.Fatalf("Recover = %+v", rep)
	}
	if it := readItem(t, s, w.ID()); !it.env.Recovered || string(it.eml) != sampleMsg {
		t.Errorf("recovered item: %+v", it.env)
	}
}

func TestOpen(t *testing.T) {
	if _, err := Open("", Options{}); err == nil {
		t.Error("Open(\"\") succeeded")
	}
	dir := filepath.Join(t.TempDir(), "a", "b")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Root() != dir || s.host == "" || s.log == nil {
		t.Errorf("Open defaults: root %q host %q log %v", s.Root(), s.host, s.log)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || !fi.IsDir() {
		t.Errorf("tmp/ not created: %v", err)
	}
	if s.Path("X", ".eml") != filepath.Join(dir, "X.eml") {
		t.Errorf("Path = %q", s.Path("X", ".eml"))
	}
	// A file in the way of the root.
	f := filepath.Join(t.TempDir(), "file")
	mustWrite(t, f, nil)
	if _, err := Open(f, Options{}); err == nil || !strings.HasPrefix(err.Error(), "archive: ") {
		t.Errorf("Open over a file = %v", err)
	}
}

// TestOpenUmask: like the files, the directories Open creates must not be
// narrowed by a restrictive umask, or the archive group cannot reach the
// 0640 items inside.
func TestOpenUmask(t *testing.T) {
	setUmask(t, 0o077)
	dir := filepath.Join(t.TempDir(), "archive")
	if _, err := Open(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("root created with mode %v under umask 077, want %v", fi.Mode().Perm(), os.FileMode(0o750))
	}
}

func TestConcurrentWriters(t *testing.T) {
	const n = 1000
	s := newTestStore(t)
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := fmt.Appendf(nil, "Message-ID: <%d@example.com>\r\nSubject: message %d\r\n\r\nbody %d\r\n", i, i, i)
			w, err := s.Create(fmt.Sprint("writer", i))
			if err != nil {
				errs[i] = err
				return
			}
			ids[i] = w.ID()
			for j := 0; j < len(msg); j += 16 {
				if _, err := w.Write(msg[j:min(j+16, len(msg))]); err != nil {
					errs[i] = err
					return
				}
			}
			errs[i] = w.Commit(&Envelope{Source: SourceProxy})
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("writer %d: %v", i, errs[i])
		}
		if seen[id] {
			t.Fatalf("ID %s given twice", id)
		}
		seen[id] = true
		it := readItem(t, s, id)
		want := fmt.Sprintf("Message-ID: <%d@example.com>\r\nSubject: message %d\r\n\r\nbody %d\r\n", i, i, i)
		if string(it.eml) != want {
			t.Errorf("item %s holds %q, want %q", id, it.eml, want)
		}
		if it.env.Message.Subject != fmt.Sprint("message ", i) || !equalStrings(it.env.Tags, []string{fmt.Sprint("writer", i)}) {
			t.Errorf("item %s: envelope %+v", id, it.env)
		}
	}
	if got := len(rootNames(t, s)); got != 2*n {
		t.Errorf("root holds %d files, want %d", got, 2*n)
	}
	if got := names(t, s.tmp); len(got) != 0 {
		t.Errorf("tmp/ = %q, want empty", got)
	}
}

func TestParseMessageFields(t *testing.T) {
	tests := []struct {
		start string
		want  Message
	}{
		{"From j@example.com Tue Nov 24 13:05:01 2026", Message{}}, // mbox line only
		{"From j@example.com Tue Nov 24 13:05:01 2026\nSubject: s\n", Message{Subject: "s"}},
		{"From: j@example.com\r\n\r\n", Message{From: "j@example.com"}},
		{"Subject: =?utf-8?b?w6k=?=\r\nmessage-id:   <lower@example.com>  \r\n\r\n", Message{Subject: "é", MessageID: "<lower@example.com>"}},
		{"", Message{}},
	}
	for _, tt := range tests {
		if got := ParseMessageFields([]byte(tt.start)); got != tt.want {
			t.Errorf("ParseMessageFields(%q) = %+v, want %+v", tt.start, got, tt.want)
		}
	}
}

func TestHeaderEnd(t *testing.T) {
	for _, tt := range []struct {
		b    string
		want int
	}{
		{"a: b\r\n", -1},
		{"a: b\n\n", 4},
		{"a: b\r\n\r\n", 5},
		{"a: b\n\r\nc\n\n", 4},
		{"a: b\n\nc\n\r\n", 4},
	} {
		if got := headerEnd([]byte(tt.b)); got != tt.want {
			t.Errorf("headerEnd(%q) = %d, want %d", tt.b, got, tt.want)
		}
	}
}

func TestClientIsZero(t *testing.T) {
	var nilClient *Client
	if !nilClient.IsZero() || !(&Client{}).IsZero() || (&Client{Helo: "x"}).IsZero() {
		t.Error("IsZero")
	}
}
