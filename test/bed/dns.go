package bed

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// A small DNS server and client for pods, enough to play kube-dns: the
// server answers A and AAAA questions from a fixed zone over UDP and TCP
// (RFC 1035 4.2: a datagram per message, or a two-byte length before each
// message on a stream); the client asks one question from inside a pod's
// netns. Neither recurses, compresses names in what it writes, nor speaks
// EDNS.

// dnsTTL is the TTL of every answer, in seconds.
const dnsTTL = 30

// dnsMaxUDP is the largest DNS message over UDP without EDNS (RFC 1035).
const dnsMaxUDP = 512

// dnsStreamTimeout bounds how long a TCP connection of the server may stay
// idle between two messages.
const dnsStreamTimeout = 5 * time.Second

// ErrNoSuchName is wrapped by LookupDNS's error when the server answers
// NXDOMAIN.
var ErrNoSuchName = errors.New("no such name")

// DNSZone is what a DNS server knows: names (any case, with or without the
// final dot) and their addresses, IPv4 ones answering A questions and IPv6
// ones AAAA questions. A name in the zone without addresses of the asked
// family gets an empty answer; a name not in it, NXDOMAIN.
type DNSZone map[string][]netip.Addr

// dnsTable is a DNSZone keyed by canonical name.
type dnsTable map[string][]netip.Addr

// canonicalDNSName lowercases name and ends it with a dot.
func canonicalDNSName(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// parseDNSName returns name (canonical) as a DNS name, checking that it
// fits the wire format (labels of 1-63 bytes, 255 in all).
func parseDNSName(name string) (dnsmessage.Name, error) {
	n, err := dnsmessage.NewName(name)
	if err != nil {
		return n, err
	}
	q := dnsmessage.Question{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	if _, err := (&dnsmessage.Message{Questions: []dnsmessage.Question{q}}).Pack(); err != nil {
		return n, err
	}
	return n, nil
}

// table validates the zone and returns it keyed by canonical name.
func (z DNSZone) table() (dnsTable, error) {
	t := dnsTable{}
	for name, addrs := range z {
		canon := canonicalDNSName(name)
		if _, err := parseDNSName(canon); err != nil || canon == "." {
			return nil, fmt.Errorf("zone name %q: not a DNS name", name)
		}
		if _, dup := t[canon]; dup {
			return nil, fmt.Errorf("zone name %q given twice", name)
		}
		for _, a := range addrs {
			if !a.IsValid() {
				return nil, fmt.Errorf("zone name %q: invalid address", name)
			}
			t[canon] = append(t[canon], a.Unmap())
		}
		if len(addrs) == 0 {
			t[canon] = nil
		}
	}
	return t, nil
}

// ServeDNS starts a DNS server for zone on port, over UDP and TCP, for each
// address family of the pod, inside its netns, until DelPod or Close. The
// port must not be served otherwise (the kubelet stand-in serves container
// ports: leave them out of the pod's spec).
func (p *Pod) ServeDNS(port int, zone DNSZone) error {
	if err := checkPort(port); err != nil {
		return fmt.Errorf("serve dns on %s: %w", p, err)
	}
	table, err := zone.table()
	if err != nil {
		return fmt.Errorf("serve dns on %s: %w", p, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted {
		return fmt.Errorf("serve dns on %s: pod deleted", p)
	}
	var opened []io.Closer
	var starts []func()
	err = inNetns(p.NetnsPath, func() error {
		for _, f := range p.Families() {
			c, err := net.ListenPacket(udpNet(f), ":"+strconv.Itoa(port))
			if err != nil {
				return fmt.Errorf("%d/UDP %s: %w", port, f, err)
			}
			opened = append(opened, c)
			starts = append(starts, func() { go serveDNSPackets(c, table) })
			l, err := net.Listen(tcpNet(f), ":"+strconv.Itoa(port))
			if err != nil {
				return fmt.Errorf("%d/TCP %s: %w", port, f, err)
			}
			opened = append(opened, l)
			starts = append(starts, func() { go serveDNSStreams(l, table) })
		}
		return nil
	})
	if err != nil {
		for _, c := range opened {
			c.Close()
		}
		return fmt.Errorf("serve dns on %s: %w", p, err)
	}
	p.servers = append(p.servers, opened...)
	for _, start := range starts {
		start()
	}
	return nil
}

// serveDNSPackets answers every query datagram c receives until c is
// closed; what is not a query is dropped.
func serveDNSPackets(c net.PacketConn, t dnsTable) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if reply, ok := answerDNS(buf[:n], t, dnsMaxUDP); ok {
			c.WriteTo(reply, from)
		}
	}
}

// serveDNSStreams serves every connection l accepts until l is closed.
func serveDNSStreams(l net.Listener, t dnsTable) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serveDNSStream(c, t)
	}
}

// serveDNSStream answers length-prefixed queries on c until the client
// closes it, stays idle too long, or sends something that is not a query.
func serveDNSStream(c net.Conn, t dnsTable) {
	defer c.Close()
	for {
		c.SetDeadline(time.Now().Add(dnsStreamTimeout))
		query, err := readDNSStream(c)
		if err != nil {
			return
		}
		reply, ok := answerDNS(query, t, 0)
		if !ok {
			return
		}
		if err := writeDNSStream(c, reply); err != nil {
			return
		}
	}
}

// readDNSStream reads one length-prefixed message.
func readDNSStream(r io.Reader) ([]byte, error) {
	var size [2]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(size[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

// writeDNSStream writes msg with its length before it, in one write.
func writeDNSStream(w io.Writer, msg []byte) error {
	if len(msg) > 0xffff {
		return fmt.Errorf("dns message of %d bytes is too long for a stream", len(msg))
	}
	b := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(b, uint16(len(msg)))
	copy(b[2:], msg)
	_, err := w.Write(b)
	return err
}

// answerDNS returns the reply to query from t, and false when query is not
// a query worth an answer (a reply, unparsable). A query with other than
// one question, a class other than IN or an opcode other than QUERY gets
// FORMERR, NOTIMP or REFUSED as fits; a question other than A or AAAA for
// a known name an empty answer. With limit > 0 (UDP) a reply longer than
// limit is sent truncated (TC set, no answers).
func answerDNS(query []byte, t dnsTable, limit int) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil, false
	}
	reply := dnsmessage.Message{Header: dnsmessage.Header{
		ID: h.ID, Response: true, OpCode: h.OpCode, Authoritative: true, RecursionDesired: h.RecursionDesired,
	}}
	questions, err := p.AllQuestions()
	switch {
	case err != nil:
		reply.RCode = dnsmessage.RCodeFormatError
		return packDNS(reply, limit)
	case h.OpCode != 0:
		reply.RCode = dnsmessage.RCodeNotImplemented
		return packDNS(reply, limit)
	case len(questions) != 1:
		reply.RCode = dnsmessage.RCodeFormatError
		return packDNS(reply, limit)
	}
	q := questions[0]
	reply.Questions = questions
	if q.Class != dnsmessage.ClassINET {
		reply.RCode = dnsmessage.RCodeRefused
		return packDNS(reply, limit)
	}
	addrs, known := t[strings.ToLower(q.Name.String())]
	if !known {
		reply.RCode = dnsmessage.RCodeNameError
		return packDNS(reply, limit)
	}
	for _, a := range addrs {
		rh := dnsmessage.ResourceHeader{Name: q.Name, Type: q.Type, Class: dnsmessage.ClassINET, TTL: dnsTTL}
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			reply.Answers = append(reply.Answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AResource{A: a.As4()}})
		case q.Type == dnsmessage.TypeAAAA && a.Is6():
			reply.Answers = append(reply.Answers, dnsmessage.Resource{Header: rh, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
		}
	}
	return packDNS(reply, limit)
}

// packDNS packs m, truncating it to its header and question when it is
// longer than limit (> 0).
func packDNS(m dnsmessage.Message, limit int) ([]byte, bool) {
	b, err := m.Pack()
	if err != nil {
		return nil, false
	}
	if limit > 0 && len(b) > limit {
		m.Answers, m.Truncated = nil, true
		if b, err = m.Pack(); err != nil {
			return nil, false
		}
	}
	return b, true
}

// dnsQuestionType is the question type for the addresses of family f.
func dnsQuestionType(f Family) (dnsmessage.Type, error) {
	switch f {
	case IPv4:
		return dnsmessage.TypeA, nil
	case IPv6:
		return dnsmessage.TypeAAAA, nil
	}
	return 0, fmt.Errorf("no question type for %s", f)
}

// LookupDNS asks the DNS server at server, from inside from's netns over
// proto (UDP, resending every 250 ms, or TCP), for name's addresses of
// family (an A or AAAA question), and returns the answer's addresses (none
// is a valid answer). No answer within timeout (blocked, refused, silent)
// is an error wrapping ErrNotConnected; NXDOMAIN one wrapping
// ErrNoSuchName; another error code or a malformed reply is an error
// wrapping neither.
func LookupDNS(ctx context.Context, from *Pod, server netip.AddrPort, proto, name string, family Family, timeout time.Duration) ([]netip.Addr, error) {
	if from == nil {
		return nil, errors.New("dns lookup: no source pod")
	}
	if !server.IsValid() || server.Port() == 0 {
		return nil, fmt.Errorf("dns lookup from %s: invalid server %s", from, server)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("dns lookup from %s: timeout %s must be positive", from, timeout)
	}
	var conn net.Conn
	var dialErr error
	deadline := time.Now().Add(timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := inNetns(from.NetnsPath, func() error {
		conn, dialErr = dialDNS(dialCtx, proto, server)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("dns lookup from %s: %w", from, err)
	}
	if dialErr != nil {
		if errors.Is(dialErr, errDNSProtocol) {
			return nil, fmt.Errorf("dns lookup from %s: %w", from, dialErr)
		}
		return nil, fmt.Errorf("dns lookup %s from %s via %s/%s: %w: %v", name, from, server, proto, ErrNotConnected, dialErr)
	}
	defer conn.Close()
	addrs, err := exchangeDNS(ctx, conn, proto, name, family, deadline)
	if err != nil {
		return nil, fmt.Errorf("dns lookup %s from %s via %s/%s: %w", name, from, server, proto, err)
	}
	return addrs, nil
}

var errDNSProtocol = errors.New("dns protocol must be UDP or TCP")

// dialDNS connects to server over proto ("UDP" or "TCP", any case).
func dialDNS(ctx context.Context, proto string, server netip.AddrPort) (net.Conn, error) {
	var network string
	switch strings.ToUpper(proto) {
	case UDP:
		network = "udp"
	case TCP:
		network = "tcp"
	default:
		return nil, fmt.Errorf("%w, not %q", errDNSProtocol, proto)
	}
	return (&net.Dialer{}).DialContext(ctx, network, server.String())
}

// exchangeDNS asks name's question of family on conn (a UDP or TCP
// connection to the server, as proto says) and returns the answer's
// addresses, waiting until deadline.
func exchangeDNS(ctx context.Context, conn net.Conn, proto, name string, family Family, deadline time.Time) ([]netip.Addr, error) {
	qtype, err := dnsQuestionType(family)
	if err != nil {
		return nil, err
	}
	qname, err := parseDNSName(canonicalDNSName(name))
	if err != nil {
		return nil, fmt.Errorf("name %q: %w", name, err)
	}
	var id [2]byte
	rand.Read(id[:])
	q := dnsmessage.Question{Name: qname, Type: qtype, Class: dnsmessage.ClassINET}
	query, err := (&dnsmessage.Message{
		Header:    dnsmessage.Header{ID: binary.BigEndian.Uint16(id[:]), RecursionDesired: true},
		Questions: []dnsmessage.Question{q},
	}).Pack()
	if err != nil {
		return nil, fmt.Errorf("pack query: %w", err)
	}
	var reply []byte
	if strings.EqualFold(proto, TCP) {
		reply, err = exchangeDNSStream(conn, query, deadline)
	} else {
		reply, err = exchangeDNSPacket(ctx, conn, query, deadline)
	}
	if err != nil {
		return nil, err
	}
	return parseDNSReply(reply, binary.BigEndian.Uint16(id[:]), q)
}

// exchangeDNSStream writes query on a stream and reads one reply.
func exchangeDNSStream(conn net.Conn, query []byte, deadline time.Time) ([]byte, error) {
	conn.SetDeadline(deadline)
	if err := writeDNSStream(conn, query); err != nil {
		return nil, fmt.Errorf("%w: write: %v", ErrNotConnected, err)
	}
	reply, err := readDNSStream(conn)
	if err != nil {
		return nil, fmt.Errorf("%w: read: %v", ErrNotConnected, err)
	}
	return reply, nil
}

// exchangeDNSPacket sends query every resendInterval until a reply with
// its ID comes back or deadline passes.
func exchangeDNSPacket(ctx context.Context, conn net.Conn, query []byte, deadline time.Time) ([]byte, error) {
	id := query[:2]
	buf := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := conn.Write(query); err != nil {
			if isRefusal(err) {
				return nil, fmt.Errorf("%w: %v", ErrNotConnected, err)
			}
			return nil, err
		}
		until := time.Now().Add(resendInterval)
		if until.After(deadline) {
			until = deadline
		}
		conn.SetReadDeadline(until)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if isTimeout(err) {
					break
				}
				if isRefusal(err) {
					return nil, fmt.Errorf("%w: %v", ErrNotConnected, err)
				}
				return nil, err
			}
			if n >= 2 && buf[0] == id[0] && buf[1] == id[1] {
				return append([]byte(nil), buf[:n]...), nil
			}
		}
		if !time.Now().Before(deadline) {
			return nil, fmt.Errorf("%w: no reply", ErrNotConnected)
		}
	}
}

// parseDNSReply checks that reply answers question q with id and returns
// the addresses of its answers of q's type.
func parseDNSReply(reply []byte, id uint16, q dnsmessage.Question) ([]netip.Addr, error) {
	var p dnsmessage.Parser
	h, err := p.Start(reply)
	if err != nil {
		return nil, fmt.Errorf("malformed reply: %w", err)
	}
	if !h.Response || h.ID != id {
		return nil, fmt.Errorf("malformed reply: not a response to query %d", id)
	}
	if h.Truncated {
		return nil, errors.New("reply truncated")
	}
	switch h.RCode {
	case dnsmessage.RCodeSuccess:
	case dnsmessage.RCodeNameError:
		return nil, fmt.Errorf("%w: %s", ErrNoSuchName, q.Name)
	default:
		return nil, fmt.Errorf("server answered %s", h.RCode)
	}
	questions, err := p.AllQuestions()
	if err != nil {
		return nil, fmt.Errorf("malformed reply: %w", err)
	}
	if len(questions) != 1 || !strings.EqualFold(questions[0].Name.String(), q.Name.String()) || questions[0].Type != q.Type {
		return nil, fmt.Errorf("reply is for another question (%v)", questions)
	}
	answers, err := p.AllAnswers()
	if err != nil {
		return nil, fmt.Errorf("malformed reply: %w", err)
	}
	var out []netip.Addr
	for _, a := range answers {
		switch body := a.Body.(type) {
		case *dnsmessage.AResource:
			if q.Type == dnsmessage.TypeA {
				out = append(out, netip.AddrFrom4(body.A))
			}
		case *dnsmessage.AAAAResource:
			if q.Type == dnsmessage.TypeAAAA {
				out = append(out, netip.AddrFrom16(body.AAAA))
			}
		}
	}
	return out, nil
}
