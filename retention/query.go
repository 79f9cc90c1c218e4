package retention

import (
	"fmt"
	"strings"

	"github.com/postfix-archive/mailarchive/archive"
)

// Matcher selects items for a legal hold.
type Matcher interface {
	Match(id string, env *archive.Envelope) bool
}

// CompileQuery compiles a hold's query. The archive's query language
// belongs to the catalog (package query, not merged into this branch yet);
// until it is wired here, holds take this subset of it: terms separated by
// spaces, all of which must match:
//
//	id:ID                 the item with this ID
//	from:ADDR  from:@DOM  the envelope sender, or its domain (@*.DOM: subdomains)
//	to:ADDR    to:@DOM    any recipient, or its domain
//	tag:TAG  source:SRC   a wrapper tag; the hook point
//
// Addresses and domains compare ASCII case-insensitively.
var CompileQuery = compileTerms

type termQuery []term

type term struct{ key, val string }

func compileTerms(q string) (Matcher, error) {
	f := strings.Fields(q)
	if len(f) == 0 {
		return nil, fmt.Errorf("empty query")
	}
	var tq termQuery
	for _, w := range f {
		k, v, ok := strings.Cut(w, ":")
		if !ok || v == "" {
			return nil, fmt.Errorf("term %q: want id:, from:, to:, tag: or source: with a value", w)
		}
		switch k {
		case "id", "tag", "source":
		case "from", "to":
			v = strings.ToLower(v)
		default:
			return nil, fmt.Errorf("term %q: unknown field %q (want id, from, to, tag, source)", w, k)
		}
		tq = append(tq, term{k, v})
	}
	return tq, nil
}

func (q termQuery) Match(id string, env *archive.Envelope) bool {
	for _, t := range q {
		if !t.match(id, env) {
			return false
		}
	}
	return true
}

func (t term) match(id string, env *archive.Envelope) bool {
	switch t.key {
	case "id":
		return id == t.val
	case "source":
		return env.Source == t.val
	case "tag":
		for _, x := range env.Tags {
			if x == t.val {
				return true
			}
		}
	case "from":
		return env.MailFrom != nil && addrMatches(env.MailFrom.Addr, t.val)
	case "to":
		for _, r := range env.RcptTo {
			if addrMatches(r.Addr, t.val) {
				return true
			}
		}
	}
	return false
}

// addrMatches compares an address with ADDR, @DOMAIN or @*.DOMAIN (any
// subdomain), ASCII case-insensitively.
func addrMatches(addr, want string) bool {
	dom, ok := strings.CutPrefix(want, "@")
	if !ok {
		return strings.EqualFold(addr, want)
	}
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return false
	}
	got := strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
	if sub, ok := strings.CutPrefix(dom, "*."); ok {
		return strings.HasSuffix(got, "."+sub)
	}
	return got == dom
}
