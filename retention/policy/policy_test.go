package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

func TestParsePeriod(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Period
		err  string
	}{
		{"7y", Period{Years: 7}, ""},
		{"1y6mo", Period{Years: 1, Months: 6}, ""},
		{"2w3d", Period{Days: 17}, ""},
		{"36h", Period{Dur: 36 * time.Hour}, ""},
		{"1h30min10s", Period{Dur: time.Hour + 30*time.Minute + 10*time.Second}, ""},
		{"", Period{}, "empty"},
		{"y", Period{}, "number"},
		{"7", Period{}, "unknown unit"},
		{"7years", Period{}, "unknown unit"},
		{"-1y", Period{}, "number"},
		{"1234567y", Period{}, "6 digits"},
		{"2000y", Period{}, "1000 years"},
	} {
		got, err := ParsePeriod(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
		if again, err := ParsePeriod(got.String()); err != nil || again.After(t0) != got.After(t0) {
			t.Errorf("%q: String %q does not parse back: %+v %v", tc.in, got.String(), again, err)
		}
	}
}

var t0 = time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)

const sample = `# sample
default 5y
keep 10y source=wrapper
keep 1y tag=spam   # short
keep 3y sender-domain=Example.COM
keep 30y recipient-domain=*.legal.example.org
keep 2y source=proxy sender-domain=example.net
`

func TestDecide(t *testing.T) {
	p, err := Parse(strings.NewReader(sample), "sample")
	if err != nil {
		t.Fatal(err)
	}
	env := func(src, from string, tags []string, rcpts ...string) *archive.Envelope {
		e := &archive.Envelope{Source: src, Tags: tags, MailFrom: &archive.MailFrom{Addr: from}}
		for _, r := range rcpts {
			e.RcptTo = append(e.RcptTo, archive.Rcpt{Addr: r})
		}
		return e
	}
	for _, tc := range []struct {
		name string
		env  *archive.Envelope
		yrs  int
		rule string
	}{
		{"default", env("milter", "a@other.org", nil, "b@x.org"), 5, "default 5y"},
		{"source", env("wrapper", "", nil), 10, "line 3"},
		{"tag", env("milter", "", []string{"x", "spam"}), 1, "line 4"},
		{"sender domain, case", env("proxy", "joe@EXAMPLE.com", nil), 3, "line 5"},
		{"sender subdomain is not the domain", env("proxy", "joe@mail.example.com", nil), 5, "default"},
		{"recipient subdomain", env("proxy", "", nil, "x@a.b", "y@ny.legal.example.org"), 30, "line 6"},
		{"wildcard is not the domain itself", env("proxy", "", nil, "y@legal.example.org"), 5, "default"},
		{"AND", env("proxy", "x@example.net", nil), 2, "line 7"},
		{"AND half", env("milter", "x@example.net", nil), 5, "default"},
		{"longest wins", env("wrapper", "x@example.com", []string{"spam"}), 10, "line 3"},
		{"no mail_from", &archive.Envelope{}, 5, "default"},
	} {
		d := p.Decide(tc.env, t0)
		if want := t0.AddDate(tc.yrs, 0, 0); !d.Until.Equal(want) || !strings.HasPrefix(d.Rule, tc.rule) {
			t.Errorf("%s: %v %q, want %v %q", tc.name, d.Until, d.Rule, want, tc.rule)
		}
	}
	if d := Default().Decide(&archive.Envelope{}, t0); !d.Until.Equal(time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("built-in default: %v", d.Until)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"default", "default PERIOD"},
		{"default 1y\ndefault 2y", ":2: a second default"},
		{"keep 1y", "no condition"},
		{"keep 1y source=smtp", "proxy, milter or wrapper"},
		{"keep 1y color=red", "condition"},
		{"keep 1y tag=", "condition"},
		{"keep 1y sender-domain=a@b", "domain"},
		{"keep 1y sender-domain=*.*.b", "domain"},
		{"keep forever tag=x", "period"},
		{"expire 1y", "unknown statement"},
		{strings.Repeat("x", 70000), "too long"},
	} {
		_, err := Parse(strings.NewReader(tc.in), "p")
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
		}
	}
}

func TestLoad(t *testing.T) {
	if p, err := Load(DefaultFile); err != nil && !strings.Contains(err.Error(), "permission") {
		t.Errorf("default path: %v", err)
	} else if err == nil && p == nil {
		t.Error("nil policy")
	}
	if _, err := Load(t.TempDir() + "/missing.conf"); err == nil {
		t.Error("a missing explicit file loaded")
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample)
	f.Add("default 1y6mo2w3d4h5min6s\n")
	f.Add("keep 1y recipient-domain=*.a")
	f.Fuzz(func(t *testing.T, in string) {
		p, err := Parse(strings.NewReader(in), "fuzz")
		if err != nil {
			return
		}
		// Every rule and the default re-parse to the same dates.
		var b strings.Builder
		b.WriteString("default " + p.Default.String() + "\n")
		for _, r := range p.Rules {
			b.WriteString(r.Text + "\n")
		}
		q, err := Parse(strings.NewReader(b.String()), "again")
		if err != nil {
			t.Fatalf("%q re-parsed from %q: %v", b.String(), in, err)
		}
		if len(q.Rules) != len(p.Rules) || !q.Default.After(t0).Equal(p.Default.After(t0)) {
			t.Fatalf("%q: not the same policy again", in)
		}
		env := &archive.Envelope{Source: "wrapper", Tags: []string{"a"}, MailFrom: &archive.MailFrom{Addr: "x@a"}}
		if a, b := p.Decide(env, t0), q.Decide(env, t0); !a.Until.Equal(b.Until) {
			t.Fatalf("%q: decisions differ %v %v", in, a, b)
		}
	})
}
