package wrapper

import (
	"bytes"
	"strings"
	"testing"
)

// What local(8) hands mailbox_command: the mbox line, its three fields,
// then the message as Postfix queued it, topped by Postfix's Received:.
const localTop = "From alice@example.org  Tue Dec  1 13:05:20 2026\n" +
	"Return-Path: <alice@example.org>\n" +
	"X-Original-To: mar@localhost\n" +
	"Delivered-To: mar@localhost\n"

func TestQueueIDFromHeader(t *testing.T) {
	for _, tc := range []struct {
		name, head, want string
	}{
		{"smtpd", localTop + "Received: from client.example (localhost [127.0.0.1])\n\tby mx.test.example (Postfix) with ESMTP id 4DC0A00004\n\tfor <mar@localhost>; Tue,  1 Dec 2026 13:05:20 +0000 (UTC)\nSubject: x\n\nbody\n", "4DC0A00004"},
		{"smtpd, CRLF", strings.ReplaceAll(localTop+"Received: from c (localhost [127.0.0.1])\n\tby mx (Postfix) with ESMTPS id E0D8098635F\n\tfor <m@l>; date\n\n", "\n", "\r\n"), "E0D8098635F"},
		{"pickup (sendmail)", localTop + "Received: by mx.test.example (Postfix, from userid 0)\n\tid 7296C9841F1; Tue,  1 Dec 2026 13:05:21 +0000 (UTC)\nSubject: x\n\n", "7296C9841F1"},
		{"long queue ID", localTop + "Received: from c (c [192.0.2.1])\n\tby mx (Postfix) with ESMTP id 4gB9xk3Hq5z9sWb\n\tfor <m@l>; date\n\n", "4gB9xk3Hq5z9sWb"},
		{"no From line", "Received: by mx (Postfix, from userid 1000)\n\tid ABC123; date\n\n", "ABC123"},
		{"lower-case name", localTop + "received: by mx (Postfix) id ABC123; date\n\n", "ABC123"},
		// The first Received: only: below it, anything may be forged.
		{"first is not Postfix's", localTop + "Received: from x by y with SMTP id FORGED; date\nReceived: by mx (Postfix) id ABC123; date\n\n", ""},
		{"reinjected (content_filter): the top one", localTop + "Received: from localhost (localhost [127.0.0.1])\n\tby mx (Postfix) with ESMTP id SECOND1\n\tfor <m@l>; date\nReceived: from c (c [192.0.2.1])\n\tby mx (Postfix) with ESMTP id FIRST1\n\tfor <m@l>; date\n\n", "SECOND1"},
		{"no Received", localTop + "Subject: x\n\nReceived: by mx (Postfix) id INBODY; date\n", ""},
		{"Received in the body only", localTop + "\nReceived: by mx (Postfix) id INBODY; date\n", ""},
		{"cut off inside the field", localTop + "Received: from c\n\tby mx (Postfix) with ESMTP id ABC", ""},
		{"empty", "", ""},
		{"From line only", "From a  Tue Dec  1 13:05:20 2026", ""},
	} {
		if got := queueIDFromHeader([]byte(tc.head)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestLocalQueueIDReadsOnlyTheHead: the ID is found through ReadAt (the
// descriptor the delivery command gets stays at its first byte), and a
// message longer than what is read still gives it.
func TestLocalQueueIDReadsOnlyTheHead(t *testing.T) {
	msg := localTop + "Received: by mx (Postfix) id ABC123; date\nSubject: big\n\n" + strings.Repeat("x", 3*queueIDHead)
	r := bytes.NewReader([]byte(msg))
	if got := localQueueID(r); got != "ABC123" {
		t.Errorf("queue ID %q", got)
	}
	if r.Len() != len(msg) {
		t.Errorf("the reader moved: %d bytes left of %d", r.Len(), len(msg))
	}
	if got := localQueueID(bytes.NewReader(nil)); got != "" {
		t.Errorf("empty message: %q", got)
	}
}

// TestEnvelopeQueueID: the envelope carries the queue ID, so a wrapper item
// joins the proxy's and the milter's, and Postfix's log, by queue ID.
func TestEnvelopeQueueID(t *testing.T) {
	msg := localTop + "Received: from c (c [127.0.0.1])\n\tby mx (Postfix) with ESMTP id 4DC0A00004\n\tfor <m@l>; date\n\nbody\n"
	env := envelope([]string{"SENDER=alice@example.org"}, bytes.NewReader([]byte(msg)))
	if env.QueueID != "4DC0A00004" || env.Env["SENDER"] != "alice@example.org" {
		t.Errorf("envelope %+v", env)
	}
	if env := envelope(nil, bytes.NewReader([]byte("Subject: no Received\n\n"))); env.QueueID != "" {
		t.Errorf("queue ID %q without a Received: field", env.QueueID)
	}
}

func FuzzQueueIDFromHeader(f *testing.F) {
	f.Add([]byte(localTop + "Received: by mx (Postfix) id ABC123; date\n\n"))
	f.Add([]byte("Received: from c\r\n\tby mx (Postfix) with ESMTP id X\r\n\r\n"))
	f.Add([]byte("From \n\n"))
	f.Fuzz(func(t *testing.T, head []byte) {
		id := queueIDFromHeader(head)
		for _, c := range []byte(id) {
			if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
				t.Fatalf("queue ID %q has %q", id, c)
			}
		}
		if id != "" && !bytes.Contains(head, []byte("id "+id)) {
			t.Fatalf("queue ID %q is not in the input", id)
		}
	})
}
