package sealog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/postfix-archive/mailarchive/archive"
)

// TileHeight is the C2SP tlog-tiles height: 2^8 = 256 hashes or entries
// per full tile.
const TileHeight = 8

const tileWidth = 1 << TileHeight

// tileIndexPath writes a tile number as C2SP tlog-tiles does: groups of
// three digits, all but the last prefixed with "x" (1234067 ->
// x001/x234/067).
func tileIndexPath(n int64) string {
	s := fmt.Sprintf("%03d", n%1000)
	for n >= 1000 {
		n /= 1000
		s = fmt.Sprintf("x%03d/", n%1000) + s
	}
	return s
}

// TilePath is the path, relative to the log directory, of the hash tile at
// level l, number n and width w (w < 256: a partial tile).
func TilePath(l int, n int64, w int) string {
	p := "tile/" + strconv.Itoa(l) + "/" + tileIndexPath(n)
	if w < tileWidth {
		p += ".p/" + strconv.Itoa(w)
	}
	return p
}

// EntriesPath is the path of entry bundle n of width w.
func EntriesPath(n int64, w int) string {
	p := "tile/entries/" + tileIndexPath(n)
	if w < tileWidth {
		p += ".p/" + strconv.Itoa(w)
	}
	return p
}

// tileWidthAt is the width tile n of level l has in a tree of size size
// (0: the tile does not exist yet).
func tileWidthAt(size int64, l int, n int64) int {
	count := size >> (TileHeight * uint(l))
	w := count - n*tileWidth
	if w <= 0 {
		return 0
	}
	if w > tileWidth {
		return tileWidth
	}
	return int(w)
}

// marshalBundle encodes entries as a C2SP entry bundle: each entry as a
// 2-byte big-endian length followed by its bytes.
func marshalBundle(entries [][]byte) ([]byte, error) {
	var out []byte
	for _, e := range entries {
		if len(e) > 0xffff {
			return nil, fmt.Errorf("sealog: entry of %d bytes is longer than 65535", len(e))
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
		out = append(out, e...)
	}
	return out, nil
}

// parseBundle decodes an entry bundle that must hold exactly w entries.
func parseBundle(data []byte, w int) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, errors.New("truncated entry length")
		}
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		if len(data) < n {
			return nil, errors.New("truncated entry")
		}
		out = append(out, data[:n:n])
		data = data[n:]
	}
	if len(out) != w {
		return nil, fmt.Errorf("%d entries, want %d", len(out), w)
	}
	return out, nil
}

// store reads and writes the files of one log directory (ROOT/log or
// ROOT/audit) at a committed tree size.
type store struct {
	dir   string
	fsync bool
	tiles map[string][]byte // cache of tiles read, by path
}

func newStore(dir string) *store {
	return &store{dir: dir, fsync: true, tiles: map[string][]byte{}}
}

func (s *store) read(rel string) ([]byte, error) {
	if d, ok := s.tiles[rel]; ok {
		return d, nil
	}
	d, err := os.ReadFile(filepath.Join(s.dir, rel))
	if err != nil {
		return nil, err
	}
	if len(s.tiles) > 64 {
		clear(s.tiles) // bounded: appends and proofs read few tiles, verify streams
	}
	s.tiles[rel] = d
	return d, nil
}

// hashReader reads stored hashes from the tiles of a tree of size size,
// with hashes computed since (not yet written) looked up in extra first.
func (s *store) hashReader(size int64, extra map[int64]tlog.Hash) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if h, ok := extra[x]; ok {
				out[i] = h
				continue
			}
			t := tlog.TileForIndex(TileHeight, x)
			t.W = tileWidthAt(size, t.L, t.N)
			if t.W == 0 {
				return nil, fmt.Errorf("sealog: hash %d is not in a tree of size %d", x, size)
			}
			rel := TilePath(t.L, t.N, t.W)
			data, err := s.readTile(rel, TilePath(t.L, t.N, tileWidth), t.W*tlog.HashSize)
			if err != nil {
				return nil, fmt.Errorf("sealog: read %s: %w", rel, err)
			}
			h, err := tlog.HashFromTile(t, data, x)
			if err != nil {
				return nil, fmt.Errorf("sealog: %s: %w", rel, err)
			}
			out[i] = h
		}
		return out, nil
	})
}

// entries reads the entries [from, to) of a tree of size size (to ≤ size).
func (s *store) entries(size, from, to int64) ([][]byte, error) {
	var out [][]byte
	for n := from / tileWidth; n*tileWidth < to; n++ {
		w := tileWidthAt(size, 0, n)
		es, err := s.bundle(n, w)
		if err != nil {
			return nil, err
		}
		lo, hi := int64(0), int64(w)
		if n*tileWidth < from {
			lo = from - n*tileWidth
		}
		if n*tileWidth+hi > to {
			hi = to - n*tileWidth
		}
		out = append(out, es[lo:hi]...)
	}
	return out, nil
}

// readTile reads a partial tile, or, when it is gone (a later append made
// the tile full and removed it), the first n bytes of the full tile: C2SP
// readers do the same.
func (s *store) readTile(rel, full string, n int) ([]byte, error) {
	data, err := s.read(rel)
	if errors.Is(err, fs.ErrNotExist) && rel != full {
		if d, ferr := s.read(full); ferr == nil && len(d) >= n {
			return d[:n], nil
		}
	}
	return data, err
}

// bundle reads entry bundle n at width w, falling back to the prefix of
// the full bundle as readTile does.
func (s *store) bundle(n int64, w int) ([][]byte, error) {
	rel := EntriesPath(n, w)
	data, err := os.ReadFile(filepath.Join(s.dir, rel))
	if errors.Is(err, fs.ErrNotExist) && w < tileWidth {
		if d, ferr := os.ReadFile(filepath.Join(s.dir, EntriesPath(n, tileWidth))); ferr == nil {
			if es, perr := parseBundle(d, tileWidth); perr == nil {
				return es[:w], nil
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sealog: read %s: %w", rel, err)
	}
	es, err := parseBundle(data, w)
	if err != nil {
		return nil, fmt.Errorf("sealog: %s: %w", rel, err)
	}
	return es, nil
}

// writeFile writes rel atomically and durably: a temporary name in the same
// directory, fsync, rename, fsync of the directory.
func (s *store) writeFile(rel string, data []byte, mode os.FileMode) error {
	p := filepath.Join(s.dir, rel)
	dir := filepath.Dir(p)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("sealog: %w", err)
	}
	return writeAtomic(p, data, mode, s.fsync)
}

func writeAtomic(p string, data []byte, mode os.FileMode, sync bool) error {
	dir := filepath.Dir(p)
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp*")
	if err != nil {
		return fmt.Errorf("sealog: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("sealog: write %s: %w", p, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sealog: write %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sealog: rename %s: %w", p, err)
	}
	if sync {
		if err := archive.SyncDir(dir); err != nil {
			return fmt.Errorf("sealog: fsync %s: %w", dir, err)
		}
	}
	return nil
}

// removeStalePartials removes the partial tiles and bundles of the tiles
// an append from old to size touched that the tree of size size does not
// use (other widths, left by earlier appends and by appends that crashed).
// They are never read again.
func (s *store) removeStalePartials(old, size int64) {
	for _, t := range tlog.NewTiles(TileHeight, old, size) {
		s.removePartialsBut(TilePath(t.L, t.N, tileWidth), t.W)
		if t.L == 0 {
			s.removePartialsBut(EntriesPath(t.N, tileWidth), t.W)
		}
	}
}

func (s *store) removePartialsBut(fullRel string, keep int) {
	pdir := filepath.Join(s.dir, fullRel+".p")
	ents, err := os.ReadDir(pdir)
	if err != nil {
		return
	}
	left := 0
	for _, e := range ents {
		w, err := strconv.Atoi(e.Name())
		if err != nil || w == keep {
			left++
			continue
		}
		if err := os.Remove(filepath.Join(pdir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			left++
		}
	}
	if left == 0 {
		os.Remove(pdir)
	}
}

// TileReader returns a hash reader over the tiles of the log in dir at
// tree size size, for proofs (tlog.ProveRecord, tlog.ProveTree).
func TileReader(dir string, size int64) tlog.HashReader {
	return newStore(dir).hashReader(size, nil)
}
