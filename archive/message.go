package archive

import (
	"bufio"
	"bytes"
	"strings"

	_ "github.com/emersion/go-message/charset" // decode non-UTF-8 encoded words
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
)

// headerCap bounds the bytes kept to find the message's header fields: the
// header is parsed from at most this much of the message start, whatever the
// message size (Postfix's header_size_limit is 100 KiB).
const headerCap = 128 << 10

// headerCapture keeps the start of a message until the end of its header.
type headerCapture struct {
	buf  []byte
	done bool
}

func (h *headerCapture) write(p []byte) {
	if h.done {
		return
	}
	from := max(0, len(h.buf)-3) // an end marker may straddle writes
	room := headerCap - len(h.buf)
	if len(p) > room {
		p = p[:room]
	}
	h.buf = append(h.buf, p...)
	if headerEnd(h.buf[from:]) >= 0 || len(h.buf) >= headerCap {
		h.done = true
	}
	// A message that starts with an empty line has no header at all.
	if bytes.HasPrefix(h.buf, []byte("\r\n")) || bytes.HasPrefix(h.buf, []byte("\n")) {
		h.done = true
	}
}

// headerEnd returns the index of the empty line ending a header, or -1.
func headerEnd(b []byte) int {
	i := bytes.Index(b, []byte("\n\n"))
	j := bytes.Index(b, []byte("\n\r\n"))
	switch {
	case i < 0:
		return j
	case j < 0:
		return i
	}
	return min(i, j)
}

func (h *headerCapture) fields() Message {
	return ParseMessageFields(h.buf)
}

// ParseMessageFields extracts Message-ID, Date, From and Subject (decoded to
// UTF-8) from the start of a message. A leading mbox "From " line (the
// wrapper's input) is skipped. A header that does not parse yields the
// fields found before the fault; a message without a header yields none.
func ParseMessageFields(start []byte) Message {
	if bytes.HasPrefix(start, []byte("From ")) {
		if i := bytes.IndexByte(start, '\n'); i >= 0 {
			start = start[i+1:]
		} else {
			return Message{}
		}
	}
	th, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(start)))
	h := mail.Header{}
	h.Header.Header = th
	var m Message
	m.MessageID = strings.TrimSpace(h.Get("Message-Id"))
	m.Date = strings.TrimSpace(h.Get("Date"))
	m.From = decodedText(h, "From")
	m.Subject = decodedText(h, "Subject")
	return m
}

// decodedText returns a field with RFC 2047 encoded words decoded, or its raw
// value when they cannot be (an unknown charset).
func decodedText(h mail.Header, key string) string {
	v, err := h.Text(key)
	if err != nil {
		v = h.Get(key)
	}
	return strings.ToValidUTF8(strings.TrimSpace(v), "\uFFFD")
}
