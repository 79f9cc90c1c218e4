package query

import (
	"sort"
	"strings"
	"unicode/utf8"
)

type tokKind int

const (
	tokOpen tokKind = iota
	tokClose
	tokWord // a bare word, or field:value
	tokAnd
	tokOr
	tokNot
)

type token struct {
	kind   tokKind
	text   string // as typed, for messages
	pos    int
	field  string // tokWord: the field before ':', "" for a free word
	value  string // tokWord: quotes removed
	vpos   int    // offset of the value
	quoted bool
}

func isOperator(s string) bool {
	switch strings.ToUpper(s) {
	case "AND", "OR", "NOT":
		return true
	}
	return false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// lex splits q into tokens. A quote opens a phrase anywhere a word may
// start and right after "field:"; "" inside a phrase is a quote.
func lex(q string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(q) {
		c := q[i]
		switch {
		case isSpace(c):
			i++
		case c == '(':
			toks = append(toks, token{kind: tokOpen, text: "(", pos: i})
			i++
		case c == ')':
			toks = append(toks, token{kind: tokClose, text: ")", pos: i})
			i++
		case c == '"':
			v, end, err := quoted(q, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokWord, text: q[i:end], pos: i, value: v, vpos: i, quoted: true})
			i = end
		default:
			start := i
			for i < len(q) && !isSpace(q[i]) && q[i] != '(' && q[i] != ')' && q[i] != '"' {
				i++
			}
			w := q[start:i]
			t := token{kind: tokWord, text: w, pos: start, value: w, vpos: start}
			if f, v, ok := strings.Cut(w, ":"); ok && isFieldName(f) && !strings.HasPrefix(v, "/") {
				t.field, t.value, t.vpos = strings.ToLower(f), v, start+len(f)+1
				if v == "" && i < len(q) && q[i] == '"' {
					v, end, err := quoted(q, i)
					if err != nil {
						return nil, err
					}
					t.value, t.quoted, t.text = v, true, q[start:end]
					i = end
				}
			} else if isOperator(w) {
				t.kind = map[string]tokKind{"AND": tokAnd, "OR": tokOr, "NOT": tokNot}[strings.ToUpper(w)]
			}
			toks = append(toks, t)
		}
	}
	return toks, nil
}

// isFieldName: letters only, the shape of a field (an unknown one is an
// error, not text: a mistyped field would otherwise search for words).
// URLs (http://...) are free text.
func isFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

// quoted reads the phrase starting with the quote at q[i].
func quoted(q string, i int) (string, int, error) {
	var sb strings.Builder
	for j := i + 1; j < len(q); j++ {
		if q[j] != '"' {
			sb.WriteByte(q[j])
			continue
		}
		if j+1 < len(q) && q[j+1] == '"' {
			sb.WriteByte('"')
			j++
			continue
		}
		return sb.String(), j + 1, nil
	}
	return "", 0, &SyntaxError{Query: q, Pos: i, Msg: "unterminated quote"}
}

type parser struct {
	q    string
	toks []token
	i    int
	opt  Options
}

func (p *parser) errAt(pos int, msg string) error {
	return &SyntaxError{Query: p.q, Pos: pos, Msg: msg}
}

func (p *parser) peek() *token {
	if p.i < len(p.toks) {
		return &p.toks[p.i]
	}
	return nil
}

// missingOperand: what follows an operator cannot start a term.
func (p *parser) missingOperand() bool {
	t := p.peek()
	return t == nil || t.kind == tokClose || t.kind == tokAnd || t.kind == tokOr
}

func (p *parser) or() (Node, error) {
	var kids []Node
	for {
		n, err := p.and()
		if err != nil {
			return nil, err
		}
		kids = append(kids, n)
		t := p.peek()
		if t == nil || t.kind != tokOr {
			break
		}
		p.i++
		if p.missingOperand() {
			return nil, p.errAt(t.pos, "OR needs a term after it")
		}
	}
	if len(kids) == 1 {
		return kids[0], nil
	}
	return Or{Kids: kids}, nil
}

func (p *parser) and() (Node, error) {
	var kids []Node
	for {
		n, err := p.unary()
		if err != nil {
			return nil, err
		}
		kids = append(kids, n)
		t := p.peek()
		if t == nil || t.kind == tokOr || t.kind == tokClose {
			break
		}
		if t.kind == tokAnd {
			p.i++
			if p.missingOperand() {
				return nil, p.errAt(t.pos, "AND needs a term after it")
			}
		}
	}
	if len(kids) == 1 {
		return kids[0], nil
	}
	return And{Kids: kids}, nil
}

func (p *parser) unary() (Node, error) {
	t := p.peek()
	if t == nil {
		return nil, p.errAt(len(p.q), "a term is missing at the end")
	}
	switch t.kind {
	case tokNot:
		p.i++
		if p.missingOperand() {
			return nil, p.errAt(t.pos, "NOT needs a term after it")
		}
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		return Not{X: x}, nil
	case tokOpen:
		p.i++
		if c := p.peek(); c != nil && c.kind == tokClose {
			return nil, p.errAt(c.pos, "empty parentheses")
		}
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		c := p.peek()
		if c == nil || c.kind != tokClose {
			return nil, p.errAt(t.pos, "( is never closed")
		}
		p.i++
		return n, nil
	case tokClose:
		return nil, p.errAt(t.pos, "unbalanced )")
	case tokAnd, tokOr:
		return nil, p.errAt(t.pos, t.text+" needs a term before it")
	}
	p.i++
	return p.term(t)
}

// fieldNames lists the fields for the unknown-field message.
func fieldNames() string {
	var names []string
	for f := range textFields {
		names = append(names, f)
	}
	for f := range exactFields {
		names = append(names, f)
	}
	names = append(names, "date", "size", "has")
	sort.Strings(names)
	return strings.Join(names, " ")
}

func (p *parser) term(t *token) (Node, error) {
	field := t.field
	if a, ok := aliases[field]; ok {
		field = a
	}
	if !utf8.ValidString(t.value) {
		return nil, p.errAt(t.vpos, "the query is not valid UTF-8")
	}
	known := field == "date" || field == "size" || field == "has" || field == FieldAny || textFields[field] || exactFields[field]
	if !known {
		return nil, p.errAt(t.pos, "unknown field "+strconvQuote(t.field+":")+" (fields: "+fieldNames()+")")
	}
	if t.field != "" && t.value == "" {
		return nil, p.errAt(t.vpos, field+": needs a value")
	}
	switch {
	case field == "date":
		return parseDate(p, t)
	case field == "size":
		return parseSize(p, t)
	case field == "has":
		if strings.EqualFold(t.value, "attachment") {
			return HasAttachment{}, nil
		}
		return nil, p.errAt(t.vpos, `has: knows only "attachment"`)
	case field == FieldAny && !t.quoted && t.value == "*":
		return All{}, nil
	case field == FieldAny || textFields[field]:
		term := Term{Field: field, Value: t.value, Phrase: t.quoted, Pos: t.pos}
		if !t.quoted && len(t.value) > 1 && strings.HasSuffix(t.value, "*") {
			term.Value, term.Prefix = strings.TrimSuffix(t.value, "*"), true
			if strings.Contains(term.Value, "*") {
				return nil, p.errAt(t.vpos, "* only at the end of a word")
			}
		} else if !t.quoted && strings.Contains(t.value, "*") {
			return nil, p.errAt(t.vpos, "* only at the end of a word")
		}
		if !hasWordChar(term.Value) {
			return nil, p.errAt(t.vpos, "no word to search for in "+strconvQuote(t.value))
		}
		return term, nil
	case exactFields[field]:
		v := t.value
		if field == FieldMsgID {
			v = strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
		}
		return Term{Field: field, Value: v, Pos: t.pos}, nil
	}
	return nil, p.errAt(t.pos, "unknown field "+strconvQuote(t.field+":")+" (fields: "+fieldNames()+")")
}

func strconvQuote(s string) string { return `"` + s + `"` }

// hasWordChar: a letter or digit the full-text index can match.
func hasWordChar(s string) bool {
	for _, r := range s {
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r > 0x7f {
			return true
		}
	}
	return false
}
