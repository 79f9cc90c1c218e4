// Package query parses mailarchive's search language, in the style of
// notmuch's (which shell mail users know): field:value terms, free words,
// "quoted phrases", word* prefixes, AND / OR / NOT (any case) and
// parentheses; adjacent terms are ANDed. It only builds a tree: the catalog
// decides how each node is matched, so other tools can walk the same tree.
//
// Precedence, loosest first: OR, AND (explicit or implicit), NOT.
package query

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Node is a parsed query.
type Node interface {
	// String writes the node back as a query that parses to the same tree.
	String() string
}

// And matches what all of Kids match.
type And struct{ Kids []Node }

// Or matches what any of Kids matches.
type Or struct{ Kids []Node }

// Not matches what X does not.
type Not struct{ X Node }

// All matches every item: the query "*".
type All struct{}

// Text fields: matched word by word against the decoded text.
const (
	FieldAny        = ""           // free words: every header and the decoded bodies
	FieldFrom       = "from"       // envelope sender and From:
	FieldRcpt       = "rcpt"       // envelope recipients only (finds Bcc)
	FieldTo         = "to"         // To: and envelope recipients
	FieldCc         = "cc"         // Cc: and envelope recipients
	FieldSubject    = "subject"    // Subject:
	FieldBody       = "body"       // decoded text parts
	FieldAttachment = "attachment" // attachment file names
)

// Exact fields: matched as a whole value, case-insensitively.
const (
	FieldMsgID   = "msgid"   // Message-ID, with or without <>
	FieldQueueID = "queueid" // any Postfix queue ID the item carries
	FieldSource  = "source"  // proxy, milter, wrapper
	FieldOutcome = "outcome" // accepted, rejected, tempfailed, unknown
	FieldTag     = "tag"     // a wrapper tag
)

// textFields and exactFields name every field a Term may have; aliases
// map notmuch's spellings to ours.
var (
	textFields  = map[string]bool{FieldFrom: true, FieldRcpt: true, FieldTo: true, FieldCc: true, FieldSubject: true, FieldBody: true, FieldAttachment: true}
	exactFields = map[string]bool{FieldMsgID: true, FieldQueueID: true, FieldSource: true, FieldOutcome: true, FieldTag: true}
	aliases     = map[string]string{"id": FieldMsgID, "mid": FieldMsgID, "bcc": FieldRcpt}
)

// Term is a word, phrase or prefix in a field, or an exact field value.
type Term struct {
	Field  string // one of the Field constants
	Value  string // as typed, quotes removed
	Phrase bool   // typed in quotes: the words in this order
	Prefix bool   // typed as word*: any word starting with Value
	Pos    int    // byte offset of the term in the query
}

// IsExact reports whether the term's field is matched as a whole value.
func (t Term) IsExact() bool { return exactFields[t.Field] }

// DateRange matches items whose archive stamp is in [From, To). A zero
// bound is open.
type DateRange struct {
	From, To time.Time
}

// SizeRange matches items whose message size in bytes is in [Min, Max].
// Max < 0 is open.
type SizeRange struct {
	Min, Max int64
}

// HasAttachment matches items with at least one attachment.
type HasAttachment struct{}

// SyntaxError is a query that does not parse; Pos is the byte offset the
// problem was found at.
type SyntaxError struct {
	Query string
	Pos   int
	Msg   string
}

func (e *SyntaxError) Error() string {
	// Characters, not bytes, counted from 1: what a user counts.
	pos := min(max(e.Pos, 0), len(e.Query))
	return fmt.Sprintf("query: %s at position %d", e.Msg, utf8.RuneCountInString(e.Query[:pos])+1)
}

// Caret shows the query with a caret under the position, for terminals.
func (e *SyntaxError) Caret() string {
	pos := min(max(e.Pos, 0), len(e.Query))
	// Count runes, so the caret lines up under non-ASCII text.
	return e.Query + "\n" + strings.Repeat(" ", utf8.RuneCountInString(e.Query[:pos])) + "^"
}

// Options fix what relative dates mean; the zero value is now, local time.
type Options struct {
	Now      time.Time
	Location *time.Location
}

// Parse parses a query. Args joined by spaces are a query too: Parse
// (strings.Join(os.Args, " ")) is how the commands take theirs.
func Parse(q string, opt Options) (Node, error) {
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	if opt.Location == nil {
		opt.Location = time.Local
	}
	toks, err := lex(q)
	if err != nil {
		return nil, err
	}
	p := &parser{q: q, toks: toks, opt: opt}
	if len(toks) == 0 {
		return nil, &SyntaxError{Query: q, Pos: 0, Msg: "empty query (use * to match everything)"}
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		t := p.toks[p.i]
		if t.kind == tokClose {
			return nil, p.errAt(t.pos, "unbalanced )")
		}
		return nil, p.errAt(t.pos, "unexpected "+t.text)
	}
	return n, nil
}

func (n And) String() string         { return join(n.Kids, " AND ") }
func (n Or) String() string          { return join(n.Kids, " OR ") }
func (n Not) String() string         { return "NOT " + paren(n.X) }
func (n All) String() string         { return "*" }
func (HasAttachment) String() string { return "has:attachment" }

func (t Term) String() string {
	v := t.Value
	// A prefix was a bare word, so it lexes back the same unquoted.
	if !t.Prefix && (t.Phrase || needsQuote(v)) {
		v = `"` + strings.ReplaceAll(v, `"`, `""`) + `"`
	}
	if t.Prefix {
		v += "*"
	}
	if t.Field == "" {
		return v
	}
	return t.Field + ":" + v
}

func (d DateRange) String() string {
	f := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return "@" + fmt.Sprint(t.Unix())
	}
	return "date:" + f(d.From) + ".." + f(d.To)
}

func (s SizeRange) String() string {
	if s.Max < 0 {
		return fmt.Sprintf("size:%d..", s.Min)
	}
	return fmt.Sprintf("size:%d..%d", s.Min, s.Max)
}

func join(ns []Node, sep string) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = paren(n)
	}
	return strings.Join(parts, sep)
}

func paren(n Node) string {
	switch n.(type) {
	case And, Or:
		return "(" + n.String() + ")"
	}
	return n.String()
}

// needsQuote: a value that would lex differently if written bare.
func needsQuote(v string) bool {
	if v == "" || isOperator(v) || v == "*" {
		return true
	}
	return strings.ContainsAny(v, " \t\r\n()\":") || strings.HasSuffix(v, "*")
}
