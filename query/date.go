package query

import (
	"strconv"
	"strings"
	"time"
)

// parseDate reads date:A..B, date:A.., date:..B or date:A. Each bound is
// a period (2026, 2026-03, 2026-03-31, 2026-03-31T12:00, today,
// yesterday) or a moment (now, 7d, 12h, 2w, 3m, 1y ago, or @UNIX); A..B
// runs from the start of A to the end of B, and A alone is its period.
func parseDate(p *parser, t *token) (Node, error) {
	v := t.value
	if a, b, ok := strings.Cut(v, ".."); ok {
		var r DateRange
		if a != "" {
			s, _, err := p.period(a, t.vpos)
			if err != nil {
				return nil, err
			}
			r.From = s
		}
		if b != "" {
			_, e, err := p.period(b, t.vpos+len(a)+2)
			if err != nil {
				return nil, err
			}
			r.To = e
		}
		if a == "" && b == "" {
			return nil, p.errAt(t.vpos, "date: needs at least one bound around ..")
		}
		if !r.From.IsZero() && !r.To.IsZero() && !r.From.Before(r.To) {
			return nil, p.errAt(t.vpos, "date: range ends before it starts")
		}
		return r, nil
	}
	s, e, err := p.period(v, t.vpos)
	if err != nil {
		return nil, err
	}
	if !s.Before(e) {
		// A moment alone (date:7d): from then on.
		return DateRange{From: s}, nil
	}
	return DateRange{From: s, To: e}, nil
}

// period returns [start, end) of one date bound; a moment has start == end.
func (p *parser) period(s string, pos int) (time.Time, time.Time, error) {
	now, loc := p.opt.Now.In(p.opt.Location), p.opt.Location
	day := func(t time.Time) time.Time { return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc) }
	switch strings.ToLower(s) {
	case "today":
		d := day(now)
		return d, d.AddDate(0, 0, 1), nil
	case "yesterday":
		d := day(now).AddDate(0, 0, -1)
		return d, d.AddDate(0, 0, 1), nil
	case "now":
		return now, now, nil
	}
	if strings.HasPrefix(s, "@") {
		n, err := strconv.ParseInt(s[1:], 10, 64)
		if err != nil {
			return time.Time{}, time.Time{}, p.errAt(pos, "date: @ needs seconds since 1970")
		}
		t := time.Unix(n, 0).In(loc)
		return t, t, nil
	}
	if n := len(s); n >= 2 && s[0] >= '0' && s[0] <= '9' && strings.Contains("hdwmy", s[n-1:]) {
		if k, err := strconv.Atoi(s[:n-1]); err == nil && k < 100000 {
			var t time.Time
			switch s[n-1] {
			case 'h':
				t = now.Add(-time.Duration(k) * time.Hour)
			case 'd':
				t = now.AddDate(0, 0, -k)
			case 'w':
				t = now.AddDate(0, 0, -7*k)
			case 'm':
				t = now.AddDate(0, -k, 0)
			case 'y':
				t = now.AddDate(-k, 0, 0)
			}
			return t, t, nil
		}
	}
	layouts := []struct {
		layout string
		next   func(time.Time) time.Time
	}{
		{"2006", func(t time.Time) time.Time { return t.AddDate(1, 0, 0) }},
		{"2006-01", func(t time.Time) time.Time { return t.AddDate(0, 1, 0) }},
		{"2006-01-02", func(t time.Time) time.Time { return t.AddDate(0, 0, 1) }},
		{"2006-01-02T15:04", func(t time.Time) time.Time { return t.Add(time.Minute) }},
		{"2006-01-02T15:04:05", func(t time.Time) time.Time { return t.Add(time.Second) }},
	}
	for _, l := range layouts {
		if len(s) != len(l.layout) {
			continue
		}
		if t, err := time.ParseInLocation(l.layout, s, loc); err == nil {
			return t, l.next(t), nil
		}
	}
	return time.Time{}, time.Time{}, p.errAt(pos, "date: cannot read "+strconvQuote(s)+
		" (use YYYY, YYYY-MM, YYYY-MM-DD, YYYY-MM-DDTHH:MM, today, yesterday, now, or 7d, 12h, 2w, 3m, 1y)")
}

// parseSize reads size:>1M, size:>=10k, size:<2M, size:<=N, size:N and
// size:A..B (k, M, G are powers of 1024; bounds included).
func parseSize(p *parser, t *token) (Node, error) {
	v, pos := t.value, t.vpos
	num := func(s string, at int) (int64, error) {
		mult := int64(1)
		if n := len(s); n > 0 {
			switch s[n-1] {
			case 'k', 'K':
				mult, s = 1<<10, s[:n-1]
			case 'm', 'M':
				mult, s = 1<<20, s[:n-1]
			case 'g', 'G':
				mult, s = 1<<30, s[:n-1]
			}
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > (1<<62)/mult {
			return 0, p.errAt(at, "size: cannot read "+strconvQuote(s)+" (use e.g. >1M, <=10k, 100..2000)")
		}
		return n * mult, nil
	}
	for _, op := range []string{">=", "<=", ">", "<"} {
		if !strings.HasPrefix(v, op) {
			continue
		}
		n, err := num(v[len(op):], pos+len(op))
		if err != nil {
			return nil, err
		}
		switch op {
		case ">=":
			return SizeRange{Min: n, Max: -1}, nil
		case ">":
			return SizeRange{Min: n + 1, Max: -1}, nil
		case "<=":
			return SizeRange{Min: 0, Max: n}, nil
		default:
			if n == 0 {
				return nil, p.errAt(pos, "size: nothing is smaller than 0")
			}
			return SizeRange{Min: 0, Max: n - 1}, nil
		}
	}
	if a, b, ok := strings.Cut(v, ".."); ok {
		r := SizeRange{Max: -1}
		var err error
		if a != "" {
			if r.Min, err = num(a, pos); err != nil {
				return nil, err
			}
		}
		if b != "" {
			if r.Max, err = num(b, pos+len(a)+2); err != nil {
				return nil, err
			}
			if r.Max < r.Min {
				return nil, p.errAt(pos, "size: range ends before it starts")
			}
		}
		return r, nil
	}
	n, err := num(v, pos)
	if err != nil {
		return nil, err
	}
	return SizeRange{Min: n, Max: n}, nil
}
