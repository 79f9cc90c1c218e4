package query

import (
	"errors"
	"testing"
)

// FuzzParse: any input either parses, and its String parses to the same
// String, or fails with a SyntaxError whose position is inside the query.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"from:alice@example.org", `subject:"a b" OR NOT (c d*)`, "date:2026-01-01..2026-03-31",
		"size:>1M has:attachment", "msgid:<x@y>", `"unterminated`, "a AND", ")(", "date:7d..",
		"queueid:4ABC OR tag:inbox", "http://x/y", "Jörg", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		n, err := Parse(q, testOpt)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q): %v is not a SyntaxError", q, err)
			}
			if se.Pos < 0 || se.Pos > len(q) {
				t.Fatalf("Parse(%q): position %d outside the query", q, se.Pos)
			}
			_ = se.Caret()
			return
		}
		s := n.String()
		n2, err := Parse(s, testOpt)
		if err != nil {
			t.Fatalf("Parse(%q) gave %q, which does not parse: %v", q, s, err)
		}
		if n2.String() != s {
			t.Fatalf("Parse(%q): String %q parses back as %q", q, s, n2.String())
		}
	})
}
