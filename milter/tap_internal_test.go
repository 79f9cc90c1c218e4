package milter

import (
	"encoding/binary"
	"reflect"
	"testing"
)

func packet(code byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, code), data...)
}

// TestTapFraming feeds packets in every split and checks what the tap
// learns, including after a packet whose code byte is 0.
func TestTapFraming(t *testing.T) {
	optneg := string(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 6), 0x1ff), 0x1fffff))
	var stream []byte
	stream = append(stream, packet('O', optneg)...)
	stream = append(stream, packet(0, "zz")...)
	stream = append(stream, packet('B', "body with \x00 M and R bytes")...)
	stream = append(stream, packet('M', "<a@example.org>\x00SIZE=10\x00BODY=8BITMIME\x00")...)
	for step := 1; step <= len(stream); step++ {
		var tap packetTap
		for i := 0; i < len(stream); i += step {
			tap.feed(stream[i:min(i+step, len(stream))])
		}
		if !tap.atBoundary() || !tap.sawOptNeg || tap.offeredProto != 0x1fffff {
			t.Fatalf("step %d: boundary %v optneg %v %#x", step, tap.atBoundary(), tap.sawOptNeg, tap.offeredProto)
		}
		if got := tap.takeArgs(); !reflect.DeepEqual(got, []string{"SIZE=10", "BODY=8BITMIME"}) {
			t.Fatalf("step %d: args %q", step, got)
		}
		if tap.takeArgs() != nil {
			t.Fatalf("step %d: args not forgotten", step)
		}
	}
}
