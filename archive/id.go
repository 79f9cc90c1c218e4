package archive

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
)

// StampLayout is the time layout of an ID's STAMP: UTC, to the second, so IDs
// sort by time and filer can date an item from its name alone.
const StampLayout = "20060102T150405Z"

// uniqueLen is the length of an ID's UNIQUE part: 16 base32 characters carry
// 80 random bits, enough that IDs from many processes and hosts never collide
// without coordination.
const uniqueLen = 16

// maxIDLen bounds an ID so that "ID.json" fits in NAME_MAX (255) on every
// common filesystem, with room to spare for a filer's own suffixes.
const maxIDLen = 200

var lowerBase32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// ID is a parsed archive item ID: STAMP.UNIQUE[.TAG]...
type ID struct {
	Stamp  time.Time
	Unique string
	Tags   []string // decoded
}

// NewID returns a fresh ID for time t with the given tags. Tags that would
// make the ID longer than the filesystem allows are truncated in the ID (at
// an escape boundary, so the ID still decodes); callers keep the full tags in
// the envelope.
func NewID(t time.Time, tags ...string) (string, error) {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("archive: random ID: %w", err)
	}
	id := t.UTC().Format(StampLayout) + "." + lowerBase32.EncodeToString(b[:])
	for _, tag := range tags {
		enc := EncodeTag(tag)
		room := maxIDLen - len(id) - 1
		if room < 1 {
			break
		}
		truncated := len(enc) > room
		if truncated {
			enc = truncateEncoded(enc, room)
		}
		id += "." + enc
		if truncated {
			break // later tags would read as part of this one
		}
	}
	return id, nil
}

// tagSafe reports whether c may stand unescaped in a tag. The set excludes
// '.', '/', '%' and every byte outside ASCII, so no tag can form a path
// separator, "." or "..", or be confused with the ID's own separators.
func tagSafe(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '+' || c == '=' || c == '@' || c == '-'
}

// EncodeTag encodes a wrapper tag for use in an ID: bytes outside
// A-Za-z0-9_+=@- become %XX, and the empty tag becomes "%".
func EncodeTag(tag string) string {
	if tag == "" {
		return "%"
	}
	var b strings.Builder
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(tag); i++ {
		c := tag[i]
		if tagSafe(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

// truncateEncoded cuts an encoded tag to at most n bytes without splitting a
// %XX escape.
func truncateEncoded(enc string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(enc) <= n {
		return enc
	}
	cut := n
	// Step back if the cut falls inside an escape.
	for i := max(0, cut-2); i < cut; i++ {
		if enc[i] == '%' {
			cut = i
			break
		}
	}
	if cut == 0 {
		return "%"
	}
	return enc[:cut]
}

// DecodeTag reverses EncodeTag.
func DecodeTag(enc string) (string, error) {
	if enc == "%" {
		return "", nil
	}
	if enc == "" {
		return "", errors.New("archive: empty encoded tag")
	}
	var b strings.Builder
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		switch {
		case c == '%':
			if i+2 >= len(enc) {
				return "", fmt.Errorf("archive: tag %q: truncated escape", enc)
			}
			hi, ok1 := unhex(enc[i+1])
			lo, ok2 := unhex(enc[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("archive: tag %q: bad escape", enc)
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case tagSafe(c):
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("archive: tag %q: byte %q not allowed", enc, c)
		}
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// ParseID parses an ID (a file stem, without .eml or .json).
func ParseID(s string) (ID, error) {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return ID{}, fmt.Errorf("archive: ID %q: want STAMP.UNIQUE[.TAG]...", s)
	}
	if len(s) > maxIDLen {
		return ID{}, fmt.Errorf("archive: ID %q: longer than %d bytes", s, maxIDLen)
	}
	stamp, err := time.Parse(StampLayout, parts[0])
	if err != nil {
		return ID{}, fmt.Errorf("archive: ID %q: bad stamp: %w", s, err)
	}
	u := parts[1]
	if len(u) != uniqueLen {
		return ID{}, fmt.Errorf("archive: ID %q: unique part must be %d characters", s, uniqueLen)
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return ID{}, fmt.Errorf("archive: ID %q: unique part is not lowercase base32", s)
		}
	}
	id := ID{Stamp: stamp, Unique: u}
	for _, p := range parts[2:] {
		tag, err := DecodeTag(p)
		if err != nil {
			return ID{}, fmt.Errorf("archive: ID %q: %w", s, err)
		}
		id.Tags = append(id.Tags, tag)
	}
	// One ID, one spelling: reject what our writers never produce (%41 for
	// A, lower-case hex, a fractional stamp), so two names never alias.
	if canon := canonical(id, parts[2:]); canon != s {
		return ID{}, fmt.Errorf("archive: ID %q is not in canonical form (%q)", s, canon)
	}
	return id, nil
}

func canonical(id ID, encTags []string) string {
	c := id.Stamp.UTC().Format(StampLayout) + "." + id.Unique
	for i, t := range id.Tags {
		enc := EncodeTag(t)
		// A truncated last tag may end before its encoding would.
		if i == len(id.Tags)-1 && len(encTags[i]) < len(enc) && strings.HasPrefix(enc, encTags[i]) {
			enc = encTags[i]
		}
		c += "." + enc
	}
	return c
}
