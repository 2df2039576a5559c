package bed

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net"
	"net/netip"
	"sync"
)

// SCTP without SCTP sockets: a probe sends an SCTP INIT from a raw IP socket
// (protocol 132) in the source netns; a raw socket of protocol 132 in the
// destination netns receives it, and the kernel hands it that packet only
// after it passed the destination's INPUT chain. Each probe's INIT carries a
// random initiate tag; the receiver reports the tags it sees to the bed, which
// wakes the probe waiting for it. Matching by tag, not by address, means a
// probe also sees its INIT arrive when something on the way (kube-proxy) has
// rewritten the destination.

const (
	sctpHeaderLen   = 12
	sctpInitLen     = 20
	sctpChunkInit   = 1
	sctpMaxSeenKept = 1024
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SCTPPacket is an SCTP INIT a pod's receiver got.
type SCTPPacket struct {
	Source netip.Addr
	Port   int // destination port
}

// renderSCTPInit returns an SCTP packet (common header + INIT chunk) from
// srcPort to dstPort with the given initiate tag, and its CRC32c checksum.
func renderSCTPInit(srcPort, dstPort uint16, tag uint32) []byte {
	b := make([]byte, sctpHeaderLen+sctpInitLen)
	binary.BigEndian.PutUint16(b[0:], srcPort)
	binary.BigEndian.PutUint16(b[2:], dstPort)
	// b[4:8]: verification tag, 0 in a packet carrying INIT (RFC 9260 8.5.1).
	// b[8:12]: checksum, computed last.
	c := b[sctpHeaderLen:]
	c[0] = sctpChunkInit
	c[1] = 0 // flags
	binary.BigEndian.PutUint16(c[2:], sctpInitLen)
	binary.BigEndian.PutUint32(c[4:], tag)    // initiate tag, never 0
	binary.BigEndian.PutUint32(c[8:], 65535)  // advertised receiver window credit
	binary.BigEndian.PutUint16(c[12:], 1)     // outbound streams
	binary.BigEndian.PutUint16(c[14:], 1)     // maximum inbound streams
	binary.BigEndian.PutUint32(c[16:], tag^1) // initial TSN
	putSCTPChecksum(b)
	return b
}

// putSCTPChecksum writes the CRC32c of the packet (with the checksum field
// zero) into it. SCTP stores the CRC32c least significant byte first (RFC 9260
// appendix A; Linux: cpu_to_le32).
func putSCTPChecksum(b []byte) {
	binary.LittleEndian.PutUint32(b[8:], 0)
	binary.LittleEndian.PutUint32(b[8:], crc32.Checksum(b, castagnoli))
}

// parseSCTPInit returns the destination port and initiate tag of an SCTP
// packet whose first chunk is an INIT with a valid checksum.
func parseSCTPInit(b []byte) (port uint16, tag uint32, ok bool) {
	if len(b) < sctpHeaderLen+sctpInitLen || b[sctpHeaderLen] != sctpChunkInit {
		return 0, 0, false
	}
	sum := binary.LittleEndian.Uint32(b[8:])
	c := make([]byte, len(b))
	copy(c, b)
	binary.LittleEndian.PutUint32(c[8:], 0)
	if crc32.Checksum(c, castagnoli) != sum {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(b[2:]), binary.BigEndian.Uint32(b[sctpHeaderLen+4:]), true
}

// receiveSCTP reads SCTP packets from a raw socket in the pod's netns until
// it is closed, recording INITs to ports the pod serves and reporting them to
// the bed's waiting probes.
func (p *Pod) receiveSCTP(c *net.IPConn) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFrom(buf) // IPv4 header stripped by package net
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		port, tag, ok := parseSCTPInit(buf[:n])
		if !ok {
			continue
		}
		src, _ := netip.AddrFromSlice(from.(*net.IPAddr).IP)
		p.mu.Lock()
		served := p.sctpPorts[int(port)]
		if served {
			p.sctpSeen = append(p.sctpSeen, SCTPPacket{Source: src.Unmap(), Port: int(port)})
			if len(p.sctpSeen) > sctpMaxSeenKept {
				p.sctpSeen = p.sctpSeen[len(p.sctpSeen)-sctpMaxSeenKept:]
			}
		}
		p.mu.Unlock()
		if served {
			p.bed.sctp.deliver(tag)
		}
	}
}

// SCTPReceived returns the SCTP INITs to served ports the pod received (the
// last 1024), oldest first.
func (p *Pod) SCTPReceived() []SCTPPacket {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]SCTPPacket(nil), p.sctpSeen...)
}

// sctpWaiters are the SCTP probes waiting for their INIT to arrive, by
// initiate tag.
type sctpWaiters struct {
	mu sync.Mutex
	m  map[uint32]chan struct{}
}

func (w *sctpWaiters) init() { w.m = map[uint32]chan struct{}{} }

// register returns a fresh non-zero tag and a channel closed when an INIT with
// that tag arrives at a pod serving its port.
func (w *sctpWaiters) register() (uint32, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		var b [4]byte
		rand.Read(b[:])
		tag := binary.BigEndian.Uint32(b[:])
		if _, taken := w.m[tag]; tag == 0 || taken {
			continue
		}
		ch := make(chan struct{})
		w.m[tag] = ch
		return tag, ch
	}
}

func (w *sctpWaiters) unregister(tag uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, tag)
}

func (w *sctpWaiters) deliver(tag uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.m[tag]; ok {
		close(ch)
		delete(w.m, tag)
	}
}
