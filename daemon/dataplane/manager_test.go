package dataplane

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/coreos/go-iptables/iptables"

	"github.com/podwall/podwall/daemon/policy"
)

// ingressSpec allows TCP 8080 and UDP 8081 into the server from the given
// client addresses; 10.201.0.4 plays the node.
func ingressSpec(peers ...string) Spec {
	return Spec{
		Pod:       "test/srv",
		Firewall:  &policy.Firewall{Ingress: isolated(rule(from(peers...), tcp(8080), udp(8081)))},
		NodeAddrs: addrs(cliV4n),
	}
}

func TestIngressEnforced(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	// Control: without a firewall everything reaches the servers, so the
	// denied probes below fail because of the firewall.
	expect(t, bed.cli,
		probe{"tcp", cliV4b, hostPort(srvV4, "8081"), true},
		probe{"udp", cliV4b, hostPort(srvV4, "8080"), true},
	)

	spec := ingressSpec(cliV4 + "/32")
	mustApply(t, m, bed.srv, spec)
	expect(t, bed.cli,
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), true},
		probe{"tcp", cliV4, hostPort(srvV4, "8081"), false},  // other port
		probe{"tcp", cliV4b, hostPort(srvV4, "8080"), false}, // other source
		probe{"udp", cliV4, hostPort(srvV4, "8080"), false},  // other protocol
		probe{"udp", cliV4, hostPort(srvV4, "8081"), true},
		probe{"udp", cliV4, hostPort(srvV4, "9090"), false},  // other port
		probe{"udp", cliV4b, hostPort(srvV4, "8081"), false}, // other source
		probe{"tcp", cliV4, hostPort(srvV4, "9090"), false},
		probe{"tcp", cliV4n, hostPort(srvV4, "9090"), true}, // the node reaches any port
		probe{"tcp", cliV6, hostPort(srvV6, "8080"), false}, // no IPv6 peer: IPv6 is denied
	)
	mustCheck(t, m, bed.srv, spec)
	rs := mustInspect(t, m, bed.srv)
	if got, want := formatRuleset(rs), formatRuleset(Render(spec, rs.Generation)); got != want {
		t.Errorf("Inspect differs from Render:\n%s\nwant\n%s", got, want)
	}
}

func TestEgressEnforced(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	spec := Spec{Pod: "test/cli", Firewall: &policy.Firewall{
		Egress: isolated(rule(from(srvV4+"/32", srvV6+"/128"), tcp(8080)), rule(from(srvV4b+"/32"), udp(8081))),
	}}
	mustApply(t, m, bed.cli, spec)
	expect(t, bed.cli,
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), true},
		probe{"tcp", cliV4, hostPort(srvV4, "8081"), false},  // other port
		probe{"tcp", cliV4, hostPort(srvV4b, "8080"), false}, // other destination
		probe{"udp", cliV4, hostPort(srvV4, "8080"), false},  // other protocol
		probe{"udp", cliV4, hostPort(srvV4b, "8081"), true},
		probe{"udp", cliV4, hostPort(srvV4, "8081"), false}, // other destination
		probe{"tcp", cliV6, hostPort(srvV6, "8080"), true},
		probe{"tcp", cliV6, hostPort(srvV6, "8081"), false},
	)
	mustCheck(t, m, bed.cli, spec)
}

func TestIPv6EnforcedAndNDPWorks(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	spec := ingressSpec(cliV6 + "/128")
	mustApply(t, m, bed.srv, spec)
	// Forget the neighbours so that the probes need neighbour discovery
	// through the firewall.
	inNS(t, bed.srvName, "ip", "-6", "neigh", "flush", "all")
	inNS(t, bed.cliName, "ip", "-6", "neigh", "flush", "all")
	expect(t, bed.cli,
		probe{"tcp", cliV6, hostPort(srvV6, "8080"), true},
		probe{"udp", cliV6, hostPort(srvV6, "8081"), true},
		probe{"tcp", cliV6b, hostPort(srvV6, "8080"), false}, // other source
		probe{"tcp", cliV6, hostPort(srvV6, "8081"), false},  // other port
		probe{"udp", cliV6, hostPort(srvV6, "8080"), false},  // other protocol
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), false},  // no IPv4 peer
	)
	// The neighbour solicitations and advertisements went through
	// podwall's ICMPv6 rules (the DROP at the end would have eaten them).
	counted := regexp.MustCompile(`^\[(\d+):\d+\] -A PODWALL-INGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 13[56] -j ACCEPT$`)
	var ndp int
	for _, l := range strings.Split(inNS(t, bed.srvName, "ip6tables-nft-save", "-c"), "\n") {
		if m := counted.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			ndp += n
		}
	}
	if ndp == 0 {
		t.Errorf("no neighbour discovery packet counted by the ICMPv6 rules")
	}
}

func TestSetMembersChangeInPlace(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	mustApply(t, m, bed.srv, ingressSpec(cliV4+"/32"))
	before := mustInspect(t, m, bed.srv)
	expect(t, bed.cli,
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), true},
		probe{"tcp", cliV4b, hostPort(srvV4, "8080"), false},
	)

	execs, ops := m.execs.Load(), m.netlinkOps.Load()
	spec := ingressSpec(cliV4b + "/32")
	mustApply(t, m, bed.srv, spec)
	if n := m.execs.Load() - execs; n != 0 {
		t.Errorf("a member change ran %d commands, want none", n)
	}
	if n := m.netlinkOps.Load() - ops; n != 2 {
		t.Errorf("a member change sent %d ipset commands, want 2 (del and add)", n)
	}
	after := mustInspect(t, m, bed.srv)
	if after.V4 != before.V4 || after.V6 != before.V6 || after.Generation != before.Generation {
		t.Errorf("a member change re-rendered the rules:\n%s\n%s", before.V4, after.V4)
	}
	if i := slices.IndexFunc(after.Sets, func(s Set) bool { return s.Name == setName(familyV4, "0", after.Generation) }); i < 0 || !slices.Equal(after.Sets[i].Members, prefixes(cliV4b+"/32")) {
		t.Errorf("sets after swap: %+v", after.Sets)
	}
	expect(t, bed.cli,
		probe{"tcp", cliV4b, hostPort(srvV4, "8080"), true},
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), false},
	)
	mustCheck(t, m, bed.srv, spec)

	execs = m.execs.Load()
	mustApply(t, m, bed.srv, spec)
	if n := m.execs.Load() - execs; n != 0 {
		t.Errorf("applying the same spec again ran %d commands, want 0", n)
	}
}

func TestStructureChangeMovesGeneration(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	mustApply(t, m, bed.srv, ingressSpec(cliV4+"/32"))
	g := mustInspect(t, m, bed.srv).Generation

	spec := ingressSpec(cliV4+"/32", cliV4b+"/32")
	spec.Firewall.Ingress.Rules = append(spec.Firewall.Ingress.Rules, rule(from(cliV4b+"/32"), tcp(9090)))
	spec.Firewall.Egress = isolated(rule(anyPeer))
	mustApply(t, m, bed.srv, spec)
	rs := mustInspect(t, m, bed.srv)
	if rs.Generation != g+1 {
		t.Errorf("generation %d after a structure change, want %d", rs.Generation, g+1)
	}
	expectOnlyReferencedSets(t, rs)
	// The node set did not change: the new generation uses it as it is.
	if node := setName(familyV4, setIDNode, g); !slices.ContainsFunc(rs.Sets, func(s Set) bool { return s.Name == node }) {
		t.Errorf("the unchanged node set %s was not reused: %+v", node, rs.Sets)
	}
	expect(t, bed.cli,
		probe{"tcp", cliV4b, hostPort(srvV4, "9090"), true},
		probe{"tcp", cliV4, hostPort(srvV4, "9090"), false},
		probe{"tcp", cliV4b, hostPort(srvV4, "8080"), true},
		probe{"tcp", cliV4b, hostPort(srvV4, "8081"), false},
	)
	mustCheck(t, m, bed.srv, spec)

	// Dropping a direction is a structure change too.
	spec.Firewall.Egress = policy.Direction{}
	mustApply(t, m, bed.srv, spec)
	if rs := mustInspect(t, m, bed.srv); strings.Contains(rs.V4+rs.V6, chainEgress) {
		t.Errorf("egress chain left after egress stopped being isolated:\n%s", rs.V4)
	}
	mustCheck(t, m, bed.srv, spec)
}

func TestRemoveLeavesNothing(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	spec := renderCases[3].spec // both directions, sets in both families
	mustApply(t, m, bed.srv, spec)
	if len(podwallObjects(t, bed.srvName)) == 0 {
		t.Fatal("Apply left no podwall objects")
	}
	expect(t, bed.cli, probe{"tcp", cliV4, hostPort(srvV4, "8081"), false})
	if err := m.Remove(context.Background(), bed.srv); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if left := podwallObjects(t, bed.srvName); len(left) > 0 {
		t.Errorf("Remove left:\n%s", strings.Join(left, "\n"))
	}
	expect(t, bed.cli, probe{"tcp", cliV4, hostPort(srvV4, "8081"), true})
	if err := m.Remove(context.Background(), bed.srv); err != nil {
		t.Errorf("second Remove: %v", err)
	}

	// Applying a firewall that isolates nothing removes everything too.
	mustApply(t, m, bed.srv, spec)
	mustApply(t, m, bed.srv, Spec{Pod: spec.Pod, Firewall: &policy.Firewall{}})
	if left := podwallObjects(t, bed.srvName); len(left) > 0 {
		t.Errorf("Apply of an open firewall left:\n%s", strings.Join(left, "\n"))
	}
}

func TestEstablishedConnectionSurvivesUpdate(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	mustApply(t, m, bed.srv, ingressSpec(cliV4+"/32"))
	var conn net.Conn
	err := ns.WithNetNSPath(bed.cli, func(ns.NetNS) error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(cliV4)}, Timeout: 3 * time.Second}
		var err error
		conn, err = d.Dial("tcp", hostPort(srvV4, "8080"))
		return err
	})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	if !echoes(conn, 3*time.Second) {
		t.Fatal("no echo before the update")
	}
	// The new firewall no longer allows port 8080 (a new generation).
	spec := ingressSpec(cliV4 + "/32")
	spec.Firewall.Ingress.Rules[0].Ports = []policy.Port{tcp(9090)}
	mustApply(t, m, bed.srv, spec)
	if !echoes(conn, 3*time.Second) {
		t.Error("the established connection broke during the update")
	}
	expect(t, bed.cli,
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), false},
		probe{"tcp", cliV4, hostPort(srvV4, "9090"), true},
	)
}

func TestCheckDetectsDrift(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	spec := ingressSpec(cliV4 + "/32")
	mustApply(t, m, bed.srv, spec)
	mustCheck(t, m, bed.srv, spec)
	ctx := context.Background()

	// A hand-flushed chain opens the pod. The hand edits are single iptables
	// commands, run the way an operator's tool would: go-iptables in the netns.
	handEdit(t, bed.srv, func(ipt *iptables.IPTables) error { return ipt.ClearChain("filter", chainIngress) })
	expect(t, bed.cli, probe{"tcp", cliV4, hostPort(srvV4, "8081"), true})
	d := driftOf(m.Check(ctx, bed.srv, spec))
	if d == nil || !slices.Contains(d.Differences, `v4: missing "-A PODWALL-INGRESS -i lo -j ACCEPT"`) {
		t.Fatalf("Check after flushing the chain = %v", d)
	}
	mustApply(t, m, bed.srv, spec) // repairs
	mustCheck(t, m, bed.srv, spec)
	expect(t, bed.cli, probe{"tcp", cliV4, hostPort(srvV4, "8081"), false})

	// A hand-added set member.
	var set string
	for _, s := range mustInspect(t, m, bed.srv).Sets {
		if slices.Contains(s.Members, prefixes(cliV4 + "/32")[0]) {
			set = s.Name
		}
	}
	inNS(t, bed.srvName, "ipset", "add", set, cliV4b)
	d = driftOf(m.Check(ctx, bed.srv, spec))
	if want := "set " + set + ": unexpected member " + cliV4b + "/32"; d == nil || !slices.Contains(d.Differences, want) {
		t.Fatalf("Check after adding a member = %v, want %q", d, want)
	}
	mustApply(t, m, bed.srv, spec)
	mustCheck(t, m, bed.srv, spec)
	expect(t, bed.cli, probe{"tcp", cliV4b, hostPort(srvV4, "8080"), false})

	// A jump that is no longer first.
	handEdit(t, bed.srv, func(ipt *iptables.IPTables) error {
		return ipt.Insert("filter", "INPUT", 1, "-s", cliV4b, "-j", "ACCEPT")
	})
	if d := driftOf(m.Check(ctx, bed.srv, spec)); d == nil {
		t.Fatalf("Check missed a rule inserted before the jump")
	}
	mustApply(t, m, bed.srv, spec)
	mustCheck(t, m, bed.srv, spec)
}

func TestNetnsGone(t *testing.T) {
	t.Parallel()
	m := newManager(t)
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "not-a-netns")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	paths := []string{file, filepath.Join(t.TempDir(), "missing"), "/proc/self/ns/mnt"}
	if os.Geteuid() == 0 {
		bed := newTestbed(t, false)
		spec := ingressSpec(cliV4 + "/32")
		mustApply(t, m, bed.srv, spec)
		run(t, "ip", "netns", "del", bed.srvName)
		paths = append(paths, bed.srv)
	}
	spec := ingressSpec(cliV4 + "/32")
	for _, path := range paths {
		if err := m.Apply(ctx, path, spec); !errors.Is(err, ErrNetnsGone) {
			t.Errorf("Apply(%s) = %v, want ErrNetnsGone", path, err)
		}
		if err := m.Check(ctx, path, spec); !errors.Is(err, ErrNetnsGone) {
			t.Errorf("Check(%s) = %v, want ErrNetnsGone", path, err)
		}
		if _, err := m.Inspect(ctx, path); !errors.Is(err, ErrNetnsGone) {
			t.Errorf("Inspect(%s) = %v, want ErrNetnsGone", path, err)
		}
		if err := m.Remove(ctx, path); err != nil {
			t.Errorf("Remove(%s) = %v, want nil", path, err)
		}
	}
	if n := len(m.netns); n != 0 {
		t.Errorf("Manager still remembers %d netns", n)
	}
}

func TestRestartAdoptsWithoutWindow(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	specA := ingressSpec(cliV4 + "/32")
	mustApply(t, newManager(t), bed.srv, specA)
	genA := mustInspect(t, newManager(t), bed.srv).Generation

	// A new daemon with the same spec adopts the rules as they are.
	m := newManager(t)
	mustApply(t, m, bed.srv, specA)
	if n, ops := m.execs.Load(), m.netlinkOps.Load(); n != 2 || ops != 0 {
		t.Errorf("adopting an identical firewall ran %d commands and %d ipset commands, want 2 and 0 (inspection only)", n, ops)
	}
	if g := mustInspect(t, m, bed.srv).Generation; g != genA {
		t.Errorf("adoption moved the generation from %d to %d", genA, g)
	}

	// A leftover set of a crashed daemon, and a new daemon with a new spec.
	inNS(t, bed.srvName, "ipset", "create", "pw4-7-g1", "hash:net", "family", "inet")
	specB := ingressSpec(cliV4 + "/32")
	specB.Firewall.Ingress.Rules = append(specB.Firewall.Ingress.Rules, rule(from(cliV4b+"/32"), tcp(9090)))
	specB.Firewall.Egress = isolated(rule(anyPeer))

	// Probe ports that both firewalls deny, continuously, during the
	// re-apply: TCP connects and a dense stream of UDP datagrams.
	stop := make(chan struct{})
	var attempts, leaks atomic.Int64
	done := make(chan struct{}, 3)
	for range 2 {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-stop:
					return
				default:
				}
				attempts.Add(1)
				if ok, _ := reach(bed.cli, probe{proto: "tcp", from: cliV4, to: hostPort(srvV4, "8081")}, 20*time.Millisecond); ok {
					leaks.Add(1)
				}
			}
		}()
	}
	go func() {
		defer func() { done <- struct{}{} }()
		var c net.Conn
		err := ns.WithNetNSPath(bed.cli, func(ns.NetNS) error {
			var err error
			c, err = net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(cliV4)}, &net.UDPAddr{IP: net.ParseIP(srvV4), Port: 8080})
			return err
		})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		go func() {
			buf := make([]byte, 16)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
				leaks.Add(1) // an echo: a datagram got through
			}
		}()
		for {
			select {
			case <-stop:
				time.Sleep(100 * time.Millisecond) // late echoes
				return
			default:
			}
			attempts.Add(1)
			c.Write([]byte("leak"))
			time.Sleep(200 * time.Microsecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	m = newManager(t)
	mustApply(t, m, bed.srv, specB)
	time.Sleep(100 * time.Millisecond)
	close(stop)
	for range 3 {
		<-done
	}
	if leaks.Load() != 0 {
		t.Errorf("%d of %d probes of a denied port got through during the re-apply", leaks.Load(), attempts.Load())
	} else {
		t.Logf("%d probes of a denied port during the re-apply, none through", attempts.Load())
	}

	rs := mustInspect(t, m, bed.srv)
	if rs.Generation <= genA {
		t.Errorf("generation %d after re-apply, want above %d", rs.Generation, genA)
	}
	expectOnlyReferencedSets(t, rs) // the crashed daemon's pw4-7-g1 included
	mustCheck(t, m, bed.srv, specB)
	expect(t, bed.cli,
		probe{"tcp", cliV4b, hostPort(srvV4, "9090"), true},
		probe{"tcp", cliV4, hostPort(srvV4, "9090"), false},
	)
}

// TestRenderRoundTrip applies every golden firewall in turn to one netns
// (each a transition from the previous one) and checks that what is in force
// is exactly what Render says, in iptables-save's own words.
func TestRenderRoundTrip(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, false)
	m := newManager(t)
	for _, tc := range renderCases {
		mustApply(t, m, bed.srv, tc.spec)
		rs := mustInspect(t, m, bed.srv)
		if got, want := formatRuleset(rs), formatRuleset(RenderAs(tc.spec, rs)); got != want {
			t.Errorf("%s: in force:\n%s\nRender:\n%s", tc.name, got, want)
		}
		mustCheck(t, m, bed.srv, tc.spec)
		fresh := newManager(t)
		mustCheck(t, fresh, bed.srv, tc.spec)
	}
}

// expectOnlyReferencedSets fails the test for a podwall set in force that
// no rule matches on: a leftover of an older generation.
func expectOnlyReferencedSets(t *testing.T, rs *Ruleset) {
	t.Helper()
	var used []string
	for _, text := range []string{rs.V4, rs.V6} {
		for line := range strings.Lines(text) {
			used = append(used, matchSets(line)...)
		}
	}
	for _, s := range rs.Sets {
		if !slices.Contains(used, s.Name) {
			t.Errorf("set %s left behind: no rule uses it", s.Name)
		}
	}
}

func TestConcurrentNetns(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, false)
	m := newManager(t)
	errs := make(chan error, 2)
	for i, path := range []string{bed.srv, bed.cli} {
		go func() {
			var err error
			for j := range 6 {
				spec := renderCases[(i+j)%len(renderCases)].spec
				if err = m.Apply(context.Background(), path, spec); err == nil {
					err = m.Check(context.Background(), path, spec)
				}
				if err != nil {
					break
				}
			}
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// handEdit runs edit with a go-iptables handle (IPv4, the nf_tables binary)
// inside the netns at path.
func handEdit(t *testing.T, path string, edit func(*iptables.IPTables) error) {
	t.Helper()
	bin, err := lookPath("iptables-nft")
	if err != nil {
		t.Fatal(err)
	}
	err = ns.WithNetNSPath(path, func(ns.NetNS) error {
		ipt, err := iptables.New(iptables.Path(bin))
		if err != nil {
			return err
		}
		return edit(ipt)
	})
	if err != nil {
		t.Fatalf("hand edit in %s: %v", path, err)
	}
}
