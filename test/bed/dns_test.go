package bed

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// The DNS server and client on loopback in the test's own netns: no pods,
// so most of it needs no root.

var testZone = DNSZone{
	"Svc.Example.":     {netip.MustParseAddr("10.0.0.7"), netip.MustParseAddr("fd00:1::7")},
	"v4only.example":   {netip.MustParseAddr("10.0.0.8")},
	"empty.example":    nil,
	"many.example":     manyAddrs(40),
	"mapped.example.":  {netip.MustParseAddr("::ffff:10.0.0.9")},
	"sub.svc.example.": {netip.MustParseAddr("10.0.0.10")},
}

func manyAddrs(n int) []netip.Addr {
	var out []netip.Addr
	a := netip.MustParseAddr("10.1.0.1")
	for range n {
		out = append(out, a)
		a = a.Next()
	}
	return out
}

// startLoopbackDNS serves zone on 127.0.0.1 (UDP and TCP, one port number
// each) until the test ends.
func startLoopbackDNS(t *testing.T, zone DNSZone) (udp, tcp netip.AddrPort) {
	t.Helper()
	table, err := zone.table()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); l.Close() })
	go serveDNSPackets(pc, table)
	go serveDNSStreams(l, table)
	return netip.MustParseAddrPort(pc.LocalAddr().String()), netip.MustParseAddrPort(l.Addr().String())
}

func TestDNSExchange(t *testing.T) {
	udp, tcp := startLoopbackDNS(t, testZone)
	tests := []struct {
		name    string
		family  Family
		want    []string
		wantErr error // nil: success
		errText string
	}{
		{name: "svc.example", family: IPv4, want: []string{"10.0.0.7"}},
		{name: "SVC.EXAMPLE.", family: IPv6, want: []string{"fd00:1::7"}},
		{name: "v4only.example", family: IPv6, want: nil},
		{name: "empty.example", family: IPv4, want: nil},
		{name: "mapped.example", family: IPv4, want: []string{"10.0.0.9"}},
		{name: "sub.svc.example", family: IPv4, want: []string{"10.0.0.10"}},
		{name: "missing.example", family: IPv4, wantErr: ErrNoSuchName},
		{name: "example", family: IPv4, wantErr: ErrNoSuchName},
		{name: "svc.example", family: Family(5), errText: "no question type"},
		{name: "bad..name", family: IPv4, errText: "name"},
	}
	for _, proto := range []string{UDP, TCP} {
		server := udp
		if proto == TCP {
			server = tcp
		}
		for _, tc := range tests {
			t.Run(proto+"/"+tc.name+"/"+tc.family.String(), func(t *testing.T) {
				got, err := exchangeLoopback(t, proto, server, tc.name, tc.family, 2*time.Second)
				switch {
				case tc.wantErr != nil || tc.errText != "":
					if err == nil {
						t.Fatalf("got %v, want an error", got)
					}
					if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
						t.Fatalf("error %v, want %v", err, tc.wantErr)
					}
					if !strings.Contains(err.Error(), tc.errText) {
						t.Fatalf("error %v, want it to mention %q", err, tc.errText)
					}
				case err != nil:
					t.Fatal(err)
				default:
					if !slices.Equal(addrStrings(got), tc.want) {
						t.Fatalf("got %v, want %v", got, tc.want)
					}
				}
			})
		}
	}
}

// TestDNSTruncation: 40 A records do not fit 512 bytes: UDP gets a
// truncated reply (an error to the client), TCP all of them.
func TestDNSTruncation(t *testing.T) {
	udp, tcp := startLoopbackDNS(t, testZone)
	if _, err := exchangeLoopback(t, UDP, udp, "many.example", IPv4, 2*time.Second); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("UDP: error %v, want a truncated reply", err)
	}
	got, err := exchangeLoopback(t, TCP, tcp, "many.example", IPv4, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 40 {
		t.Errorf("TCP: %d addresses, want 40", len(got))
	}
}

// TestDNSNoAnswer: a server that never answers is ErrNotConnected, over
// UDP (silence) and TCP (a refused connection and a silent one).
func TestDNSNoAnswer(t *testing.T) {
	silent, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	_, err = exchangeLoopback(t, UDP, netip.MustParseAddrPort(silent.LocalAddr().String()), "svc.example", IPv4, 700*time.Millisecond)
	if !errors.Is(err, ErrNotConnected) {
		t.Errorf("silent UDP server: %v, want ErrNotConnected", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("silent UDP server: gave up after %s, want about the timeout", d)
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accepted, never answered
		}
	}()
	if _, err := exchangeLoopback(t, TCP, netip.MustParseAddrPort(l.Addr().String()), "svc.example", IPv4, 700*time.Millisecond); !errors.Is(err, ErrNotConnected) {
		t.Errorf("silent TCP server: %v, want ErrNotConnected", err)
	}
	closed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(closed.Addr().String())
	closed.Close()
	if _, err := dialDNS(context.Background(), "tcp", addr); err == nil {
		t.Errorf("dial a closed TCP port: no error")
	}
}

// exchangeLoopback dials server over proto and asks one question.
func exchangeLoopback(t *testing.T, proto string, server netip.AddrPort, name string, f Family, timeout time.Duration) ([]netip.Addr, error) {
	t.Helper()
	ctx := context.Background()
	conn, err := dialDNS(ctx, proto, server)
	if err != nil {
		return nil, errors.Join(ErrNotConnected, err)
	}
	defer conn.Close()
	return exchangeDNS(ctx, conn, proto, name, f, time.Now().Add(timeout))
}

func addrStrings(addrs []netip.Addr) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

// TestAnswerDNSOddQueries: what is not a well-formed single question gets
// no answer or an error code, never a panic.
func TestAnswerDNSOddQueries(t *testing.T) {
	table, err := testZone.table()
	if err != nil {
		t.Fatal(err)
	}
	name := dnsmessage.MustNewName("svc.example.")
	pack := func(m dnsmessage.Message) []byte {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	q := dnsmessage.Question{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	tests := []struct {
		name      string
		query     []byte
		wantReply bool
		rcode     dnsmessage.RCode
	}{
		{"empty", nil, false, 0},
		{"short header", []byte{1, 2, 3}, false, 0},
		{"garbage query", []byte("0123456789abcdefghijklmnop"), true, dnsmessage.RCodeFormatError},
		{"garbage response", []byte(strings.Repeat("\xff", 30)), false, 0},
		{"a response", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 1, Response: true}, Questions: []dnsmessage.Question{q}}), false, 0},
		{"no question", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 2}}), true, dnsmessage.RCodeFormatError},
		{"two questions", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 3}, Questions: []dnsmessage.Question{q, q}}), true, dnsmessage.RCodeFormatError},
		{"truncated question", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 4}, Questions: []dnsmessage.Question{q}})[:15], true, dnsmessage.RCodeFormatError},
		{"opcode status", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 5, OpCode: 2}, Questions: []dnsmessage.Question{q}}), true, dnsmessage.RCodeNotImplemented},
		{"class chaos", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 6}, Questions: []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassCHAOS}}}), true, dnsmessage.RCodeRefused},
		{"type MX", pack(dnsmessage.Message{Header: dnsmessage.Header{ID: 7}, Questions: []dnsmessage.Question{{Name: name, Type: dnsmessage.TypeMX, Class: dnsmessage.ClassINET}}}), true, dnsmessage.RCodeSuccess},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reply, ok := answerDNS(tc.query, table, dnsMaxUDP)
			if ok != tc.wantReply {
				t.Fatalf("answered %v, want %v", ok, tc.wantReply)
			}
			if !ok {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(reply)
			if err != nil {
				t.Fatalf("reply does not parse: %v", err)
			}
			if !h.Response || h.RCode != tc.rcode {
				t.Errorf("reply header %+v, want a response with %s", h, tc.rcode)
			}
			if ans, _ := p.AllQuestions(); tc.rcode == dnsmessage.RCodeSuccess && len(ans) != 1 {
				t.Errorf("reply questions %v, want the one asked", ans)
			}
		})
	}
}

func TestDNSZoneValidation(t *testing.T) {
	tests := []struct {
		name string
		zone DNSZone
		want string // "" means valid
	}{
		{"ok", DNSZone{"a.example": {netip.MustParseAddr("10.0.0.1")}}, ""},
		{"no addresses", DNSZone{"a.example": nil}, ""},
		{"root", DNSZone{".": {netip.MustParseAddr("10.0.0.1")}}, "not a DNS name"},
		{"empty label", DNSZone{"a..example": {netip.MustParseAddr("10.0.0.1")}}, "not a DNS name"},
		{"too long", DNSZone{strings.Repeat("a", 300) + ".example": nil}, "not a DNS name"},
		{"invalid address", DNSZone{"a.example": {{}}}, "invalid address"},
		{"same name twice", DNSZone{"a.example": nil, "A.EXAMPLE.": nil}, "given twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.zone.table()
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// TestLookupDNS runs LookupDNS itself, from a "pod" that is this test's
// own netns (entering it needs root), against the loopback server.
func TestLookupDNS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (LookupDNS enters the pod's netns)")
	}
	udp, tcp := startLoopbackDNS(t, testZone)
	self := &Pod{Namespace: "test", Name: "self", NetnsPath: "/proc/self/ns/net"}
	ctx := context.Background()
	for proto, server := range map[string]netip.AddrPort{UDP: udp, TCP: tcp} {
		got, err := LookupDNS(ctx, self, server, proto, "svc.example", IPv4, 2*time.Second)
		if err != nil || !slices.Equal(addrStrings(got), []string{"10.0.0.7"}) {
			t.Errorf("%s: got %v, %v; want [10.0.0.7]", proto, got, err)
		}
	}
	for _, tc := range []struct {
		name   string
		from   *Pod
		server netip.AddrPort
		proto  string
		want   string
	}{
		{"no pod", nil, udp, UDP, "no source pod"},
		{"no server", self, netip.AddrPort{}, UDP, "invalid server"},
		{"port 0", self, netip.AddrPortFrom(udp.Addr(), 0), UDP, "invalid server"},
		{"protocol", self, udp, SCTP, "must be UDP or TCP"},
	} {
		_, err := LookupDNS(ctx, tc.from, tc.server, tc.proto, "svc.example", IPv4, time.Second)
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrNotConnected) {
			t.Errorf("%s: error %v, want one mentioning %q (not ErrNotConnected)", tc.name, err, tc.want)
		}
	}
}
