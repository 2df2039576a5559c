package bed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ErrNotConnected is wrapped by DialLine's error when the connection was
// blocked, refused or not answered.
var ErrNotConnected = errors.New("not connected")

// ServeSource starts a TCP server on port inside the pod's netns, one per
// address family of the pod, until DelPod or Close: it answers every
// connection with one line, the connection's source address as the pod sees
// it, and closes it. It tells whether a connection arrived with the client
// pod's own address or translated on the way (a masquerading Service).
func (p *Pod) ServeSource(port int) error {
	if err := checkPort(port); err != nil {
		return fmt.Errorf("serve source on %s: %w", p, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted {
		return fmt.Errorf("serve source on %s: pod deleted", p)
	}
	var opened []net.Listener
	err := inNetns(p.NetnsPath, func() error {
		for _, f := range p.Families() {
			l, err := net.Listen(tcpNet(f), ":"+strconv.Itoa(port))
			if err != nil {
				return fmt.Errorf("%d/TCP %s: %w", port, f, err)
			}
			opened = append(opened, l)
		}
		return nil
	})
	if err != nil {
		for _, l := range opened {
			l.Close()
		}
		return fmt.Errorf("serve source on %s: %w", p, err)
	}
	for _, l := range opened {
		p.servers = append(p.servers, l)
		go serveSource(l)
	}
	return nil
}

func serveSource(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			src := "?"
			if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
				src = ap.Addr().Unmap().String()
			}
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, src+"\n")
		}()
	}
}

// DialLine connects over TCP from inside from's netns to dst within timeout
// and returns the first line the server writes, without its newline. A
// blocked, refused or silent connection is an error wrapping
// ErrNotConnected; other errors mean the dial could not be tried.
func DialLine(ctx context.Context, from *Pod, dst netip.AddrPort, timeout time.Duration) (string, error) {
	if from == nil {
		return "", errors.New("dial: no source pod")
	}
	if !dst.IsValid() {
		return "", fmt.Errorf("dial from %s: no destination", from)
	}
	deadline := time.Now().Add(timeout)
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var conn net.Conn
	var dialErr error
	if err := inNetns(from.NetnsPath, func() error {
		conn, dialErr = (&net.Dialer{}).DialContext(dialCtx, "tcp", dst.String())
		return nil
	}); err != nil {
		return "", err
	}
	if dialErr != nil {
		return "", fmt.Errorf("dial %s -> %s: %w: %v", from, dst, ErrNotConnected, dialErr)
	}
	defer conn.Close()
	conn.SetReadDeadline(deadline)
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("dial %s -> %s: %w: read: %v", from, dst, ErrNotConnected, err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}
