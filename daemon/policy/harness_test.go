package policy

import (
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// This file holds the test bed shared by the tests of this package: a
// hand-built cluster, a YAML policy reader, and a small evaluator that walks
// compiled firewalls to decide whether a probe would pass.

// cluster is a hand-built cluster state. Every pod of it is local.
type cluster struct {
	namespaces   []*Namespace
	pods         []*Pod
	services     []*Service
	slices       []*EndpointSlice
	serviceCIDRs []netip.Prefix
}

// created is the creation time of every test pod unless a test says
// otherwise.
var created = metav1.NewTime(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))

func (c *cluster) addNamespace(name string, lbls map[string]string) *Namespace {
	all := map[string]string{corev1.LabelMetadataName: name}
	for k, v := range lbls {
		all[k] = v
	}
	ns := &Namespace{Name: name, Labels: all}
	c.namespaces = append(c.namespaces, ns)
	return ns
}

// addPod adds a Running pod with the given addresses.
func (c *cluster) addPod(ns, name string, lbls map[string]string, ports []ContainerPort, ips ...string) *Pod {
	p := &Pod{
		Namespace: ns,
		Name:      name,
		UID:       "uid-" + ns + "-" + name,
		Labels:    lbls,
		Ports:     ports,
		Phase:     corev1.PodRunning,
		Created:   created,
		NodeName:  "node-1",
	}
	for _, ip := range ips {
		p.IPs = append(p.IPs, netip.MustParseAddr(ip))
	}
	c.pods = append(c.pods, p)
	return p
}

func (c *cluster) pod(t *testing.T, key string) *Pod {
	t.Helper()
	for _, p := range c.pods {
		if p.Key() == key {
			return p
		}
	}
	t.Fatalf("no pod %s", key)
	return nil
}

func (c *cluster) namespace(t *testing.T, name string) *Namespace {
	t.Helper()
	for _, ns := range c.namespaces {
		if ns.Name == name {
			return ns
		}
	}
	t.Fatalf("no namespace %s", name)
	return nil
}

func (c *cluster) state(policies ...*networkingv1.NetworkPolicy) *State {
	return &State{Namespaces: c.namespaces, Pods: c.pods, Policies: policies,
		Services: c.services, EndpointSlices: c.slices, ServiceCIDRs: c.serviceCIDRs}
}

// localKey is the attachment key the tests give a pod.
func localKey(p *Pod) string { return "podwall/" + p.UID + "/eth0" }

// world is a compiled cluster: every non-hostNetwork pod is local.
type world struct {
	cluster *cluster
	result  *Result
	// localByIP maps an address to the attachment key of the pod that has
	// it (the first such pod).
	localByIP map[netip.Addr]string
}

// compileCluster compiles c with policies and checks the output invariants.
func compileCluster(t *testing.T, c *cluster, policies ...*networkingv1.NetworkPolicy) *world {
	t.Helper()
	var local []LocalPod
	w := &world{cluster: c, localByIP: make(map[netip.Addr]string)}
	for _, p := range c.pods {
		if p.HostNetwork {
			continue
		}
		local = append(local, LocalPod{Key: localKey(p), Pod: p})
		for _, a := range p.IPs {
			if _, ok := w.localByIP[a]; !ok {
				w.localByIP[a] = localKey(p)
			}
		}
	}
	st := c.state(policies...)
	w.result = Compile(st, local)
	checkInvariants(t, w.result)
	// The persistent compiler agrees, after compiling the cluster without
	// policies first.
	pc := NewCompiler()
	pc.Compile(c.state(), local)
	if diff := resultDiff(pc.Compile(st, local), w.result); diff != "" {
		t.Fatalf("persistent compiler differs from Compile: %s", diff)
	}
	return w
}

// firewall returns the compiled firewall of the pod with key ns/name.
func (w *world) firewall(t *testing.T, key string) *Firewall {
	t.Helper()
	fw := w.result.Firewalls[localKey(w.cluster.pod(t, key))]
	if fw == nil {
		t.Fatalf("no firewall for %s", key)
	}
	return fw
}

// addr resolves a probe endpoint: "ns/name" is the pod's first address,
// "ns/name@6" its first IPv6 address, anything else an address literal.
func (w *world) addr(t *testing.T, endpoint string) netip.Addr {
	t.Helper()
	if a, err := netip.ParseAddr(endpoint); err == nil {
		return a
	}
	key, family, _ := strings.Cut(endpoint, "@")
	p := w.cluster.pod(t, key)
	for _, a := range p.IPs {
		if family == "" || (family == "6") == a.Is6() {
			return a
		}
	}
	t.Fatalf("pod %s has no address for %q", key, endpoint)
	return netip.Addr{}
}

// allowed is the evaluator: a connection from src to dst:port/proto passes
// when src's egress (if src is a local pod) and dst's ingress (if dst is a
// local pod) both allow it.
func (w *world) allowed(src, dst netip.Addr, port int32, proto corev1.Protocol) bool {
	if key, ok := w.localByIP[src]; ok {
		if !directionAllows(w.result.Firewalls[key].Egress, dst, port, proto) {
			return false
		}
	}
	if key, ok := w.localByIP[dst]; ok {
		if !directionAllows(w.result.Firewalls[key].Ingress, src, port, proto) {
			return false
		}
	}
	return true
}

// directionAllows walks a direction as the dataplane renders it: Services
// accept, then ServiceGuard drops, then Rules accept.
func directionAllows(d Direction, remote netip.Addr, port int32, proto corev1.Protocol) bool {
	if !d.Isolated {
		return true
	}
	for _, r := range d.Services {
		if peerContains(r.Peer, remote) && portsMatch(r.Ports, port, proto) {
			return true
		}
	}
	for _, r := range d.ServiceGuard {
		if peerContains(r.Peer, remote) && portsMatch(r.Ports, port, proto) {
			return false
		}
	}
	for _, r := range d.Rules {
		if peerContains(r.Peer, remote) && portsMatch(r.Ports, port, proto) {
			return true
		}
	}
	return false
}

func peerContains(p Peer, a netip.Addr) bool {
	if p.Any {
		return true
	}
	for _, pfx := range p.Prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

func portsMatch(ports []Port, port int32, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Protocol != proto {
			continue
		}
		switch {
		case p.Port == 0:
			return true
		case p.EndPort == 0 && p.Port == port:
			return true
		case p.EndPort != 0 && p.Port <= port && port <= p.EndPort:
			return true
		}
	}
	return false
}

// probe is one connection attempt and its expected outcome.
type probe struct {
	from, to string // endpoints, see world.addr
	port     int32
	proto    corev1.Protocol // TCP when empty
	allow    bool
}

func (p probe) String() string {
	proto := p.proto
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	return fmt.Sprintf("%s -> %s %s/%d", p.from, p.to, proto, p.port)
}

// check runs probes and reports every mismatch. It returns how many allowed
// and denied probes it ran.
func (w *world) check(t *testing.T, probes []probe) (allowed, denied int) {
	t.Helper()
	for _, p := range probes {
		proto := p.proto
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		got := w.allowed(w.addr(t, p.from), w.addr(t, p.to), p.port, proto)
		if got != p.allow {
			t.Errorf("%s: allowed=%v, want %v", p, got, p.allow)
		}
		if p.allow {
			allowed++
		} else {
			denied++
		}
	}
	return allowed, denied
}

// checkInvariants checks what every Result promises: prefixes sorted,
// disjoint and minimal; ports sorted and deduplicated; open directions
// without rules; policies sorted; rules with distinct peers.
func checkInvariants(t *testing.T, res *Result) {
	t.Helper()
	for key, fw := range res.Firewalls {
		for name, d := range map[string]Direction{"ingress": fw.Ingress, "egress": fw.Egress} {
			where := key + " " + name
			if !d.Isolated && (len(d.Rules) > 0 || len(d.Policies) > 0 || len(d.Services) > 0 || len(d.ServiceGuard) > 0) {
				t.Errorf("%s: open direction has rules or policies: %+v", where, d)
			}
			if name == "ingress" && (len(d.Services) > 0 || len(d.ServiceGuard) > 0) {
				t.Errorf("%s: services on ingress: %+v", where, d)
			}
			if len(d.Rules) == 0 && len(d.ServiceGuard) > 0 {
				t.Errorf("%s: a service guard without rules to guard against", where)
			}
			for i, r := range d.Services {
				if r.Peer.Any || len(r.Peer.Prefixes) == 0 || len(r.Ports) != 1 || r.Ports[0].Port == 0 || r.Ports[0].EndPort != 0 {
					t.Errorf("%s: service rule %d is not frontends on one port: %+v", where, i, r)
					continue
				}
				if i > 0 && comparePorts(d.Services[i-1].Ports[0], r.Ports[0]) >= 0 {
					t.Errorf("%s: service rules %d and %d not in port order", where, i-1, i)
				}
				if !minimalPrefixes(r.Peer.Prefixes) {
					t.Errorf("%s: service rule %d: prefixes not sorted, disjoint and minimal: %v", where, i, r.Peer.Prefixes)
				}
			}
			for i, r := range d.ServiceGuard {
				if r.Peer.Any || len(r.Peer.Prefixes) == 0 || !minimalPrefixes(r.Peer.Prefixes) {
					t.Errorf("%s: guard rule %d: not a minimal list of prefixes: %+v", where, i, r)
				}
			}
			if !slices.IsSorted(d.Policies) || len(slices.Compact(slices.Clone(d.Policies))) != len(d.Policies) {
				t.Errorf("%s: policies not sorted and unique: %v", where, d.Policies)
			}
			for i, r := range d.Rules {
				if i > 0 && comparePeers(d.Rules[i-1].Peer, r.Peer) >= 0 {
					t.Errorf("%s: rules %d and %d not in peer order or same peer", where, i-1, i)
				}
				if r.Peer.Any && len(r.Peer.Prefixes) > 0 {
					t.Errorf("%s: rule %d: any-peer with prefixes", where, i)
				}
				if !r.Peer.Any {
					if len(r.Peer.Prefixes) == 0 {
						t.Errorf("%s: rule %d: peer matches nothing", where, i)
					}
					var b netipx.IPSetBuilder
					for _, p := range r.Peer.Prefixes {
						b.AddPrefix(p)
					}
					set, err := b.IPSet()
					if err != nil || !slices.Equal(set.Prefixes(), r.Peer.Prefixes) {
						t.Errorf("%s: rule %d: prefixes not sorted, disjoint and minimal: %v", where, i, r.Peer.Prefixes)
					}
				}
				if !slices.Equal(normalizePorts(r.Ports), r.Ports) && len(r.Ports) > 0 {
					t.Errorf("%s: rule %d: ports not normalized: %v", where, i, r.Ports)
				}
			}
		}
	}
}

// minimalPrefixes reports whether prefixes are sorted, disjoint and minimal.
func minimalPrefixes(prefixes []netip.Prefix) bool {
	var b netipx.IPSetBuilder
	for _, p := range prefixes {
		b.AddPrefix(p)
	}
	set, err := b.IPSet()
	return err == nil && slices.Equal(set.Prefixes(), prefixes)
}

// parsePolicies reads NetworkPolicies from YAML documents separated by "---".
func parsePolicies(t *testing.T, docs ...string) []*networkingv1.NetworkPolicy {
	t.Helper()
	var out []*networkingv1.NetworkPolicy
	for _, doc := range docs {
		for _, part := range strings.Split(doc, "\n---\n") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			np := &networkingv1.NetworkPolicy{}
			if err := yaml.UnmarshalStrict([]byte(part), np); err != nil {
				t.Fatalf("parse policy: %v\n%s", err, part)
			}
			if np.Namespace == "true" {
				t.Fatalf("policy %s: namespace parsed as YAML 1.1 boolean; quote it", np.Name)
			}
			out = append(out, np)
		}
	}
	return out
}

// matrixCase is one truth table: every ordered pair of distinct pods of the
// cluster, starting all-allowed; expectations are applied in order and later
// ones win, like the upstream Reachability mutators.
type matrixCase struct {
	port   int32
	proto  corev1.Protocol // TCP when empty
	expect []cell
	// extra are further probes (e.g. from addresses outside the cluster).
	extra []probe
}

// cell sets the expectation of every (from, to) whose keys match the
// patterns: "*" (every pod) or path.Match syntax ("x/*", "y/b").
type cell struct {
	from, to string
	allow    bool
}

// matrixProbes expands a truth table into probes over the cluster's pods,
// skipping loopback as upstream does.
func matrixProbes(t *testing.T, c *cluster, mc matrixCase) []probe {
	t.Helper()
	var probes []probe
	for _, from := range c.pods {
		for _, to := range c.pods {
			if from == to {
				continue
			}
			allow := true
			for _, e := range mc.expect {
				fm, err1 := matchKey(e.from, from.Key())
				tm, err2 := matchKey(e.to, to.Key())
				if err1 != nil || err2 != nil {
					t.Fatalf("bad pattern in %+v", e)
				}
				if fm && tm {
					allow = e.allow
				}
			}
			probes = append(probes, probe{from: from.Key(), to: to.Key(), port: mc.port, proto: mc.proto, allow: allow})
		}
	}
	return append(probes, mc.extra...)
}

// matchKey matches a pod key against a cell pattern.
func matchKey(pattern, key string) (bool, error) {
	if pattern == "*" {
		return true, nil
	}
	return path.Match(pattern, key)
}
