package milter

import (
	"bytes"
	"encoding/binary"
)

// go-milter v0.5.0 hands its Milter callbacks less than the MTA sends: the
// ESMTP parameters of MAIL and RCPT are dropped, and the MTA's OPTNEG offer
// is ignored. packetTap sees the same byte stream go-milter reads (it sits
// in the connection's Read) and frames it the same way, so that when a
// callback runs, the packet that caused it has just been tapped.

// Packet codes the tap keeps (milter-protocol.txt).
const (
	codeOptNeg = 'O' // SMFIC_OPTNEG
	codeMail   = 'M' // SMFIC_MAIL
	codeRcpt   = 'R' // SMFIC_RCPT
)

// maxTapped bounds the payload kept of one tapped packet: OPTNEG, MAIL and
// RCPT are small; anything larger is malformed and go-milter drops the
// connection on it anyway.
const maxTapped = 64 << 10

// packetTap frames a milter byte stream: 4-byte big-endian length, then a
// code byte and length-1 bytes of data.
type packetTap struct {
	lenBuf [4]byte
	lenN   int    // bytes of lenBuf filled
	remain uint32 // payload bytes still to come, code byte included
	code   byte
	coded  bool // code holds this packet's code
	keep   bool
	buf    []byte

	// What was learnt.
	offeredVersion uint32   // the MTA's milter protocol version from OPTNEG
	offeredProto   uint32   // the MTA's protocol mask from OPTNEG
	sawOptNeg      bool     // an OPTNEG came
	args           []string // ESMTP parameters of the last MAIL or RCPT
}

// atBoundary reports whether the stream is between packets.
func (t *packetTap) atBoundary() bool { return t.lenN == 0 && t.remain == 0 }

func (t *packetTap) feed(p []byte) {
	for len(p) > 0 {
		if t.remain == 0 {
			k := copy(t.lenBuf[t.lenN:], p)
			t.lenN += k
			p = p[k:]
			if t.lenN < 4 {
				return
			}
			t.lenN = 0
			t.remain = binary.BigEndian.Uint32(t.lenBuf[:])
			t.coded = false
			t.keep = false
			t.buf = t.buf[:0]
			continue // a zero length: go-milter rejects it and closes
		}
		if !t.coded {
			t.coded = true
			t.code = p[0]
			p = p[1:]
			t.remain--
			t.keep = (t.code == codeOptNeg || t.code == codeMail || t.code == codeRcpt) &&
				t.remain <= maxTapped
		}
		k := len(p)
		if uint32(k) > t.remain {
			k = int(t.remain)
		}
		if t.keep {
			t.buf = append(t.buf, p[:k]...)
		}
		p = p[k:]
		t.remain -= uint32(k)
		if t.remain == 0 {
			t.packet()
		}
	}
}

// packet records what a completed packet tells.
func (t *packetTap) packet() {
	if !t.keep {
		return
	}
	switch t.code {
	case codeOptNeg:
		if len(t.buf) >= 12 {
			t.offeredVersion = binary.BigEndian.Uint32(t.buf[0:4])
			t.offeredProto = binary.BigEndian.Uint32(t.buf[8:12])
			t.sawOptNeg = true
		}
	case codeMail, codeRcpt:
		t.args = esmtpArgs(t.buf)
	}
}

// esmtpArgs returns the NUL-terminated strings after the first (the address)
// in a MAIL or RCPT packet: Postfix sends each ESMTP parameter as its own
// string, e.g. "<a@example.org>\0SIZE=430\0BODY=8BITMIME\0".
func esmtpArgs(data []byte) []string {
	parts := bytes.Split(data, []byte{0})
	var args []string
	for _, a := range parts[1:] {
		if len(a) > 0 {
			args = append(args, string(a))
		}
	}
	return args
}

// takeArgs returns and forgets the parameters of the last MAIL or RCPT, so
// that a callback never sees those of an earlier command.
func (t *packetTap) takeArgs() []string {
	a := t.args
	t.args = nil
	return a
}
