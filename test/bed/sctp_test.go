package bed

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestSCTPChecksumByteOrder(t *testing.T) {
	// RFC 3720 B.4: the CRC32c of 32 zero bytes is 0x8a9136aa and goes on the
	// wire as aa 36 91 8a; SCTP uses the same CRC and byte order.
	pkt := make([]byte, 32)
	putSCTPChecksum(pkt)
	if got, want := pkt[8:12], []byte{0xaa, 0x36, 0x91, 0x8a}; !bytes.Equal(got, want) {
		t.Errorf("checksum bytes % x, want % x", got, want)
	}
}

func TestSCTPInitRoundTrip(t *testing.T) {
	pkt := renderSCTPInit(40000, 80, 0xdeadbeef)
	if len(pkt) != 32 {
		t.Fatalf("INIT is %d bytes, want 32", len(pkt))
	}
	if got := binary.BigEndian.Uint32(pkt[4:8]); got != 0 {
		t.Errorf("verification tag %#x, want 0 in an INIT", got)
	}
	port, tag, ok := parseSCTPInit(pkt)
	if !ok || port != 80 || tag != 0xdeadbeef {
		t.Errorf("parse = (%d, %#x, %v), want (80, 0xdeadbeef, true)", port, tag, ok)
	}

	tests := []struct {
		name   string
		mangle func([]byte) []byte
	}{
		{"bad checksum", func(b []byte) []byte { b[8] ^= 1; return b }},
		{"payload changed", func(b []byte) []byte { b[20] ^= 1; return b }},
		{"not an INIT", func(b []byte) []byte { b[12] = 2; putSCTPChecksum(b); return b }},
		{"truncated", func(b []byte) []byte { return b[:20] }},
		{"empty", func([]byte) []byte { return nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mangle(renderSCTPInit(40000, 80, 0xdeadbeef))
			if _, _, ok := parseSCTPInit(b); ok {
				t.Error("accepted")
			}
		})
	}
}

func TestSCTPWaiters(t *testing.T) {
	var w sctpWaiters
	w.init()
	tag1, ch1 := w.register()
	tag2, ch2 := w.register()
	if tag1 == 0 || tag2 == 0 || tag1 == tag2 {
		t.Fatalf("tags %#x %#x: want distinct and non-zero", tag1, tag2)
	}
	w.deliver(tag2)
	w.deliver(tag2) // a retransmission: no double close
	select {
	case <-ch2:
	default:
		t.Error("waiter 2 not woken")
	}
	select {
	case <-ch1:
		t.Error("waiter 1 woken by another tag")
	default:
	}
	w.unregister(tag1)
	w.deliver(tag1)
}
