package notrack

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// TestSegmentRoundTrip marshals segments, wraps them in an IPv4 header as a
// raw socket returns them, and parses them back; the checksum over the
// pseudo-header must verify (sum to zero).
func TestSegmentRoundTrip(t *testing.T) {
	src := netip.MustParseAddrPort("10.218.1.4:20001")
	dst := netip.MustParseAddrPort("10.218.1.2:80")
	for _, seg := range []Segment{
		{Src: src, Dst: dst, Seq: 1, Ack: 2, Flags: FlagACK},
		{Src: src, Dst: dst, Seq: 0xfffffffe, Ack: 7, Flags: FlagACK | FlagPSH, Payload: []byte("GET / HTTP/1.0\r\n\r\n")},
		{Src: dst, Dst: src, Flags: FlagRST, Payload: []byte("odd")},
	} {
		tcp := seg.marshal()
		s4, d4 := seg.Src.Addr().As4(), seg.Dst.Addr().As4()
		pseudo := append(append(append(s4[:], d4[:]...), 0, 6), byte(len(tcp)>>8), byte(len(tcp)))
		if c := checksum(append(pseudo, tcp...)); c != 0 {
			t.Errorf("%+v: checksum does not verify (%#x)", seg, c)
		}
		ip := make([]byte, 20, 20+len(tcp))
		ip[0], ip[9] = 0x45, 6
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		got, ok := parseSegment(append(ip, tcp...))
		if !ok {
			t.Fatalf("%+v: not parsed", seg)
		}
		if got.Src != seg.Src || got.Dst != seg.Dst || got.Seq != seg.Seq || got.Ack != seg.Ack ||
			got.Flags != seg.Flags || !bytes.Equal(got.Payload, seg.Payload) {
			t.Errorf("parsed %+v, want %+v", got, seg)
		}
	}
	for _, bad := range [][]byte{nil, make([]byte, 19), append([]byte{0x45, 0, 0, 0, 0, 0, 0, 0, 0, 17}, make([]byte, 30)...)} {
		if _, ok := parseSegment(bad); ok {
			t.Errorf("parseSegment(%x) accepted it", bad)
		}
	}
}

// TestAddPodInput checks AddPod's input before it touches the machine.
func TestAddPodInput(t *testing.T) {
	for _, tc := range []struct {
		name, pod, addr, want string
	}{
		{"name too long", "abcdefghijkl", "10.218.1.2", "want 1-11"},
		{"upper case", "Srv", "10.218.1.2", "want 1-11"},
		{"address outside the range", "srv", "10.219.1.2", "not in 10.218.0.0/16"},
		{"the gateway", "srv", "10.218.0.1", "or the gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := (&Bed{}).AddPod(tc.pod, netip.MustParseAddr(tc.addr))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("AddPod(%q, %s) = %v, want an error with %q", tc.pod, tc.addr, err, tc.want)
			}
		})
	}
}
