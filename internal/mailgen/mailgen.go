// Package mailgen makes messages of realistic shape for the read side's
// tests and benchmarks: multipart/alternative and mixed, attachments,
// RFC 2047 headers, quoted-printable and base64, 2–50 KiB, with envelopes
// as each hook point writes them. It is deterministic: the same seed gives
// the same corpus, so a test can ask for the words it knows are there.
package mailgen

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// Msg is one generated message and its envelope.
type Msg struct {
	Stamp      time.Time
	Env        archive.Envelope // without version, id, message (archivetest.PutItem fills them)
	Bytes      []byte
	From       string   // the From: address, also the envelope sender
	To, Cc     []string // header recipients
	Bcc        string   // an envelope-only recipient, or ""
	Subject    []string // the subject's words
	Body       []string // words of the text part
	Attachment string   // file name, or ""
	MessageID  string   // without <>
	QueueID    string
}

// Gen makes messages.
type Gen struct {
	rng   *rand.Rand
	Words []string // the vocabulary: made-up words no stemmer changes
	Start time.Time
	Step  time.Duration // between stamps
	n     int
	rank  map[string]int
}

// New returns a generator. Stamps start at start and step by step.
func New(seed int64, start time.Time, step time.Duration) *Gen {
	g := &Gen{rng: rand.New(rand.NewSource(seed)), Start: start.UTC().Truncate(time.Second), Step: step}
	// Consonant-vowel syllables ending in a vowel other than e and y, so
	// that no English stemmer (notmuch's Xapian) takes anything off.
	cons, vows := "bdfgklmnprvz", "aiou"
	seen := map[string]bool{}
	for len(g.Words) < 3000 {
		var sb strings.Builder
		for range 2 + g.rng.Intn(2) {
			sb.WriteByte(cons[g.rng.Intn(len(cons))])
			sb.WriteByte(vows[g.rng.Intn(len(vows))])
		}
		if w := sb.String(); !seen[w] {
			seen[w] = true
			g.Words = append(g.Words, w)
		}
	}
	return g
}

// Sender and recipient pools. Bcc recipients are never in To or Cc, so
// "to:" means the same to notmuch (headers) and to us (headers and
// envelope).
func Sender(i int) string    { return fmt.Sprintf("user%d@sender%d.example", i, i%7) }
func Recipient(i int) string { return fmt.Sprintf("rcpt%d@dest%d.example", i, i%5) }
func BccAddr(i int) string   { return fmt.Sprintf("hidden%d@audit.example", i) }

// Rarest returns the least common of words (the vocabulary's later
// words are rarer): a word few messages have.
func (g *Gen) Rarest(words []string) string {
	if g.rank == nil {
		g.rank = map[string]int{}
		for i, w := range g.Words {
			g.rank[w] = i
		}
	}
	best := ""
	for _, w := range words {
		if best == "" || g.rank[w] > g.rank[best] {
			best = w
		}
	}
	return best
}

// word picks a word; low ranks are common (a Zipf-like spread), so that
// queries for rare and frequent words both exist.
func (g *Gen) word() string {
	i := int(float64(len(g.Words)) * g.rng.Float64() * g.rng.Float64() * g.rng.Float64())
	return g.Words[i]
}

func (g *Gen) words(n int) []string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = g.word()
	}
	return ws
}

// Next makes the next message.
func (g *Gen) Next() Msg {
	i := g.n
	g.n++
	r := g.rng
	m := Msg{Stamp: g.Start.Add(time.Duration(i) * g.Step)}
	m.From = Sender(r.Intn(200))
	m.To = []string{Recipient(r.Intn(500))}
	for range r.Intn(3) {
		m.To = append(m.To, Recipient(r.Intn(500)))
	}
	if r.Intn(4) == 0 {
		m.Cc = []string{Recipient(r.Intn(500))}
	}
	if r.Intn(5) == 0 {
		m.Bcc = BccAddr(r.Intn(50))
	}
	m.Subject = g.words(3 + r.Intn(5))
	m.MessageID = fmt.Sprintf("%d.%x@mailgen.example", i, r.Int63())
	m.QueueID = fmt.Sprintf("4Z%010X", r.Int63n(1<<40))
	size := 2<<10 + r.Intn(48<<10) // 2–50 KiB in all
	if r.Intn(6) == 0 {
		m.Attachment = "report-" + g.word() + ".pdf"
	}

	var h bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&h, "%s: %s\r\n", k, v) }
	hdr("Received", fmt.Sprintf("from client.example (client.example [192.0.2.%d])\r\n\tby mx.example.org (Postfix) with ESMTP id %s\r\n\tfor <%s>; %s",
		1+i%250, m.QueueID, m.To[0], m.Stamp.Format(time.RFC1123Z)))
	hdr("From", mime.QEncoding.Encode("utf-8", "Sänder "+strings.Split(m.From, "@")[0])+" <"+m.From+">")
	hdr("To", strings.Join(m.To, ", "))
	if len(m.Cc) > 0 {
		hdr("Cc", strings.Join(m.Cc, ", "))
	}
	subj := strings.Join(m.Subject, " ")
	if r.Intn(3) == 0 {
		subj = mime.BEncoding.Encode("utf-8", subj+" – übersicht")
	}
	hdr("Subject", subj)
	hdr("Date", m.Stamp.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+m.MessageID+">")
	hdr("MIME-Version", "1.0")
	hdr("X-Mailer", "mailgen")

	textLen := size / 2
	if m.Attachment != "" {
		textLen = size / 4
	}
	var body bytes.Buffer
	for body.Len() < textLen {
		w := g.word()
		m.Body = append(m.Body, w)
		body.WriteString(w)
		if len(m.Body)%12 == 0 {
			body.WriteString(".\r\n")
		} else {
			body.WriteString(" ")
		}
	}
	text := body.String()
	qp := func(s string) string {
		var b bytes.Buffer
		w := quotedprintable.NewWriter(&b)
		w.Write([]byte(strings.ReplaceAll(s, "\r\n", "\n")))
		w.Close()
		return b.String() // the writer ends lines with CRLF

	}
	alt := func(w *bytes.Buffer, boundary string) {
		fmt.Fprintf(w, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n%s\r\n", boundary, qp(text+"grüße\r\n"))
		html := "<html><body><p>" + strings.ReplaceAll(text, ".\r\n", ".</p>\r\n<p>") + "</p></body></html>"
		fmt.Fprintf(w, "--%s\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--%s--\r\n", boundary, b64(html), boundary)
	}
	var out bytes.Buffer
	switch {
	case m.Attachment != "":
		hdr("Content-Type", `multipart/mixed; boundary="mixed-`+fmt.Sprint(i)+`"`)
		fmt.Fprintf(&out, "This is a multi-part message in MIME format.\r\n--mixed-%d\r\nContent-Type: multipart/alternative; boundary=\"alt-%d\"\r\n\r\n", i, i)
		alt(&out, fmt.Sprintf("alt-%d", i))
		pdf := make([]byte, size-textLen*2)
		r.Read(pdf)
		fmt.Fprintf(&out, "--mixed-%d\r\nContent-Type: application/pdf; name=\"%s\"\r\nContent-Disposition: attachment; filename=\"%s\"\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--mixed-%d--\r\n",
			i, m.Attachment, m.Attachment, b64(string(pdf)), i)
	case r.Intn(2) == 0:
		hdr("Content-Type", `multipart/alternative; boundary="alt-`+fmt.Sprint(i)+`"`)
		alt(&out, fmt.Sprintf("alt-%d", i))
	default:
		hdr("Content-Type", "text/plain; charset=utf-8")
		hdr("Content-Transfer-Encoding", "quoted-printable")
		out.WriteString(qp(text))
	}
	m.Bytes = append(append(h.Bytes(), "\r\n"...), out.Bytes()...)

	rcpts := append(append(append([]string{}, m.To...), m.Cc...), m.Bcc)
	if m.Bcc == "" {
		rcpts = rcpts[:len(rcpts)-1]
	}
	m.Env = archive.Envelope{Outcome: "accepted", MailFrom: &archive.MailFrom{Addr: m.From}, QueueID: m.QueueID}
	if i%2 == 0 {
		m.Env.Source = "proxy"
	} else {
		m.Env.Source = "milter"
		m.Env.Macros = map[string]string{"i": m.QueueID}
	}
	for _, a := range rcpts {
		m.Env.RcptTo = append(m.Env.RcptTo, archive.Rcpt{Addr: a, Accepted: true})
	}
	return m
}

func b64(s string) string {
	e := base64.StdEncoding.EncodeToString([]byte(s))
	var sb strings.Builder
	for len(e) > 76 {
		sb.WriteString(e[:76] + "\r\n")
		e = e[76:]
	}
	sb.WriteString(e)
	return sb.String()
}
