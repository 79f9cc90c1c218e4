package mimetext_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postfix-archive/mailarchive/mimetext"
)

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

// The corpus: shapes seen in real mail, each with what must be found.
var corpus = []struct {
	name string
	msg  string
	// want: substrings of the Doc's fields
	subject, from, to, text, headers string
	attachments                      []string // names
	queueIDs                         []string
	problem                          bool
	notText                          string // must not be in Text
}{
	{
		name: "plain us-ascii, wrapper From_ line and Postfix Received",
		msg: "From alice@example.org  Tue Dec  1 12:00:00 2026\n" +
			"Received: from mx.example.org (mx.example.org [192.0.2.1])\n\tby mail.example.net (Postfix) with ESMTPS id 4ZxQ1r2Kd8z9sW\n\tfor <bob@example.net>; Tue,  1 Dec 2026 12:00:00 +0000 (UTC)\n" +
			"Received: by mx.example.org (Postfix, from userid 1000)\n\tid 3F2A81234; Tue,  1 Dec 2026 11:59:59 +0000 (UTC)\n" +
			"From: Alice <alice@example.org>\nTo: bob@example.net\nSubject: hello\n\nplain body\n",
		subject: "hello", from: "alice@example.org", to: "bob@example.net", text: "plain body",
		queueIDs: []string{"4ZxQ1r2Kd8z9sW", "3F2A81234"},
	},
	{
		name: "RFC 2047 subject in ISO-8859-1 and UTF-8, QP body in ISO-8859-1",
		msg: crlf("From: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <j@example.de>\nTo: =?UTF-8?B?w4Rnb3N0?= <a@example.de>\n" +
			"Subject: =?iso-8859-1?q?Gr=FC=DFe?= aus =?UTF-8?B?TcO8bmNoZW4=?=\nMIME-Version: 1.0\n" +
			"Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n" +
			"Sch=F6ne Gr=FC=DFe, die Stra=DFe ist lang und die Zeile ist so lang, dass sie=\n umbrochen wird.\n"),
		subject: "Grüße aus München", from: "Jörg Müller", to: "Ägost", text: "Schöne Grüße, die Straße ist lang und die Zeile ist so lang, dass sie umbrochen wird.",
	},
	{
		name: "base64 UTF-8 body, KOI8-R and Shift_JIS parts",
		msg: crlf("From: x@example.ru\nSubject: =?koi8-r?B?8NLJ18XU?=\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b1\n\n" +
			"--b1\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n0J/RgNC40LLQtdGCINC80LjRgA==\n" +
			"--b1\nContent-Type: text/plain; charset=koi8-r\nContent-Transfer-Encoding: 8bit\n\n\xf0\xd2\xc9\xd7\xc5\xd4\n" +
			"--b1\nContent-Type: text/plain; charset=shift_jis\nContent-Transfer-Encoding: base64\n\ngrGC8YLJgr+CzQ==\n--b1--\n"),
		subject: "Привет", text: "Привет мир\nПривет\nこんにちは",
	},
	{
		name: "nested multipart: mixed(alternative(plain, related(html, image)), pdf, message/rfc822)",
		msg: crlf("From: Outlook User <o@example.com>\nSubject: nested\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"outer\"\n\npreamble\n" +
			"--outer\nContent-Type: multipart/alternative; boundary=\"alt\"\n\n" +
			"--alt\nContent-Type: text/plain; charset=\"us-ascii\"\n\nquarterly numbers attached\n" +
			"--alt\nContent-Type: multipart/related; boundary=\"rel\"\n\n" +
			"--rel\nContent-Type: text/html; charset=\"utf-8\"\nContent-Transfer-Encoding: quoted-printable\n\n<html><head><style>p{color:red}</style></head><body><p>Quarterly&nbsp;=\nnumbers &amp; <b>caf=C3=A9</b></p><script>var secret=1;</script></body></html>\n" +
			"--rel\nContent-Type: image/png\nContent-ID: <img1>\nContent-Transfer-Encoding: base64\n\niVBORw0KGgo=\n--rel--\n--alt--\n" +
			"--outer\nContent-Type: application/pdf; name=\"Q3 report.pdf\"\nContent-Disposition: attachment; filename=\"Q3 report.pdf\"\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n" +
			"--outer\nContent-Type: message/rfc822\n\nFrom: inner@example.com\nSubject: forwarded inner\n\ninner body text\n" +
			"--outer--\nepilogue\n"),
		subject: "nested", text: "quarterly numbers attached\ninner body text", headers: "forwarded inner",
		attachments: []string{"", "Q3 report.pdf"}, notText: "café", // the plain alternative, not the HTML one
	},
	{
		name: "alternative whose plain part is empty: the HTML part's text",
		msg: crlf("Subject: html\nContent-Type: multipart/alternative; boundary=a\n\n--a\nContent-Type: text/plain\n\n\n" +
			"--a\nContent-Type: text/html; charset=iso-8859-1\n\n<html><head><style>p{}</style></head><body><p>Quarterly&nbsp;numbers &amp; <b>caf\xe9</b></p><script>var secret=1;</script></body></html>\n--a--\n"),
		subject: "html", text: "Quarterly numbers & café", notText: "secret",
	},
	{
		name: "RFC 2231 and RFC 2047 attachment names",
		msg: crlf("Subject: names\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=x\n\n" +
			"--x\nContent-Type: text/plain\n\nsee attachments\n" +
			"--x\nContent-Type: application/octet-stream\nContent-Disposition: attachment; filename*=UTF-8''%C3%9Cbersicht%202026.xlsx\n\nAAAA\n" +
			"--x\nContent-Type: application/octet-stream; name=\"=?UTF-8?Q?Pr=C3=A4sentation.pptx?=\"\nContent-Disposition: attachment\n\nBBBB\n--x--\n"),
		subject: "names", text: "see attachments", attachments: []string{"Übersicht 2026.xlsx", "Präsentation.pptx"},
	},
	{
		name:    "broken boundary: the closing delimiter never comes",
		msg:     crlf("Subject: broken\nContent-Type: multipart/mixed; boundary=zzz\n\n--zzz\nContent-Type: text/plain\n\nfirst part survives\n--zzz\nContent-Type: text/plain\n\nsecond part, cut off"),
		subject: "broken", text: "first part survives", problem: true,
	},
	{
		name:    "8-bit header fields without encoded words (Latin-1 and raw UTF-8)",
		msg:     "From: Ren\xe9 <r@example.fr>\nTo: Zo\xc3\xab <z@example.fr>\nSubject: caf\xe9 cr\xe8me\n\nbody\n",
		subject: "café crème", from: "René", to: "Zoë", text: "body",
	},
	{
		name: "no header at all: the message starts with its text",
		msg:  "just some text\nwithout any header\n",
		text: "just some text\nwithout any header", problem: true,
	},
	{
		name: "empty first line: all body",
		msg:  "\r\nbody after an empty header\r\n",
		text: "body after an empty header",
	},
	{
		name:    "header broken part-way: fields before the fault are kept",
		msg:     "Subject: kept\nFrom: a@example.org\nthis line is not a field\nTo: lost@example.org\n\nbody\n",
		subject: "kept", from: "a@example.org", headers: "this line is not a field", problem: true,
	},
	{
		name:    "unknown charset and unknown transfer encoding: raw text kept",
		msg:     "Subject: =?x-unknown?Q?raw?=\nContent-Type: text/plain; charset=x-martian\nContent-Transfer-Encoding: x-uuencode\n\nmartian words\n",
		subject: "=?x-unknown?Q?raw?=", text: "martian words", problem: true,
	},
	{
		name:    "multipart without a boundary",
		msg:     "Subject: nob\nContent-Type: multipart/alternative\n\nBlah blah blah\n",
		subject: "nob", text: "Blah blah blah", problem: true,
	},
	{
		name: "empty message",
		msg:  "",
	},
}

func TestExtract(t *testing.T) {
	for _, tt := range corpus {
		t.Run(tt.name, func(t *testing.T) {
			d := mimetext.Extract(strings.NewReader(tt.msg), mimetext.Options{})
			check := func(field, got, want string) {
				if !strings.Contains(got, want) {
					t.Errorf("%s = %q, want it to contain %q", field, got, want)
				}
			}
			check("Subject", d.Subject, tt.subject)
			check("From", d.From, tt.from)
			check("To", d.To, tt.to)
			check("Text", d.Text, tt.text)
			check("Headers", d.Headers, tt.headers)
			if tt.notText != "" && strings.Contains(d.Text, tt.notText) {
				t.Errorf("Text %q contains %q", d.Text, tt.notText)
			}
			var names []string
			for _, a := range d.Attachments {
				names = append(names, a.Name)
			}
			if strings.Join(names, "|") != strings.Join(tt.attachments, "|") {
				t.Errorf("attachments %q, want %q", names, tt.attachments)
			}
			if strings.Join(d.QueueIDs, " ") != strings.Join(tt.queueIDs, " ") {
				t.Errorf("QueueIDs %q, want %q", d.QueueIDs, tt.queueIDs)
			}
			if (d.Problem != "") != tt.problem {
				t.Errorf("Problem %q, want a problem: %v", d.Problem, tt.problem)
			}
		})
	}
}

// TestCPythonCorpus reads messages written by other software (see
// testdata/cpython/README.md): none may panic, each yields its header, and
// the tricky ones yield their text.
func TestCPythonCorpus(t *testing.T) {
	files, _ := filepath.Glob("testdata/cpython/msg_*.txt")
	if len(files) < 40 {
		t.Fatalf("corpus has %d messages, want the 48 of testdata/cpython", len(files))
	}
	want := map[string][]string{
		"msg_02.txt": {"digest"},                       // a digest of message/rfc822 parts
		"msg_15.txt": {"Some removed test"},            // nested parts reusing the outer boundary
		"msg_35.txt": {"no separating newline"},        // header without the empty line
		"msg_41.txt": {"Blah blah blah"},               // multipart without a boundary
		"msg_45.txt": {"This is the signed contents."}, // multipart/signed
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d := mimetext.Extract(bytes.NewReader(b), mimetext.Options{})
		if d.Headers == "" && d.Text == "" {
			t.Errorf("%s: nothing extracted", f)
		}
		all := d.Headers + "\n" + d.Text
		for _, w := range want[filepath.Base(f)] {
			if !strings.Contains(all, w) {
				t.Errorf("%s: %q not found in\n%s", f, w, all)
			}
		}
	}
}

// TestBounded: a huge text part yields at most MaxText bytes of text.
func TestBounded(t *testing.T) {
	msg := "Subject: big\r\n\r\n" + strings.Repeat("word ", 1<<20)
	d := mimetext.Extract(strings.NewReader(msg), mimetext.Options{MaxText: 4096})
	if len(d.Text) > 4096 || len(d.Text) < 4000 {
		t.Errorf("Text is %d bytes, want at most 4096", len(d.Text))
	}
}

func TestHTMLText(t *testing.T) {
	for in, want := range map[string]string{
		"<p>a&amp;b</p><p>c</p>":               "a&b\n\nc",
		"<html><head><title>T</title></head>x": "x",
		"x<!-- hidden -->y":                    "xy",
		"<div>broken <b":                       "broken",
		"<style>.a{}</style>A<br>B":            "A\nB",
		"<td>1</td><td>2</td>":                 "1 2",
	} {
		if got := mimetext.HTMLText(in); got != want {
			t.Errorf("HTMLText(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzExtract(f *testing.F) {
	for _, c := range corpus {
		f.Add([]byte(c.msg))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d := mimetext.Extract(bytes.NewReader(b), mimetext.Options{MaxText: 1 << 16})
		if len(d.Text) > 1<<16 {
			t.Fatalf("Text is %d bytes", len(d.Text))
		}
	})
}

// TestLongMessage: a message larger than the reader's buffers keeps its
// body (the header is parsed from a copy of the start).
func TestLongMessage(t *testing.T) {
	body := strings.Repeat("filler words here\r\n", 2000) + "lastword\r\n"
	msg := "Subject: long\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nfirstword\r\n" + body + "--b--\r\n"
	d := mimetext.Extract(strings.NewReader(msg), mimetext.Options{})
	if !strings.HasPrefix(d.Text, "firstword") || !strings.Contains(d.Text, "lastword") || d.Problem != "" {
		t.Errorf("Text %q... (problem %q)", d.Text[:min(40, len(d.Text))], d.Problem)
	}
}
