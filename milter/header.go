package milter

import "strings"

// FormatHeaderField rebuilds one header field as it stood in the message,
// without its line end, from what the MTA sent in a SMFIC_HEADER packet.
//
// With SMFIP_HDR_LEADSPC negotiated (leadSpace true), Postfix sends the value
// exactly as it stood after the colon ("Subject:x" gives "x", "Subject: x"
// gives " x"), so the field is name + ":" + value. Without it the MTA has
// eaten one leading space (sendmail's convention, also what a go-milter
// client sends), so a space is put back: the common "Name: value" form.
//
// Folded values arrive joined by a bare "\n" (the MTA strips the CR of each
// line end); every bare "\n" becomes "\r\n" again. A "\r\n" already in the
// value is kept as it is, never doubled.
func FormatHeaderField(name, value string, leadSpace bool) []byte {
	n := len(name) + 1 + len(value) + strings.Count(value, "\n")
	if !leadSpace {
		n++
	}
	b := make([]byte, 0, n)
	b = append(b, name...)
	b = append(b, ':')
	if !leadSpace {
		b = append(b, ' ')
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == '\n' && (i == 0 || value[i-1] != '\r') {
			b = append(b, '\r')
		}
		b = append(b, c)
	}
	return b
}
