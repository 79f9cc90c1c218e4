package reconcile_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
	"github.com/postfix-archive/mailarchive/reconcile"
)

func TestParseLine(t *testing.T) {
	loc := time.UTC
	cases := []struct {
		line string
		want reconcile.Event
	}{
		{"Nov 24 13:05:01 mx postfix/smtpd[1234]: 4F1C2A0B3D: client=localhost[127.0.0.1]",
			reconcile.Event{Daemon: "smtpd", QueueID: "4F1C2A0B3D", Kind: reconcile.EvReceived}},
		{"Nov  4 13:05:01 mx postfix/cleanup[99]: 4F1C2A0B3D: message-id=<a@b>",
			reconcile.Event{Daemon: "cleanup", QueueID: "4F1C2A0B3D", Kind: reconcile.EvMessageID, MsgID: "<a@b>"}},
		{"2026-11-24T13:05:01.123456+01:00 mx postfix/qmgr[7]: 4F1C2A0B3D: from=<alice@example.org>, size=432, nrcpt=1 (queue active)",
			reconcile.Event{Daemon: "qmgr", QueueID: "4F1C2A0B3D", Kind: reconcile.EvQueued, From: "alice@example.org"}},
		{"Nov 24 13:05:02 mx postfix/scan[8]: 4F1C2A0B3D: to=<bob@example.net>, relay=127.0.0.1[127.0.0.1]:10025, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 5AB12C)",
			reconcile.Event{Daemon: "scan", QueueID: "4F1C2A0B3D", Kind: reconcile.EvSent, To: "bob@example.net", Relay: "127.0.0.1[127.0.0.1]:10025", Queued: "5AB12C"}},
		{"Nov 24 13:05:02 mx postfix-out/smtp[8]: 4dKpQf0wXbz9sWq: to=<b@x>, relay=none, delay=30, status=deferred (connect to 127.0.0.1[127.0.0.1]:10025: Connection refused)",
			reconcile.Event{Daemon: "smtp", QueueID: "4dKpQf0wXbz9sWq", Kind: reconcile.EvDeferred, To: "b@x", Relay: "none"}},
		{"Nov 24 13:05:03 mx postfix/local[9]: 5AB12C: to=<carol@mx>, relay=local, delay=0.2, dsn=2.0.0, status=sent (delivered to command: /usr/local/bin/archiver local carol)",
			reconcile.Event{Daemon: "local", QueueID: "5AB12C", Kind: reconcile.EvSent, To: "carol@mx", Relay: "local"}},
		{"Nov 24 13:05:03 mx postfix/qmgr[7]: 5AB12C: removed",
			reconcile.Event{Daemon: "qmgr", QueueID: "5AB12C", Kind: reconcile.EvRemoved}},
		{"Nov 24 13:05:03 mx postfix/cleanup[7]: 5AB12C: milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 no; from=<a@b> to=<c@d>",
			reconcile.Event{Daemon: "cleanup", QueueID: "5AB12C", Kind: reconcile.EvRejected}},
	}
	for _, c := range cases {
		ev, ok := reconcile.ParseLine(c.line, 2026, loc)
		if !ok {
			t.Errorf("ParseLine(%q) rejected", c.line)
			continue
		}
		if ev.Daemon != c.want.Daemon || ev.QueueID != c.want.QueueID || ev.Kind != c.want.Kind || ev.From != c.want.From ||
			ev.MsgID != c.want.MsgID || ev.To != c.want.To || ev.Relay != c.want.Relay || ev.Queued != c.want.Queued {
			t.Errorf("ParseLine(%q) = %+v, want %+v", c.line, ev, c.want)
		}
		if ev.Time.Year() != 2026 || ev.Time.Minute() != 5 {
			t.Errorf("ParseLine(%q): time %v", c.line, ev.Time)
		}
	}
	for _, bad := range []string{
		"", "garbage",
		"Nov 24 13:05:01 mx postfix/smtpd[1234]: connect from localhost[127.0.0.1]",
		"Nov 24 13:05:01 mx postfix/smtpd[1234]: NOQUEUE: reject: RCPT from x: 554 5.7.1",
		"Nov 24 13:05:01 mx sshd[1]: 4F1C2A0B3D: client=x",
		"Nov 24 13:05:01 mx postfix/qmgr[7]: 4F1C2A0B3D: from=<a@b>, status=expired, returned to sender",
	} {
		if ev, ok := reconcile.ParseLine(bad, 2026, loc); ok {
			t.Errorf("ParseLine(%q) = %+v, want nothing", bad, ev)
		}
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("Nov 24 13:05:01 mx postfix/smtpd[1234]: 4F1C2A0B3D: client=localhost[127.0.0.1]")
	f.Add("2026-11-24T13:05:01.123456+01:00 mx postfix/qmgr[7]: 4F1C2A0B3D: from=<alice@example.org>, size=432, nrcpt=1 (queue active)")
	f.Add("Nov 24 13:05:02 mx postfix/scan[8]: 4F1C2A0B3D: to=<bob@example.net>, relay=127.0.0.1[127.0.0.1]:10025, status=sent (250 2.0.0 Ok: queued as 5AB12C)")
	f.Fuzz(func(t *testing.T, line string) {
		ev, ok := reconcile.ParseLine(line, 2026, time.UTC)
		if !ok {
			return
		}
		if ev.QueueID == "" || ev.Kind == "" || ev.Daemon == "" || !strings.Contains(line, ev.QueueID+": ") {
			t.Fatalf("ParseLine(%q) = %+v", line, ev)
		}
	})
}

// TestReconcileWrapper: the wrapper's item is found by the queue ID in its
// Received: line; a delivery through it with no item is reported.
func TestReconcileWrapper(t *testing.T) {
	root := t.TempDir()
	store, err := archive.Open(root, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := store.Create("local", "carol")
	w.Write([]byte("From alice@example.org  Tue Nov 24 13:05:03 2026\nReturn-Path: <alice@example.org>\nX-Original-To: carol@mx\n" +
		"Received: from client.example (localhost [127.0.0.1])\n\tby mx.example (Postfix) with ESMTP id 5AB12C\n\tfor <carol@mx>; Tue, 24 Nov 2026 13:05:01 +0000 (UTC)\n" +
		"Subject: hi\n\nbody\n"))
	if err := w.Commit(&archive.Envelope{Source: archive.SourceWrapper, Outcome: archive.OutcomeAccepted, MailFrom: &archive.MailFrom{Addr: "alice@example.org"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	stamp := now.Format("Jan _2 15:04:05")
	log := strings.Join([]string{
		stamp + " mx postfix/smtpd[1]: 5AB12C: client=localhost[127.0.0.1]",
		stamp + " mx postfix/qmgr[2]: 5AB12C: from=<alice@example.org>, size=300, nrcpt=1 (queue active)",
		stamp + " mx postfix/local[3]: 5AB12C: to=<carol@mx>, relay=local, delay=0.2, dsn=2.0.0, status=sent (delivered to command: /usr/local/bin/archiver local carol)",
		stamp + " mx postfix/qmgr[2]: 5AB12C: removed",
		stamp + " mx postfix/smtpd[1]: 6CD34E: client=localhost[127.0.0.1]",
		stamp + " mx postfix/qmgr[2]: 6CD34E: from=<dave@example.org>, size=300, nrcpt=1 (queue active)",
		stamp + " mx postfix/local[3]: 6CD34E: to=<carol@mx>, relay=local, delay=0.2, dsn=2.0.0, status=sent (delivered to command: /usr/local/bin/archiver local carol)",
		stamp + " mx postfix/qmgr[2]: 6CD34E: removed",
		stamp + " mx postfix/smtpd[1]: 7EF56A: client=localhost[127.0.0.1]",
		stamp + " mx postfix/qmgr[2]: 7EF56A: from=<erin@example.org>, size=300, nrcpt=1 (queue active)",
	}, "\n") + "\n"
	path := filepath.Join(t.TempDir(), "mail.log")
	os.WriteFile(path, []byte(log), 0o644)
	f, _ := os.Open(path)
	defer f.Close()
	rep, err := reconcile.Run(context.Background(), reconcile.Options{Root: root, Log: f, Now: now.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != 3 || rep.Complete != 2 || len(rep.Missing) != 1 || rep.Missing[0].QueueIDs[0] != "6CD34E" ||
		rep.Missing[0].Missing[0] != "wrapper" || len(rep.Unmatched) != 0 {
		t.Fatalf("report %+v", rep)
	}
}
