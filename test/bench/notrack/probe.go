package notrack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// TCPServer accepts TCP connections inside a pod and echoes what they send.
// It remembers every connection it accepted, by the client's address.
type TCPServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[netip.AddrPort]net.Conn
	from  map[netip.Addr]int
	wg    sync.WaitGroup
}

// ServeTCP starts an echo server on port of every address of p (a listener
// bound to the wildcard address), or of p.Addr only when bound is true.
func ServeTCP(p *Pod, port int, bound bool) (*TCPServer, error) {
	s := &TCPServer{conns: map[netip.AddrPort]net.Conn{}, from: map[netip.Addr]int{}}
	addr := fmt.Sprintf(":%d", port)
	if bound {
		addr = netip.AddrPortFrom(p.Addr, uint16(port)).String()
	}
	err := p.Do(func() (err error) {
		s.ln, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("serve tcp %s in %s: %w", addr, p.Netns, err)
	}
	s.wg.Go(s.accept)
	return s, nil
}

func (s *TCPServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		s.mu.Lock()
		s.conns[remote] = c
		s.from[remote.Addr()]++
		s.mu.Unlock()
		s.wg.Go(func() {
			io.Copy(c, c)
			c.Close()
		})
	}
}

// Accepted returns how many connections from addr the server accepted.
func (s *TCPServer) Accepted(addr netip.Addr) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.from[addr]
}

// Conn returns the server's side of the connection from remote.
func (s *TCPServer) Conn(remote netip.AddrPort) net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[remote]
}

// Close stops the server and closes its connections.
func (s *TCPServer) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

// UDPServer answers every datagram to port inside a pod with its content.
type UDPServer struct {
	pc net.PacketConn
	wg sync.WaitGroup
}

// ServeUDP starts a UDP echo server on port of every address of p.
func ServeUDP(p *Pod, port int) (*UDPServer, error) {
	s := &UDPServer{}
	err := p.Do(func() (err error) {
		s.pc, err = net.ListenPacket("udp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("serve udp/%d in %s: %w", port, p.Netns, err)
	}
	s.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := s.pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.pc.WriteTo(buf[:n], from)
		}
	})
	return s, nil
}

// Close stops the server.
func (s *UDPServer) Close() error {
	err := s.pc.Close()
	s.wg.Wait()
	return err
}

// HTTPServer serves "ok\n" for every request inside a pod, like the
// datapath benchmark's server.
type HTTPServer struct{ srv *http.Server }

// ServeHTTP starts an HTTP server on port of every address of p.
func ServeHTTP(p *Pod, port int) (*HTTPServer, error) {
	var ln net.Listener
	err := p.Do(func() (err error) {
		ln, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("serve http/%d in %s: %w", port, p.Netns, err)
	}
	s := &HTTPServer{srv: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})}}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server.
func (s *HTTPServer) Close() error { return s.srv.Close() }

// DialTCP connects from inside p to to.
func DialTCP(ctx context.Context, p *Pod, to netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var c net.Conn
	err := p.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp4", to.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect %s -> %s: %w", p, to, err)
	}
	return c, nil
}

// Echo writes msg on c and reads it back within timeout.
func Echo(c net.Conn, msg []byte, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, len(msg))
	_, rerr := io.ReadFull(c, got)
	if err := errors.Join(<-errc, rerr); err != nil {
		return fmt.Errorf("echo %d bytes over %s -> %s: %w", len(msg), c.LocalAddr(), c.RemoteAddr(), err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echo over %s -> %s: got other bytes back", c.LocalAddr(), c.RemoteAddr())
	}
	return nil
}

// TCPEcho connects from p to to, echoes msg and closes, all within timeout.
func TCPEcho(ctx context.Context, p *Pod, to netip.AddrPort, msg []byte, timeout time.Duration) error {
	start := time.Now()
	c, err := DialTCP(ctx, p, to, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return Echo(c, msg, max(timeout-time.Since(start), time.Millisecond))
}

// UDPEcho sends one datagram from p to to and waits for it to come back.
func UDPEcho(p *Pod, to netip.AddrPort, timeout time.Duration) error {
	var pc net.PacketConn
	err := p.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", ":0")
		return err
	})
	if err != nil {
		return fmt.Errorf("udp socket in %s: %w", p.Netns, err)
	}
	defer pc.Close()
	msg := []byte("pwt-udp-probe")
	if _, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(to)); err != nil {
		return fmt.Errorf("udp %s -> %s: %w", p, to, err)
	}
	pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 64)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		return fmt.Errorf("udp %s -> %s: no answer: %w", p, to, err)
	}
	if !bytes.Equal(buf[:n], msg) {
		return fmt.Errorf("udp %s -> %s: wrong answer %q", p, to, buf[:n])
	}
	return nil
}

// HTTPGet fetches http://to/ from inside p over a new connection.
func HTTPGet(ctx context.Context, p *Pod, to netip.AddrPort, timeout time.Duration) error {
	c, err := DialTCP(ctx, p, to, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", to); err != nil {
		return fmt.Errorf("http %s -> %s: %w", p, to, err)
	}
	resp, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("http %s -> %s: %w", p, to, err)
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("http %s -> %s: answer %q", p, to, resp)
	}
	return nil
}

// TCP flags of a segment.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
)

// Segment is an IPv4 TCP segment written or read on a raw socket.
type Segment struct {
	Src, Dst netip.AddrPort
	Seq, Ack uint32
	Flags    uint8
	Payload  []byte
}

// marshal returns the TCP header (20 bytes, window 64240) and payload, with
// the checksum over the IPv4 pseudo-header.
func (s Segment) marshal() []byte {
	b := make([]byte, 20+len(s.Payload))
	binary.BigEndian.PutUint16(b[0:], s.Src.Port())
	binary.BigEndian.PutUint16(b[2:], s.Dst.Port())
	binary.BigEndian.PutUint32(b[4:], s.Seq)
	binary.BigEndian.PutUint32(b[8:], s.Ack)
	b[12] = 5 << 4
	b[13] = s.Flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	copy(b[20:], s.Payload)
	src, dst := s.Src.Addr().As4(), s.Dst.Addr().As4()
	pseudo := append(append(append(src[:], dst[:]...), 0, unix.IPPROTO_TCP), byte(len(b)>>8), byte(len(b)))
	binary.BigEndian.PutUint16(b[16:], checksum(append(pseudo, b...)))
	return b
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// parseSegment reads an IPv4 packet holding a TCP segment, as a raw socket
// returns it.
func parseSegment(pkt []byte) (Segment, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != unix.IPPROTO_TCP {
		return Segment{}, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+20 {
		return Segment{}, false
	}
	t := pkt[ihl:]
	off := int(t[12]>>4) * 4
	if off < 20 || len(t) < off {
		return Segment{}, false
	}
	src, _ := netip.AddrFromSlice(pkt[12:16])
	dst, _ := netip.AddrFromSlice(pkt[16:20])
	return Segment{
		Src:     netip.AddrPortFrom(src, binary.BigEndian.Uint16(t[0:])),
		Dst:     netip.AddrPortFrom(dst, binary.BigEndian.Uint16(t[2:])),
		Seq:     binary.BigEndian.Uint32(t[4:]),
		Ack:     binary.BigEndian.Uint32(t[8:]),
		Flags:   t[13],
		Payload: bytes.Clone(t[off:]),
	}, true
}

// SendSegment sends seg from inside p on a raw socket: no handshake, no
// socket of p's TCP stack behind it. seg.Src must hold p's address.
func SendSegment(p *Pod, seg Segment) error {
	return p.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		if err != nil {
			return fmt.Errorf("raw socket in %s: %w", p.Netns, err)
		}
		defer unix.Close(fd)
		if err := unix.Sendto(fd, seg.marshal(), 0, &unix.SockaddrInet4{Addr: seg.Dst.Addr().As4()}); err != nil {
			return fmt.Errorf("send raw tcp %s -> %s from %s: %w", seg.Src, seg.Dst, p.Netns, err)
		}
		return nil
	})
}

// Capture receives copies of the TCP segments delivered to a pod's stack.
type Capture struct{ fd int }

// CaptureTCP opens a raw TCP socket inside p; it sees segments that passed
// the pod's INPUT chain.
func CaptureTCP(p *Pod) (*Capture, error) {
	c := &Capture{fd: -1}
	err := p.Do(func() (err error) {
		c.fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("capture in %s: %w", p.Netns, err)
	}
	tv := unix.NsecToTimeval(int64(20 * time.Millisecond))
	if err := unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(c.fd)
		return nil, fmt.Errorf("capture in %s: %w", p.Netns, err)
	}
	return c, nil
}

// Wait returns the first segment match accepts within timeout.
func (c *Capture) Wait(match func(Segment) bool, timeout time.Duration) (Segment, bool) {
	buf := make([]byte, 65536)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue // EAGAIN at each receive timeout, EINTR
		}
		if seg, ok := parseSegment(buf[:n]); ok && match(seg) {
			return seg, true
		}
	}
	return Segment{}, false
}

// Close closes the raw socket.
func (c *Capture) Close() error { return unix.Close(c.fd) }
