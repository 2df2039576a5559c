package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/podwall/podwall/daemon/policy"
)

// The Service test bed: a pod netns pws<random>-pod and a netns
// pws<random>-svc that stands for the node and the backends at once: it
// holds the Service frontend addresses and serves on them (in a cluster,
// kube-proxy would rewrite the frontend on the node; what the pod's firewall
// sees is the same packet to frontend:port). Addresses come from
// 10.204.0.0/16 and fd00:204::/64 only; nothing changes in the host netns.
const (
	svcPodV4     = "10.204.0.2"
	svcPeerV4    = "10.204.0.1"
	svcPodV6     = "fd00:204::2"
	svcPeerV6    = "fd00:204::1"
	svcAllowedV4 = "10.204.64.10" // a frontend the pod may reach on TCP 80 and UDP 5353
	svcGuardedV4 = "10.204.64.20" // another Service's frontend: guarded
	svcAllowedV6 = "fd00:204::5:10"
	svcGuardedV6 = "fd00:204::5:20"
	svcExternal  = "10.204.200.60" // an external IP of a Service on TCP 443
	svcOutside   = "10.204.200.1"  // an ordinary address outside the cluster
	svcCIDRV4    = "10.204.64.0/20"
	svcCIDRV6    = "fd00:204::5:0/112"
)

type serviceBed struct {
	podName, peerName string
	pod, peer         string // netns paths
}

// newServiceBed creates the two netns, joined by a veth pair, with TCP echo
// servers on ports 80 and 443 of every address of the peer and UDP echo
// servers on port 5353 of the frontends.
func newServiceBed(t *testing.T) *serviceBed {
	t.Helper()
	needRoot(t)
	id := randomID(t)
	bed := &serviceBed{podName: "pws" + id + "-pod", peerName: "pws" + id + "-svc"}
	bed.pod, bed.peer = "/run/netns/"+bed.podName, "/run/netns/"+bed.peerName
	for _, name := range []string{bed.podName, bed.peerName} {
		run(t, "ip", "netns", "add", name)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		})
	}
	run(t, "ip", "-n", bed.peerName, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", bed.podName)
	peerAddrs := []string{svcPeerV4 + "/24", svcPeerV6 + "/64", svcAllowedV4 + "/32", svcGuardedV4 + "/32",
		svcAllowedV6 + "/128", svcGuardedV6 + "/128", svcExternal + "/32", svcOutside + "/32"}
	for name, addrs := range map[string][]string{bed.peerName: peerAddrs, bed.podName: {svcPodV4 + "/24", svcPodV6 + "/64"}} {
		for _, a := range addrs {
			run(t, "ip", "-n", name, "addr", "add", a, "dev", "eth0", "nodad")
		}
		run(t, "ip", "-n", name, "link", "set", "lo", "up")
		run(t, "ip", "-n", name, "link", "set", "eth0", "up")
	}
	// The pod reaches everything through its link, as a routed pod does.
	run(t, "ip", "-n", bed.podName, "route", "add", "10.204.0.0/16", "dev", "eth0")

	err := ns.WithNetNSPath(bed.peer, func(ns.NetNS) error {
		for _, port := range []string{"80", "443"} {
			l, err := net.Listen("tcp", ":"+port)
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() { io.Copy(c, c); c.Close() }()
				}
			}()
		}
		for _, a := range []string{svcAllowedV4, svcGuardedV4, svcAllowedV6, svcGuardedV6} {
			pc, err := net.ListenPacket("udp", hostPort(a, "5353"))
			if err != nil {
				return err
			}
			t.Cleanup(func() { pc.Close() })
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
		return nil
	})
	if err != nil {
		t.Fatalf("start servers: %v", err)
	}
	return bed
}

// serviceSpec is what the compiler gives a pod with an ipBlock 0.0.0.0/0
// and ::/0 egress rule when one Service (svcAllowed*) has every endpoint
// allowed on TCP 80 and UDP 5353, and the cluster has the Service CIDRs and
// an external IP on TCP 443.
func serviceSpec() Spec {
	return Spec{Pod: "app/client", Firewall: &policy.Firewall{Egress: withServices(
		isolated(rule(from("0.0.0.0/0", "::/0"))),
		[]policy.Rule{
			rule(from(svcAllowedV4+"/32", svcAllowedV6+"/128"), tcp(80)),
			rule(from(svcAllowedV4+"/32", svcAllowedV6+"/128"), udp(5353)),
		},
		[]policy.Rule{
			rule(from(svcCIDRV4, svcCIDRV6)),
			rule(from(svcExternal+"/32"), tcp(443)),
		},
	)}}
}

func TestServiceFrontendsEnforced(t *testing.T) {
	t.Parallel()
	bed := newServiceBed(t)
	m := newManager(t)
	probes := []probe{
		{"tcp", svcPodV4, hostPort(svcAllowedV4, "80"), true},
		{"udp", svcPodV4, hostPort(svcAllowedV4, "5353"), true},
		{"tcp", svcPodV6, hostPort(svcAllowedV6, "80"), true},
		{"udp", svcPodV6, hostPort(svcAllowedV6, "5353"), true},
		{"tcp", svcPodV4, hostPort(svcOutside, "443"), true},    // ordinary address under the ipBlock
		{"tcp", svcPodV4, hostPort(svcExternal, "80"), true},    // external IP, not a service port
		{"tcp", svcPodV4, hostPort(svcAllowedV4, "443"), false}, // allowed frontend, other port
		{"tcp", svcPodV4, hostPort(svcGuardedV4, "80"), false},  // guarded frontend, despite 0.0.0.0/0
		{"udp", svcPodV4, hostPort(svcGuardedV4, "5353"), false},
		{"tcp", svcPodV6, hostPort(svcGuardedV6, "80"), false}, // despite ::/0
		{"udp", svcPodV6, hostPort(svcGuardedV6, "5353"), false},
		{"tcp", svcPodV4, hostPort(svcExternal, "443"), false}, // external IP on its service port
	}
	// Control: without a firewall every probe gets through, so the denied
	// ones below are denied by the firewall.
	control := slices.Clone(probes)
	for i := range control {
		control[i].allowed = true
	}
	expect(t, bed.pod, control...)

	spec := serviceSpec()
	mustApply(t, m, bed.pod, spec)
	expect(t, bed.pod, probes...)
	mustCheck(t, m, bed.pod, spec)
	rs := mustInspect(t, m, bed.pod)
	if got, want := formatRuleset(rs), formatRuleset(Render(spec, rs.Generation)); got != want {
		t.Errorf("Inspect differs from Render:\n%s\nwant\n%s", got, want)
	}
	mustCheck(t, newManager(t), bed.pod, spec) // a Manager without memory understands it too

	// A second Service becomes allowed on TCP 80 and another frontend joins
	// the guard: set members only, swapped in place.
	gen := rs.Generation
	execs, ops := m.execs.Load(), m.netlinkOps.Load()
	spec = serviceSpec()
	spec.Firewall.Egress.Services[0] = rule(from(svcAllowedV4+"/32", svcGuardedV4+"/32", svcAllowedV6+"/128"), tcp(80))
	spec.Firewall.Egress.ServiceGuard[1] = rule(from(svcExternal+"/32", "10.204.200.61/32"), tcp(443))
	mustApply(t, m, bed.pod, spec)
	if n := m.execs.Load() - execs; n != 0 {
		t.Errorf("a change of frontends ran %d commands, want none", n)
	}
	if n := m.netlinkOps.Load() - ops; n != 2 {
		t.Errorf("a change of frontends sent %d ipset commands, want 2 (one member added to each of two sets)", n)
	}
	if rs := mustInspect(t, m, bed.pod); rs.Generation != gen {
		t.Errorf("a change of frontends moved the generation from %d to %d", gen, rs.Generation)
	}
	expect(t, bed.pod,
		probe{"tcp", svcPodV4, hostPort(svcGuardedV4, "80"), true},
		probe{"udp", svcPodV4, hostPort(svcGuardedV4, "5353"), false}, // allowed on TCP 80 only
		probe{"tcp", svcPodV6, hostPort(svcGuardedV6, "80"), false},
		probe{"tcp", svcPodV4, hostPort(svcAllowedV4, "80"), true},
	)
	mustCheck(t, m, bed.pod, spec)

	// Without its guard member the ipBlock would reach the frontend: Check
	// sees the drift and Apply repairs it.
	spec = serviceSpec()
	mustApply(t, m, bed.pod, spec)
	guard := setName(familyV4, fmt.Sprintf(setIDGuardFmt, 0), gen)
	inNS(t, bed.podName, "ipset", "del", guard, svcCIDRV4)
	expect(t, bed.pod, probe{"tcp", svcPodV4, hostPort(svcGuardedV4, "80"), true})
	d := driftOf(m.Check(context.Background(), bed.pod, spec))
	if want := "set " + guard + ": missing member " + svcCIDRV4; d == nil || !slices.Contains(d.Differences, want) {
		t.Fatalf("Check after removing the guard member = %v, want %q", d, want)
	}
	mustApply(t, m, bed.pod, spec)
	mustCheck(t, m, bed.pod, spec)
	expect(t, bed.pod,
		probe{"tcp", svcPodV4, hostPort(svcGuardedV4, "80"), false},
		probe{"tcp", svcPodV4, hostPort(svcAllowedV4, "80"), true},
	)

	// A frontend that stops being allowed (its last Service port closes) is
	// a change of rules: a new generation, and the frontend is guarded.
	spec.Firewall.Egress.Services = spec.Firewall.Egress.Services[1:]
	mustApply(t, m, bed.pod, spec)
	expect(t, bed.pod,
		probe{"tcp", svcPodV4, hostPort(svcAllowedV4, "80"), false},
		probe{"udp", svcPodV4, hostPort(svcAllowedV4, "5353"), true},
	)
	mustCheck(t, m, bed.pod, spec)
	if err := m.Remove(context.Background(), bed.pod); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if left := podwallObjects(t, bed.podName); len(left) > 0 {
		t.Errorf("Remove left:\n%s", strings.Join(left, "\n"))
	}
}

func TestRenderServiceMembersChangeKeepsStructure(t *testing.T) {
	base := render(serviceSpec(), 3)
	for name, edit := range map[string]func(d *policy.Direction){
		"frontend joins an allowed port": func(d *policy.Direction) {
			d.Services[0] = rule(from(svcAllowedV4+"/32", svcGuardedV4+"/32", svcAllowedV6+"/128"), tcp(80))
		},
		"ClusterIP outside the Service CIDR joins the guard": func(d *policy.Direction) {
			d.ServiceGuard[0] = rule(from("10.96.0.10/32", svcCIDRV4, svcCIDRV6))
		},
		"identical sets stay apart": func(d *policy.Direction) {
			d.ServiceGuard[1] = rule(from(svcAllowedV4+"/32"), tcp(443)) // the content of pw4-svc0
		},
	} {
		t.Run(name, func(t *testing.T) {
			spec := serviceSpec()
			edit(&spec.Firewall.Egress)
			if got := render(spec, 3); !got.sameStructure(base) || got.equal(base) {
				t.Errorf("want the same rules and set names with other members:\n%s", formatRuleset(got.ruleset()))
			}
		})
	}
	spec := serviceSpec()
	spec.Firewall.Egress.Services[1].Ports = []policy.Port{udp(53)}
	if render(spec, 3).sameStructure(base) {
		t.Errorf("a new service port kept the structure")
	}
}

func TestValidateSpecServices(t *testing.T) {
	bad := []struct {
		name string
		edit func(fw *policy.Firewall)
		want string
	}{
		{"any peer service", func(fw *policy.Firewall) { fw.Egress.Services[0].Peer = anyPeer }, "egress service 0: a service rule needs frontend addresses"},
		{"service port", func(fw *policy.Firewall) { fw.Egress.Services[1].Ports = []policy.Port{udp(70000)} }, "egress service 1: port 70000 out of range"},
		{"guard prefix", func(fw *policy.Firewall) { fw.Egress.ServiceGuard[1].Peer.Prefixes = []netip.Prefix{{}} }, "egress service guard 1: invalid prefix"},
		{"ingress services", func(fw *policy.Firewall) { fw.Ingress = withServices(isolated(), fw.Egress.Services, nil) }, "services and a service guard exist only for egress"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			spec := serviceSpec()
			tc.edit(spec.Firewall)
			err := validateSpec(spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validateSpec = %v, want an error containing %q", err, tc.want)
			}
			Render(spec, 1) // must not panic
		})
	}
	spec := serviceSpec()
	spec.Firewall.Egress.Services[0].Peer = anyPeer
	if rs := Render(spec, 1); strings.Contains(rs.V4, `"egress service 0"`) {
		t.Errorf("an any-peer service rule rendered:\n%s", rs.V4)
	}
}
