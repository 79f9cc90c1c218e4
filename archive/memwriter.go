package archive

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// memWriter is the Store's Writer when the journal is on: it keeps the
// message in memory and writes no file until the commit, so that the
// commit costs one shared fdatasync and two directory operations (linking
// two finished files into the root) instead of four fsyncs and five
// directory operations. On a loaded filesystem the directory operations,
// which serialize on the directory's lock, are what bounds the rate.
//
// It hands over to a fileWriter (tmp/ID.eml, as before) when the message
// outgrows what the journal takes, or when Reopen needs a file.
type memWriter struct {
	s    *Store
	id   string
	tags []string
	buf  []byte
	sum  hash.Hash
	hdr  headerCapture
	err  error

	jseg        *segment
	jgen        uint64
	jOff        int64
	journaled   bool
	provisional []byte // held by the journal between Prepare and the end
	lastEnv     []byte // the envelope of the last commit tried
	prepared    bool
	synced      bool // held by the journal after a Sync
	done        bool
	linked      []string // root files a failed commit left, for Abort

	fw *fileWriter // after a hand-over, everything goes to it
}

var _ Writer = (*memWriter)(nil)

func (w *memWriter) ID() string { return w.id }

func (w *memWriter) Size() int64 {
	if w.fw != nil {
		return w.fw.Size()
	}
	return int64(len(w.buf))
}

func (w *memWriter) Err() error {
	if w.fw != nil {
		return w.fw.Err()
	}
	return w.err
}

func (w *memWriter) Write(p []byte) (int, error) {
	if w.fw != nil {
		return w.fw.Write(p)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, errors.New("archive: write after commit or abort")
	}
	if int64(len(w.buf)+len(p)) > w.s.journal.maxItem() {
		if err := w.handOver(); err != nil {
			return 0, err
		}
		return w.fw.Write(p)
	}
	w.buf = append(w.buf, p...)
	w.sum.Write(p)
	w.hdr.write(p)
	return len(p), nil
}

// handOver moves the item to a fileWriter: tmp/ID.eml with what was
// written so far, and the journal state, so that records already written
// stay valid.
func (w *memWriter) handOver() error {
	fw, err := w.s.createFile(w.id, w.tags)
	if err != nil {
		w.err = err
		return err
	}
	fw.jbuf = w.buf
	if _, err := fw.Write(w.buf); err != nil {
		fw.Abort()
		w.err = err
		return err
	}
	fw.jseg, fw.jgen, fw.jOff, fw.journaled = w.jseg, w.jgen, w.jOff, w.journaled
	fw.provisional, fw.prepared, fw.synced = w.provisional, w.prepared, w.prepared
	w.fw, w.buf = fw, nil
	return nil
}

func (w *memWriter) Sync() error {
	if w.fw != nil {
		return w.fw.Sync()
	}
	if w.err != nil {
		return w.err
	}
	if err := w.put(envNone, nil, nil); err != nil {
		return err
	}
	if w.provisional == nil {
		// The MTA may take the message now: until the commit the record
		// is its only copy, so the journal holds on to it.
		w.s.journal.hold(w.id, nil, w.buf, w.jseg, w.jgen)
		w.synced = true
	}
	return nil
}

func (w *memWriter) Prepare(env *Envelope) error {
	if w.fw != nil {
		return w.fw.Prepare(env)
	}
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
	w.fill(&e)
	b, err := encodeEnvelope(&e)
	if err != nil {
		return err
	}
	if err := w.put(envProvisional, b, nil); err != nil {
		return err
	}
	w.provisional, w.prepared = b, true
	w.s.journal.hold(w.id, b, w.buf, w.jseg, w.jgen)
	return nil
}

// put appends a record of the bytes not yet journaled (all of them if the
// last record went to another segment or generation) with env, waits
// until it is durable, and runs after while the record still protects the
// item from a checkpoint.
func (w *memWriter) put(envKind uint8, env []byte, after func() error) error {
	return w.putRec(envKind, env, true, after)
}

// putRec is put; without wait it does not wait for the fdatasync but has
// one started, which makes the record durable a moment later.
func (w *memWriter) putRec(envKind uint8, env []byte, wait bool, after func() error) error {
	j := w.s.journal
	seg, rec, err := j.appendRec(func(seg *segment) *record {
		off := w.jOff
		if seg != w.jseg || seg.hdr.gen != w.jgen {
			off = 0
		}
		return &record{kind: recItem, envKind: envKind, id: w.id, env: env, dataOff: off, data: w.buf[off:]}
	})
	if err != nil {
		w.err = err
		return err
	}
	w.journaled = true
	w.jseg, w.jgen, w.jOff = seg, rec.gen, int64(len(w.buf))
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

func (w *memWriter) fill(env *Envelope) {
	fillEnvelope(w.s, env, w.id, w.tags, &w.hdr, int64(len(w.buf)), w.sum)
}

// Commit makes the record of the message and its final envelope durable,
// then links two finished files into the root: the .eml, then the .json.
// Their own durability comes with the next checkpoint, and until then from
// the record.
func (w *memWriter) Commit(env *Envelope) error {
	if w.fw != nil {
		return w.fw.Commit(env)
	}
	if w.done {
		return errors.New("archive: commit after commit or abort")
	}
	if w.err != nil {
		return w.err
	}
	if env == nil {
		env = &Envelope{}
	}
	w.fill(env)
	b, err := encodeEnvelope(env)
	if err != nil {
		return err
	}
	w.lastEnv = b
	// After Prepare, the bytes and an envelope are durable already: the
	// MTA was told nothing before that. The final envelope's record need
	// not hold up the reply; it is durable with the next fdatasync (started
	// now), and until then a power loss leaves the item as Prepare left it.
	lazy := w.prepared && w.jOff == int64(len(w.buf))
	err = w.putRec(envFinal, b, !lazy, func() error {
		killPoint("commit-durable")
		eml := w.s.Path(w.id, ".eml")
		if err := w.s.linkFile(eml, w.buf); err != nil {
			return err
		}
		w.linked = append(w.linked, eml)
		killPoint("commit-between-links")
		js := w.s.Path(w.id, ".json")
		if err := w.s.linkFile(js, b); err != nil {
			return err
		}
		w.linked = append(w.linked, js)
		return nil
	})
	if err != nil {
		// A commit that failed after its record became durable is still
		// the writer's to end: the record stays (Close keeps the item,
		// Abort says the item is abandoned).
		return err
	}
	w.finish()
	return nil
}

// finish ends the writer's hold on the journal and its buffer.
func (w *memWriter) finish() {
	w.done = true
	if w.provisional != nil || w.synced {
		w.s.journal.unhold(w.id)
	}
	w.buf, w.provisional, w.synced = nil, nil, false
}

// Abort forgets the item: nothing of it was visible, except what a failed
// commit linked, which is removed (the .json first).
func (w *memWriter) Abort() error {
	if w.fw != nil {
		return w.fw.Abort()
	}
	if w.done {
		return nil
	}
	if w.journaled {
		w.s.journal.note(&record{kind: recAbort, id: w.id})
	}
	var errs []error
	for i := len(w.linked) - 1; i >= 0; i-- {
		if err := w.s.fs.remove(w.linked[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("archive: remove %s: %w", w.rel(w.linked[i]), unwrapPath(err)))
		}
	}
	w.finish()
	return errors.Join(errs...)
}

func (w *memWriter) rel(p string) string { return (&fileWriter{s: w.s}).rel(p) }

// Close leaves the item for recovery, as the proxy does when the server
// took a message whose commit failed: the bytes and the last envelope go
// to tmp/ID.eml and tmp/ID.json, where the sweep makes an item of them,
// under a fresh record, so that no checkpoint drops them before they are
// durable.
func (w *memWriter) Close() error {
	if w.fw != nil {
		return w.fw.Close()
	}
	if w.done {
		return nil
	}
	defer w.finish()
	if len(w.buf) == 0 && w.provisional == nil {
		return nil // nothing was written: nothing to recover
	}
	env := w.lastEnv
	if env == nil {
		env = w.provisional
	}
	if env == nil {
		e := &Envelope{}
		w.fill(e)
		e.Outcome = OutcomeUnknown
		env, _ = encodeEnvelope(e)
	}
	w.err = nil
	w.jseg = nil // a record of its own, with every byte
	return w.put(envProvisional, env, func() error {
		var err error
		switch {
		case len(w.linked) == 2:
			return nil // the commit went through after all
		case len(w.linked) == 1:
			// The .eml is in the root: with tmp/ID.json beside the
			// sweep takes it as a crash between the renames.
			err = w.s.writeJSONBytes(filepath.Join(w.s.tmp, w.id+".json"), env, false)
		default:
			err = w.s.writeTmpItem(w.id, w.buf, env)
		}
		if err != nil {
			// The record is the only copy now: the journal keeps it
			// (carried forward by every checkpoint) until the files can
			// be written.
			w.s.journal.holdOrphan(w.id, env, w.buf, w.jseg, w.jgen)
			w.provisional, w.synced = nil, false // not unheld by finish
			w.s.log.Error("archive: cannot write a closed item out; the journal keeps it", "id", w.id, "err", err)
			return err
		}
		return nil
	})
}

// writeTmpItem writes an item's bytes and envelope to tmp/ID.eml and
// tmp/ID.json, without fsync, for the sweep.
func (s *Store) writeTmpItem(id string, data, env []byte) error {
	eml := filepath.Join(s.tmp, id+".eml")
	if !present(eml) {
		if err := s.writeFileBytes(eml, data); err != nil {
			return err
		}
	}
	js := filepath.Join(s.tmp, id+".json")
	if present(js) {
		return nil
	}
	return s.writeJSONBytes(js, env, false)
}

// Reopen hands the item over to a file in tmp/, as the wrapper needs one
// to pass on.
func (w *memWriter) Reopen() (*os.File, error) {
	if w.fw == nil {
		if w.done {
			return nil, errors.New("archive: reopen after commit or abort")
		}
		if err := w.handOver(); err != nil {
			return nil, err
		}
	}
	return w.fw.Reopen()
}

// linkFile writes b to an unnamed file in dir (O_TMPFILE) and links it as
// path: the file appears whole or not at all, in one directory operation.
func (s *Store) linkFile(path string, b []byte) error {
	f, err := s.fs.tmpfile(path)
	if err != nil {
		return fmt.Errorf("archive: create %s: %w", s.relPath(path), unwrapPath(err))
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("archive: write %s: %w", s.relPath(path), unwrapPath(err))
	}
	if err := s.fs.link(f, path); err != nil {
		return fmt.Errorf("archive: link %s: %w", s.relPath(path), unwrapPath(err))
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

func openTmpfile(path string) (file, error) {
	f, err := os.OpenFile(filepath.Dir(path), os.O_WRONLY|unix.O_TMPFILE, FileMode)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || fi.Mode() != FileMode {
		if err := f.Chmod(FileMode); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

func linkTmpfile(f file, path string) error {
	return unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
}

// tmpfileWorks says whether dir's filesystem has O_TMPFILE and /proc lets
// us link one.
func tmpfileWorks(dir string) bool {
	f, err := openTmpfile(dir + "/x")
	if err != nil {
		return false
	}
	defer f.Close()
	var rnd [8]byte
	rand.Read(rnd[:])
	p := dir + "/" + probePrefix + "tmpfile-" + hex.EncodeToString(rnd[:])
	if linkTmpfile(f, p) != nil {
		return false
	}
	os.Remove(p)
	return true
}

var newSum = sha256.New
