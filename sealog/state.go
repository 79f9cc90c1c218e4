package sealog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// state is what the appender needs to know of the log without reading it
// all: which IDs have leaves, which are tombstoned, which days are sealed.
// It is cached in ROOT/log/logged-ids and rebuilt from the entries when the
// cache is missing, torn or behind.
type state struct {
	size      int64            // tree size the state covers
	items     map[string]int64 // ID -> leaf index
	tombs     map[string]int64
	days      map[string]int64 // sealed day -> leaf index of its seal
	lastDay   string           // the day sealed last (for the MANIFEST chain)
	lastHash  string           // its MANIFEST's sha256
	pending   []string         // cache lines not yet written
	cacheGood bool
}

const idsHeader = "mailarchive-logged-ids/1\n"

func newState() *state {
	return &state{items: map[string]int64{}, tombs: map[string]int64{}, days: map[string]int64{}}
}

// add records leaf idx.
func (s *state) add(idx int64, l Leaf) {
	switch l.Kind {
	case KindItem:
		s.items[l.ID] = idx
		s.pending = append(s.pending, fmt.Sprintf("i %d %s", idx, l.ID))
	case KindTombstone:
		s.tombs[l.ID] = idx
		s.pending = append(s.pending, fmt.Sprintf("t %d %s", idx, l.ID))
	case KindDay:
		s.days[l.Day] = idx
		s.lastDay, s.lastHash = l.Day, l.ManifestSHA256
		s.pending = append(s.pending, fmt.Sprintf("d %d %s %s", idx, l.Day, l.ManifestSHA256))
	}
	if idx+1 > s.size {
		s.size = idx + 1
	}
}

// loadState reads the cache and brings it up to the log's size from the
// entries.
func loadState(l *Log) (*state, error) {
	s := readCache(filepath.Join(l.dir, idsFile), l.Size())
	if s == nil {
		s = newState()
	}
	for from := s.size; from < l.Size(); {
		to := min(from+4096, l.Size())
		es, err := l.Entries(from, to)
		if err != nil {
			return nil, err
		}
		for i, e := range es {
			lf, err := ParseLeaf(e)
			if err != nil {
				return nil, fmt.Errorf("sealog: leaf %d: %w", from+int64(i), err)
			}
			s.add(from+int64(i), lf)
		}
		from = to
	}
	s.size = l.Size()
	return s, nil
}

// readCache parses the cache; it returns nil when the cache cannot be
// used. Lines after the last "size" line belong to an update that did not
// finish and are dropped.
func readCache(path string, logSize int64) *state {
	data, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(data, []byte(idsHeader)) {
		return nil
	}
	s := newState()
	good := len(idsHeader)
	sc := bufio.NewScanner(bytes.NewReader(data[len(idsHeader):]))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	off := len(idsHeader)
	type line struct {
		kind, id, hash string
		idx            int64
	}
	var batch []line
	for sc.Scan() {
		text := sc.Text()
		off += len(text) + 1
		f := strings.Split(text, " ")
		if f[0] == "size" && len(f) == 2 {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || n > logSize || n < s.size {
				return nil // the log was truncated or rebuilt: start over
			}
			for _, b := range batch {
				if b.idx < s.size || b.idx >= n {
					return nil
				}
				switch b.kind {
				case "i":
					s.items[b.id] = b.idx
				case "t":
					s.tombs[b.id] = b.idx
				case "d":
					s.days[b.id] = b.idx
					s.lastDay, s.lastHash = b.id, b.hash
				}
			}
			batch = nil
			s.size, good = n, off
			continue
		}
		idx := int64(-1)
		if len(f) >= 3 {
			idx, _ = strconv.ParseInt(f[1], 10, 64)
		}
		switch {
		case idx < 0:
			return nil
		case (f[0] == "i" || f[0] == "t") && len(f) == 3:
			batch = append(batch, line{kind: f[0], id: f[2], idx: idx})
		case f[0] == "d" && len(f) == 4:
			batch = append(batch, line{kind: "d", id: f[2], hash: f[3], idx: idx})
		default:
			return nil
		}
	}
	if sc.Err() != nil {
		return nil
	}
	if good < len(data) {
		if err := os.Truncate(path, int64(good)); err != nil {
			return nil
		}
	}
	s.cacheGood = true
	return s
}

// saveState appends the pending lines and the covered size to the cache
// (or writes it whole when it was not usable).
func saveState(l *Log, s *state) error {
	path := filepath.Join(l.dir, idsFile)
	var buf bytes.Buffer
	if !s.cacheGood {
		buf.WriteString(idsHeader)
		s.pending = s.pending[:0]
		for id, idx := range s.items {
			fmt.Fprintf(&buf, "i %d %s\n", idx, id)
		}
		for id, idx := range s.tombs {
			fmt.Fprintf(&buf, "t %d %s\n", idx, id)
		}
		// Days in leaf order, so the last one read is the last sealed.
		for _, d := range sortedDays(s.days) {
			h := ""
			if d == s.lastDay {
				h = s.lastHash
			} else {
				h = strings.Repeat("0", 64) // only the last day's hash is used
			}
			fmt.Fprintf(&buf, "d %d %s %s\n", s.days[d], d, h)
		}
		fmt.Fprintf(&buf, "size %d\n", s.size)
		if err := writeAtomic(path, buf.Bytes(), 0o640, true); err != nil {
			return err
		}
		s.cacheGood = true
		return nil
	}
	for _, p := range s.pending {
		buf.WriteString(p + "\n")
	}
	fmt.Fprintf(&buf, "size %d\n", s.size)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o640)
	if errors.Is(err, fs.ErrNotExist) {
		s.cacheGood = false
		return saveState(l, s)
	}
	if err != nil {
		return fmt.Errorf("sealog: %w", err)
	}
	_, err = f.Write(buf.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	s.pending = s.pending[:0]
	if err != nil {
		return fmt.Errorf("sealog: write %s: %w", path, err)
	}
	return nil
}

// sortedDays lists days by the index of their seal leaf.
func sortedDays(days map[string]int64) []string {
	out := make([]string, 0, len(days))
	for d := range days {
		out = append(out, d)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && days[out[j]] < days[out[j-1]]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
