package export

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/postfix-archive/mailarchive/archive"
)

// mbox writes one message as mboxrd: a From_ line with the envelope
// sender (MAILER-DAEMON for <> or unknown) and the archive time, the
// message with every line that matches ^>*From  given one more '>' (so
// reading strips exactly one and gets the bytes back), and an empty line.
// A message that does not end in a line end gets one: an mbox cannot hold
// it otherwise (the eml and zip formats can).
func (w *Writer) mbox(env *archive.Envelope, msg io.Reader) (int64, error) {
	sender, when := "MAILER-DAEMON", time.Unix(0, 0).UTC()
	if env != nil {
		if s := senderOf(env); s != "" {
			sender = strings.Join(strings.Fields(s), "_")
		}
		when = env.ArchivedAt.UTC()
	}
	if _, err := fmt.Fprintf(w.buf, "From %s %s\n", sender, when.Format(time.ANSIC)); err != nil {
		return 0, fmt.Errorf("export: %w", err)
	}
	n, last, err := QuoteFrom(w.buf, msg)
	if err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	end := "\n" // the empty line between messages
	if n > 0 && last != '\n' {
		end = "\n\n"
	}
	if _, err := w.buf.WriteString(end); err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	return n, nil
}

func senderOf(env *archive.Envelope) string {
	if env.MailFrom != nil {
		return env.MailFrom.Addr
	}
	return env.Env["SENDER"]
}

// QuoteFrom copies r to w, adding a '>' before every line that starts
// with zero or more '>' and then "From " (mboxrd). It returns the bytes
// read and the last byte.
func QuoteFrom(w io.Writer, r io.Reader) (int64, byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var n int64
	var last byte
	atStart := true
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if atStart && isFromLine(line) {
				if _, werr := w.Write([]byte{'>'}); werr != nil {
					return n, last, werr
				}
			}
			if _, werr := w.Write(line); werr != nil {
				return n, last, werr
			}
			n += int64(len(line))
			last = line[len(line)-1]
			atStart = last == '\n'
		}
		switch {
		case err == nil, err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			return n, last, nil
		default:
			return n, last, err
		}
	}
}

// isFromLine: line (the start of a line, maybe cut at the buffer size)
// is >*From followed by a space.
func isFromLine(line []byte) bool {
	s := bytes.TrimLeft(line, ">")
	return bytes.HasPrefix(s, []byte("From "))
}
