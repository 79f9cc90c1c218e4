package query

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

var testOpt = Options{Now: time.Date(2026, 3, 15, 10, 30, 0, 0, time.UTC), Location: time.UTC}

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

func TestParse(t *testing.T) {
	tests := []struct {
		q    string
		want Node
	}{
		{"alice", Term{Value: "alice"}},
		{"from:alice@example.org", Term{Field: FieldFrom, Value: "alice@example.org"}},
		{"FROM:alice", Term{Field: FieldFrom, Value: "alice"}},
		{"bcc:bob@example.net", Term{Field: FieldRcpt, Value: "bob@example.net"}},
		{`subject:"quarterly report"`, Term{Field: FieldSubject, Value: "quarterly report", Phrase: true}},
		{`"a ""quoted"" word"`, Term{Value: `a "quoted" word`, Phrase: true}},
		{"invoic*", Term{Value: "invoic", Prefix: true}},
		{"*", All{}},
		{"msgid:<abc@x>", Term{Field: FieldMsgID, Value: "abc@x"}},
		{"id:abc@x", Term{Field: FieldMsgID, Value: "abc@x"}},
		{"queueid:4ABC12", Term{Field: FieldQueueID, Value: "4ABC12"}},
		{"http://example.org/x", Term{Value: "http://example.org/x"}},
		{"has:attachment", HasAttachment{}},
		{"a b", And{Kids: []Node{Term{Value: "a"}, Term{Value: "b", Pos: 2}}}},
		{"a AND b", And{Kids: []Node{Term{Value: "a"}, Term{Value: "b", Pos: 6}}}},
		{"a and b or c", Or{Kids: []Node{And{Kids: []Node{Term{Value: "a"}, Term{Value: "b", Pos: 6}}}, Term{Value: "c", Pos: 11}}}},
		{"a (b OR c)", And{Kids: []Node{Term{Value: "a"}, Or{Kids: []Node{Term{Value: "b", Pos: 3}, Term{Value: "c", Pos: 8}}}}}},
		{"NOT a", Not{X: Term{Value: "a", Pos: 4}}},
		{"not not a", Not{X: Not{X: Term{Value: "a", Pos: 8}}}},
		{"a NOT b", And{Kids: []Node{Term{Value: "a"}, Not{X: Term{Value: "b", Pos: 6}}}}},
		{"date:2026-01-01..2026-03-31", DateRange{From: day(2026, 1, 1), To: day(2026, 4, 1)}},
		{"date:2026-02", DateRange{From: day(2026, 2, 1), To: day(2026, 3, 1)}},
		{"date:2026", DateRange{From: day(2026, 1, 1), To: day(2027, 1, 1)}},
		{"date:yesterday", DateRange{From: day(2026, 3, 14), To: day(2026, 3, 15)}},
		{"date:today", DateRange{From: day(2026, 3, 15), To: day(2026, 3, 16)}},
		{"date:7d..", DateRange{From: testOpt.Now.AddDate(0, 0, -7)}},
		{"date:7d", DateRange{From: testOpt.Now.AddDate(0, 0, -7)}},
		{"date:..2026-01-31", DateRange{To: day(2026, 2, 1)}},
		{"date:2w..yesterday", DateRange{From: testOpt.Now.AddDate(0, 0, -14), To: day(2026, 3, 15)}},
		{"date:2026-03-01T12:00..now", DateRange{From: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), To: testOpt.Now}},
		{"size:>1M", SizeRange{Min: 1<<20 + 1, Max: -1}},
		{"size:>=10k", SizeRange{Min: 10 << 10, Max: -1}},
		{"size:<2k", SizeRange{Min: 0, Max: 2<<10 - 1}},
		{"size:<=100", SizeRange{Min: 0, Max: 100}},
		{"size:1k..2k", SizeRange{Min: 1 << 10, Max: 2 << 10}},
		{"size:500", SizeRange{Min: 500, Max: 500}},
		{"source:milter outcome:accepted", And{Kids: []Node{Term{Field: FieldSource, Value: "milter"}, Term{Field: FieldOutcome, Value: "accepted", Pos: 14}}}},
		{"attachment:report.pdf", Term{Field: FieldAttachment, Value: "report.pdf"}},
		{"Jörg", Term{Value: "Jörg"}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.q, testOpt)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.q, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q)\n got %#v\nwant %#v", tt.q, got, tt.want)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	tests := []struct {
		q       string
		pos     int // 0-based
		message string
	}{
		{"", 0, "empty query"},
		{"   ", 0, "empty query"},
		{"(a OR b", 0, "( is never closed"},
		{"a OR b)", 6, "unbalanced )"},
		{")", 0, "unbalanced )"},
		{"a AND", 2, "AND needs a term after it"},
		{"OR a", 0, "OR needs a term before it"},
		{"a OR", 2, "OR needs a term after it"},
		{"NOT", 0, "NOT needs a term after it"},
		{"()", 1, "empty parentheses"},
		{`subject:"unterminated`, 8, "unterminated quote"},
		{`a "b`, 2, "unterminated quote"},
		{"frm:alice", 0, `unknown field "frm:"`},
		{"from:", 5, "from: needs a value"},
		{"x:", 0, `unknown field "x:"`},
		{"date:2026-13-01", 5, `date: cannot read "2026-13-01"`},
		{"date:2026-01-01..junk", 17, `date: cannot read "junk"`},
		{"date:..", 5, "needs at least one bound"},
		{"date:2026-03-01..2026-01-01", 5, "range ends before it starts"},
		{"size:>lots", 6, `size: cannot read "lots"`},
		{"size:<0", 5, "nothing is smaller than 0"},
		{"has:wings", 4, `has: knows only "attachment"`},
		{"a*b", 0, "* only at the end"},
		{"subject:---", 8, "no word to search for"},
		{"a (b OR) c", 5, "OR needs a term after it"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.q, testOpt)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("Parse(%q) = %v, want a SyntaxError", tt.q, err)
			continue
		}
		if se.Pos != tt.pos || !strings.Contains(se.Msg, tt.message) {
			t.Errorf("Parse(%q): error at %d %q, want at %d %q", tt.q, se.Pos, se.Msg, tt.pos, tt.message)
		}
	}
}

func TestCaret(t *testing.T) {
	_, err := Parse(`from:jörg AND (x`, testOpt)
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatal(err)
	}
	want := "from:jörg AND (x\n              ^"
	if se.Caret() != want {
		t.Errorf("Caret:\n%s\nwant\n%s", se.Caret(), want)
	}
	if got := se.Error(); got != "query: ( is never closed at position 15" {
		t.Errorf("Error() = %q", got)
	}
}

// TestStringRoundTrip: String writes a query that parses to the same tree.
func TestStringRoundTrip(t *testing.T) {
	for _, q := range []string{
		`from:a@b.c AND (subject:"x y" OR NOT body:z*) date:2026-01..2026-02 size:>1k has:attachment`,
		`"a ""b"" c" msgid:<x@y> queueid:ABC tag:inbox *`,
		`"http://x" OR attachment:"AND"`,
	} {
		n, err := Parse(q, testOpt)
		if err != nil {
			t.Fatalf("Parse(%q): %v", q, err)
		}
		n2, err := Parse(n.String(), testOpt)
		if err != nil {
			t.Fatalf("Parse(String(%q) = %q): %v", q, n.String(), err)
		}
		if n.String() != n2.String() {
			t.Errorf("round trip of %q: %q then %q", q, n.String(), n2.String())
		}
	}
}
