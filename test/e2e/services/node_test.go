package servicese2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// addedHostAddr is the address TestNodeProbe adds to the host.
var addedHostAddr = netip.MustParseAddr("10.217.255.1")

// TestNodeProbe: under a default-deny ingress policy a TCP connection from
// the node (the host netns, IPv4 and IPv6) reaches the pod, one from
// another pod does not. An address the node gains later (10.217.255.1 on
// the dummy link sv-dummy0) is allowed in once podwalld has noticed it, and
// no longer once it is gone.
//
// Before the address exists and after it is gone, the host sends a UDP
// datagram with that source anyway (an IP_TRANSPARENT socket), and a raw
// socket inside the pod, which sees a packet only after it passed the pod's
// INPUT chain, tells whether podwall let it in. Nothing can answer it: the
// range is blackholed on the host while the test runs.
func TestNodeProbe(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-node"
	s.namespace(ns, nil)
	pods := s.run(
		podObject(ns, "target", map[string]string{"app": "target"}, tcpPort("http", 8080)),
		podObject(ns, "peer", map[string]string{"role": "peer"}),
	)
	target, peer := pods[0], pods[1]
	s.policy(ingressPolicy(ns, "default-deny-ingress", nil))
	for _, f := range families {
		s.expectClosed("another pod under default-deny "+f.String(), peer, s.podIP(target, f), 8080, "TCP")
		dst := netip.AddrPortFrom(s.podIP(target, f), 8080)
		if line, err := hostDialLine(s.ctx, netip.Addr{}, dst); err != nil {
			t.Errorf("node -> %s %s: %v", target, dst, err)
		} else if line != served(target) {
			t.Errorf("node -> %s %s: answered %q, want %q", target, dst, line, served(target))
		}
	}

	addBlackhole(t, addedHostRange)
	rx, err := listenUDPInNetns(target)
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	// The receiver works: a datagram from the node's own address gets in.
	if !rx.arrives(t, func(payload []byte) error { return sendUDP(netip.Addr{}, target.IPv4(), payload) }) {
		t.Fatalf("a UDP datagram from the node's address never reached %s's raw receiver", target)
	}
	spoofed := func(payload []byte) error { return sendUDP(addedHostAddr, target.IPv4(), payload) }
	if rx.arrives(t, spoofed) {
		t.Errorf("a datagram from %s got into %s before the node had that address", addedHostAddr, target)
	}

	added := time.Now()
	link := addDummyAddr(t, addedHostAddr)
	err = harness.Poll(s.ctx, convergeWithin, 250*time.Millisecond, func() error {
		_, err := hostDialLine(s.ctx, addedHostAddr, netip.AddrPortFrom(target.IPv4(), 8080))
		return err
	})
	if err != nil {
		t.Errorf("node -> %s from its new address %s: %v", target, addedHostAddr, err)
	} else {
		t.Logf("new node address %s allowed into %s %s after it was added", addedHostAddr, target, time.Since(added).Round(10*time.Millisecond))
	}
	s.expectClosed("another pod, after the node gained an address", peer, target.IPv4(), 8080, "TCP")

	if err := netlink.LinkDel(link); err != nil {
		t.Fatalf("delete %s: %v", dummyLink, err)
	}
	removed := time.Now()
	err = harness.Poll(s.ctx, convergeWithin, 250*time.Millisecond, func() error {
		if rx.arrives(t, spoofed) {
			return fmt.Errorf("datagrams from %s still get in", addedHostAddr)
		}
		return nil
	})
	if err != nil {
		t.Errorf("after %s left the node: %v", addedHostAddr, err)
	} else {
		t.Logf("removed node address %s seen denied again %s after it was removed (each check takes 2 s)", addedHostAddr, time.Since(removed).Round(10*time.Millisecond))
	}
}

// hostDialLine connects from the host netns (from local when valid) to dst
// and returns the server's line.
func hostDialLine(ctx context.Context, local netip.Addr, dst netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	d := net.Dialer{}
	if local.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
	}
	c, err := d.DialContext(ctx, "tcp", dst.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetReadDeadline(deadline)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

// sendUDP sends payload from the host netns to dst's discard port (9,
// nobody listens), from src when valid: an IP_TRANSPARENT socket, so src
// need not be the host's.
func sendUDP(src, dst netip.Addr, payload []byte) error {
	lc := net.ListenConfig{}
	local := "0.0.0.0:0"
	if src.IsValid() {
		local = netip.AddrPortFrom(src, 0).String()
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			})
			return errors.Join(err, serr)
		}
	}
	c, err := lc.ListenPacket(context.Background(), "udp4", local)
	if err != nil {
		return fmt.Errorf("udp socket from %s: %w", local, err)
	}
	defer c.Close()
	_, err = c.WriteTo(payload, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	return err
}

// udpReceiver is a raw IPv4 UDP socket inside a pod's netns: the kernel
// hands it the UDP packets that passed the pod's INPUT chain.
type udpReceiver struct {
	conn *net.IPConn

	mu   sync.Mutex
	seen [][]byte
	got  chan struct{} // poked on every packet
}

func listenUDPInNetns(p *bed.Pod) (*udpReceiver, error) {
	var conn *net.IPConn
	err := ns.WithNetNSPath(p.NetnsPath, func(ns.NetNS) error {
		var err error
		conn, err = net.ListenIP("ip4:udp", nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw UDP receiver in %s: %w", p, err)
	}
	r := &udpReceiver{conn: conn, got: make(chan struct{}, 1)}
	go r.receive()
	return r, nil
}

func (r *udpReceiver) receive() {
	buf := make([]byte, 64<<10)
	for {
		n, _, err := r.conn.ReadFrom(buf) // the IPv4 header is stripped
		if err != nil {
			return
		}
		r.mu.Lock()
		r.seen = append(r.seen, append([]byte(nil), buf[:n]...))
		r.mu.Unlock()
		select {
		case r.got <- struct{}{}:
		default:
		}
	}
}

// arrives sends a fresh token with send four times over two seconds and
// reports whether the receiver saw it.
func (r *udpReceiver) arrives(t *testing.T, send func([]byte) error) bool {
	t.Helper()
	token := make([]byte, 16)
	rand.Read(token)
	payload := []byte("podwall-sv-" + hex.EncodeToString(token))
	deadline := time.After(2 * time.Second)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := send(payload); err != nil {
			t.Fatalf("send: %v", err)
		}
		r.mu.Lock()
		for _, pkt := range r.seen {
			if bytes.Contains(pkt, payload) {
				r.mu.Unlock()
				return true
			}
		}
		r.mu.Unlock()
		select {
		case <-deadline:
			return false
		case <-tick.C:
		case <-r.got:
		}
	}
}

func (r *udpReceiver) Close() error { return r.conn.Close() }

// addBlackhole adds a host blackhole route for p until the test ends.
func addBlackhole(t *testing.T, p netip.Prefix) {
	t.Helper()
	route := &netlink.Route{
		Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Type:     unix.RTN_BLACKHOLE,
		Priority: 4244,
		Table:    unix.RT_TABLE_MAIN,
	}
	if err := netlink.RouteAdd(route); err != nil {
		t.Fatalf("host blackhole route %s: %v", p, err)
	}
	t.Cleanup(func() {
		if err := netlink.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
			t.Errorf("delete host blackhole route %s: %v", p, err)
		}
	})
}

// addDummyAddr creates the host link dummyLink (a dummy, or an empty
// bridge where the kernel has no dummy driver) holding a (/32), up, and
// deletes it when the test ends (unless the test did).
func addDummyAddr(t *testing.T, a netip.Addr) netlink.Link {
	t.Helper()
	var link netlink.Link = &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: dummyLink}}
	err := netlink.LinkAdd(link)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// A kernel without the dummy driver: a bridge without ports holds
		// a local address just as well.
		t.Logf("no dummy links on this kernel (%v): %s is an empty bridge", err, dummyLink)
		link = &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: dummyLink}}
		err = netlink.LinkAdd(link)
	}
	if err != nil {
		t.Fatalf("add link %s: %v", dummyLink, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(dummyLink); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete link %s: %v", dummyLink, err)
			}
		}
	})
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil {
		t.Fatalf("add %s to %s: %v", a, dummyLink, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatalf("bring %s up: %v", dummyLink, err)
	}
	return link
}
