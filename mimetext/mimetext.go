// Package mimetext turns an archived message into the text a search
// matches and a reader sees: header fields with RFC 2047 encoded words
// decoded from any charset, text parts decoded from quoted-printable or
// base64 and their charset, HTML reduced to text, and the names and types
// of attachments. It never fails on a message: what cannot be parsed is
// kept raw and said in Doc.Problem.
package mimetext

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // every charset go-message knows
	"github.com/emersion/go-message/textproto"
	"golang.org/x/text/encoding/charmap"
)

// Doc is what Extract found in a message.
type Doc struct {
	From, To, Cc, Subject string // decoded header fields
	MessageID, Date       string // as written, space trimmed
	// Headers is every header field as "Name: decoded value" lines; when
	// the header section does not parse, the raw lines that were read.
	Headers string
	// Text is the decoded text of the text parts, HTML reduced to text,
	// one part of each multipart/alternative (the plain one if there is
	// one), at most Options.MaxText bytes.
	Text        string
	Attachments []Attachment
	// QueueIDs are the ids in Received: fields ("with ESMTP id 4Xyz..."),
	// newest hop first: the wrapper's Postfix queue ID and those of the
	// hops before.
	QueueIDs []string
	// Problem says what could not be parsed (empty when everything could):
	// the fields above are what was found before.
	Problem string
	// HeaderFailed: the header section itself did not parse.
	HeaderFailed bool
}

// Attachment is a part with a file name, or a non-text part.
type Attachment struct {
	Name string `json:"name,omitempty"`
	Type string `json:"type"`
	Size int64  `json:"size"` // decoded bytes
}

// Options bound the work on one message.
type Options struct {
	MaxText  int // bytes of decoded text kept (default 1 MiB)
	MaxDepth int // nesting of multiparts and message/rfc822 (default 20)
}

const headerCap = 256 << 10 // bytes read to find the header section

// Extract reads a message (a leading mbox "From " line is skipped) and
// returns what it found. Memory is bounded by Options, whatever the size
// of the message; r is read to its end only as far as needed.
func Extract(r io.Reader, opt Options) *Doc {
	x := &extractor{opt: opt, doc: &Doc{}}
	d := x.extract(r)
	d.Text = string(x.text)
	return d
}

func (x *extractor) extract(r io.Reader) *Doc {
	opt := x.opt
	if opt.MaxText <= 0 {
		opt.MaxText = 1 << 20
	}
	if opt.MaxDepth <= 0 {
		opt.MaxDepth = 20
	}
	x.opt = opt
	br := bufio.NewReaderSize(r, 64<<10)
	if b, _ := br.Peek(5); string(b) == "From " {
		if _, err := br.ReadSlice('\n'); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return x.doc
		}
	}
	// Read the header from a capped copy, so that a header that never ends
	// cannot take unbounded memory, and so that its raw text is at hand
	// when it does not parse.
	head, _ := br.Peek(headerCap)
	src := bytes.NewReader(head)
	hr := bufio.NewReader(src)
	th, err := textproto.ReadHeader(hr)
	consumed := len(head) - src.Len() - hr.Buffered()
	if len(head) == headerCap && err != nil && consumed >= len(head) {
		err = fmt.Errorf("header section longer than %d KiB", headerCap>>10)
	}
	h := message.Header{Header: th}
	x.header(h, true)
	if err != nil {
		// Keep the raw lines as the header text, and everything after the
		// fault as plain text: a message with no header at all is all body.
		d := x.doc
		d.HeaderFailed = true
		d.Problem = "header: " + err.Error()
		raw := string(head[:consumed])
		d.Headers = fixText(raw)
		br.Discard(consumed)
		var body io.Reader = br
		if th.Len() == 0 {
			// Nothing parsed: the "header" may be the body itself.
			body = io.MultiReader(strings.NewReader(raw), br)
		}
		x.plain(body)
		return d
	}
	br.Discard(consumed)
	e, err := message.New(h, br)
	if e == nil {
		x.doc.Problem = "body: " + err.Error()
		return x.doc
	}
	if err != nil {
		x.problem(err)
	}
	x.walk(e, 0)
	return x.doc
}

type extractor struct {
	opt Options
	doc *Doc
	// text collects the decoded text; base is the text of enclosing
	// alternatives set aside while one alternative is read.
	text     []byte
	base     int
	sawPlain bool // a text/plain part was added to text
}

func (x *extractor) problem(err error) {
	if x.doc.Problem == "" {
		x.doc.Problem = err.Error()
	}
}

// header fills the Doc's fields from the top-level header (top) or adds a
// nested message's fields to Headers only.
func (x *extractor) header(h message.Header, top bool) {
	var sb strings.Builder
	fields := h.Fields()
	for fields.Next() {
		v, err := fields.Text()
		if err != nil {
			v = fields.Value()
		}
		v = fixText(v)
		sb.WriteString(fields.Key() + ": " + v + "\n")
		if !top {
			continue
		}
		switch strings.ToLower(fields.Key()) {
		case "from":
			x.doc.From = appendList(x.doc.From, v)
		case "to":
			x.doc.To = appendList(x.doc.To, v)
		case "cc":
			x.doc.Cc = appendList(x.doc.Cc, v)
		case "subject":
			if x.doc.Subject == "" {
				x.doc.Subject = strings.TrimSpace(v)
			}
		case "message-id":
			if x.doc.MessageID == "" {
				x.doc.MessageID = strings.TrimSpace(v)
			}
		case "date":
			if x.doc.Date == "" {
				x.doc.Date = strings.TrimSpace(v)
			}
		case "received":
			x.doc.QueueIDs = append(x.doc.QueueIDs, ReceivedIDs(fields.Value())...)
		}
	}
	if len(x.doc.Headers)+sb.Len() <= x.opt.MaxText {
		x.doc.Headers += sb.String()
	}
}

func appendList(list, v string) string {
	v = strings.TrimSpace(v)
	if list == "" {
		return v
	}
	return list + ", " + v
}

// receivedID finds "id QUEUEID" in a Received: field (RFC 5321 section
// 4.4, the ID clause). Postfix writes "with ESMTP id 4Xyz12345;".
var receivedID = regexp.MustCompile(`(?i)(?:^|[\s(])id\s+<?([A-Za-z0-9][A-Za-z0-9._-]*)`)

// ReceivedIDs returns the ids of one Received: field's value.
func ReceivedIDs(v string) []string {
	var ids []string
	for _, m := range receivedID.FindAllStringSubmatch(v, -1) {
		ids = append(ids, strings.TrimRight(m[1], "."))
	}
	return ids
}

// walk visits an entity and its parts.
func (x *extractor) walk(e *message.Entity, depth int) {
	if depth > x.opt.MaxDepth {
		x.problem(fmt.Errorf("parts nested deeper than %d", x.opt.MaxDepth))
		io.Copy(io.Discard, e.Body)
		return
	}
	if ct, params, _ := e.Header.ContentType(); strings.HasPrefix(ct, "multipart/") && params["boundary"] == "" {
		// A multipart without a boundary cannot be split: its body is text.
		x.problem(fmt.Errorf("%s without a boundary", ct))
		x.plain(e.Body)
		return
	}
	if mr := e.MultipartReader(); mr != nil {
		alt := x.newAlternatives(e)
		defer alt.done()
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				return
			}
			if err != nil && p == nil {
				// A broken boundary: what was read so far is kept.
				x.problem(fmt.Errorf("multipart: %v", err))
				return
			}
			if err != nil {
				x.problem(err) // unknown charset or encoding: read raw
			}
			alt.begin()
			x.walk(p, depth+1)
			alt.end()
		}
	}
	ct, params, cterr := e.Header.ContentType()
	if cterr != nil || ct == "" {
		ct = "text/plain"
	}
	disp, dparams, _ := e.Header.ContentDisposition()
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	name = fixText(decodeWords(name))
	isText := strings.HasPrefix(ct, "text/")
	if name != "" || strings.EqualFold(disp, "attachment") || !isText && ct != "message/rfc822" {
		n, err := io.Copy(io.Discard, e.Body)
		if err != nil {
			x.problem(fmt.Errorf("attachment %q: %v", name, err))
		}
		x.doc.Attachments = append(x.doc.Attachments, Attachment{Name: name, Type: ct, Size: n})
		return
	}
	switch {
	case ct == "message/rfc822":
		inner, err := message.Read(e.Body)
		if inner == nil {
			x.problem(fmt.Errorf("message/rfc822: %v", err))
			return
		}
		x.header(inner.Header, false)
		x.walk(inner, depth+1)
	case ct == "text/html":
		b, err := x.read(e.Body)
		if err != nil {
			x.problem(fmt.Errorf("text/html: %v", err))
		}
		x.addText(HTMLText(fixText(string(b))))
	default:
		x.plain(e.Body)
		x.sawPlain = true
	}
}

// alternatives keeps one part of a multipart/alternative: the same text
// twice (plain and HTML) would be shown twice and indexed twice. It keeps
// the first part that has text/plain, else the first with any text.
type alternatives struct {
	x           *extractor
	on          bool
	saved       []byte
	savedPlain  bool
	chosen      []byte
	chosenPlain bool
}

func (x *extractor) newAlternatives(e *message.Entity) *alternatives {
	ct, _, _ := e.Header.ContentType()
	return &alternatives{x: x, on: ct == "multipart/alternative"}
}

// begin sets the text so far aside, so that the part's text is its own.
func (a *alternatives) begin() {
	if !a.on {
		return
	}
	x := a.x
	a.saved, a.savedPlain = x.text, x.sawPlain
	x.base += len(x.text)
	x.text, x.sawPlain = nil, false
}

func (a *alternatives) end() {
	if !a.on {
		return
	}
	x := a.x
	if (a.chosen == nil && len(x.text) > 0) || (x.sawPlain && !a.chosenPlain && len(x.text) > 0) {
		a.chosen, a.chosenPlain = x.text, x.sawPlain
	}
	x.base -= len(a.saved)
	x.text, x.sawPlain = a.saved, a.savedPlain
}

// done adds the chosen part's text.
func (a *alternatives) done() {
	if a.on && a.chosen != nil {
		a.x.addText(string(a.chosen))
		a.x.sawPlain = a.x.sawPlain || a.chosenPlain
	}
}

// plain adds a text part.
func (x *extractor) plain(r io.Reader) {
	b, err := x.read(r)
	if err != nil {
		x.problem(fmt.Errorf("text: %v", err))
	}
	x.addText(fixText(string(b)))
}

// read reads at most the room left for text and discards the rest, so
// that the next part can be found.
func (x *extractor) read(r io.Reader) ([]byte, error) {
	room := x.opt.MaxText - x.base - len(x.text)
	b, err := io.ReadAll(io.LimitReader(r, int64(max(room, 0))))
	if err == nil {
		_, err = io.Copy(io.Discard, r)
	}
	return b, err
}

func (x *extractor) addText(s string) {
	if s == "" {
		return
	}
	room := x.opt.MaxText - x.base - len(x.text)
	if room <= 0 {
		return
	}
	if len(s) > room {
		s = strings.ToValidUTF8(s[:room], "")
	}
	if len(x.text) > 0 {
		x.text = append(x.text, '\n')
	}
	x.text = append(x.text, s...)
}

// decodeWords decodes RFC 2047 words in a parameter (a file name written
// filename="=?UTF-8?B?...?=", which RFC 2231 does not allow but mailers
// write).
func decodeWords(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d := mime.WordDecoder{CharsetReader: message.CharsetReader}
	if v, err := d.DecodeHeader(s); err == nil {
		return v
	}
	return s
}

// fixText makes s valid UTF-8: text that is not (8-bit header fields and
// parts without a charset) is read as Windows-1252, which is what such
// mail mostly is, and what every byte decodes in.
func fixText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	if v, err := charmap.Windows1252.NewDecoder().String(s); err == nil && utf8.ValidString(v) {
		return v
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
