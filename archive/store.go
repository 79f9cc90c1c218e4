// Package archive is the archive store shared by every hook point: writers
// stream a message into tmp/, then commit it durably with its envelope, as
// specified in docs/archive-format.md.
package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// file is what the store needs of an open file; tests substitute failing ones.
type file interface {
	Write(p []byte) (int, error)
	Sync() error
	Close() error
	Fd() uintptr
}

// fsys holds the filesystem operations the store performs, so tests can make
// each of them fail (chasquid's safeio does the same).
type fsys struct {
	create  func(name string) (file, error)
	rename  func(oldpath, newpath string) error
	remove  func(name string) error
	syncDir func(dir string) error
}

var osFS = fsys{
	create:  createExcl,
	rename:  os.Rename,
	remove:  os.Remove,
	syncDir: SyncDir,
}

// noSyncFS is fs without fsyncs, for a tmpfs.
func noSyncFS(fs fsys) fsys {
	create := fs.create
	fs.create = func(name string) (file, error) {
		f, err := create(name)
		if err != nil {
			return nil, err
		}
		return noSyncFile{f}, nil
	}
	fs.syncDir = func(string) error { return nil }
	return fs
}

type noSyncFile struct{ file }

func (noSyncFile) Sync() error { return nil }

// FileMode is the mode of every archived file: the archive group may read,
// nobody else may.
const FileMode = 0o640

func createExcl(name string) (file, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, FileMode)
	if err != nil {
		return nil, err
	}
	// A restrictive umask must not make the item unreadable to the archive
	// group, and a permissive one must not widen it. The fstat spares the
	// usual case a metadata change (a filesystem journal handle).
	if fi, err := f.Stat(); err == nil && fi.Mode() == FileMode {
		return f, nil
	}
	if err := f.Chmod(FileMode); err != nil {
		f.Close()
		os.Remove(name)
		return nil, err
	}
	return f, nil
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Store is an archive root. It is safe for concurrent use by many writers,
// in one process or many.
type Store struct {
	root string
	tmp  string
	host string
	log  *slog.Logger
	now  func() time.Time
	fs   fsys

	// Directory fsyncs are shared by concurrent writers (group commit).
	tmpSync, rootSync *groupSync

	// The write-ahead journal; nil when Options.NoJournal.
	journal *journal
}

// Options configure a Store. The zero value is usable.
type Options struct {
	Logger *slog.Logger // default: slog.Default()
	Host   string       // default: os.Hostname()

	// NoJournal makes every item durable by fsyncing its own files (four
	// fsyncs per item) instead of by a journal record (one fdatasync
	// shared by the writers waiting). Both keep the same promise.
	NoJournal bool
	// JournalSegmentSize is the size of a journal segment file; default
	// DefaultSegmentSize. Messages over a quarter of it bypass the journal.
	JournalSegmentSize int64
}

// Open opens the archive root dir, creating it and its tmp/ if needed.
func Open(dir string, opt Options) (*Store, error) {
	if dir == "" {
		return nil, errors.New("archive: no archive directory given")
	}
	s := &Store{
		root: dir,
		tmp:  filepath.Join(dir, "tmp"),
		host: opt.Host,
		log:  opt.Logger,
		now:  time.Now,
		fs:   osFS,

		tmpSync:  newGroupSync(),
		rootSync: newGroupSync(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.host == "" {
		s.host, _ = os.Hostname()
	}
	for _, d := range []string{s.root, s.tmp} {
		if _, err := os.Stat(d); err == nil {
			continue // an existing directory keeps the modes its installer chose
		}
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
		// A restrictive umask must not lock the archive group out.
		if err := os.Chmod(d, 0o750); err != nil {
			return nil, fmt.Errorf("archive: %w", err)
		}
	}
	if onTmpfs(dir) {
		// Nothing on a tmpfs survives a reboot and its fsyncs do nothing:
		// neither the journal nor the fsync syscalls would buy anything.
		s.fs = noSyncFS(s.fs)
	} else if !opt.NoJournal {
		if j := newJournal(s, opt.JournalSegmentSize); j != nil {
			s.journal = j
		}
	}
	// Records of an earlier boot may hold the only copy of items whose
	// files were still in the page cache: put them back before anything
	// else happens.
	if put, errs := s.replayJournal(false); len(put) > 0 || len(errs) > 0 {
		for _, err := range errs {
			s.log.Error("archive: journal replay failed", "err", err)
		}
		if len(put) > 0 {
			s.Recover()
		}
	}
	return s, nil
}

// syncDir fsyncs the root or tmp/, sharing the fsync with concurrent
// writers.
func (s *Store) syncDir(dir string) error {
	g := s.rootSync
	if dir == s.tmp {
		g = s.tmpSync
	}
	if g == nil { // a Store built by hand in tests
		return s.fs.syncDir(dir)
	}
	return g.sync(func() error { return s.fs.syncDir(dir) })
}

// Root returns the archive root directory.
func (s *Store) Root() string { return s.root }

// Path returns the path of a committed item's file with the given extension
// (".eml" or ".json").
func (s *Store) Path(id, ext string) string { return filepath.Join(s.root, id+ext) }

// fileWriter is the Store's Writer: it streams one message into tmp/ID.eml
// and commits it as docs/archive-format.md says.
type fileWriter struct {
	s        *Store
	id       string
	tags     []string
	f        file
	sum      hash.Hash
	size     int64
	hdr      headerCapture
	err      error // sticky: the first write error
	synced   bool
	prepared bool // tmp/ID.json holds a provisional envelope
	done     bool
	tmpEML   string
	tmpJSON  string

	// The journal's view: while classic is false the whole message is in
	// jbuf, and jOff bytes of it are in records of jseg's generation jgen.
	classic     bool
	jbuf        []byte
	jseg        *segment
	jgen        uint64
	jOff        int64
	journaled   bool   // a record of this item exists: Abort says so
	provisional []byte // the envelope of Prepare, held only in the journal
}

// Create starts a new item. The tags become part of its ID (the wrapper's).
func (s *Store) Create(tags ...string) (Writer, error) {
	return s.create(tags...)
}

func (s *Store) create(tags ...string) (*fileWriter, error) {
	id, err := NewID(s.now(), tags...)
	if err != nil {
		return nil, err
	}
	return s.createFile(id, tags)
}

// createFile starts the item id as a file in tmp/.
func (s *Store) createFile(id string, tags []string) (*fileWriter, error) {
	w := &fileWriter{
		s:       s,
		id:      id,
		tags:    tags,
		sum:     sha256.New(),
		tmpEML:  filepath.Join(s.tmp, id+".eml"),
		tmpJSON: filepath.Join(s.tmp, id+".json"),
		classic: s.journal == nil,
	}
	f, err := s.fs.create(w.tmpEML)
	if err != nil {
		return nil, fmt.Errorf("archive: create %s: %w", w.rel(w.tmpEML), unwrapPath(err))
	}
	// The lock tells a concurrent recovery sweep that this file is being
	// written; the kernel drops it if this process dies. It blocks: a
	// sweep may hold it for a moment while it looks at the new empty file.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		s.fs.remove(w.tmpEML)
		return nil, fmt.Errorf("archive: lock %s: %w", w.rel(w.tmpEML), err)
	}
	w.f = f
	return w, nil
}

// ID returns the item's ID.
func (w *fileWriter) ID() string { return w.id }

// Size returns the number of bytes written so far.
func (w *fileWriter) Size() int64 { return w.size }

// Err returns the first write error, if any.
func (w *fileWriter) Err() error { return w.err }

func (w *fileWriter) rel(p string) string { return w.s.relPath(p) }

// relPath is p relative to the root, for messages.
func (s *Store) relPath(p string) string {
	if r, err := filepath.Rel(s.root, p); err == nil {
		return r
	}
	return p
}

// Write appends message bytes. After a failure every later Write returns the
// same error, so a caller streaming a message may check once at the end.
func (w *fileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, errors.New("archive: write after commit or abort")
	}
	n, err := w.f.Write(p)
	if n > 0 {
		w.synced = false
		if !w.classic {
			if w.size+int64(n) > w.s.journal.maxItem() {
				w.classic, w.jbuf = true, nil // too big: its own fsyncs
			} else {
				w.jbuf = append(w.jbuf, p[:n]...)
			}
		}
	}
	w.sum.Write(p[:n])
	w.hdr.write(p[:n])
	w.size += int64(n)
	if err != nil {
		w.err = fmt.Errorf("archive: write %s: %w", w.rel(w.tmpEML), unwrapPath(err))
		return n, w.err
	}
	return n, nil
}

// Sync makes the message bytes written so far durable: the file and its
// entry in tmp/. The proxy calls it before it lets the server accept the
// message; Commit calls it if nobody did.
func (w *fileWriter) Sync() error {
	if w.err != nil {
		return w.err
	}
	if w.synced {
		return nil
	}
	if !w.classic {
		err := w.journalPut(envNone, nil, true, false, nil)
		if err == nil {
			w.synced = true
			return nil
		}
		if !w.classic {
			return err
		}
		// The journal is unavailable: this item makes its own files
		// durable.
	}
	if err := w.f.Sync(); err != nil {
		w.err = fmt.Errorf("archive: fsync %s: %w", w.rel(w.tmpEML), unwrapPath(err))
		return w.err
	}
	if err := w.s.syncDir(w.s.tmp); err != nil {
		w.err = fmt.Errorf("archive: fsync tmp/: %w", unwrapPath(err))
		return w.err
	}
	w.synced = true
	return nil
}

// Prepare makes the message bytes and env, as a provisional envelope, durable
// under tmp/: if the item is never committed, recovery keeps that envelope
// (marked recovered) instead of a minimal one. Commit then replaces it.
func (w *fileWriter) Prepare(env *Envelope) error {
	if w.done {
		return errors.New("archive: prepare after commit or abort")
	}
	if w.prepared {
		return errors.New("archive: prepared twice")
	}
	if w.err != nil {
		return w.err
	}
	if env == nil {
		env = &Envelope{}
	}
	e := *env // the caller's envelope gets its fields filled by Commit only
	w.fillEnvelope(&e)
	if !w.classic {
		b, err := encodeEnvelope(&e)
		if err != nil {
			return err
		}
		// The envelope goes into the journal only: a sweep after this
		// process dies finds it there (a checkpoint carries it forward
		// while the item waits for its commit), and Close writes it out.
		if err := w.journalPut(envProvisional, b, true, true, nil); err != nil {
			if !w.classic { // else the journal was unavailable: fall through
				return err
			}
		} else {
			w.provisional = b
			w.synced, w.prepared = true, true
			return nil
		}
	}
	if err := w.f.Sync(); err != nil {
		w.err = fmt.Errorf("archive: fsync %s: %w", w.rel(w.tmpEML), unwrapPath(err))
		return w.err
	}
	if err := w.s.writeJSON(w.tmpJSON, &e); err != nil {
		w.err = err
		return err
	}
	if err := w.s.syncDir(w.s.tmp); err != nil {
		w.err = fmt.Errorf("archive: fsync tmp/: %w", unwrapPath(err))
		return w.err
	}
	w.synced, w.prepared = true, true
	return nil
}

// Reopen opens tmp/ID.eml for reading. The descriptor stays valid across
// the commit's rename, so it shows exactly the committed bytes.
func (w *fileWriter) Reopen() (*os.File, error) {
	f, err := os.Open(w.tmpEML)
	if err != nil {
		return nil, fmt.Errorf("archive: open %s for reading: %w", w.rel(w.tmpEML), unwrapPath(err))
	}
	return f, nil
}

// Commit completes the item: it fills in the envelope's version, ID, time,
// host, tags and message fields, writes ID.json durably, renames the .eml and
// then the .json into the root, and fsyncs the root. On error nothing is
// visible as an item; the caller decides whether to Abort (remove the bytes)
// or Close (leave them under tmp/ for recovery).
func (w *fileWriter) Commit(env *Envelope) error {
	if w.done {
		return errors.New("archive: commit after commit or abort")
	}
	if env == nil {
		env = &Envelope{}
	}
	if !w.classic {
		err := w.commitJournaled(env)
		if err == nil || !w.classic {
			return err
		}
		w.err = nil // the journal is unavailable: commit the classic way
	}
	if err := w.Sync(); err != nil {
		return err
	}
	w.fillEnvelope(env)
	if w.prepared {
		// Replace the provisional envelope atomically: a crash leaves the
		// one or the other, each complete.
		if err := w.s.replaceJSON(w.tmpJSON, env); err != nil {
			return err
		}
	} else if err := w.s.writeJSON(w.tmpJSON, env); err != nil {
		return err
	}
	final := w.s.Path(w.id, ".eml")
	if err := w.s.fs.rename(w.tmpEML, final); err != nil {
		return fmt.Errorf("archive: rename %s: %w", w.rel(w.tmpEML), unwrapPath(err))
	}
	if err := w.s.fs.rename(w.tmpJSON, w.s.Path(w.id, ".json")); err != nil {
		return fmt.Errorf("archive: rename %s: %w", w.rel(w.tmpJSON), unwrapPath(err))
	}
	if err := w.s.syncDir(w.s.root); err != nil {
		// Not durable, so not an item: move the .json back out of sight
		// (Abort or recovery then deals with the rest).
		err = fmt.Errorf("archive: fsync %s: %w", w.s.root, unwrapPath(err))
		if rerr := w.s.fs.rename(w.s.Path(w.id, ".json"), w.tmpJSON); rerr != nil {
			// The item stays visible although not known durable; say so.
			w.s.log.Error("archive: cannot take back an item whose commit failed",
				"id", w.id, "err", unwrapPath(rerr), "commit_err", err)
			err = errors.Join(err, fmt.Errorf("archive: rename %s.json back to tmp/: %w", w.id, unwrapPath(rerr)))
		}
		return err
	}
	w.done = true
	w.f.Close() // releases the lock; the data is already synced
	return nil
}

// commitJournaled commits an item through the journal: the envelope
// goes into tmp/ID.json without an fsync, the record with every byte not
// yet journaled and the final envelope is made durable, and only then are
// the files renamed into the root. The checkpoint makes the files durable
// later.
func (w *fileWriter) commitJournaled(env *Envelope) error {
	if w.err != nil {
		return w.err
	}
	w.fillEnvelope(env)
	b, err := encodeEnvelope(env)
	if err != nil {
		return err
	}
	if err := w.s.writeJSONBytes(w.tmpJSON, b, false); err != nil {
		w.s.fs.remove(w.tmpJSON) // never a torn envelope beside the bytes
		return err
	}
	// After Prepare, the bytes and an envelope are durable already, and
	// the MTA was told nothing before that: the final envelope's record
	// need not hold up the reply. It is durable with the next fdatasync
	// (started now); until then a power loss leaves the item as Prepare
	// left it, as a crash between Prepare and Commit always did.
	lazy := w.prepared && w.jOff == int64(len(w.jbuf))
	err = w.journalPut(envFinal, b, !lazy, false, func() error {
		killPoint("commit-durable")
		if err := w.s.fs.rename(w.tmpEML, w.s.Path(w.id, ".eml")); err != nil {
			return fmt.Errorf("archive: rename %s: %w", w.rel(w.tmpEML), unwrapPath(err))
		}
		killPoint("commit-between-renames")
		if err := w.s.fs.rename(w.tmpJSON, w.s.Path(w.id, ".json")); err != nil {
			return fmt.Errorf("archive: rename %s: %w", w.rel(w.tmpJSON), unwrapPath(err))
		}
		return nil
	})
	if err != nil {
		if w.classic {
			// No journal after all: the classic commit writes it anew.
			w.s.fs.remove(w.tmpJSON)
		}
		return err
	}
	w.done = true
	w.unhold()
	w.f.Close() // releases the lock
	return nil
}

// unhold drops the writer's message copy and its place in the journal's
// list of prepared items.
func (w *fileWriter) unhold() {
	if w.s.journal != nil {
		w.s.journal.unhold(w.id)
	}
	w.provisional, w.jbuf = nil, nil
}

// journalPut appends a record of the bytes not yet in the journal (all of
// them if the writer's last record went to another segment or generation)
// and an envelope, waits until it is durable, and runs after while the
// record still protects the item from a checkpoint. A failure to journal
// is sticky, like a write error.
//
// Without wait it does not wait for the fdatasync but has one started. With
// hold, the journal holds on to the item from the record on (no checkpoint
// or done mark passes it) until the writer ends: its envelope is in the
// journal only.
func (w *fileWriter) journalPut(envKind uint8, env []byte, wait, hold bool, after func() error) error {
	j := w.s.journal
	if j.unavailable() {
		w.classic, w.jbuf = true, nil
		return errJournalUnavailable
	}
	seg, rec, err := j.appendRec(func(seg *segment) *record {
		off := w.jOff
		if seg != w.jseg || seg.hdr.gen != w.jgen {
			off = 0
		}
		return &record{kind: recItem, envKind: envKind, id: w.id, env: env, dataOff: off, data: w.jbuf[off:]}
	})
	if err != nil {
		if errors.Is(err, errJournalUnavailable) {
			w.classic, w.jbuf = true, nil
			return err
		}
		w.err = err
		return err
	}
	w.journaled = true
	w.jseg, w.jgen, w.jOff = seg, rec.gen, int64(len(w.jbuf))
	if hold {
		j.hold(w.id, env, w.jbuf, seg, rec.gen)
	}
	defer j.release(seg)
	if !wait {
		j.syncSoon(seg)
	} else if err := j.sync(seg); err != nil {
		w.err = err
		return err
	}
	if after != nil {
		return after()
	}
	return nil
}

func (w *fileWriter) fillEnvelope(env *Envelope) {
	fillEnvelope(w.s, env, w.id, w.tags, &w.hdr, w.size, w.sum)
}

// fillEnvelope fills in what the store knows of an item: version, ID,
// time, host, tags and the message fields.
func fillEnvelope(s *Store, env *Envelope, id string, tags []string, hdr *headerCapture, size int64, sum hash.Hash) {
	env.Version = Version
	env.ID = id
	if env.ArchivedAt.IsZero() {
		env.ArchivedAt = s.now()
	}
	env.ArchivedAt = env.ArchivedAt.UTC()
	if env.Host == "" {
		env.Host = s.host
	}
	if env.Tags == nil && len(tags) > 0 {
		env.Tags = append([]string(nil), tags...)
	}
	env.Message = hdr.fields()
	env.Message.Size = size
	env.Message.SHA256 = hex.EncodeToString(sum.Sum(nil))
}

// encodeEnvelope is the ID.json form of env.
func encodeEnvelope(env *Envelope) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep <addr@example> greppable
	enc.SetIndent("", "  ")
	if err := enc.Encode(env); err != nil {
		return nil, fmt.Errorf("archive: encode envelope %s: %w", env.ID, err)
	}
	return buf.Bytes(), nil
}

// writeJSON writes env to path (which must not exist) and fsyncs it.
func (s *Store) writeJSON(path string, env *Envelope) error {
	b, err := encodeEnvelope(env)
	if err != nil {
		return err
	}
	return s.writeJSONBytes(path, b, true)
}

// writeJSONBytes writes an encoded envelope to path (which must not
// exist), and fsyncs it if sync.
func (s *Store) writeJSONBytes(path string, b []byte, sync bool) error {
	rel := path
	if r, err := filepath.Rel(s.root, path); err == nil {
		rel = r
	}
	f, err := s.fs.create(path)
	if err != nil {
		return fmt.Errorf("archive: create %s: %w", rel, unwrapPath(err))
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("archive: write %s: %w", rel, unwrapPath(err))
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("archive: fsync %s: %w", rel, unwrapPath(err))
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("archive: close %s: %w", rel, unwrapPath(err))
	}
	return nil
}

// scratchSuffix marks a file under tmp/ that is being written to replace
// ID.json: recovery removes a stale one (a complete ID.json is always there
// beside it or none was needed).
const scratchSuffix = ".json.new"

// replaceJSON writes env to path+".new" durably and renames it over path.
func (s *Store) replaceJSON(path string, env *Envelope) error {
	b, err := encodeEnvelope(env)
	if err != nil {
		return err
	}
	return s.replaceJSONBytes(path, b, true)
}

// replaceJSONBytes writes an encoded envelope to a scratch file, fsynced if
// sync, and renames it over path: a crash leaves the one or the other.
func (s *Store) replaceJSONBytes(path string, b []byte, sync bool) error {
	scratch := strings.TrimSuffix(path, ".json") + scratchSuffix
	if err := s.fs.remove(scratch); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("archive: remove stale %s: %w", filepath.Base(scratch), unwrapPath(err))
	}
	if err := s.writeJSONBytes(scratch, b, sync); err != nil {
		return err
	}
	if err := s.fs.rename(scratch, path); err != nil {
		s.fs.remove(scratch)
		return fmt.Errorf("archive: rename %s: %w", filepath.Base(scratch), unwrapPath(err))
	}
	return nil
}

// Abort removes everything this writer created, wherever a failed Commit
// left it. It is a no-op after a successful Commit.
func (w *fileWriter) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.journaled {
		// So that a replay does not make the item after all.
		w.s.journal.note(&record{kind: recAbort, id: w.id})
	}
	w.unhold()
	// Remove while still holding the lock, so that a recovery sweep never
	// takes these files for a crashed writer's; the .json first, so no
	// item is visible for a moment without its message.
	var errs []error
	scratch := filepath.Join(w.s.tmp, w.id+scratchSuffix)
	for _, p := range []string{w.s.Path(w.id, ".json"), scratch, w.tmpJSON, w.tmpEML, w.s.Path(w.id, ".eml")} {
		if err := w.s.fs.remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("archive: remove %s: %w", w.rel(p), unwrapPath(err)))
		}
	}
	w.f.Close()
	return errors.Join(errs...)
}

// Close ends the writer without committing or removing anything: bytes
// already written stay under tmp/, where the next recovery sweep turns them
// into an item marked recovered. The proxy uses it when the server has
// accepted a message whose commit then failed.
func (w *fileWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.provisional != nil && !present(w.tmpJSON) && !present(w.s.Path(w.id, ".json")) {
		// The sweep must find the envelope of Prepare beside the bytes
		// once the journal has let go of it; the checkpoint's syncfs makes
		// it durable before that.
		if err := w.s.writeJSONBytes(w.tmpJSON, w.provisional, false); err != nil {
			w.s.fs.remove(w.tmpJSON)
			// A full disk: the journal keeps the envelope (carried forward
			// by every checkpoint) until it can be written.
			w.s.journal.holdOrphan(w.id, w.provisional, w.jbuf, w.jseg, w.jgen)
			w.provisional, w.jbuf = nil, nil
			w.s.log.Error("archive: cannot write the envelope of a closed item; the journal keeps it", "id", w.id, "err", err)
			return w.f.Close()
		}
	}
	w.unhold()
	return w.f.Close()
}

// writeTmpItem writes an item's bytes and envelope to tmp/ID.eml and
// tmp/ID.json, without fsync, for the sweep.
func (s *Store) writeTmpItem(id string, data, env []byte) error {
	eml := filepath.Join(s.tmp, id+".eml")
	if !present(eml) {
		if err := s.writeFileBytes(eml, data); err != nil {
			s.fs.remove(eml) // never a torn copy beside the journal's
			return err
		}
	}
	js := filepath.Join(s.tmp, id+".json")
	if present(js) {
		return nil
	}
	if err := s.writeJSONBytes(js, env, false); err != nil {
		s.fs.remove(js)
		return err
	}
	return nil
}

// writeFileBytes writes b to path (which must not exist), without fsync.
func (s *Store) writeFileBytes(path string, b []byte) error {
	f, err := s.fs.create(path)
	if err != nil {
		return fmt.Errorf("archive: create %s: %w", s.relPath(path), unwrapPath(err))
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("archive: write %s: %w", s.relPath(path), unwrapPath(err))
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("archive: close %s: %w", s.relPath(path), unwrapPath(err))
	}
	return nil
}

// unwrapPath drops the *PathError wrapper, whose absolute path would repeat
// what our own message already says.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// ReadEnvelope reads and decodes an ID.json.
func ReadEnvelope(path string) (*Envelope, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	var env Envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("archive: decode %s: %w", path, err)
	}
	return &env, nil
}
