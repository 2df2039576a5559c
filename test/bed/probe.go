package bed

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// resendInterval is how often UDP and SCTP probes resend while waiting.
const resendInterval = 250 * time.Millisecond

// retryInterval is how often ProbeUntil and MatrixUntil probe again, as
// upstream's wait.PollImmediate(1s, ...).
const retryInterval = time.Second

// Probe reports whether from reaches to:port over proto, with a real
// connection from inside from's netns, within timeout:
//   - TCP: the connection is established and the server's line is read;
//   - UDP: a datagram comes back echoed;
//   - SCTP: an SCTP INIT reaches a raw receiver of a pod of from's bed that
//     serves the port (the destination may be a pod address or one rewritten
//     on the way, e.g. a ClusterIP).
//
// A blocked, refused or unanswered probe is (false, nil); the error is for
// probes that could not be run (bad input, netns gone, context done).
func Probe(ctx context.Context, from *Pod, to netip.Addr, port int, proto string, timeout time.Duration) (bool, error) {
	if from == nil {
		return false, fmt.Errorf("probe: no source pod")
	}
	p, err := parseProtocol(proto)
	if err != nil {
		return false, fmt.Errorf("probe from %s: %w", from, err)
	}
	if err := checkPort(port); err != nil {
		return false, fmt.Errorf("probe from %s: %w", from, err)
	}
	if !to.IsValid() {
		return false, fmt.Errorf("probe from %s: no destination address", from)
	}
	if timeout <= 0 {
		return false, fmt.Errorf("probe from %s: timeout %s must be positive", from, timeout)
	}
	to = to.Unmap()
	if _, ok := from.IP(familyOf(to)); !ok {
		return false, fmt.Errorf("probe from %s to %s: source has no %s address", from, to, familyOf(to))
	}
	dst := netip.AddrPortFrom(to, uint16(port))
	var ok bool
	switch p {
	case TCP:
		ok, err = probeTCP(ctx, from, dst, timeout)
	case UDP:
		ok, err = probeUDP(ctx, from, dst, timeout)
	case SCTP:
		ok, err = probeSCTP(ctx, from, dst, timeout)
	}
	if err != nil {
		return false, fmt.Errorf("probe %s %s -> %s: %w", p, from, dst, err)
	}
	return ok, nil
}

// ProbePod is Probe to to's address of the given family. It works for every
// protocol (SCTP needs to serve the port: see Pod.Serve).
func ProbePod(ctx context.Context, from, to *Pod, family Family, port int, proto string, timeout time.Duration) (bool, error) {
	if from == nil || to == nil {
		return false, fmt.Errorf("probe: nil pod")
	}
	addr, ok := to.IP(family)
	if !ok {
		return false, fmt.Errorf("probe %s -> %s: destination has no %s address", from, to, family)
	}
	return Probe(ctx, from, addr, port, proto, timeout)
}

// ProbeUntil probes every second until the observed value equals want or
// within has passed, and returns the last observed value (upstream retries
// each probe like this to allow for slow programming in either direction).
func ProbeUntil(ctx context.Context, from *Pod, to netip.Addr, port int, proto string, timeout time.Duration, want bool, within time.Duration) (bool, error) {
	return retryUntil(ctx, want, within, func() (bool, error) {
		return Probe(ctx, from, to, port, proto, timeout)
	})
}

// ProbePodUntil is ProbeUntil to to's address of the given family.
func ProbePodUntil(ctx context.Context, from, to *Pod, family Family, port int, proto string, timeout time.Duration, want bool, within time.Duration) (bool, error) {
	return retryUntil(ctx, want, within, func() (bool, error) {
		return ProbePod(ctx, from, to, family, port, proto, timeout)
	})
}

func retryUntil(ctx context.Context, want bool, within time.Duration, probe func() (bool, error)) (bool, error) {
	deadline := time.Now().Add(within)
	for {
		start := time.Now()
		got, err := probe()
		if err != nil || got == want || !time.Now().Before(deadline) {
			return got, err
		}
		wait := retryInterval - time.Since(start)
		if wait < 0 {
			wait = 0
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func probeTCP(ctx context.Context, from *Pod, dst netip.AddrPort, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var conn net.Conn
	var dialErr error
	err := inNetns(from.NetnsPath, func() error {
		conn, dialErr = (&net.Dialer{}).DialContext(dialCtx, "tcp", dst.String())
		return nil
	})
	if err != nil {
		return false, err
	}
	if dialErr != nil {
		// Refused, timed out, unreachable: not connected.
		return false, ctx.Err()
	}
	defer conn.Close()
	conn.SetReadDeadline(deadline)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || len(line) < 2 {
		return false, ctx.Err()
	}
	return true, nil
}

func probeUDP(ctx context.Context, from *Pod, dst netip.AddrPort, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	var conn *net.UDPConn
	err := inNetns(from.NetnsPath, func() error {
		var err error
		conn, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
		return err
	})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	token := make([]byte, 16)
	rand.Read(token)
	buf := make([]byte, 64)
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if _, err := conn.Write(token); err != nil {
			if isRefusal(err) {
				return false, nil
			}
			return false, err
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
					return false, nil
				}
				return false, err
			}
			if bytes.Equal(buf[:n], token) {
				return true, nil
			}
		}
		if !time.Now().Before(deadline) {
			return false, nil
		}
	}
}

func probeSCTP(ctx context.Context, from *Pod, dst netip.AddrPort, timeout time.Duration) (bool, error) {
	if from.bed == nil {
		return false, fmt.Errorf("source pod belongs to no bed")
	}
	var conn *net.IPConn
	err := inNetns(from.NetnsPath, func() error {
		var err error
		conn, err = net.DialIP(rawNet(familyOf(dst.Addr())), nil, &net.IPAddr{IP: dst.Addr().AsSlice()})
		return err
	})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	tag, arrived := from.bed.sctp.register()
	defer from.bed.sctp.unregister(tag)
	var sp [2]byte
	rand.Read(sp[:])
	srcPort := 1024 + binary.BigEndian.Uint16(sp[:])%(65535-1024)
	pkt := renderSCTPInit(srcPort, dst.Port(), tag)

	timer := time.NewTimer(timeout)
	defer timer.Stop()
	tick := time.NewTicker(resendInterval)
	defer tick.Stop()
	for {
		// Send errors (no route, ICMP errors reported on the raw socket) just
		// mean the INIT does not get there.
		conn.Write(pkt)
		select {
		case <-arrived:
			return true, nil
		case <-timer.C:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		case <-tick.C:
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isRefusal(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}
