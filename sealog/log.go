package sealog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"

	"golang.org/x/mod/sumdb/tlog"
)

// Files of a log directory besides the C2SP tiles.
const (
	checkpointFile = "checkpoint"  // the latest signed checkpoint (C2SP)
	historyDir     = "checkpoints" // every checkpoint ever signed, by tree size
	lockFile       = "lock"        // flock(2) of the one appender
	idsFile        = "logged-ids"  // cache: the IDs in the log (rebuildable from the entries)
	publishedFile  = "published"   // cache: tree size last handed to --publish
	manifestDir    = "manifest"    // day MANIFESTs, YYYY/MM/DD
	pendingDir     = "pending"     // audit: entries waiting to be sealed
)

// crashHook, when set (tests), is called at each step of an append; a test
// binary that dies there shows the log survives a crash at that step.
var crashHook func(step string)

func step(name string) {
	if crashHook != nil {
		crashHook(name)
	}
}

// Log is a log directory opened for appending: it holds the lock until
// Close, so there is one appender at a time.
type Log struct {
	dir    string
	origin string
	signer *Signer
	st     *store
	lock   *os.File
	cp     Checkpoint // the last committed checkpoint
	signed []byte
}

// OpenLog opens (creating if needed) the log in dir with this origin for
// appending. It waits for the lock, then checks that the current
// checkpoint is signed by the signer's own key and matches the stored
// tiles, so it never extends a log it cannot vouch for.
func OpenLog(dir, origin string, s *Signer) (*Log, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("sealog: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sealog: lock: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX); err != nil {
		lf.Close()
		return nil, fmt.Errorf("sealog: lock %s: %w", lf.Name(), err)
	}
	l := &Log{dir: dir, origin: origin, signer: s, st: newStore(dir), lock: lf}
	if err := l.load(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Log) load() error {
	signed, err := os.ReadFile(filepath.Join(l.dir, checkpointFile))
	if errors.Is(err, fs.ErrNotExist) {
		if hist, _ := historySizes(l.dir); len(hist) > 0 {
			return fmt.Errorf("sealog: %s has no checkpoint but %d in %s/: restore it before appending", l.dir, len(hist), historyDir)
		}
		l.cp = Checkpoint{Origin: l.origin, Size: 0}
		l.cp.Root, _ = tlog.TreeHash(0, nil)
		return nil
	}
	if err != nil {
		return fmt.Errorf("sealog: %w", err)
	}
	cp, err := OpenCheckpoint(signed, l.signer.Verifier)
	if err != nil {
		return fmt.Errorf("sealog: %s/checkpoint: %w", l.dir, err)
	}
	if cp.Origin != l.origin {
		return fmt.Errorf("sealog: %s/checkpoint is for origin %q, not %q", l.dir, cp.Origin, l.origin)
	}
	root, err := tlog.TreeHash(cp.Size, l.st.hashReader(cp.Size, nil))
	if err != nil {
		return fmt.Errorf("sealog: %s: %w", l.dir, err)
	}
	if root != cp.Root {
		return fmt.Errorf("sealog: %s: the tiles do not match the checkpoint (size %d): run verify", l.dir, cp.Size)
	}
	l.cp, l.signed = cp, signed
	// The history copy is written after the commit; a crash in between
	// leaves it missing.
	if _, err := os.Stat(filepath.Join(l.dir, historyPath(cp.Size))); errors.Is(err, fs.ErrNotExist) {
		if err := l.st.writeFile(historyPath(cp.Size), signed, 0o640); err != nil {
			return err
		}
	}
	return nil
}

// ensureCheckpoint signs the empty tree's checkpoint for a new log, so
// that verify has something to check from the first seal on.
func (l *Log) ensureCheckpoint() error {
	if l.signed != nil {
		return nil
	}
	signed, err := signCheckpoint(l.cp, l.signer)
	if err != nil {
		return err
	}
	if err := l.st.writeFile(checkpointFile, signed, 0o644); err != nil {
		return err
	}
	l.signed = signed
	return l.st.writeFile(historyPath(0), signed, 0o644)
}

// Close releases the lock.
func (l *Log) Close() error {
	if l.lock == nil {
		return nil
	}
	err := l.lock.Close()
	l.lock = nil
	return err
}

// Size is the tree size of the last committed checkpoint.
func (l *Log) Size() int64 { return l.cp.Size }

// Checkpoint is the last committed checkpoint and its signed note.
func (l *Log) Checkpoint() (Checkpoint, []byte) { return l.cp, l.signed }

// Entries reads the committed entries [from, to).
func (l *Log) Entries(from, to int64) ([][]byte, error) {
	if to > l.cp.Size || from < 0 || from > to {
		return nil, fmt.Errorf("sealog: entries [%d, %d) of a log of %d", from, to, l.cp.Size)
	}
	return l.st.entries(l.cp.Size, from, to)
}

// Append adds entries to the log and commits them with a new signed
// checkpoint. The order of the writes makes a crash at any point harmless:
// bundles and tiles for the new size are written first under names the
// committed checkpoint does not use (or rewrites of full tiles beyond it),
// then the checkpoint is replaced atomically (the commit), then the history
// copy is written. Until the commit, readers and the next appender see the
// old tree; the next appender rewrites what the crashed one left.
func (l *Log) Append(entries [][]byte) (Checkpoint, error) {
	if len(entries) == 0 {
		return l.cp, nil
	}
	old := l.cp.Size
	size := old + int64(len(entries))
	extra := map[int64]tlog.Hash{}
	r := l.st.hashReader(old, extra)
	for i, e := range entries {
		if len(e) > 0xffff {
			return l.cp, fmt.Errorf("sealog: entry %d is %d bytes (at most 65535)", old+int64(i), len(e))
		}
		n := old + int64(i)
		hs, err := tlog.StoredHashes(n, e, r)
		if err != nil {
			return l.cp, err
		}
		base := tlog.StoredHashIndex(0, n)
		for j, h := range hs {
			extra[base+int64(j)] = h
		}
	}
	tiles := tlog.NewTiles(TileHeight, old, size)
	for _, t := range tiles {
		if t.L != 0 {
			continue
		}
		var bundle [][]byte
		lo := t.N * tileWidth
		if lo < old {
			prev, err := l.st.entries(old, lo, old)
			if err != nil {
				return l.cp, err
			}
			bundle = append(bundle, prev...)
		}
		from := max(lo, old)
		bundle = append(bundle, entries[from-old:lo+int64(t.W)-old]...)
		data, err := marshalBundle(bundle)
		if err != nil {
			return l.cp, err
		}
		if err := l.st.writeFile(EntriesPath(t.N, t.W), data, 0o640); err != nil {
			return l.cp, err
		}
		step("entries")
	}
	for _, t := range tiles {
		data, err := tlog.ReadTileData(t, r)
		if err != nil {
			return l.cp, fmt.Errorf("sealog: tile %s: %w", TilePath(t.L, t.N, t.W), err)
		}
		if err := l.st.writeFile(TilePath(t.L, t.N, t.W), data, 0o640); err != nil {
			return l.cp, err
		}
		step("tile")
	}
	root, err := tlog.TreeHash(size, r)
	if err != nil {
		return l.cp, err
	}
	cp := Checkpoint{Origin: l.origin, Size: size, Root: root}
	signed, err := signCheckpoint(cp, l.signer)
	if err != nil {
		return l.cp, err
	}
	step("signed")
	if err := l.st.writeFile(checkpointFile, signed, 0o644); err != nil {
		return l.cp, err
	}
	l.cp, l.signed = cp, signed
	l.st.tiles = map[string][]byte{} // widths changed
	step("checkpoint")
	if err := l.st.writeFile(historyPath(size), signed, 0o644); err != nil {
		return l.cp, err
	}
	step("history")
	l.st.removeStalePartials(old, size)
	return cp, nil
}

func historyPath(size int64) string {
	return filepath.Join(historyDir, strconv.FormatInt(size, 10))
}

// historySizes lists the tree sizes of the checkpoints kept in dir's
// history, smallest first.
func historySizes(dir string) ([]int64, error) {
	ents, err := os.ReadDir(filepath.Join(dir, historyDir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []int64
	for _, e := range ents {
		n, err := strconv.ParseInt(e.Name(), 10, 64)
		if err == nil && strconv.FormatInt(n, 10) == e.Name() {
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}
