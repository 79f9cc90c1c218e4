package sealog

import (
	"fmt"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// Tombstone is the disposal of an item (retention, a court order): the log
// keeps that the item existed, what it was, and why it is gone.
type Tombstone struct {
	ID     string
	Reason string    // free text, e.g. "retention:7y" (stored %-encoded)
	At     time.Time // when it is disposed of
}

// AppendTombstones records disposals in the item log, under its lock, with
// a new signed checkpoint. Call it BEFORE removing the item's files: after
// it returns, verify accepts the item's absence; a crash between the two
// leaves a tombstoned item that is still there, which verify ignores. An
// item that has no leaf yet gets one first, so the tombstone always names
// the bytes that were disposed of (one seal would not log, because its
// envelope does not describe its message, gets only the tombstone, with
// the hashes of its files). Reader is used to find such items.
func AppendTombstones(root string, rd *archive.Reader, s *Signer, ts []Tombstone) (Checkpoint, error) {
	lg, err := OpenLog(LogDir(root), ItemOrigin(s.Name()), s)
	if err != nil {
		return Checkpoint{}, err
	}
	defer lg.Close()
	st, err := loadState(lg)
	if err != nil {
		return Checkpoint{}, err
	}
	var leaves []Leaf
	for _, t := range ts {
		if _, done := st.tombs[t.ID]; done {
			continue
		}
		var item Leaf
		if idx, ok := st.items[t.ID]; ok {
			es, err := lg.Entries(idx, idx+1)
			if err != nil {
				return lg.cp, err
			}
			if item, err = ParseLeaf(es[0]); err != nil {
				return lg.cp, fmt.Errorf("sealog: leaf %d: %w", idx, err)
			}
		} else {
			it, err := rd.Locate(t.ID)
			if err != nil {
				return lg.cp, fmt.Errorf("sealog: tombstone for %s, which is neither logged nor found: %w", t.ID, err)
			}
			if item, err = ItemLeaf(rd, it); err == nil {
				leaves = append(leaves, item)
			} else if item, err = itemLeafRetry(rd, it, false); err != nil {
				return lg.cp, fmt.Errorf("sealog: tombstone for %s: %w", t.ID, err)
			}
		}
		at := t.At
		if at.IsZero() {
			at = time.Now()
		}
		leaves = append(leaves, Leaf{Kind: KindTombstone, ID: t.ID, EMLSHA256: item.EMLSHA256,
			JSONSHA256: item.JSONSHA256, At: at.UTC().Truncate(time.Second), Reason: t.Reason})
	}
	var enc [][]byte
	for _, l := range leaves {
		e, err := l.Encode()
		if err != nil {
			return lg.cp, err
		}
		enc = append(enc, e)
	}
	base := lg.Size()
	cp, err := lg.Append(enc)
	if err != nil {
		return cp, err
	}
	for i, l := range leaves {
		st.add(base+int64(i), l)
	}
	return cp, saveState(lg, st)
}
