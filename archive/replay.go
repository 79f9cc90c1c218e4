package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Replay: after a reboot, a segment's records may be all that is left of
// items whose own files were still in the page cache. Replay puts each such
// item's bytes and envelope back under tmp/, durably, where the recovery
// sweep makes an item of them; then the segments are checkpointed.

// piece is a run of message bytes inside a segment file.
type piece struct {
	f   *os.File
	off int64
	n   int64
}

// itemState is what the records of one item say, folded in order.
type itemState struct {
	id      string
	seq     uint64
	data    []piece // the message from offset 0
	size    int64
	gap     bool // a record did not continue where the last one ended
	env     []byte
	final   bool
	aborted bool
}

type foundRec struct {
	head recHead
	seg  *os.File
	off  int64 // of the record
	id   string
	env  []byte
}

// scanRecords reads every valid record of a segment's current generation,
// checking each one's payload checksum, until the first invalid one.
func scanRecords(f *os.File, hdr segHeader, size, start int64) ([]foundRec, error) {
	var out []foundRec
	h := make([]byte, recHeaderSize)
	off := start
	for off+recAlign <= size {
		if err := readFull(f, h, off); err != nil {
			return out, err
		}
		rh, ok := parseRecHead(h, hdr.gen)
		if !ok || off+rh.size() > size {
			break
		}
		meta := make([]byte, rh.idLen+rh.envLen)
		if err := readFull(f, meta, off+recHeaderSize); err != nil {
			return out, err
		}
		c := crc32.Update(0, crcTable, meta)
		sr := io.NewSectionReader(f, off+recHeaderSize+int64(len(meta)), rh.dataLen)
		crcw := crcWriter{c}
		if _, err := io.Copy(&crcw, sr); err != nil {
			return out, err
		}
		if crcw.c != rh.payloadCRC {
			break // torn: never acknowledged, and nothing after it was
		}
		out = append(out, foundRec{head: rh, seg: f, off: off,
			id: string(meta[:rh.idLen]), env: meta[rh.idLen:]})
		off += rh.size()
	}
	return out, nil
}

type crcWriter struct{ c uint32 }

func (w *crcWriter) Write(p []byte) (int, error) {
	w.c = crc32.Update(w.c, crcTable, p)
	return len(p), nil
}

// foldRecords turns records (of any segments) into one state per item.
func foldRecords(recs []foundRec) []*itemState {
	slices.SortFunc(recs, func(a, b foundRec) int {
		switch {
		case a.head.seq < b.head.seq:
			return -1
		case a.head.seq > b.head.seq:
			return 1
		}
		return 0
	})
	byID := map[string]*itemState{}
	var order []*itemState
	for _, r := range recs {
		st := byID[r.id]
		if st == nil {
			st = &itemState{id: r.id}
			byID[r.id] = st
			order = append(order, st)
		}
		st.seq = r.head.seq
		if (st.final || st.aborted) && r.head.envKind != envFinal {
			// A copy a checkpoint carried forward while the writer
			// committed or gave up: the writer's word stands.
			continue
		}
		switch r.head.kind {
		case recAbort:
			st.aborted = true
		case recItem:
			p := piece{f: r.seg, off: r.off + recHeaderSize + r.head.idLen + r.head.envLen, n: r.head.dataLen}
			switch {
			case r.head.dataOff == 0:
				st.data, st.size, st.gap = nil, 0, false
			case r.head.dataOff != st.size:
				st.gap = true
			}
			if p.n > 0 {
				st.data = append(st.data, p)
				st.size += p.n
			}
			if r.head.envKind != envNone {
				st.env = r.env
			}
			st.final = r.head.envKind == envFinal
			st.aborted = false
		}
	}
	return order
}

// replaySeg is a segment held for replay.
type replaySeg struct {
	name string
	f    *os.File
	hdr  segHeader
}

// replayJournal replays the segments no live process holds: every record
// of a segment written before this boot, and of one of this boot the
// records after its done mark (its process died with items only there).
// The items are put back under tmp/ for the sweep, durably, and then the
// segments are checkpointed. With all, segments with nothing to replay
// but records (left by processes that exited) are checkpointed too. It
// returns the IDs it put back under tmp/.
func (s *Store) replayJournal(all bool) ([]string, []error) {
	j := s.journal
	if j == nil {
		return nil, nil
	}
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{fmt.Errorf("archive: replay journal: %w", err)}
	}
	var segs []replaySeg
	defer func() {
		for _, rs := range segs {
			rs.f.Close()
		}
	}()
	var errs []error
	var recs []foundRec
	var busy []string // segments live processes (this one too) append to
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".new-") {
			// A segment whose creation crashed: it never held a record.
			if f, err := os.Open(filepath.Join(j.dir, name)); err == nil {
				if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
					os.Remove(filepath.Join(j.dir, name))
				}
				f.Close()
			}
			continue
		}
		if !strings.HasSuffix(name, segExt) || !e.Type().IsRegular() {
			continue
		}
		f, err := os.OpenFile(filepath.Join(j.dir, name), os.O_RDWR, 0)
		if err != nil {
			errs = append(errs, fmt.Errorf("archive: replay journal %s: %w", name, unwrapPath(err)))
			continue
		}
		// flock conflicts across open files even within one process, so
		// this skips our own segments as well as other live processes'.
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close()
			busy = append(busy, name)
			continue
		}
		hdr, ok := readSegHeader(f)
		fi, err := f.Stat()
		if !ok || err != nil {
			f.Close()
			continue
		}
		size := fi.Size() &^ (recAlign - 1)
		start := int64(segHeaderSize)
		if hdr.boot == j.boot && hdr.done > start && hdr.done <= size {
			start = hdr.done
		}
		r, err := scanRecords(f, hdr, size, start)
		if err != nil {
			// Keep the segment as it is: a later replay tries again.
			f.Close()
			errs = append(errs, fmt.Errorf("archive: replay journal %s: %w", name, err))
			continue
		}
		if len(r) == 0 {
			if end, n := scanEnd(f, hdr, size); !all || n == 0 || end <= segHeaderSize {
				f.Close() // nothing to replay, nothing to checkpoint
				continue
			}
		}
		recs = append(recs, r...)
		segs = append(segs, replaySeg{name: name, f: f, hdr: hdr})
	}
	if len(segs) == 0 {
		return nil, errs
	}
	var put []string
	failed := false
	var live map[string]bool
	if len(recs) > 0 {
		live = liveIDs(j.dir, busy)
	}
	for _, st := range foldRecords(recs) {
		j.mu.Lock()
		aborted := j.aborted[st.id]
		j.mu.Unlock()
		if live[st.id] || aborted {
			continue // a live process has the item in hand (or aborted it)
		}
		ok, err := s.restoreItem(st)
		if err != nil {
			errs = append(errs, err)
			failed = true
		} else if ok {
			put = append(put, st.id)
		}
	}
	if len(put) > 0 {
		if err := s.fs.syncDir(s.tmp); err != nil {
			errs = append(errs, fmt.Errorf("archive: replay journal: fsync tmp/: %w", unwrapPath(err)))
			failed = true
		}
	}
	if failed {
		return put, errs // the segments stay as they are for the next replay
	}
	killPoint("replay-restored")
	// What the records hold is now in files under tmp/ or in items; make
	// sure of it before the records go.
	if err := j.syncfs(segs[0].f); err != nil {
		return put, append(errs, fmt.Errorf("archive: replay journal: syncfs: %w", err))
	}
	for _, rs := range segs {
		seg := &segment{name: rs.name, f: rs.f, hdr: rs.hdr}
		if err := j.checkpointSeg(seg); err != nil {
			errs = append(errs, err)
		}
	}
	if len(recs) > 0 {
		s.log.Warn("archive: replayed journal records left by a crash", "segments", len(segs), "records", len(recs), "restored", len(put))
	}
	return put, errs
}

// restoreItem makes sure an item of the journal exists whole: it returns
// false if it does (or the records say it was abandoned), and otherwise
// writes the journal's bytes and envelope to tmp/ID.eml and tmp/ID.json,
// durably, and removes what is left of a damaged copy, so that the sweep
// makes the item.
func (s *Store) restoreItem(st *itemState) (bool, error) {
	if st.aborted || st.gap || (st.size == 0 && st.env == nil) {
		return false, nil
	}
	if _, err := ParseID(st.id); err != nil {
		return false, nil // not ours: never a path
	}
	whole, damaged := s.itemWhole(st)
	if whole {
		return false, nil
	}
	tmpEML := filepath.Join(s.tmp, st.id+".eml")
	if !prefixOf(st, tmpEML) {
		if err := writePieces(tmpEML, st); err != nil {
			return false, fmt.Errorf("archive: replay %s: %w", st.id, err)
		}
	}
	if st.env != nil {
		env := &Envelope{}
		if json.Unmarshal(st.env, env) == nil && env.ID == st.id {
			if err := s.replaceJSON(filepath.Join(s.tmp, st.id+".json"), env); err != nil {
				return false, fmt.Errorf("archive: replay %s: %w", st.id, err)
			}
		}
	}
	// The journal's copy is durable under tmp/: what was visible of the
	// item can go (the .json first, so no item is ever without message).
	for _, p := range damaged {
		if err := s.fs.remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("archive: replay %s: remove damaged copy: %w", st.id, unwrapPath(err))
		}
	}
	return true, nil
}

// itemWhole says whether the item is complete where a reader finds it,
// with at least the journal's bytes; if not, it lists the files of a
// damaged copy (the .json first).
func (s *Store) itemWhole(st *itemState) (bool, []string) {
	var damaged []string
	for _, p := range []string{s.Path(st.id, ".json"), s.Path(st.id, ".eml")} {
		if present(p) {
			damaged = append(damaged, p)
		}
	}
	r := &Reader{root: s.root, filed: s.root}
	it, err := r.Locate(st.id)
	if err != nil {
		return false, damaged
	}
	if it.Remote != nil {
		// The filer moved it into object storage (only after a recovery
		// that checkpointed this record, or while another process held
		// it): never make it again locally.
		return true, nil
	}
	env, err := ReadEnvelope(it.JSONPath)
	if err == nil && env.ID == st.id && env.Message.Size >= st.size {
		if sum, n, err := hashFile(it.EMLPath); err == nil && n == env.Message.Size && sum == env.Message.SHA256 {
			return true, nil
		}
	}
	if it.Dir != "" {
		damaged = append([]string{it.JSONPath}, append(damaged, it.EMLPath)...)
	}
	return false, damaged
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// prefixOf says whether the file holds at least the item's journal bytes,
// starting with them (a writer may have gone on after its last record).
func prefixOf(st *itemState, path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() < st.size {
		return false
	}
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for _, p := range st.data {
		for done := int64(0); done < p.n; {
			n := min(int64(len(a)), p.n-done)
			if readFull(p.f, a[:n], p.off+done) != nil || readFull(f, b[:n], off) != nil || !bytes.Equal(a[:n], b[:n]) {
				return false
			}
			done += n
			off += n
		}
	}
	return true
}

// writePieces writes the item's journal bytes to path and fsyncs it.
func writePieces(path string, st *itemState) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, FileMode)
	if err != nil {
		return err
	}
	if err := f.Chmod(FileMode); err != nil {
		f.Close()
		return err
	}
	for _, p := range st.data {
		if _, err := io.Copy(f, io.NewSectionReader(p.f, p.off, p.n)); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// journalEnv finds the latest envelope the journal holds for id (a
// prepared item whose writer died before it committed): the sweep gives
// the item that envelope rather than a minimal one. Segments are read, not
// locked; a record being written is skipped, as a torn one.
func (s *Store) journalEnv(id string) *Envelope {
	j := s.journal
	if j == nil {
		return nil
	}
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil
	}
	var best []byte
	var bestSeq uint64
	final := false
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), segExt) || !e.Type().IsRegular() {
			continue
		}
		eachRecordHead(filepath.Join(j.dir, e.Name()), func(f *os.File, rh recHead, off int64) {
			if rh.idLen == int64(len(id)) && rh.envKind != envNone && rh.seq > bestSeq && (!final || rh.envKind == envFinal) {
				meta := make([]byte, rh.idLen+rh.envLen)
				if readFull(f, meta, off+recHeaderSize) == nil && string(meta[:rh.idLen]) == id {
					best, bestSeq, final = meta[rh.idLen:], rh.seq, final || rh.envKind == envFinal
				}
			}
		})
	}
	if best == nil {
		return nil
	}
	env := &Envelope{}
	if json.Unmarshal(best, env) != nil || env.ID != id {
		return nil
	}
	return env
}

// onTmpfs says whether dir is on a tmpfs.
func onTmpfs(dir string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false // not there yet: Open creates it; assume a disk
	}
	return st.Type == 0x01021994 // TMPFS_MAGIC
}

// liveIDs lists the items that have records in the named segments, which
// live processes hold: reading the record headers and IDs only.
func liveIDs(dir string, names []string) map[string]bool {
	ids := map[string]bool{}
	for _, name := range names {
		eachRecordHead(filepath.Join(dir, name), func(f *os.File, rh recHead, off int64) {
			id := make([]byte, rh.idLen)
			if readFull(f, id, off+recHeaderSize) == nil {
				ids[string(id)] = true
			}
		})
	}
	return ids
}

// eachRecordHead calls fn, in order, for every record header of a
// segment's current generation up to the first invalid one, reading the
// segment without locking it (a record being written ends the walk, as a
// torn one would).
func eachRecordHead(path string, fn func(f *os.File, rh recHead, off int64)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	hdr, ok := readSegHeader(f)
	fi, err := f.Stat()
	if !ok || err != nil {
		return
	}
	h := make([]byte, recHeaderSize)
	for off := int64(segHeaderSize); off+recAlign <= fi.Size(); {
		if readFull(f, h, off) != nil {
			return
		}
		rh, valid := parseRecHead(h, hdr.gen)
		if !valid {
			return
		}
		fn(f, rh, off)
		off += rh.size()
	}
}
