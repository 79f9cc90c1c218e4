// Package sealog is the archive's tamper-evident log: an append-only RFC
// 6962 Merkle tree of one leaf per item (plus day seals and tombstones),
// stored in the C2SP tlog-tiles layout under ROOT/log/ and committed to by
// checkpoints signed as C2SP signed notes (docs/archive-format.md, "The log").
package sealog

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// LeafPrefix starts every leaf of the item log; the version is in it so a
// later encoding can never be read as this one.
const LeafPrefix = "mailarchive-leaf/1"

// Leaf kinds.
const (
	KindItem      = "item"
	KindDay       = "day"
	KindTombstone = "tombstone"
)

// Leaf is one entry of the item log, decoded. Which fields are set depends
// on Kind:
//
//	item      ID, EMLSHA256, EMLSize, JSONSHA256
//	day       Day, ManifestSHA256, Count
//	tombstone ID, EMLSHA256, JSONSHA256, At, Reason
type Leaf struct {
	Kind           string
	ID             string
	EMLSHA256      string
	EMLSize        int64
	JSONSHA256     string
	Day            string // YYYY/MM/DD, the dated directory
	ManifestSHA256 string
	Count          int
	At             time.Time // tombstone: when the item was disposed of (UTC, seconds)
	Reason         string    // tombstone: why (decoded)
}

// Encode returns the canonical text of the leaf: one line, fields
// separated by one space, ending in "\n".
func (l Leaf) Encode() ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var s string
	switch l.Kind {
	case KindItem:
		s = fmt.Sprintf("%s item %s %s %d %s\n", LeafPrefix, l.ID, l.EMLSHA256, l.EMLSize, l.JSONSHA256)
	case KindDay:
		s = fmt.Sprintf("%s day %s %s %d\n", LeafPrefix, l.Day, l.ManifestSHA256, l.Count)
	case KindTombstone:
		s = fmt.Sprintf("%s tombstone %s %s %s %s %s\n", LeafPrefix, l.ID, l.EMLSHA256, l.JSONSHA256,
			l.At.UTC().Format(time.RFC3339), archive.EncodeTag(l.Reason))
	}
	return []byte(s), nil
}

var dayRe = regexp.MustCompile(`^[0-9]{4}/[0-9]{2}/[0-9]{2}$`)

// isSHA256 reports whether s is 64 lower-case hex digits (a loop: verify
// checks two per leaf, by the hundred thousand).
func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (l Leaf) check() error {
	switch l.Kind {
	case KindItem, KindTombstone:
		if _, err := archive.ParseID(l.ID); err != nil {
			return fmt.Errorf("sealog: leaf: bad ID %q: %w", l.ID, err)
		}
		if !isSHA256(l.EMLSHA256) || !isSHA256(l.JSONSHA256) {
			return fmt.Errorf("sealog: leaf %s: sha256 must be 64 lower-case hex digits", l.ID)
		}
		if l.Kind == KindItem && l.EMLSize < 0 {
			return fmt.Errorf("sealog: leaf %s: negative size", l.ID)
		}
		if l.Kind == KindTombstone && l.At.IsZero() {
			return fmt.Errorf("sealog: tombstone %s: no time", l.ID)
		}
	case KindDay:
		if !dayRe.MatchString(l.Day) {
			return fmt.Errorf("sealog: leaf: bad day %q", l.Day)
		}
		if !isSHA256(l.ManifestSHA256) || l.Count < 0 {
			return fmt.Errorf("sealog: day leaf %s: bad manifest hash or count", l.Day)
		}
	default:
		return fmt.Errorf("sealog: leaf: unknown kind %q", l.Kind)
	}
	return nil
}

// ErrNotCanonical is returned by ParseLeaf for text that decodes but is not
// spelled the one way Encode spells it.
var ErrNotCanonical = errors.New("leaf is not in canonical form")

// ParseLeaf decodes a leaf. It accepts only the canonical encoding: the
// text must be exactly what Encode would write for the decoded leaf.
func ParseLeaf(data []byte) (Leaf, error) {
	s := string(data)
	if !strings.HasSuffix(s, "\n") || strings.Count(s, "\n") != 1 {
		return Leaf{}, fmt.Errorf("sealog: leaf: not one line ending in a newline")
	}
	f := strings.Split(strings.TrimSuffix(s, "\n"), " ")
	if len(f) < 2 || f[0] != LeafPrefix {
		return Leaf{}, fmt.Errorf("sealog: leaf: does not start with %q", LeafPrefix)
	}
	var l Leaf
	var err error
	l.Kind = f[1]
	switch {
	case l.Kind == KindItem && len(f) == 6:
		l.ID, l.EMLSHA256, l.JSONSHA256 = f[2], f[3], f[5]
		l.EMLSize, err = strconv.ParseInt(f[4], 10, 64)
	case l.Kind == KindDay && len(f) == 5:
		l.Day, l.ManifestSHA256 = f[2], f[3]
		l.Count, err = strconv.Atoi(f[4])
	case l.Kind == KindTombstone && len(f) == 7:
		l.ID, l.EMLSHA256, l.JSONSHA256 = f[2], f[3], f[4]
		if l.At, err = time.Parse(time.RFC3339, f[5]); err == nil {
			l.Reason, err = archive.DecodeTag(f[6])
		}
	default:
		return Leaf{}, fmt.Errorf("sealog: leaf: kind %q with %d fields", l.Kind, len(f))
	}
	if err != nil {
		return Leaf{}, fmt.Errorf("sealog: leaf: %w", err)
	}
	enc, err := l.Encode()
	if err != nil {
		return Leaf{}, err
	}
	if string(enc) != s {
		return Leaf{}, fmt.Errorf("sealog: leaf: %w", ErrNotCanonical)
	}
	return l, nil
}
