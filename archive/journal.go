package archive

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The write-ahead journal (docs/archive-format.md, "The journal").
//
// A message is durable once its bytes and envelope are in a journal record
// covered by a completed fdatasync. The record goes into a preallocated,
// zero-filled segment file, so the fdatasync is a pure overwrite of
// allocated blocks: no metadata, no filesystem journal commit, and one
// fdatasync serves every writer of the process that appended before it
// started (group commit). The item's files (tmp/ID.eml, ID.json, the
// renames) are then written without any fsync of their own; a checkpoint
// makes them durable later with one syncfs(2) and only then lets the
// segment's records be overwritten. After a power loss, the records not yet
// checkpointed are replayed into items (replay.go).
//
// Segments live in ROOT/.wal/ as RANDOM.wal (not in tmp/, which holds
// only items being written). A process holds an
// exclusive flock on every segment it appends to, so each segment has one
// appender at a time; the wrapper's short-lived processes take turns on the
// same free segment, each appending after the last one's records.

const (
	journalDirName = ".wal"
	segExt         = ".wal"

	// DefaultSegmentSize is the size of a journal segment. Postfix's local
	// delivery limits the files a mailbox command writes (RLIMIT_FSIZE,
	// from mailbox_size_limit, 50 MB by default): segments stay below
	// half the limit.
	DefaultSegmentSize = 16 << 20

	// maxJournaled is the largest message the journal takes. A journaled
	// message reaches the disk twice (record, then its file at the
	// checkpoint) for one fdatasync instead of four fsyncs: beyond a few
	// hundred KiB the second write costs more than the fsyncs saved
	// (make bench, 1 MiB rows: 0.44 × haproxy journaled, 0.53 × not).
	// It also bounds the copy each session keeps in memory.
	maxJournaled = 256 << 10

	// minSegment: under a file-size limit that allows no bigger segment,
	// there is no journal.
	minSegment = 64 << 10

	// segHeaderSize is the two header slots (one sector each) at the start
	// of a segment; records follow.
	segHeaderSize = 1024
	slotSize      = 512
	recAlign      = 512 // records start on a sector: a torn header is never half old
	recHeaderSize = 64

	// checkpointAge is how long a daemon's records wait at most before a
	// checkpoint makes their items durable on their own and frees them.
	checkpointAge = 2 * time.Second
	// staleSegment: a free segment whose records are older than this is
	// checkpointed by the next process that takes it.
	staleSegment = 10 * time.Minute
)

var (
	segMagic = [8]byte{'M', 'A', 'J', 'R', 'N', 'L', '0', '1'}
	crcTable = crc32.MakeTable(crc32.Castagnoli)
)

const recMagic uint32 = 0x3152414d // "MAR1"

// Record kinds.
const (
	recItem  = 1 // message bytes (from an offset) and optionally an envelope
	recAbort = 2 // the item was abandoned: replay must not make it
)

// Envelope kinds in an item record.
const (
	envNone        = 0
	envProvisional = 1
	envFinal       = 2
)

// segHeader is one header slot. The slot with the higher valid seq wins; a
// torn slot write leaves the other one.
type segHeader struct {
	seq  uint64
	gen  uint64   // records of another generation are stale
	boot [16]byte // boot of the last writer: another boot means replay
	hint int64    // records up to here are known durable
	age  int64    // unix nanos of the first record of this generation, 0 if none
	// done: every record before it is of an item that is in files (or
	// abandoned); a process that finds the segment free replays only the
	// records after it (a crash of the writer's process), unless the boot
	// changed (then the page cache is gone: every record is replayed).
	done int64
}

func (h *segHeader) marshal() []byte {
	b := make([]byte, slotSize)
	copy(b, segMagic[:])
	binary.LittleEndian.PutUint64(b[8:], h.seq)
	binary.LittleEndian.PutUint64(b[16:], h.gen)
	copy(b[24:40], h.boot[:])
	binary.LittleEndian.PutUint64(b[40:], uint64(h.hint))
	binary.LittleEndian.PutUint64(b[48:], uint64(h.age))
	binary.LittleEndian.PutUint64(b[56:], uint64(h.done))
	binary.LittleEndian.PutUint32(b[64:], crc32.Checksum(b[:64], crcTable))
	return b
}

func unmarshalSegHeader(b []byte) (segHeader, bool) {
	var h segHeader
	if len(b) < 68 || !bytes.Equal(b[:8], segMagic[:]) || crc32.Checksum(b[:64], crcTable) != binary.LittleEndian.Uint32(b[64:]) {
		return h, false
	}
	h.seq = binary.LittleEndian.Uint64(b[8:])
	h.gen = binary.LittleEndian.Uint64(b[16:])
	copy(h.boot[:], b[24:40])
	h.hint = int64(binary.LittleEndian.Uint64(b[40:]))
	h.age = int64(binary.LittleEndian.Uint64(b[48:]))
	h.done = int64(binary.LittleEndian.Uint64(b[56:]))
	return h, true
}

// record is one journal record.
type record struct {
	kind    uint8
	envKind uint8
	seq     uint64 // orders one writer's records across segments
	gen     uint64 // of the segment it went into
	id      string
	env     []byte // envelope JSON
	dataOff int64  // offset of data in the message
	data    []byte
}

func (r *record) size() int64 {
	return alignUp(recHeaderSize + int64(len(r.id)+len(r.env)+len(r.data)))
}

func alignUp(n int64) int64 { return (n + recAlign - 1) &^ (recAlign - 1) }

// header encodes the record's header for generation gen.
func (r *record) header(gen uint64) []byte {
	h := make([]byte, recHeaderSize)
	binary.LittleEndian.PutUint32(h[0:], recMagic)
	h[4], h[5] = r.kind, r.envKind
	binary.LittleEndian.PutUint64(h[8:], gen)
	binary.LittleEndian.PutUint64(h[16:], r.seq)
	binary.LittleEndian.PutUint32(h[24:], uint32(len(r.id)))
	binary.LittleEndian.PutUint32(h[28:], uint32(len(r.env)))
	binary.LittleEndian.PutUint64(h[32:], uint64(r.dataOff))
	binary.LittleEndian.PutUint64(h[40:], uint64(len(r.data)))
	c := crc32.Update(0, crcTable, []byte(r.id))
	c = crc32.Update(c, crcTable, r.env)
	c = crc32.Update(c, crcTable, r.data)
	binary.LittleEndian.PutUint32(h[48:], c)
	binary.LittleEndian.PutUint32(h[52:], crc32.Checksum(h[:52], crcTable))
	return h
}

// recHead is a decoded record header.
type recHead struct {
	kind, envKind    uint8
	seq              uint64
	idLen, envLen    int64
	dataOff, dataLen int64
	payloadCRC       uint32
}

func parseRecHead(h []byte, gen uint64) (recHead, bool) {
	var r recHead
	if binary.LittleEndian.Uint32(h[0:]) != recMagic ||
		crc32.Checksum(h[:52], crcTable) != binary.LittleEndian.Uint32(h[52:]) ||
		binary.LittleEndian.Uint64(h[8:]) != gen {
		return r, false
	}
	r.kind, r.envKind = h[4], h[5]
	r.seq = binary.LittleEndian.Uint64(h[16:])
	r.idLen = int64(binary.LittleEndian.Uint32(h[24:]))
	r.envLen = int64(binary.LittleEndian.Uint32(h[28:]))
	r.dataOff = int64(binary.LittleEndian.Uint64(h[32:]))
	r.dataLen = int64(binary.LittleEndian.Uint64(h[40:]))
	r.payloadCRC = binary.LittleEndian.Uint32(h[48:])
	if r.idLen > maxIDLen || r.envLen > 1<<30 || r.dataLen > 1<<40 || r.dataOff < 0 {
		return r, false
	}
	return r, true
}

func (r recHead) size() int64 { return alignUp(recHeaderSize + r.idLen + r.envLen + r.dataLen) }

// segment is one journal segment file this process holds locked.
type segment struct {
	name string
	f    *os.File
	size int64
	hdr  segHeader
	off  int64 // next append offset
	gs   *groupSync

	// guarded by journal.mu
	inflight    int       // writers between their append and the end of their file work
	held        int       // held items whose latest record is here
	syncPending bool      // a background fdatasync is about to start
	hdrOff      int64     // seg.off when the header was last written lazily
	hdrAt       time.Time // and when
	records     int       // records appended in this generation
	bad         bool      // an fdatasync failed: never append again
}

// journal is a Store's write-ahead journal: the segments this process
// appends to and their checkpointing.
type journal struct {
	s       *Store
	dir     string
	segSize int64
	boot    [16]byte
	age     time.Duration // a daemon's checkpoint age

	// Test hooks: the syscalls whose failures the tests inject.
	datasync func(f *os.File) error
	syncfs   func(f *os.File) error
	pwritev  func(f *os.File, bufs [][]byte, off int64) error

	mu       sync.Mutex
	cond     *sync.Cond
	active   *segment
	spare    []*segment // reset and held, ready to become active
	retired  []*segment // waiting for a checkpoint
	lastSeq  uint64
	ckptOn   bool // the checkpointer goroutine runs
	ckptBusy bool
	wake     chan struct{}
	// held are the prepared items waiting for their commit: a checkpoint
	// copies their record forward rather than drop their envelope.
	held map[string]*heldItem
	// aborted: items abandoned while no abort record could be written.
	aborted map[string]bool
	// downUntil: a segment could not be made; writers make their own
	// files durable until then.
	downUntil time.Time
}

// heldItem is a prepared item's record, as a checkpoint copies it
// forward. data is a prefix of the writer's buffer, which only grows.
type heldItem struct {
	env, data []byte
	seg       *segment
	gen       uint64
	// orphan: a closed item whose files could not be written (a full
	// disk): the journal holds its only copy until they can be.
	orphan bool
}

// errJournalUnavailable says no segment could be made (a full or tiny
// filesystem): the writer falls back to fsyncing its own files.
var errJournalUnavailable = errors.New("archive: journal unavailable")

// retryDown is how long the journal stays unavailable after a failure to
// make a segment.
const retryDown = 10 * time.Second

func (j *journal) unavailable() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return time.Now().Before(j.downUntil)
}

// hold registers a prepared item; unhold ends it (commit, abort, close).
func (j *journal) hold(id string, env, data []byte, seg *segment, gen uint64) {
	j.holdItem(id, &heldItem{env: env, data: data, seg: seg, gen: gen})
}

func (j *journal) holdItem(id string, h *heldItem) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if old := j.held[id]; old != nil {
		j.dropLocked(old)
	}
	j.held[id] = h
	if h.gen == h.seg.hdr.gen {
		h.seg.held++
	}
}

// dropLocked ends h's claim on its segment.
func (j *journal) dropLocked(h *heldItem) {
	if h.seg != nil && h.gen == h.seg.hdr.gen {
		h.seg.held--
		j.markDoneLocked(h.seg)
	}
	h.seg = nil
}

// holdOrphan keeps a closed item whose files could not be written.
func (j *journal) holdOrphan(id string, env, data []byte, seg *segment, gen uint64) {
	j.holdItem(id, &heldItem{env: env, data: data, seg: seg, gen: gen, orphan: true})
}

// flushOrphans writes the files of orphaned items under tmp/, where the
// sweep makes items of them; those written are let go.
func (j *journal) flushOrphans() {
	j.mu.Lock()
	var ids []string
	var items []*heldItem
	for id, h := range j.held {
		if h.orphan {
			ids, items = append(ids, id), append(items, h)
		}
	}
	j.mu.Unlock()
	for i, h := range items {
		if err := j.s.writeTmpItem(ids[i], h.data, h.env); err != nil {
			j.s.log.Warn("archive: an item held in the journal still cannot be written out", "id", ids[i], "err", err)
			continue
		}
		j.mu.Lock()
		if j.held[ids[i]] == h {
			j.dropLocked(h)
			delete(j.held, ids[i])
		}
		j.mu.Unlock()
	}
}

func (j *journal) unhold(id string) {
	j.mu.Lock()
	if h := j.held[id]; h != nil {
		j.dropLocked(h)
		delete(j.held, id)
	}
	j.mu.Unlock()
}

// carryForward copies the records of the items held in seg into the
// active segment, durably, before seg's records are dropped.
func (j *journal) carryForward(seg *segment) error {
	j.mu.Lock()
	var ids []string
	var items []*heldItem
	for id, h := range j.held {
		if h.seg == seg && h.gen == seg.hdr.gen {
			ids, items = append(ids, id), append(items, h)
		}
	}
	j.mu.Unlock()
	for i, h := range items {
		ek := uint8(envProvisional)
		if h.env == nil {
			ek = envNone
		}
		nseg, rec, err := j.appendRec(func(*segment) *record {
			return &record{kind: recItem, envKind: ek, id: ids[i], env: h.env, data: h.data}
		})
		if err != nil {
			return err
		}
		err = j.sync(nseg)
		j.release(nseg)
		if err != nil {
			return err
		}
		j.mu.Lock()
		if cur := j.held[ids[i]]; cur == h {
			j.dropLocked(h)
			h.seg, h.gen = nseg, rec.gen
			nseg.held++
		}
		j.mu.Unlock()
	}
	return nil
}

func newJournal(s *Store, segSize int64) *journal {
	if segSize <= 0 {
		segSize = DefaultSegmentSize
	}
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_FSIZE, &lim) == nil && lim.Cur != unix.RLIM_INFINITY && int64(lim.Cur/2) < segSize {
		segSize = int64(lim.Cur / 2)
	}
	segSize = alignUp(segSize)
	if segSize < minSegment {
		return nil // too small to be worth it: items fsync their own files
	}
	j := &journal{
		s:        s,
		dir:      filepath.Join(s.root, journalDirName),
		segSize:  segSize,
		boot:     bootID(),
		age:      checkpointAge,
		datasync: func(f *os.File) error { return unix.Fdatasync(int(f.Fd())) },
		syncfs:   func(f *os.File) error { return unix.Syncfs(int(f.Fd())) },
		pwritev:  pwritevAll,
	}
	j.cond = sync.NewCond(&j.mu)
	j.wake = make(chan struct{}, 1)
	j.held = map[string]*heldItem{}
	j.aborted = map[string]bool{}
	return j
}

// maxItem is the largest message the journal takes; bigger ones are made
// durable by fsyncing their own files (the fsyncs then cost little beside
// the bytes).
func (j *journal) maxItem() int64 { return min((j.segSize-segHeaderSize)/4, maxJournaled) }

func pwritevAll(f *os.File, bufs [][]byte, off int64) error {
	for len(bufs) > 0 {
		n, err := unix.Pwritev(int(f.Fd()), bufs, off)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return err
		}
		off += int64(n)
		for n > 0 && len(bufs) > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return nil
}

// bootID identifies this boot of the kernel: the page cache a segment's
// writer relied on survives only as long as it.
func bootID() [16]byte {
	var id [16]byte
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return id // unknown: every segment looks foreign, so is replayed (safe)
	}
	h, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(b)), "-", ""))
	if err == nil {
		copy(id[:], h)
	}
	return id
}

// errJournalFull says a record does not fit in any segment.
var errJournalFull = errors.New("archive: record larger than a journal segment")

// appendRec writes the record build makes for the active segment and
// returns the segment with the writer counted in flight: the caller then
// waits for durability (sync), does its file work, and calls release. A
// checkpoint never frees a segment while a writer is in flight on it, so
// what a record promises is in files before the record may be
// overwritten. build may be called again for another segment.
func (j *journal) appendRec(build func(seg *segment) *record) (*segment, *record, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for {
		seg := j.active
		if seg == nil || seg.bad {
			if seg != nil {
				j.retireLocked(seg)
			}
			var err error
			if seg, err = j.takeSegmentLocked(); err != nil {
				j.downUntil = time.Now().Add(retryDown)
				j.s.log.Error("archive: no journal segment; items fsync their own files for now", "err", err)
				return nil, nil, fmt.Errorf("%w: %v", errJournalUnavailable, err)
			}
			j.active = seg
		}
		rec := build(seg)
		need := rec.size()
		if need > j.segSize-segHeaderSize {
			return nil, nil, errJournalFull
		}
		if seg.off+need > seg.size {
			j.retireLocked(seg)
			continue
		}
		j.lastSeq = max(j.lastSeq+1, uint64(time.Now().UnixNano()))
		rec.seq, rec.gen = j.lastSeq, seg.hdr.gen
		// Serialized under mu: every record lies wholly before the next,
		// so an fdatasync that covers a record covers all earlier ones
		// and a replay can stop at the first invalid record.
		hdr := rec.header(seg.hdr.gen)
		bufs := [][]byte{hdr, []byte(rec.id), rec.env, rec.data}
		if pad := need - recHeaderSize - int64(len(rec.id)+len(rec.env)+len(rec.data)); pad > 0 {
			bufs = append(bufs, zeros[:pad])
		}
		if err := j.pwritev(seg.f, bufs, seg.off); err != nil {
			seg.bad = true
			j.s.log.Error("archive: journal write failed; segment retired", "segment", seg.name, "err", err)
			return nil, nil, fmt.Errorf("archive: write journal: %w", err)
		}
		killPoint("journal-written")
		if seg.records == 0 {
			seg.hdr.age = time.Now().UnixNano()
		}
		seg.off += need
		seg.records++
		seg.inflight++
		j.startCheckpointerLocked()
		return seg, rec, nil
	}
}

var zeros = make([]byte, recAlign)

// sync returns once an fdatasync of seg that started after the caller's
// append has completed. One fdatasync serves every writer waiting.
func (j *journal) sync(seg *segment) error {
	err := seg.gs.sync(func() error {
		j.mu.Lock()
		end, gen := seg.off, seg.hdr.gen
		j.mu.Unlock()
		if err := j.datasync(seg.f); err != nil {
			return err
		}
		killPoint("journal-synced")
		// Records up to end are durable: say so in the header, without a
		// sync of its own (the next fdatasync carries it; a hint that is
		// lost only makes the next taker scan further). Not if a
		// checkpoint started a new generation meanwhile.
		j.mu.Lock()
		defer j.mu.Unlock()
		if end > seg.hdr.hint && gen == seg.hdr.gen && !seg.bad {
			seg.hdr.hint = end
			j.writeHeaderLazyLocked(seg)
		}
		return nil
	})
	if err != nil {
		j.mu.Lock()
		if !seg.bad {
			seg.bad = true
			j.s.log.Error("archive: journal fdatasync failed; segment retired", "segment", seg.name, "err", err)
		}
		j.mu.Unlock()
		return fmt.Errorf("archive: fdatasync journal: %w", err)
	}
	return nil
}

// syncSoon starts an fdatasync of seg in the background, unless one is
// waiting to start already (it will cover what was just written).
func (j *journal) syncSoon(seg *segment) {
	j.mu.Lock()
	if seg.syncPending {
		j.mu.Unlock()
		return
	}
	seg.syncPending = true
	j.mu.Unlock()
	go func() {
		j.mu.Lock()
		seg.syncPending = false
		j.mu.Unlock()
		j.sync(seg)
	}()
}

// release ends a writer's flight on seg. When no writer is in flight and
// no held item's record is here, every record so far is of an item in
// files: the header says so (no sync of its own; a lost one only makes a
// replay look at more records).
func (j *journal) release(seg *segment) {
	j.mu.Lock()
	seg.inflight--
	j.markDoneLocked(seg)
	j.cond.Broadcast()
	j.mu.Unlock()
}

func (j *journal) markDoneLocked(seg *segment) {
	if seg.inflight == 0 && seg.held == 0 && seg.hdr.done < seg.off && !seg.bad {
		// Not throttled: no writer is in flight, so this is a lull (or
		// the one item of a wrapper's process, whose successor must not
		// take its record for a crash's).
		seg.hdr.done = seg.off
		seg.hdrOff, seg.hdrAt = seg.off, time.Now()
		j.writeHeaderLocked(seg)
	}
}

// writeHeaderLazyLocked writes the header for a new hint or done mark,
// but under load at most every 50 ms or 1 MiB of records: each write
// dirties a page the next fdatasync must write too, and a stale mark only
// makes a later reader look at more records.
func (j *journal) writeHeaderLazyLocked(seg *segment) {
	if seg.off-seg.hdrOff < 1<<20 && time.Since(seg.hdrAt) < 50*time.Millisecond {
		return
	}
	seg.hdrOff, seg.hdrAt = seg.off, time.Now()
	j.writeHeaderLocked(seg)
}

// note appends a record that needs no durability of its own (an abort): it
// becomes durable with the next fdatasync, or never, which only means
// replay rebuilds an item nobody wanted.
func (j *journal) note(rec *record) {
	seg, _, err := j.appendRec(func(*segment) *record { return rec })
	if err == nil {
		j.release(seg)
		j.syncSoon(seg)
		return
	}
	if rec.kind == recAbort {
		// This process's own replays still know (another process's, after
		// a crash, would make a phantom item of a message nobody wanted,
		// never lose one).
		j.mu.Lock()
		j.aborted[rec.id] = true
		j.mu.Unlock()
	}
}

// writeHeaderLocked writes seg's header into the slot after its current
// one.
func (j *journal) writeHeaderLocked(seg *segment) error {
	seg.hdr.seq++
	seg.hdr.boot = j.boot
	_, err := seg.f.WriteAt(seg.hdr.marshal(), int64(seg.hdr.seq%2)*slotSize)
	return err
}

// takeSegmentLocked returns a segment to append to: a spare, a free one
// in tmp/journal/ (locked and with its end found), or a new one.
func (j *journal) takeSegmentLocked() (*segment, error) {
	if n := len(j.spare); n > 0 {
		seg := j.spare[n-1]
		j.spare = j.spare[:n-1]
		return seg, nil
	}
	if err := j.mkdir(); err != nil {
		return nil, err
	}
	ents, _ := os.ReadDir(j.dir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), segExt) || !e.Type().IsRegular() || j.heldLocked(e.Name()) {
			continue
		}
		seg, err := j.lockSegment(e.Name())
		if err != nil || seg == nil {
			continue
		}
		if seg.hdr.boot != j.boot || seg.off > max(seg.hdr.done, segHeaderSize) {
			// Written before a reboot (what its writers left in the page
			// cache may be gone), or by a process that died with items
			// only here: replay it before anyone appends.
			unlockSegment(seg)
			j.mu.Unlock()
			j.s.replayJournal(false)
			j.mu.Lock()
			if seg, err = j.lockSegment(e.Name()); err != nil || seg == nil {
				continue
			}
			if seg.hdr.boot != j.boot || seg.off > max(seg.hdr.done, segHeaderSize) {
				unlockSegment(seg) // replay could not finish: leave it
				continue
			}
		}
		if seg.records > 0 && (time.Since(time.Unix(0, seg.hdr.age)) > staleSegment || seg.off > seg.size*3/4) {
			if err := j.checkpointSegLocked(seg); err != nil {
				unlockSegment(seg)
				continue
			}
		}
		return seg, nil
	}
	return j.createSegment()
}

// heldLocked says whether this process already holds the named segment.
func (j *journal) heldLocked(name string) bool {
	for _, seg := range append(append([]*segment{j.active}, j.spare...), j.retired...) {
		if seg != nil && seg.name == name {
			return true
		}
	}
	return false
}

// lockSegment opens and locks the named segment if no other process holds
// it, and finds the end of its records. nil, nil: it is busy.
func (j *journal) lockSegment(name string) (*segment, error) {
	f, err := os.OpenFile(filepath.Join(j.dir, name), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, nil
	}
	fi, err := f.Stat()
	if err != nil || fi.Size() < segHeaderSize+recAlign {
		f.Close()
		return nil, fmt.Errorf("archive: journal segment %s is too short", name)
	}
	seg := &segment{name: name, f: f, size: fi.Size() &^ (recAlign - 1), gs: newGroupSync()}
	hdr, ok := readSegHeader(f)
	if !ok {
		// Both slots torn or foreign: nothing in it can be trusted as
		// ours. Start a generation no stale record can match.
		hdr = segHeader{gen: randomGen()}
		seg.hdr = hdr
		seg.off = segHeaderSize
		return seg, nil
	}
	seg.hdr = hdr
	seg.off, seg.records = scanEnd(f, hdr, seg.size)
	return seg, nil
}

func unlockSegment(seg *segment) { seg.f.Close() }

func readSegHeader(f *os.File) (segHeader, bool) {
	b := make([]byte, segHeaderSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return segHeader{}, false
	}
	a, aok := unmarshalSegHeader(b[:slotSize])
	c, cok := unmarshalSegHeader(b[slotSize:])
	switch {
	case aok && cok:
		if c.seq > a.seq {
			return c, true
		}
		return a, true
	case aok:
		return a, true
	case cok:
		return c, true
	}
	return segHeader{}, false
}

func randomGen() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.LittleEndian.Uint64(b[:]) | 1<<63
}

// scanEnd finds the end of a segment's valid records, starting at the
// header's hint (records before it are durable) and checking each record's
// header after it. It returns the offset and whether there are records.
func scanEnd(f *os.File, hdr segHeader, size int64) (int64, int) {
	off := hdr.hint
	if off < segHeaderSize || off > size || off%recAlign != 0 {
		off = segHeaderSize
	}
	n := 0
	if off > segHeaderSize {
		n = 1 // at least one record before the hint
	}
	h := make([]byte, recHeaderSize)
	for off+recAlign <= size {
		if _, err := f.ReadAt(h, off); err != nil {
			break
		}
		rh, ok := parseRecHead(h, hdr.gen)
		if !ok || off+rh.size() > size {
			break
		}
		off += rh.size()
		n++
	}
	return off, n
}

// createSegment makes a new zero-filled segment under a scratch name and
// renames it in, locked, so no other process ever takes a half-made one.
func (j *journal) createSegment() (*segment, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	name := hex.EncodeToString(rnd[:]) + segExt
	scratch := filepath.Join(j.dir, ".new-"+name)
	f, err := os.OpenFile(scratch, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("archive: create journal segment: %w", unwrapPath(err))
	}
	// Writers of the archive group take turns on a segment (the wrapper
	// runs as each recipient): the group may write it, like tmp/.
	f.Chmod(j.segMode())
	fail := func(op string, err error) (*segment, error) {
		f.Close()
		os.Remove(scratch)
		return nil, fmt.Errorf("archive: %s journal segment %s: %w", op, name, unwrapPath(err))
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fail("lock", err)
	}
	// Written, not fallocated: blocks of an fallocated file are "unwritten"
	// extents, and the first write to each would make every fdatasync a
	// metadata commit.
	chunk := make([]byte, 1<<20)
	for off := int64(0); off < j.segSize; off += int64(len(chunk)) {
		n := min(int64(len(chunk)), j.segSize-off)
		if _, err := f.WriteAt(chunk[:n], off); err != nil {
			return fail("preallocate", err)
		}
	}
	seg := &segment{name: name, f: f, size: j.segSize, off: segHeaderSize, gs: newGroupSync(),
		hdr: segHeader{gen: randomGen(), hint: segHeaderSize, done: segHeaderSize}}
	seg.hdr.boot = j.boot
	if _, err := f.WriteAt(seg.hdr.marshal(), 0); err != nil {
		return fail("write", err)
	}
	if err := f.Sync(); err != nil {
		return fail("fsync", err)
	}
	killPoint("segment-made")
	if err := os.Rename(scratch, filepath.Join(j.dir, name)); err != nil {
		return fail("rename", err)
	}
	if err := SyncDir(j.dir); err != nil {
		return fail("fsync directory of", err)
	}
	return seg, nil
}

// mkdir makes ROOT/.wal/ with the mode and group of tmp/, since the same
// writers use both.
func (j *journal) mkdir() error {
	if _, err := os.Stat(j.dir); err == nil {
		return nil
	}
	fi, err := os.Stat(j.s.tmp)
	if err != nil {
		return fmt.Errorf("archive: journal: %w", err)
	}
	if err := os.Mkdir(j.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("archive: journal: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		os.Lchown(j.dir, -1, int(st.Gid)) // best effort: only the owner or root may
	}
	if err := os.Chmod(j.dir, fi.Mode()&(os.ModePerm|os.ModeSetgid|os.ModeSticky)); err != nil {
		return fmt.Errorf("archive: journal: %w", err)
	}
	return nil
}

// segMode is the mode of a segment: read and write for whoever may
// write in tmp/.
func (j *journal) segMode() os.FileMode {
	m := os.FileMode(0o600)
	if fi, err := os.Stat(j.s.tmp); err == nil && fi.Mode()&0o020 != 0 {
		m |= 0o060
	}
	return m
}

// retireLocked takes seg out of use; the checkpointer frees it.
func (j *journal) retireLocked(seg *segment) {
	if j.active == seg {
		j.active = nil
	}
	j.retired = append(j.retired, seg)
	j.startCheckpointerLocked()
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

func (j *journal) startCheckpointerLocked() {
	if !j.ckptOn {
		j.ckptOn = true
		go j.checkpointer()
	}
}

// checkpointer frees retired segments, and retires the active one once its
// first record is older than j.age, so that records wait at most that long
// for a checkpoint. It runs as long as the process.
func (j *journal) checkpointer() {
	tick := time.NewTicker(j.age / 2)
	defer tick.Stop()
	for {
		j.mu.Lock()
		if seg := j.active; seg != nil && seg.records > 0 && time.Since(time.Unix(0, seg.hdr.age)) >= j.age {
			j.retireLocked(seg)
		}
		work := j.retired
		j.retired = nil
		j.ckptBusy = len(work) > 0
		j.mu.Unlock()
		for _, seg := range work {
			j.mu.Lock()
			for seg.inflight > 0 {
				j.cond.Wait()
			}
			j.mu.Unlock()
			j.flushOrphans()
			err := j.carryForward(seg)
			if err == nil {
				err = j.checkpointSeg(seg)
			}
			j.mu.Lock()
			if err != nil || seg.bad {
				if err != nil {
					j.s.log.Error("archive: journal checkpoint failed; segment kept for replay", "segment", seg.name, "err", err)
				}
				seg.bad = true     // a background fdatasync may still come: it fails harmlessly
				unlockSegment(seg) // its records stay for a later replay
			} else {
				// Kept, however many: a process needs as many segments as
				// its peak rate fills in a checkpoint's time.
				j.spare = append(j.spare, seg)
			}
			j.mu.Unlock()
		}
		j.mu.Lock()
		j.ckptBusy = false
		j.cond.Broadcast()
		j.mu.Unlock()
		select {
		case <-tick.C:
		case <-j.wake:
		}
	}
}

// checkpointSeg makes everything the segment's records promise durable in
// the items' own files (one syncfs of the archive's filesystem), then
// starts a new generation, which makes those records stale.
func (j *journal) checkpointSeg(seg *segment) error { return j.checkpointSegOpt(seg, false) }

// checkpointSegLocked is checkpointSeg with j.mu held.
func (j *journal) checkpointSegLocked(seg *segment) error { return j.checkpointSegOpt(seg, true) }

func (j *journal) checkpointSegOpt(seg *segment, locked bool) error {
	if seg.bad {
		return nil
	}
	if seg.records > 0 {
		if err := j.syncfs(seg.f); err != nil {
			return fmt.Errorf("archive: syncfs for journal %s: %w", seg.name, err)
		}
		killPoint("checkpoint-synced")
	}
	// No writer appends to seg now (it is retired, or not yet handed out);
	// a background fdatasync may still update its hint.
	if !locked {
		j.mu.Lock()
	}
	seg.hdr.gen++
	seg.hdr.hint = segHeaderSize
	seg.hdr.done = segHeaderSize
	seg.hdr.age = 0
	seg.held = 0
	seg.off = segHeaderSize
	seg.records = 0
	err := j.writeHeaderLocked(seg)
	if !locked {
		j.mu.Unlock()
	}
	if err != nil {
		return fmt.Errorf("archive: write journal %s: %w", seg.name, err)
	}
	if err := j.datasync(seg.f); err != nil {
		seg.bad = true
		return fmt.Errorf("archive: fdatasync journal %s: %w", seg.name, err)
	}
	return nil
}

// Checkpoint retires this process's records and waits until they are
// checkpointed: afterwards every committed item is durable in its own files
// and the journal holds nothing of this process's. Tests and clean
// shutdowns use it.
func (s *Store) Checkpoint() error {
	j := s.journal
	if j == nil {
		return nil
	}
	j.mu.Lock()
	if j.active != nil && j.active.records > 0 {
		j.retireLocked(j.active)
	}
	if len(j.retired) == 0 && !j.ckptBusy {
		j.mu.Unlock()
		return nil
	}
	for len(j.retired) > 0 || j.ckptBusy {
		j.cond.Wait()
	}
	j.mu.Unlock()
	return nil
}

// killPoint marks a step where the crash tests kill a helper process.
var killPoint = func(string) {}

// readFull is io.ReadFull at an offset.
func readFull(f *os.File, b []byte, off int64) error {
	_, err := f.ReadAt(b, off)
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
