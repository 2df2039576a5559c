package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// The privileged test bed: two netns, pwdp-<random>-srv and
// pwdp-<random>-cli, joined by a veth pair, addressed from 10.201.0.0/24 and
// fd00:201::/64 only. Nothing changes in the host netns.
const (
	srvV4  = "10.201.0.1"
	srvV4b = "10.201.0.5" // a second server address, for egress twins
	cliV4  = "10.201.0.2" // the allowed client
	cliV4b = "10.201.0.3" // the denied twin
	cliV4n = "10.201.0.4" // stands for the node
	srvV6  = "fd00:201::1"
	cliV6  = "fd00:201::2"
	cliV6b = "fd00:201::3"
)

// Ports the servers in the srv netns listen on, TCP and UDP each.
var serverPorts = []string{"8080", "8081", "9090"}

type testbed struct {
	srvName, cliName string
	srv, cli         string // netns paths
}

func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces")
	}
}

// newTestbed creates the two netns and, with servers, starts TCP and UDP
// echo servers on serverPorts in the srv netns.
func newTestbed(tb testing.TB, servers bool) *testbed {
	tb.Helper()
	needRoot(tb)
	id := randomID(tb)
	bed := &testbed{srvName: "pwdp-" + id + "-srv", cliName: "pwdp-" + id + "-cli"}
	bed.srv, bed.cli = "/run/netns/"+bed.srvName, "/run/netns/"+bed.cliName
	for _, name := range []string{bed.srvName, bed.cliName} {
		run(tb, "ip", "netns", "add", name)
		tb.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
				tb.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		})
	}
	run(tb, "ip", "-n", bed.srvName, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", bed.cliName)
	for name, addrs := range map[string][]string{
		bed.srvName: {srvV4 + "/24", srvV4b + "/24", srvV6 + "/64"},
		bed.cliName: {cliV4 + "/24", cliV4b + "/24", cliV4n + "/24", cliV6 + "/64", cliV6b + "/64"},
	} {
		for _, a := range addrs {
			run(tb, "ip", "-n", name, "addr", "add", a, "dev", "eth0", "nodad")
		}
		run(tb, "ip", "-n", name, "link", "set", "lo", "up")
		run(tb, "ip", "-n", name, "link", "set", "eth0", "up")
	}
	if servers {
		bed.startServers(tb)
	}
	return bed
}

func run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNS runs a command in the named netns.
func inNS(tb testing.TB, netns string, args ...string) string {
	tb.Helper()
	return run(tb, "ip", append([]string{"netns", "exec", netns}, args...)...)
}

// startServers listens inside the srv netns: the sockets stay there.
func (bed *testbed) startServers(tb testing.TB) {
	tb.Helper()
	err := ns.WithNetNSPath(bed.srv, func(ns.NetNS) error {
		for _, port := range serverPorts {
			l, err := net.Listen("tcp", ":"+port)
			if err != nil {
				return err
			}
			tb.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(c, c); c.Close() }()
				}
			}()
			// UDP servers bind each address, so that replies come from
			// the address the client sent to.
			for _, a := range []string{srvV4, srvV4b, srvV6} {
				pc, err := net.ListenPacket("udp", hostPort(a, port))
				if err != nil {
					return err
				}
				tb.Cleanup(func() { pc.Close() })
				go func() {
					buf := make([]byte, 1500)
					for {
						n, from, err := pc.ReadFrom(buf)
						if err != nil {
							return
						}
						pc.WriteTo(buf[:n], from)
					}
				}()
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("start servers: %v", err)
	}
}

// probe is one connection attempt: proto "tcp" or "udp" from a local
// address to host:port.
type probe struct {
	proto, from, to string
	allowed         bool
}

func (p probe) String() string {
	verb := "denied"
	if p.allowed {
		verb = "allowed"
	}
	return p.proto + " " + p.from + " -> " + p.to + " (want " + verb + ")"
}

// reach reports whether a probe from the netns at path gets its echo back
// within timeout.
func reach(path string, p probe, timeout time.Duration) (bool, error) {
	ok := false
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var local net.Addr
		if p.proto == "tcp" {
			local = &net.TCPAddr{IP: net.ParseIP(p.from)}
		} else {
			local = &net.UDPAddr{IP: net.ParseIP(p.from)}
		}
		d := net.Dialer{LocalAddr: local, Timeout: timeout}
		c, err := d.Dial(p.proto, p.to)
		if err != nil {
			return nil // timed out: dropped
		}
		defer c.Close()
		ok = echoes(c, timeout)
		return nil
	})
	return ok, err
}

// echoes reports whether c echoes a message within timeout.
func echoes(c net.Conn, timeout time.Duration) bool {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		return false
	}
	buf := make([]byte, 4)
	_, err := io.ReadFull(c, buf)
	return err == nil && string(buf) == "ping"
}

// expect runs the probes concurrently from the netns at path and fails for
// each whose outcome differs from p.allowed.
func expect(t *testing.T, path string, probes ...probe) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]string, len(probes))
	for i, p := range probes {
		wg.Go(func() {
			timeout := 300 * time.Millisecond // a denied probe gets no answer
			if p.allowed {
				timeout = 3 * time.Second
			}
			ok, err := reach(path, p, timeout)
			switch {
			case err != nil:
				errs[i] = p.String() + ": " + err.Error()
			case ok != p.allowed:
				errs[i] = p.String() + ": got the opposite"
			}
		})
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
}

func hostPort(host, port string) string { return net.JoinHostPort(host, port) }

// podwallObjects returns every line of iptables-save (both families) and
// ipset list -n in the netns that names a podwall object.
func podwallObjects(tb testing.TB, netns string) []string {
	tb.Helper()
	var found []string
	for _, cmd := range [][]string{{"iptables-nft-save"}, {"ip6tables-nft-save"}, {"ipset", "list", "-n"}} {
		for _, l := range strings.Split(inNS(tb, netns, cmd...), "\n") {
			if strings.Contains(l, chainPrefix) || isPodwallSet(strings.TrimSpace(l)) {
				found = append(found, cmd[0]+": "+l)
			}
		}
	}
	return found
}

func newManager(tb testing.TB) *Manager {
	tb.Helper()
	m, err := NewManager()
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func mustApply(tb testing.TB, m *Manager, path string, spec Spec) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Apply(ctx, path, spec); err != nil {
		tb.Fatalf("Apply: %v", err)
	}
}

func mustCheck(tb testing.TB, m *Manager, path string, spec Spec) {
	tb.Helper()
	if err := m.Check(context.Background(), path, spec); err != nil {
		tb.Fatalf("Check after Apply: %v", err)
	}
}

func mustInspect(tb testing.TB, m *Manager, path string) *Ruleset {
	tb.Helper()
	rs, err := m.Inspect(context.Background(), path)
	if err != nil {
		tb.Fatalf("Inspect: %v", err)
	}
	return rs
}

// driftOf returns the *DriftError in err, or nil.
func driftOf(err error) *DriftError {
	var d *DriftError
	if errors.As(err, &d) {
		return d
	}
	return nil
}

// randomID returns six random hex digits, to make the names of a test's
// netns unique on a machine where other tests run at the same time.
func randomID(tb testing.TB) string {
	tb.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
