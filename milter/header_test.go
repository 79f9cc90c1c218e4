package milter_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/postfix-archive/mailarchive/milter"
)

func TestFormatHeaderField(t *testing.T) {
	tests := []struct {
		name, value string
		leadSpace   bool
		want        string
	}{
		// What Postfix 3.7 sends with SMFIP_HDR_LEADSPC (POSTFIX-FACTS.md).
		{"Subject", "x", true, "Subject:x"},
		{"Subject", "\tx", true, "Subject:\tx"},
		{"Subject", "  x", true, "Subject:  x"},
		{"From", " a", true, "From: a"},
		{"X-Empty", "", true, "X-Empty:"},
		{"X-Folded", " first\n\tsecond", true, "X-Folded: first\r\n\tsecond"},
		{"X-Folded", " a\n b\n  c", true, "X-Folded: a\r\n b\r\n  c"},
		{"X-Trailing", " v ", true, "X-Trailing: v "},
		{"X-8bit", " caf\xc3\xa9 \xff", true, "X-8bit: caf\xc3\xa9 \xff"},
		// A CRLF already there is not doubled.
		{"X-CRLF", " a\r\n\tb", true, "X-CRLF: a\r\n\tb"},
		{"X-Mixed", " a\r\n\tb\n\tc", true, "X-Mixed: a\r\n\tb\r\n\tc"},
		{"X-LeadingLF", "\n\tv", true, "X-LeadingLF:\r\n\tv"},
		// Without HDR_LEADSPC one space was eaten: put it back.
		{"Subject", "hello", false, "Subject: hello"},
		{"X-Empty", "", false, "X-Empty: "},
		{"X-Folded", "first\n\tsecond", false, "X-Folded: first\r\n\tsecond"},
	}
	for _, tc := range tests {
		got := string(milter.FormatHeaderField(tc.name, tc.value, tc.leadSpace))
		if got != tc.want {
			t.Errorf("FormatHeaderField(%q, %q, %v) = %q, want %q", tc.name, tc.value, tc.leadSpace, got, tc.want)
		}
	}
}

// FuzzFormatHeaderField checks the properties the archive relies on: the
// field starts with "Name:", has no bare LF, and turning its CRLFs back
// into LFs gives exactly what the MTA sent.
func FuzzFormatHeaderField(f *testing.F) {
	f.Add("Subject", "x", true)
	f.Add("Subject", "\tx", true)
	f.Add("X-Folded", " a\n\tb", true)
	f.Add("X-CRLF", " a\r\n\tb\n", false)
	f.Fuzz(func(t *testing.T, name, value string, leadSpace bool) {
		got := milter.FormatHeaderField(name, value, leadSpace)
		prefix := name + ":"
		if !leadSpace {
			prefix += " "
		}
		if !bytes.HasPrefix(got, []byte(prefix)) {
			t.Fatalf("%q does not start with %q", got, prefix)
		}
		rest := got[len(prefix):]
		if bytes.Count(rest, []byte("\n")) != bytes.Count(rest, []byte("\r\n")) {
			t.Fatalf("bare LF in %q", got)
		}
		// Only CRs before LFs were added.
		if g, w := bytes.ReplaceAll(rest, []byte("\r\n"), []byte("\n")), strings.ReplaceAll(value, "\r\n", "\n"); string(g) != w {
			t.Fatalf("round trip: got %q, want %q", g, w)
		}
		if !strings.Contains(value, "\r") && string(rest) != strings.ReplaceAll(value, "\n", "\r\n") {
			t.Fatalf("got %q for %q", got, value)
		}
	})
}
