// Package policy is the retention policy: how long each archived item is
// kept. The filer takes each object's retain-until from it; package
// retention disposes of items past it. It depends on nothing but archive,
// so both can use it.
//
// The policy file, one statement a line, '#' starts a comment:
//
//	default 7y                          # when no rule matches (7y if absent)
//	keep 10y source=wrapper             # hook point: proxy, milter, wrapper
//	keep 1y tag=spam                    # one of the wrapper's tags
//	keep 3y sender-domain=example.com   # mail_from's domain
//	keep 30y recipient-domain=*.legal.example.com  # any recipient's; *. matches subdomains
//	keep 2y6mo source=proxy sender-domain=example.org  # conditions AND-ed
//
// Periods are sums of Ny, Nmo (months), Nw, Nd, Nh, Nmin, Ns. An item's period
// is counted from its ID's stamp. When several rules match, the longest
// period wins: keeping too long is a cost, disposing too early can be an
// offence. When none matches, the default applies.
package policy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// DefaultFile is where the filer and mailarchive look for the policy.
const DefaultFile = "/etc/mailarchive/retention.conf"

// DefaultPeriod applies when the policy file does not set one.
var DefaultPeriod = Period{Years: 7}

// Period is a calendar period: years, months and days are added with
// time.AddDate (so a year is a calendar year, leap days included), the rest
// as a duration.
type Period struct {
	Years, Months, Days int
	Dur                 time.Duration
}

// After is the end of the period started at t.
func (p Period) After(t time.Time) time.Time {
	return t.AddDate(p.Years, p.Months, p.Days).Add(p.Dur)
}

func (p Period) String() string {
	var b strings.Builder
	for _, u := range []struct {
		n    int64
		unit string
	}{{int64(p.Years), "y"}, {int64(p.Months), "mo"}, {int64(p.Days), "d"}} {
		if u.n != 0 {
			fmt.Fprintf(&b, "%d%s", u.n, u.unit)
		}
	}
	d := p.Dur
	for _, u := range []struct {
		d    time.Duration
		unit string
	}{{time.Hour, "h"}, {time.Minute, "min"}, {time.Second, "s"}} {
		if n := d / u.d; n != 0 {
			fmt.Fprintf(&b, "%d%s", n, u.unit)
			d -= n * u.d
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}

// ParsePeriod parses "7y", "1y6mo", "90d", "36h", "10s".
func ParsePeriod(s string) (Period, error) {
	var p Period
	if s == "" {
		return p, errors.New("empty period")
	}
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i > 6 {
			return p, fmt.Errorf("period %q: want a number of at most 6 digits before each unit (y, mo, w, d, h, min, s)", s)
		}
		n, _ := strconv.Atoi(rest[:i])
		rest = rest[i:]
		j := 0
		for j < len(rest) && rest[j] >= 'a' && rest[j] <= 'z' {
			j++
		}
		unit := rest[:j]
		rest = rest[j:]
		switch unit {
		case "y":
			p.Years += n
		case "mo":
			p.Months += n
		case "w":
			p.Days += 7 * n
		case "d":
			p.Days += n
		case "h":
			p.Dur += time.Duration(n) * time.Hour
		case "min":
			p.Dur += time.Duration(n) * time.Minute
		case "s":
			p.Dur += time.Duration(n) * time.Second
		default:
			return p, fmt.Errorf("period %q: unknown unit %q (want y, mo, w, d, h, min or s)", s, unit)
		}
	}
	if p.Years > 1000 || p.Months > 12000 || p.Days > 365000 {
		return p, fmt.Errorf("period %q: more than 1000 years", s)
	}
	return p, nil
}

// Rule is one keep statement.
type Rule struct {
	Line  int    // in the policy file
	Text  string // the statement as written, for reports
	Keep  Period
	Conds []Cond // all must hold
}

// Cond is one KEY=VALUE condition of a rule.
type Cond struct {
	Key   string // source, tag, sender-domain, recipient-domain
	Value string // lower-cased for domains
}

var condKeys = map[string]bool{"source": true, "tag": true, "sender-domain": true, "recipient-domain": true}

// Policy is a parsed policy file.
type Policy struct {
	Name    string // the file, for reports
	Default Period
	Rules   []Rule
}

// Default is the policy without a file: everything kept DefaultPeriod.
func Default() *Policy { return &Policy{Name: "(built-in default)", Default: DefaultPeriod} }

// Parse reads a policy file; name is for error messages.
func Parse(r io.Reader, name string) (*Policy, error) {
	p := &Policy{Name: name, Default: DefaultPeriod}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	haveDefault := false
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s", name, n, fmt.Sprintf(format, args...))
		}
		switch f[0] {
		case "default":
			if len(f) != 2 {
				return nil, fail("want \"default PERIOD\"")
			}
			if haveDefault {
				return nil, fail("a second default")
			}
			per, err := ParsePeriod(f[1])
			if err != nil {
				return nil, fail("%v", err)
			}
			p.Default, haveDefault = per, true
		case "keep":
			if len(f) < 3 {
				return nil, fail("want \"keep PERIOD KEY=VALUE...\" (a rule with no condition is the default)")
			}
			per, err := ParsePeriod(f[1])
			if err != nil {
				return nil, fail("%v", err)
			}
			r := Rule{Line: n, Text: strings.Join(f, " "), Keep: per}
			for _, c := range f[2:] {
				k, v, ok := strings.Cut(c, "=")
				if !ok || v == "" || !condKeys[k] {
					return nil, fail("condition %q: want source=, tag=, sender-domain= or recipient-domain= with a value", c)
				}
				if k == "source" && v != archive.SourceProxy && v != archive.SourceMilter && v != archive.SourceWrapper {
					return nil, fail("source %q: want proxy, milter or wrapper", v)
				}
				if strings.HasSuffix(k, "-domain") {
					v = strings.ToLower(v)
					if strings.Contains(strings.TrimPrefix(v, "*."), "*") || strings.Contains(v, "@") {
						return nil, fail("domain %q: want a domain, or *.DOMAIN for its subdomains", v)
					}
				}
				r.Conds = append(r.Conds, Cond{Key: k, Value: v})
			}
			p.Rules = append(p.Rules, r)
		default:
			return nil, fail("unknown statement %q (want default or keep)", f[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// Load reads the policy file at path. The default path may be missing (the
// built-in default then applies); a path given explicitly must exist.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && path == DefaultFile {
			return Default(), nil
		}
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	p, err := Parse(f, path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return p, nil
}

// Longest is the longest period the policy gives any item.
func (p *Policy) Longest() Period {
	t0 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	l := p.Default
	for _, r := range p.Rules {
		if r.Keep.After(t0).After(l.After(t0)) {
			l = r.Keep
		}
	}
	return l
}

// Decision is how long one item is kept and why.
type Decision struct {
	Until time.Time // the item may be disposed of from this time on
	Rule  string    // "default 7y" or "line 3: keep 10y source=wrapper"
}

// Decide computes an item's retention from its envelope and its ID's stamp.
func (p *Policy) Decide(env *archive.Envelope, stamp time.Time) Decision {
	d := Decision{Until: p.Default.After(stamp), Rule: "default " + p.Default.String()}
	matched := false
	for _, r := range p.Rules {
		if !r.matches(env) {
			continue
		}
		until := r.Keep.After(stamp)
		if !matched || until.After(d.Until) {
			d = Decision{Until: until, Rule: fmt.Sprintf("line %d: %s", r.Line, r.Text)}
			matched = true
		}
	}
	return d
}

func (r Rule) matches(env *archive.Envelope) bool {
	for _, c := range r.Conds {
		if !c.matches(env) {
			return false
		}
	}
	return true
}

func (c Cond) matches(env *archive.Envelope) bool {
	switch c.Key {
	case "source":
		return env.Source == c.Value
	case "tag":
		for _, t := range env.Tags {
			if t == c.Value {
				return true
			}
		}
	case "sender-domain":
		return env.MailFrom != nil && domainMatches(env.MailFrom.Addr, c.Value)
	case "recipient-domain":
		for _, r := range env.RcptTo {
			if domainMatches(r.Addr, c.Value) {
				return true
			}
		}
	}
	return false
}

// domainMatches compares the domain of addr with a rule's domain: equal
// (ASCII case-insensitively), or for "*.D" any subdomain of D.
func domainMatches(addr, want string) bool {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return false
	}
	dom := strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
	if sub, ok := strings.CutPrefix(want, "*."); ok {
		return strings.HasSuffix(dom, "."+sub)
	}
	return dom == want
}
