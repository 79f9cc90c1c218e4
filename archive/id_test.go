package archive

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	stampRE  = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z$`)
	uniqueRE = regexp.MustCompile(`^[a-z2-7]{16}$`)
)

// formatID spells a parsed ID the way NewID does; an ID has exactly one
// spelling, so formatID(ParseID(s)) must give s back.
func formatID(id ID) string {
	s := id.Stamp.UTC().Format(StampLayout) + "." + id.Unique
	for _, tag := range id.Tags {
		s += "." + EncodeTag(tag)
	}
	return s
}

// checkIDShape fails the test unless id is safe as a file stem: no path
// separator, no empty, "." or ".." component, only the allowed bytes, and
// short enough for NAME_MAX with ".json" added.
func checkIDShape(t *testing.T, id string) {
	t.Helper()
	if len(id) > maxIDLen {
		t.Errorf("ID is %d bytes, want at most %d: %q", len(id), maxIDLen, id)
	}
	if strings.ContainsAny(id, "/\x00") {
		t.Errorf("ID contains '/' or NUL: %q", id)
	}
	parts := strings.Split(id, ".")
	if len(parts) < 2 {
		t.Fatalf("ID %q has fewer than two components", id)
	}
	if !stampRE.MatchString(parts[0]) {
		t.Errorf("ID %q: stamp %q is not YYYYMMDDTHHMMSSZ", id, parts[0])
	}
	if !uniqueRE.MatchString(parts[1]) {
		t.Errorf("ID %q: unique %q is not 16 characters of [a-z2-7]", id, parts[1])
	}
	for _, p := range parts[2:] {
		if p == "" || p == "." || p == ".." {
			t.Errorf("ID %q has a component %q", id, p)
		}
		for i := 0; i < len(p); i++ {
			if c := p[i]; !tagSafe(c) && c != '%' {
				t.Errorf("ID %q: tag %q has byte %q", id, p, c)
			}
		}
	}
}

func TestNewIDFormat(t *testing.T) {
	loc := time.FixedZone("UTC+5", 5*3600)
	at := time.Date(2026, 11, 24, 18, 5, 1, 999_999_999, loc) // 13:05:01Z
	seen := map[string]bool{}
	for range 100 {
		id, err := NewID(at)
		if err != nil {
			t.Fatal(err)
		}
		checkIDShape(t, id)
		if !strings.HasPrefix(id, "20261124T130501Z.") {
			t.Errorf("NewID = %q, want the UTC stamp 20261124T130501Z", id)
		}
		if len(id) != len("20261124T130501Z.")+16 {
			t.Errorf("NewID without tags = %q, want STAMP.UNIQUE only", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestParseIDRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tags := range [][]string{
		nil,
		{"inbox"},
		{"a", "b", "c"},
		{"user@example.com", "x+y=z_w-v"},
	} {
		id, err := NewID(at, tags...)
		if err != nil {
			t.Fatal(err)
		}
		p, err := ParseID(id)
		if err != nil {
			t.Fatalf("ParseID(%q): %v", id, err)
		}
		if !p.Stamp.Equal(at) || p.Stamp.Location() != time.UTC {
			t.Errorf("ParseID(%q).Stamp = %v, want %v UTC", id, p.Stamp, at)
		}
		if p.Unique != strings.Split(id, ".")[1] {
			t.Errorf("ParseID(%q).Unique = %q", id, p.Unique)
		}
		if !equalStrings(p.Tags, tags) {
			t.Errorf("ParseID(%q).Tags = %q, want %q", id, p.Tags, tags)
		}
		if got := formatID(p); got != id {
			t.Errorf("formatID(ParseID(%q)) = %q", id, got)
		}
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNewIDHostileTags(t *testing.T) {
	at := time.Date(2026, 11, 24, 13, 5, 1, 0, time.UTC)
	tests := []struct {
		name string
		tags []string
	}{
		{"dotdot path", []string{"../../etc"}},
		{"slash", []string{"a/b"}},
		{"dot", []string{"."}},
		{"dotdot", []string{".."}},
		{"empty", []string{""}},
		{"empty among others", []string{"a", "", "b"}},
		{"10 kB", []string{strings.Repeat("x", 10_000)}},
		{"10 kB of escapes", []string{strings.Repeat("/", 10_000)}},
		{"long then more", []string{strings.Repeat("ab.", 100), "second", "third"}},
		{"many tags", strings.Split(strings.Repeat("tag,", 60), ",")},
		{"utf-8", []string{"Jörg-日本語"}},
		{"invalid utf-8", []string{"\xff\xfe\x80ok"}},
		{"percent", []string{"%", "%25", "100%"}},
		{"nul", []string{"a\x00b", "\x00"}},
		{"spaces and controls", []string{" a b\r\n\t"}},
		{"all bytes", []string{allBytes()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := NewID(at, tt.tags...)
			if err != nil {
				t.Fatal(err)
			}
			checkIDShape(t, id)
			p, err := ParseID(id)
			if err != nil {
				t.Fatalf("ParseID(%q): %v", id, err)
			}
			if len(p.Tags) > len(tt.tags) {
				t.Fatalf("ParseID(%q) gave %d tags, more than the %d given", id, len(p.Tags), len(tt.tags))
			}
			comps := strings.Split(id, ".")[2:]
			for i, got := range p.Tags {
				want := tt.tags[i]
				if comps[i] == EncodeTag(want) {
					if got != want {
						t.Errorf("tag %d = %q, want %q", i, got, want)
					}
					continue
				}
				// Truncated: only when the ID is full, and only to a prefix.
				if !strings.HasPrefix(want, got) {
					t.Errorf("tag %d = %q, not a prefix of %q", i, got, want)
				}
				if len(id) < maxIDLen-2 {
					t.Errorf("tag %d truncated to %q although the ID %q (%d bytes) had room", i, got, id, len(id))
				}
			}
			if len(p.Tags) < len(tt.tags) && len(id) < maxIDLen-3 {
				t.Errorf("ID %q (%d bytes) dropped tags although there was room", id, len(id))
			}
			if formatID(p) != id {
				t.Errorf("formatID(ParseID(%q)) = %q", id, formatID(p))
			}
		})
	}
}

func allBytes() string {
	b := make([]byte, 256)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

func TestEncodeTag(t *testing.T) {
	tests := []struct{ tag, enc string }{
		{"", "%"},
		{"inbox", "inbox"},
		{"A-Za-z0-9_+=@", "A-Za-z0-9_+=@"},
		{".", "%2E"},
		{"..", "%2E%2E"},
		{"../../etc", "%2E%2E%2F%2E%2E%2Fetc"},
		{"a/b", "a%2Fb"},
		{"%", "%25"},
		{"a b", "a%20b"},
		{"\x00", "%00"},
		{"ö", "%C3%B6"},
		{"\xff", "%FF"},
	}
	for _, tt := range tests {
		if got := EncodeTag(tt.tag); got != tt.enc {
			t.Errorf("EncodeTag(%q) = %q, want %q", tt.tag, got, tt.enc)
		}
		if got, err := DecodeTag(tt.enc); err != nil || got != tt.tag {
			t.Errorf("DecodeTag(%q) = %q, %v, want %q", tt.enc, got, err, tt.tag)
		}
	}
}

func TestDecodeTagRejects(t *testing.T) {
	for _, enc := range []string{"", "%2", "a%", "%%", "%G0", "%0G", "a.b", "a/b", "a b", "\x00", "ö", "%%41"} {
		if got, err := DecodeTag(enc); err == nil {
			t.Errorf("DecodeTag(%q) = %q, want an error", enc, got)
		}
	}
}

func TestTruncateEncoded(t *testing.T) {
	tests := []struct {
		enc  string
		n    int
		want string
	}{
		{"abcdef", 3, "abc"},
		{"abcdef", 10, "abcdef"},
		{"ab%2Fcd", 2, "ab"},
		{"ab%2Fcd", 3, "ab"}, // would keep "%"
		{"ab%2Fcd", 4, "ab"}, // would keep "%2"
		{"ab%2Fcd", 5, "ab%2F"},
		{"%25%25%25", 4, "%25"},
		{"%25%25%25", 5, "%25"},
		{"%25%25%25", 6, "%25%25"},
		{"%2F", 2, "%"}, // nothing fits: the empty tag
		{"abc", 0, ""},
	}
	for _, tt := range tests {
		got := truncateEncoded(tt.enc, tt.n)
		if got != tt.want {
			t.Errorf("truncateEncoded(%q, %d) = %q, want %q", tt.enc, tt.n, got, tt.want)
		}
		if tt.n > 0 {
			if _, err := DecodeTag(got); err != nil {
				t.Errorf("truncateEncoded(%q, %d) = %q does not decode: %v", tt.enc, tt.n, got, err)
			}
		}
	}
}

// TestNewIDLength checks every ID length around the limit: tags of every
// length and every escape alignment stay within maxIDLen and decode.
func TestNewIDLength(t *testing.T) {
	at := time.Date(2026, 11, 24, 13, 5, 1, 0, time.UTC)
	for n := 150; n < 220; n++ {
		for _, unit := range []string{"x", "/", "x/", "xx/"} {
			tag := strings.Repeat(unit, n)[:n]
			id, err := NewID(at, tag, "next")
			if err != nil {
				t.Fatal(err)
			}
			checkIDShape(t, id)
			p, err := ParseID(id)
			if err != nil {
				t.Fatalf("ParseID(%q): %v", id, err)
			}
			if len(p.Tags) == 0 || !strings.HasPrefix(tag, p.Tags[0]) {
				t.Errorf("tag %q: ID %q has tags %q", tag, id, p.Tags)
			}
		}
	}
}

func TestParseIDRejects(t *testing.T) {
	const good = "20261124T130501Z.abcdefghijklmnop"
	for _, s := range []string{
		"",
		"20261124T130501Z",
		good + ".",
		good + "..x",
		good + ".a/b",
		good + ".a%2",
		"20261324T130501Z.abcdefghijklmnop",     // month 13
		"20261124T250501Z.abcdefghijklmnop",     // hour 25
		"2026-11-24T13:05:01Z.abcdefghijklmnop", // wrong layout
		"20261124T130501Z.abcdefghijklmno",      // 15 characters
		"20261124T130501Z.abcdefghijklmnopq",    // 17 characters
		"20261124T130501Z.ABCDEFGHIJKLMNOP",     // upper case
		"20261124T130501Z.abcdefghijklmno1",     // 1 is not base32
		good + "." + strings.Repeat("x", maxIDLen),
		"../" + good,
	} {
		if id, err := ParseID(s); err == nil {
			t.Errorf("ParseID(%q) = %+v, want an error", s, id)
		}
	}
}

// TestParseIDCanonical: an ID has one spelling. ParseID must reject the
// spellings NewID never writes, or two different file names would parse to
// the same ID and a tool that rebuilds a name from a parsed ID would miss
// the file.
func TestParseIDCanonical(t *testing.T) {
	const good = "20261124T130501Z.abcdefghijklmnop"
	for _, s := range []string{
		good + ".%41",                         // escape of a byte that is written plainly ("A")
		good + ".%2e",                         // lower-case hex digits
		good + ".a%2fb",                       // lower-case hex digits
		"20261124T130501,5Z.abcdefghijklmnop", // time.Parse accepts a fraction after the seconds
	} {
		id, err := ParseID(s)
		if err == nil {
			t.Errorf("ParseID(%q) = %+v, which NewID would spell %q; want an error", s, id, formatID(id))
		}
	}
}

// FuzzTag: every tag survives EncodeTag/DecodeTag, its encoding uses only
// the allowed bytes, and an ID made with it is a safe file stem that parses
// back to the tag (or a prefix of it, when it had to be truncated).
func FuzzTag(f *testing.F) {
	for _, s := range []string{"", ".", "..", "../../etc", "a/b", "%", "%25", "\x00", "Jörg", "\xff\xfe", "inbox"} {
		f.Add(s)
	}
	at := time.Date(2026, 11, 24, 13, 5, 1, 0, time.UTC)
	f.Fuzz(func(t *testing.T, tag string) {
		enc := EncodeTag(tag)
		if enc == "" || enc == "." || enc == ".." {
			t.Fatalf("EncodeTag(%q) = %q", tag, enc)
		}
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; !tagSafe(c) && c != '%' {
				t.Fatalf("EncodeTag(%q) = %q has byte %q", tag, enc, c)
			}
		}
		dec, err := DecodeTag(enc)
		if err != nil || dec != tag {
			t.Fatalf("DecodeTag(EncodeTag(%q)) = %q, %v", tag, dec, err)
		}
		id, err := NewID(at, tag)
		if err != nil {
			t.Fatal(err)
		}
		checkIDShape(t, id)
		p, err := ParseID(id)
		if err != nil {
			t.Fatalf("ParseID(%q): %v", id, err)
		}
		if len(p.Tags) != 1 || !strings.HasPrefix(tag, p.Tags[0]) {
			t.Fatalf("tag %q: ID %q parses to tags %q", tag, id, p.Tags)
		}
		if len(enc) <= maxIDLen-len("20261124T130501Z.abcdefghijklmnop.") && p.Tags[0] != tag {
			t.Fatalf("tag %q fits but ID %q parses to %q", tag, id, p.Tags[0])
		}
	})
}

// FuzzParseID: ParseID never panics, and whatever it accepts is an ID in
// its one spelling, safe as a file stem.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"20261124T130501Z.abcdefghijklmnop",
		"20261124T130501Z.abcdefghijklmnop.inbox.%",
		"20261124T130501Z.abcdefghijklmnop.%2E%2E%2Fetc",
		"20261124T130501Z.abcdefghijklmnop..",
		"20261124T130501Z",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			return
		}
		if got := formatID(id); got != s {
			t.Fatalf("ParseID(%q) accepted a spelling NewID never writes: it re-encodes to %q", s, got)
		}
		checkIDShape(t, s)
	})
}
