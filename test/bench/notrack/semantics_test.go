package notrack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podwall/podwall/daemon/dataplane"
)

// Timeouts of the probes: an allowed one gets long (the machine is shared),
// a denied one waits this long for what must not come.
const (
	allowedWait = 5 * time.Second
	deniedWait  = 500 * time.Millisecond
	// stallWait is how long a transfer that needs path MTU discovery may
	// take before it counts as stalled.
	stallWait = 1500 * time.Millisecond
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, veths, iptables")
	}
}

func newBed(t *testing.T) *Bed {
	t.Helper()
	b, err := NewBed()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// semanticBed is the server pod with its peers.
type semanticBed struct {
	bed *Bed
	// srv is the firewalled pod; cli is admitted by its ingress rules, den
	// is not; egr is admitted by its egress rules, fbd is not.
	srv, cli, den, egr, fbd *Pod
	srvTCP                  *TCPServer
}

func wait(allowed bool) time.Duration {
	if allowed {
		return allowedWait
	}
	return deniedWait
}

// isTimeout reports whether err says a connection attempt got no answer
// (its SYN was dropped) rather than a refusal.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// semanticCheck is one probe with the outcome each variant must give.
type semanticCheck struct {
	name string
	// allowed says whether the probe succeeds under a variant.
	allowed func(Variant) bool
	// probe returns nil when it succeeded; a denied probe must fail the way
	// a firewall that drops makes it fail (checked by probe itself).
	probe func(ctx context.Context, s *semanticBed, allowed bool) error
}

func every(Variant) bool { return true }

func only(vs ...Variant) func(Variant) bool {
	return func(v Variant) bool { return slices.Contains(vs, v) }
}

func except(vs ...Variant) func(Variant) bool {
	return func(v Variant) bool { return !slices.Contains(vs, v) }
}

// tcpProbe connects and echoes; a denied connection must time out.
func tcpProbe(from func(*semanticBed) *Pod, to func(*semanticBed) netip.AddrPort) func(context.Context, *semanticBed, bool) error {
	return func(ctx context.Context, s *semanticBed, allowed bool) error {
		err := TCPEcho(ctx, from(s), to(s), []byte("pwt-tcp-probe\n"), wait(allowed))
		if err != nil && !allowed && !isTimeout(err) {
			return fmt.Errorf("failed, but not by a timeout (the SYN was not just dropped): %w", err)
		}
		return err
	}
}

func udpProbe(from func(*semanticBed) *Pod, to func(*semanticBed) netip.AddrPort) func(context.Context, *semanticBed, bool) error {
	return func(_ context.Context, s *semanticBed, allowed bool) error {
		return UDPEcho(from(s), to(s), wait(allowed))
	}
}

// probePort is a source port for a raw segment: outside the ephemeral range
// (32768-60999), so that no socket of the sending pod owns it.
func probePort() uint16 { return uint16(20000 + rand.IntN(10000)) }

// rstProbe sends den -> srv:port a segment of an unknown connection (no
// handshake) from a raw socket and succeeds when srv answers with a RST.
func rstProbe(port uint16, flags uint8, payload string) func(context.Context, *semanticBed, bool) error {
	return func(_ context.Context, s *semanticBed, allowed bool) error {
		c, err := CaptureTCP(s.den)
		if err != nil {
			return err
		}
		defer c.Close()
		src := netip.AddrPortFrom(s.den.Addr, probePort())
		dst := netip.AddrPortFrom(s.srv.Addr, port)
		seg := Segment{Src: src, Dst: dst, Seq: rand.Uint32(), Ack: rand.Uint32(), Flags: flags, Payload: []byte(payload)}
		if err := SendSegment(s.den, seg); err != nil {
			return err
		}
		if _, ok := c.Wait(func(r Segment) bool { return r.Src == dst && r.Dst == src && r.Flags&FlagRST != 0 }, wait(allowed)); !ok {
			return errors.New("no RST came back")
		}
		return nil
	}
}

// rawEgressProbe sends srv -> fbd:8080 an ACK+PSH segment with data from a
// raw socket (no handshake) and succeeds when fbd's stack receives it.
func rawEgressProbe(_ context.Context, s *semanticBed, allowed bool) error {
	c, err := CaptureTCP(s.fbd)
	if err != nil {
		return err
	}
	defer c.Close()
	src := netip.AddrPortFrom(s.srv.Addr, probePort())
	dst := netip.AddrPortFrom(s.fbd.Addr, 8080)
	payload := fmt.Sprintf("pwt-exfil-%d", rand.Uint32())
	if err := SendSegment(s.srv, Segment{Src: src, Dst: dst, Seq: rand.Uint32(), Ack: rand.Uint32(), Flags: FlagACK | FlagPSH, Payload: []byte(payload)}); err != nil {
		return err
	}
	if _, ok := c.Wait(func(r Segment) bool { return r.Src == src && string(r.Payload) == payload }, wait(allowed)); !ok {
		return errors.New("the segment did not arrive")
	}
	return nil
}

// pmtuProbe echoes 256 KiB srv -> egr:8080; egr's host veth has MTU 1400,
// so srv's full-sized segments come back as ICMP "fragmentation needed"
// from the host, which srv must receive to lower its path MTU.
func pmtuProbe(ctx context.Context, s *semanticBed, allowed bool) error {
	timeout := stallWait
	if allowed {
		timeout = 10 * time.Second
	}
	c, err := DialTCP(ctx, s.srv, netip.AddrPortFrom(s.egr.Addr, 8080), allowedWait)
	if err != nil {
		return err
	}
	defer c.Close()
	return Echo(c, make([]byte, 256<<10), timeout)
}

var (
	srvPort = func(port uint16) func(*semanticBed) netip.AddrPort {
		return func(s *semanticBed) netip.AddrPort { return netip.AddrPortFrom(s.srv.Addr, port) }
	}
	egrPort = func(port uint16) func(*semanticBed) netip.AddrPort {
		return func(s *semanticBed) netip.AddrPort { return netip.AddrPortFrom(s.egr.Addr, port) }
	}
	fbdPort = func(port uint16) func(*semanticBed) netip.AddrPort {
		return func(s *semanticBed) netip.AddrPort { return netip.AddrPortFrom(s.fbd.Addr, port) }
	}
	fromSrv = func(s *semanticBed) *Pod { return s.srv }
	fromCli = func(s *semanticBed) *Pod { return s.cli }
	fromDen = func(s *semanticBed) *Pod { return s.den }
)

// rstAnswered are the variants under which the server's TCP stack sees
// segments of unknown connections from a denied peer, and answers them.
var rstAnswered = only(None, NoTrack, NoConntrack, NoTrackNoICMP)

var semanticChecks = []semanticCheck{
	{"allowed client -> server tcp/80", every, tcpProbe(fromCli, srvPort(80))},
	{"denied client -> server tcp/80 (SYN dropped: connect times out)", only(None), tcpProbe(fromDen, srvPort(80))},
	{"denied client bare ACK -> server tcp/80 answered by RST", rstAnswered, rstProbe(80, FlagACK, "")},
	{"denied client bare ACK -> server tcp/81 (listener bound to the pod's address) answered by RST", except(Podwall), rstProbe(81, FlagACK, "")},
	{"denied client data segment -> server tcp/80 answered by RST", rstAnswered, rstProbe(80, FlagACK|FlagPSH, "GET / HTTP/1.0\r\n\r\n")},
	{"server -> egress-allowed peer tcp/8080", every, tcpProbe(fromSrv, egrPort(8080))},
	{"server -> egress-denied peer tcp/8080 (SYN dropped)", only(None), tcpProbe(fromSrv, fbdPort(8080))},
	{"server -> egress-allowed peer udp/5353, reply back", except(NoConntrack), udpProbe(fromSrv, egrPort(5353))},
	{"server -> egress-denied peer udp/5353", only(None), udpProbe(fromSrv, fbdPort(5353))},
	{"allowed client -> server udp/5353, reply back through isolated egress", except(NoConntrack), udpProbe(fromCli, srvPort(5353))},
	{"denied client -> server udp/5353 (unsolicited)", only(None), udpProbe(fromDen, srvPort(5353))},
	{"server raw ACK+data segment without handshake -> egress-denied peer arrives", except(Podwall), rawEgressProbe},
	{"server -> egress-allowed peer 256 KiB over MTU 1400 (ICMP frag-needed from a non-node address)", except(NoTrackNoICMP), pmtuProbe},
}

// TestSemantics installs, one after the other in the server pod, every
// variant of SemanticSpec and probes it with real packets: each allowed
// probe has a denied twin, and None shows every probe can succeed. A
// connection opened before the first ruleset is carried through every
// switch; under each variant one connection of the admitted client
// outlives the client's removal from the policy while its new connections
// are refused.
func TestSemantics(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := &semanticBed{bed: newBed(t)}
	for _, p := range []struct {
		pod  **Pod
		name string
		last byte
	}{{&s.srv, "s-srv", 2}, {&s.cli, "s-cli", 3}, {&s.den, "s-den", 4}, {&s.egr, "s-egr", 5}, {&s.fbd, "s-fbd", 6}} {
		pod, err := s.bed.AddPod(p.name, netip.AddrFrom4([4]byte{10, 218, 1, p.last}))
		if err != nil {
			t.Fatal(err)
		}
		*p.pod = pod
	}
	if err := s.bed.SetHostMTU(s.egr, 1400); err != nil {
		t.Fatal(err)
	}
	var err error
	if s.srvTCP, err = ServeTCP(s.srv, 80, false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.srvTCP.Close() })
	bound, err := ServeTCP(s.srv, 81, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bound.Close() })
	for _, p := range []*Pod{s.srv, s.egr, s.fbd} {
		u, err := ServeUDP(p, 5353)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { u.Close() })
	}
	for _, p := range []*Pod{s.egr, s.fbd} {
		srv, err := ServeTCP(p, 8080, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}

	spec := SemanticSpec(s.cli.Addr, s.egr.Addr)
	// The same firewall with the client replaced by an address of no pod:
	// the same sets by name, other members.
	removed := SemanticSpec(netip.MustParseAddr("10.218.1.99"), s.egr.Addr)
	ping := []byte("ping\n")
	live, err := DialTCP(ctx, s.cli, srvPort(80)(s), allowedWait)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// Opened under NoTrack and carried to the last Podwall; on the second the
	// server speaks first.
	var liveNoTrack, pushNoTrack net.Conn
	defer func() {
		for _, c := range []net.Conn{liveNoTrack, pushNoTrack} {
			if c != nil {
				c.Close()
			}
		}
	}()

	sequence := []Variant{None, Podwall, NoTrack, NoTrackSocket, NoTrackNoICMP, NoConntrack, Podwall}
	for i, v := range sequence {
		gen := uint32(i + 1)
		t.Run(fmt.Sprintf("%d-%s", i, v), func(t *testing.T) {
			if err := Reset(s.srv); err != nil {
				t.Fatal(err)
			}
			rs, err := RenderVariant(v, spec, gen)
			if err != nil {
				t.Fatal(err)
			}
			if err := rs.Install(s.srv); err != nil {
				t.Fatal(err)
			}
			// Forget the path MTU learnt under the previous variant.
			if _, err := s.srv.Exec("", "ip", "route", "flush", "cache"); err != nil {
				t.Fatal(err)
			}
			if out, _ := s.srv.Exec("", "ip", "route", "get", s.egr.Addr.String()); strings.Contains(out, "mtu") {
				t.Fatalf("the server still has a path MTU for the peer: %s", out)
			}
			denBefore := s.srvTCP.Accepted(s.den.Addr)

			t.Run("probes", func(t *testing.T) {
				for _, c := range semanticChecks {
					t.Run(c.name, func(t *testing.T) {
						t.Parallel()
						want := c.allowed(v)
						err := c.probe(ctx, s, want)
						if (err == nil) != want {
							t.Errorf("%s: allowed=%t, want %t (%v)", v, err == nil, want, err)
						}
					})
				}
			})
			// Of the probes above only the plain connect from den may have
			// reached the server's accept queue (under None).
			if got, want := s.srvTCP.Accepted(s.den.Addr)-denBefore, map[bool]int{true: 1, false: 0}[v == None]; got != want {
				t.Errorf("%s: the server accepted %d connections from the denied client, want %d", v, got, want)
			}

			if v == NoTrack {
				rules, err := Save(s.srv)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("the server's ruleset under %s:\n%s", v, rules)
			}
			if slices.Contains([]Variant{NoTrack, NoTrackSocket, NoConntrack}, v) {
				// The frag-needed came in through the ICMP error rule.
				n, err := RuleCounter(s.srv, "-A PODWALL-INGRESS", "--icmp-type 3", "u32")
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					t.Errorf("%s: the ICMP destination-unreachable rule counted no packet", v)
				}
			}

			prev := "before any ruleset"
			if i > 0 {
				prev = "under " + string(sequence[i-1])
			}
			if err := Echo(live, ping, allowedWait); err != nil {
				t.Errorf("%s: the connection opened %s broke: %v", v, prev, err)
			}
			if v == NoTrack {
				if liveNoTrack, err = DialTCP(ctx, s.cli, srvPort(80)(s), allowedWait); err != nil {
					t.Fatal(err)
				}
				if pushNoTrack, err = DialTCP(ctx, s.cli, srvPort(80)(s), allowedWait); err != nil {
					t.Fatal(err)
				}
			}
			if liveNoTrack != nil && v != NoTrack {
				if err := Echo(liveNoTrack, ping, allowedWait); err != nil {
					t.Errorf("%s: the connection opened under notrack broke (client speaking first): %v", v, err)
				}
			}
			if pushNoTrack != nil && i == len(sequence)-1 {
				checkServerFirst(t, s, pushNoTrack, v)
			}
			if v != None {
				checkPeerRemoved(ctx, t, s, v, spec, removed, gen)
			}
		})
	}
}

// checkPeerRemoved opens a connection of the admitted client, removes the
// client from the server's sets as podwall applies a peer change (set swap),
// and checks that the connection still works while a new one times out;
// then it puts the client back.
func checkPeerRemoved(ctx context.Context, t *testing.T, s *semanticBed, v Variant, spec, removed dataplane.Spec, gen uint32) {
	t.Helper()
	conn, err := DialTCP(ctx, s.cli, srvPort(80)(s), allowedWait)
	if err != nil {
		t.Fatalf("%s: %v", v, err)
	}
	defer conn.Close()
	if err := Echo(conn, []byte("before\n"), allowedWait); err != nil {
		t.Fatalf("%s: %v", v, err)
	}
	swap := func(sp dataplane.Spec) {
		rs, err := RenderVariant(v, sp, gen)
		if err != nil {
			t.Fatal(err)
		}
		if err := SwapSets(s.srv, rs.Sets); err != nil {
			t.Fatal(err)
		}
	}
	swap(removed)
	if err := Echo(conn, []byte("after\n"), allowedWait); err != nil {
		t.Errorf("%s: an established connection of a peer removed from the policy broke: %v", v, err)
	}
	err = TCPEcho(ctx, s.cli, srvPort(80)(s), []byte("new\n"), deniedWait)
	if err == nil || !isTimeout(err) {
		t.Errorf("%s: a new connection of the removed peer: %v, want a timeout", v, err)
	}
	swap(spec)
	if err := TCPEcho(ctx, s.cli, srvPort(80)(s), []byte("back\n"), allowedWait); err != nil {
		t.Errorf("%s: the peer put back cannot connect: %v", v, err)
	}
}

// checkServerFirst writes on the server's side of conn, a connection opened
// under NoTrack on which nobody spoke since. Under Podwall (egress isolated)
// the server's segment is a conntrack NEW packet to a peer its egress rules
// do not admit: dropped, until the client speaks and conntrack picks the
// connection up from the client's side; the server's retransmission then
// goes through.
func checkServerFirst(t *testing.T, s *semanticBed, conn net.Conn, v Variant) {
	t.Helper()
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	server := s.srvTCP.Conn(netip.AddrPortFrom(local.Addr().Unmap(), local.Port()))
	if server == nil {
		t.Fatalf("the server has no connection from %s", local)
	}
	if _, err := server.Write([]byte("push\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	conn.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := conn.Read(buf); err == nil || !isTimeout(err) {
		t.Errorf("%s: the server spoke first on a connection opened under notrack: the client read %q (%v), want nothing within 1 s", v, buf[:n], err)
	}
	// The server's segment comes again with its retransmission timer
	// (backed off by then), after the client spoke.
	conn.SetDeadline(time.Now().Add(2 * allowedWait))
	defer conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	want := "push\nhello\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != want {
		t.Errorf("%s: after the client spoke it read %q (%v), want %q", v, got, err, want)
	}
}
