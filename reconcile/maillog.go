// Package reconcile is the archive's completeness check: it reads
// Postfix's mail log, groups the items of one message across hook points,
// and lists what Postfix accepted with no item at a hook point in use, and
// items Postfix has no record of.
package reconcile

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// Event is what one Postfix log line says about a queue file.
type Event struct {
	Time    time.Time
	Host    string
	Daemon  string // smtpd, cleanup, qmgr, smtp, local, pipe, ...
	QueueID string
	Kind    string // see the Ev* constants
	From    string // EvQueued
	MsgID   string // EvMessageID
	To      string // deliveries
	Relay   string // deliveries
	Queued  string // EvSent: "queued as X" in the reply, when the next hop said so
	Text    string // the rest of the line
}

// Event kinds.
const (
	EvReceived  = "received"   // smtpd client=, pickup uid=/from=
	EvMessageID = "message-id" // cleanup
	EvQueued    = "queued"     // qmgr from=..., nrcpt=... (queue active)
	EvSent      = "sent"
	EvDeferred  = "deferred"
	EvBounced   = "bounced"
	EvRejected  = "rejected" // cleanup milter-reject / reject
	EvRemoved   = "removed"
)

// The two timestamp forms Postfix's lines come with: traditional syslog
// (and maillog_file in Postfix ≤ 3.x), and RFC 3339 (rsyslog's
// high-precision format, journald exports, maillog_file with
// ISO timestamps).
var lineRe = regexp.MustCompile(`^(?:([A-Z][a-z]{2} [ 0-9]?[0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)|([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)) (\S+) ([^\s\[:]+)(?:\[[0-9]+\])?: (.*)$`)

// Postfix queue IDs: the short form (hex) and the long form
// (enable_long_queue_ids: base 52 digits, 'z' in the middle).
var queueIDRe = regexp.MustCompile(`^([0-9A-F]{5,20}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,20}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{2,12}): (.*)$`)

var (
	queuedAsRe = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)
	fieldRe    = regexp.MustCompile(`(?:^|, )(to|relay|status|from|message-id)=(<[^>]*>|[^, ]*)`)
)

// ParseLine parses one mail log line. ok is false for lines that are not
// Postfix's or say nothing about a queue file.
func ParseLine(line string, year int, loc *time.Location) (ev Event, ok bool) {
	m := lineRe.FindStringSubmatch(line)
	if m == nil {
		return ev, false
	}
	prog := m[4]
	i := strings.LastIndexByte(prog, '/')
	if i < 0 || i == len(prog)-1 || !strings.HasPrefix(prog, "postfix") {
		return ev, false // postfix/smtpd, postfix-out/smtp (multi-instance syslog_name)
	}
	ev.Daemon, ev.Host = prog[i+1:], m[3]
	if m[1] != "" {
		t, err := time.ParseInLocation("Jan _2 15:04:05", strings.Join(strings.Fields(m[1]), " "), loc)
		if err != nil {
			return ev, false
		}
		ev.Time = t.AddDate(year, 0, 0)
	} else {
		var err error
		if ev.Time, err = parseISO(m[2], loc); err != nil {
			return ev, false
		}
	}
	q := queueIDRe.FindStringSubmatch(m[5])
	if q == nil {
		return ev, false
	}
	ev.QueueID, ev.Text = q[1], q[2]
	fields := map[string]string{}
	for _, f := range fieldRe.FindAllStringSubmatch(ev.Text, -1) {
		if _, dup := fields[f[1]]; !dup {
			fields[f[1]] = f[2]
		}
	}
	switch {
	case ev.Daemon == "smtpd" && strings.HasPrefix(ev.Text, "client="),
		ev.Daemon == "pickup" && (strings.HasPrefix(ev.Text, "uid=") || strings.HasPrefix(ev.Text, "sender=")):
		ev.Kind = EvReceived
	case ev.Daemon == "cleanup" && strings.HasPrefix(ev.Text, "message-id="):
		ev.Kind, ev.MsgID = EvMessageID, strings.TrimPrefix(ev.Text, "message-id=")
	case strings.HasPrefix(ev.Text, "milter-reject: ") || ev.Daemon == "cleanup" && strings.HasPrefix(ev.Text, "reject: "):
		ev.Kind = EvRejected
	case ev.Daemon == "qmgr" && ev.Text == "removed":
		ev.Kind = EvRemoved
	case ev.Daemon == "qmgr" && strings.HasPrefix(ev.Text, "from="):
		if !strings.Contains(ev.Text, "(queue active)") {
			return ev, false // expired/returned to sender lines
		}
		ev.Kind, ev.From = EvQueued, strings.Trim(fields["from"], "<>")
	case fields["to"] != "" && fields["status"] != "":
		ev.To, ev.Relay = strings.Trim(fields["to"], "<>"), fields["relay"]
		switch fields["status"] {
		case "sent":
			ev.Kind = EvSent
			if qa := queuedAsRe.FindStringSubmatch(ev.Text); qa != nil {
				ev.Queued = qa[1]
			}
		case "deferred":
			ev.Kind = EvDeferred
		case "bounced", "expired":
			ev.Kind = EvBounced
		default:
			return ev, false
		}
	default:
		return ev, false
	}
	return ev, true
}

func parseISO(s string, loc *time.Location) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999-0700", "2006-01-02T15:04:05.999999999"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad time %q", s)
}

// ReadLog parses a mail log. Traditional syslog lines have no year: it is
// taken from now, and a date more than a day ahead of now is last year's.
// Lines it does not understand are counted, not fatal.
func ReadLog(r io.Reader, now time.Time, fn func(Event)) (lines, used int, err error) {
	loc := now.Location()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		lines++
		ev, ok := ParseLine(sc.Text(), 0, loc)
		if !ok {
			continue
		}
		if ev.Time.Year() == 0 {
			ev.Time = ev.Time.AddDate(now.Year(), 0, 0)
			if ev.Time.After(now.Add(24 * time.Hour)) {
				ev.Time = ev.Time.AddDate(-1, 0, 0)
			}
		}
		used++
		fn(ev)
	}
	return lines, used, sc.Err()
}
