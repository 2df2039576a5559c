package bed

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The protocols servers and probes speak, as Kubernetes spells them.
const (
	TCP  = "TCP"
	UDP  = "UDP"
	SCTP = "SCTP"
)

// ServePort is one port a pod serves.
type ServePort struct {
	Protocol string // TCP, UDP or SCTP (any case)
	Port     int
}

func (sp ServePort) String() string { return strconv.Itoa(sp.Port) + "/" + sp.Protocol }

// parseProtocol returns the canonical spelling of a protocol name.
func parseProtocol(proto string) (string, error) {
	switch p := strings.ToUpper(proto); p {
	case TCP, UDP, SCTP:
		return p, nil
	}
	return "", fmt.Errorf("unknown protocol %q (want TCP, UDP or SCTP)", proto)
}

func checkPort(port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("port %d out of range 1-65535", port)
	}
	return nil
}

// Serve starts servers inside the pod's netns, one per port and address
// family of the pod, until DelPod or Close:
//   - TCP: accept, write one line (the pod's namespace/name), close;
//   - UDP: echo every datagram;
//   - SCTP: the kernel has no SCTP sockets, so a raw IP socket of protocol
//     132 records the SCTP packets for this port that reach the pod (it sees
//     only packets that passed INPUT) and answers the bed's SCTP probes.
//
// Either every port is served or none (the error says which failed).
func (p *Pod) Serve(ports ...ServePort) error {
	ports = append([]ServePort(nil), ports...) // normalized below; the caller's slice stays as it is
	for i := range ports {
		proto, err := parseProtocol(ports[i].Protocol)
		if err != nil {
			return fmt.Errorf("serve on %s: %w", p, err)
		}
		ports[i].Protocol = proto
		if err := checkPort(ports[i].Port); err != nil {
			return fmt.Errorf("serve on %s: %w", p, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted {
		return fmt.Errorf("serve on %s: pod deleted", p)
	}
	var opened []io.Closer
	var starts []func()
	newSCTP := map[int]bool{}
	needRaw := p.sctpPorts == nil
	err := inNetns(p.NetnsPath, func() error {
		for _, sp := range ports {
			for _, f := range p.Families() {
				switch sp.Protocol {
				case TCP:
					l, err := net.Listen(tcpNet(f), ":"+strconv.Itoa(sp.Port))
					if err != nil {
						return fmt.Errorf("%s %s: %w", sp, f, err)
					}
					opened = append(opened, l)
					starts = append(starts, func() { go serveTCP(l, p.String()+"\n") })
				case UDP:
					c, err := net.ListenPacket(udpNet(f), ":"+strconv.Itoa(sp.Port))
					if err != nil {
						return fmt.Errorf("%s %s: %w", sp, f, err)
					}
					opened = append(opened, c)
					starts = append(starts, func() { go serveUDP(c) })
				case SCTP:
					if p.sctpPorts[sp.Port] || newSCTP[sp.Port] {
						return fmt.Errorf("%s: already served", sp)
					}
				}
			}
			if sp.Protocol == SCTP {
				newSCTP[sp.Port] = true
			}
		}
		if len(newSCTP) == 0 || !needRaw {
			return nil
		}
		for _, f := range p.Families() {
			c, err := net.ListenIP(rawNet(f), nil)
			if err != nil {
				return fmt.Errorf("sctp receiver %s: %w", f, err)
			}
			opened = append(opened, c)
			starts = append(starts, func() { go p.receiveSCTP(c) })
		}
		return nil
	})
	if err != nil {
		for _, c := range opened {
			c.Close()
		}
		return fmt.Errorf("serve on %s: %w", p, err)
	}
	p.servers = append(p.servers, opened...)
	if len(newSCTP) > 0 && p.sctpPorts == nil {
		p.sctpPorts = map[int]bool{}
	}
	for port := range newSCTP {
		p.sctpPorts[port] = true
	}
	for _, start := range starts {
		start()
	}
	return nil
}

// stopServers closes every server socket of the pod (their goroutines end).
func (p *Pod) stopServers() error {
	p.mu.Lock()
	servers := p.servers
	p.servers = nil
	p.sctpPorts = nil
	p.mu.Unlock()
	var errs []error
	for _, s := range servers {
		if err := s.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func serveTCP(l net.Listener, line string) {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors
			continue
		}
		go func() {
			defer c.Close()
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, line)
		}()
	}
}

func serveUDP(c net.PacketConn) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		c.WriteTo(buf[:n], from)
	}
}

func tcpNet(f Family) string {
	if f == IPv6 {
		return "tcp6"
	}
	return "tcp4"
}

func udpNet(f Family) string {
	if f == IPv6 {
		return "udp6"
	}
	return "udp4"
}

func rawNet(f Family) string {
	if f == IPv6 {
		return "ip6:132"
	}
	return "ip4:132"
}
