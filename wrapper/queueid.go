package wrapper

import (
	"bytes"
	"io"
	"regexp"
)

// queueIDHead bounds what is read to find the queue ID: the mbox From
// line, local(8)'s Return-Path, X-Original-To and Delivered-To, and
// Postfix's own Received: field come first.
const queueIDHead = 16 << 10

// postfixReceived matches the by and id clauses of the Received: field that
// Postfix's smtpd ("by HOST (Postfix) with ESMTP id QID") or pickup ("by
// HOST (Postfix, from userid 0)\n\tid QID") puts on top of every message it
// queues. Queue IDs are short (hex) or long (enable_long_queue_ids:
// base 52 and digits); both are letters and digits.
var postfixReceived = regexp.MustCompile(`\bby [^\s;]+ \(Postfix[^)]*\)(?:\s+with [^\s;]+)?\s+id ([0-9A-Za-z]+)\b`)

// localQueueID returns the Postfix queue ID of the message that local(8)
// is delivering, read from the start of the message r holds, or "" when it
// cannot be told. It is in the id clause of the first Received: field:
// Postfix puts its own there before queueing, above whatever the message
// brought, and local(8) adds only Return-Path, X-Original-To and
// Delivered-To above it. A later Received: may be forged by the sender, so
// only the first is read, and only if Postfix wrote it.
func localQueueID(r io.ReaderAt) string {
	buf := make([]byte, queueIDHead)
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return ""
	}
	return queueIDFromHeader(buf[:n])
}

// queueIDFromHeader is localQueueID on the bytes of the message's start.
func queueIDFromHeader(head []byte) string {
	if bytes.HasPrefix(head, []byte("From ")) { // the mbox line local(8) puts first
		i := bytes.IndexByte(head, '\n')
		if i < 0 {
			return ""
		}
		head = head[i+1:]
	}
	for len(head) > 0 {
		field, rest, ok := nextField(head)
		if !ok {
			return ""
		}
		head = rest
		name, value, _ := bytes.Cut(field, []byte(":"))
		if !bytes.EqualFold(name, []byte("Received")) {
			continue
		}
		if m := postfixReceived.FindSubmatch(value); m != nil {
			return string(m[1])
		}
		return ""
	}
	return ""
}

// nextField splits the first header field (with its continuation lines)
// off head. ok is false at the end of the header (an empty line), or when
// the field's end is not in head.
func nextField(head []byte) (field, rest []byte, ok bool) {
	if head[0] == '\n' || bytes.HasPrefix(head, []byte("\r\n")) {
		return nil, nil, false
	}
	end := 0
	for {
		i := bytes.IndexByte(head[end:], '\n')
		if i < 0 {
			return nil, nil, false
		}
		end += i + 1
		if end >= len(head) {
			return nil, nil, false // the field may go on past what was read
		}
		if head[end] != ' ' && head[end] != '\t' {
			return head[:end], head[end:], true
		}
	}
}
