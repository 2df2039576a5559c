package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// explainCluster is the state of the explain tests: namespace x with local
// pods a (serving http on TCP 80) and b, namespace y with c, a pod on
// another node (serving dns on UDP 53), and a host-network pod h.
func explainCluster() *cluster {
	c := &cluster{}
	c.addNamespace("x", labelsOf("team", "x"))
	c.addNamespace("y", labelsOf("team", "y"))
	c.addPod("x", "a", labelsOf("app", "a"), http80, "10.0.0.1", "fd00:1::1")
	c.addPod("x", "b", labelsOf("app", "b"), nil, "10.0.0.2")
	c.addPod("x", "d", labelsOf("app", "d"), nil, "10.0.0.4")
	remote := c.addPod("y", "c", labelsOf("app", "c"), []ContainerPort{{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53}}, "10.0.1.3")
	remote.NodeName = "node-2"
	h := c.addPod("x", "h", nil, nil, "192.168.0.10")
	h.HostNetwork = true
	return c
}

const explainPolicies = `
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
---
metadata: {name: a-from-b, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: b}}}]
    ports: [{port: http}]
  - from: [{namespaceSelector: {matchLabels: {team: "y"}}}]
    ports: [{port: 80, protocol: TCP}, {protocol: SCTP}]
---
metadata: {name: b-egress, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.1.0/24]}}]
    ports: [{port: 80, endPort: 90}]
  - to: [{namespaceSelector: {}}]
    ports: [{port: dns, protocol: UDP}]
---
metadata: {name: c-in, namespace: "y"}
spec:
  podSelector: {matchLabels: {app: c}}
  ingress:
  - from: [{namespaceSelector: {}}]
    ports: [{port: dns, protocol: UDP}]
`

// explainInput builds the Explain input of c: every pod but the remote and
// host-network ones is local, every firewall compiled is in force, and the
// node's address 10.0.0.254 is allowed into every local pod.
func explainInput(t *testing.T, c *cluster, policies string) (*ExplainInput, *world) {
	t.Helper()
	nps := parsePolicies(t, policies)
	in := &ExplainInput{State: c.state(nps...), NodeAddrs: map[string][]netip.Addr{}, InForce: map[string]*Firewall{}}
	var local []LocalPod
	for _, p := range c.pods {
		if p.HostNetwork || p.NodeName != "node-1" {
			continue
		}
		lp := LocalPod{Key: localKey(p), Pod: p}
		local = append(local, lp)
		in.NodeAddrs[lp.Key] = []netip.Addr{netip.MustParseAddr("10.0.0.254")}
	}
	in.Local = local
	res := Compile(in.State, local)
	for key, fw := range res.Firewalls {
		in.InForce[key] = fw
	}
	return in, compileCluster(t, c, nps...)
}

func TestExplain(t *testing.T) {
	in, _ := explainInput(t, explainCluster(), explainPolicies)
	tests := []struct {
		name     string
		q        ExplainQuery
		want     string // the explanation, rendered by explainSummary
		contains []string
	}{
		{
			name: "named ingress port and an ipBlock egress range",
			q:    ExplainQuery{Source: "x/b", Destination: "x/a", Port: 80},
			want: `x/b -> x/a TCP/80: allowed
  10.0.0.2 -> 10.0.0.1 allowed
    egress x/b here allowed [x/b-egress x/deny-all] by [x/b-egress egress[0] TCP/80]
    ingress x/a here allowed [x/a-from-b x/deny-all] by [x/a-from-b ingress[0] TCP/80]`,
		},
		{
			name: "the named port does not cover another port",
			q:    ExplainQuery{Source: "x/b", Destination: "x/a", Port: 81},
			want: `x/b -> x/a TCP/81: denied
  10.0.0.2 -> 10.0.0.1 denied
    egress x/b here allowed [x/b-egress x/deny-all] by [x/b-egress egress[0] TCP/81]
    ingress x/a here denied [x/a-from-b x/deny-all] by []`,
			contains: []string{"isolated by x/a-from-b, x/deny-all; no rule allows 10.0.0.2 on TCP/81"},
		},
		{
			name: "a port name resolved against the destination",
			q:    ExplainQuery{Source: "x/b", Destination: "x/a", PortName: "http"},
			want: `x/b -> x/a TCP/80: allowed
  10.0.0.2 -> 10.0.0.1 allowed
    egress x/b here allowed [x/b-egress x/deny-all] by [x/b-egress egress[0] TCP/80]
    ingress x/a here allowed [x/a-from-b x/deny-all] by [x/a-from-b ingress[0] TCP/80]`,
		},
		{
			name: "egress default deny",
			q:    ExplainQuery{Source: "x/a", Destination: "x/b", Port: 80},
			want: `x/a -> x/b TCP/80: denied
  10.0.0.1 -> 10.0.0.2 denied
    egress x/a here denied [x/deny-all] by []
    ingress x/b here denied [x/deny-all] by []`,
		},
		{
			name: "the node's address is always allowed in",
			q:    ExplainQuery{Source: "10.0.0.254", Destination: "x/a", Port: 9999},
			want: `10.0.0.254 -> x/a TCP/9999: allowed
  10.0.0.254 -> 10.0.0.1 allowed
    egress - - allowed [] by []
    ingress x/a here allowed [x/a-from-b x/deny-all] by []`,
			contains: []string{"allowed by an address of this node (always allowed in)", "an address of this node"},
		},
		{
			name: "a remote destination is evaluated but not enforced here",
			q:    ExplainQuery{Source: "x/b", Destination: "y/c", Port: 53, Protocol: "udp"},
			want: `x/b -> y/c UDP/53: allowed
  10.0.0.2 -> 10.0.1.3 allowed
    egress x/b here allowed [x/b-egress x/deny-all] by [x/b-egress egress[1] UDP/53]
    ingress y/c elsewhere allowed [y/c-in] by [y/c-in ingress[0] UDP/53]`,
			contains: []string{"runs on node node-2: its firewall is enforced there", "not enforced on this node; its policies say: allowed by y/c-in ingress[0]"},
		},
		{
			name: "ipBlock except",
			q:    ExplainQuery{Source: "x/b", Destination: "10.0.1.7", Port: 80},
			want: `x/b -> 10.0.1.7 TCP/80: denied
  10.0.0.2 -> 10.0.1.7 denied
    egress x/b here denied [x/b-egress x/deny-all] by []
    ingress - - allowed [] by []`,
		},
		{
			name: "a CIDR partly allowed",
			q:    ExplainQuery{Source: "x/b", Destination: "10.0.0.0/22", Port: 85},
			want: `x/b -> 10.0.0.0/22 TCP/85: partial
  10.0.0.2 -> 10.0.0.0/22 partial
    egress x/b here partial [x/b-egress x/deny-all] by [x/b-egress egress[0] TCP/85 10.0.0.0/24,10.0.2.0/23]
    ingress - - allowed [] by []`,
		},
		{
			name: "every port: the ports both sides allow",
			q:    ExplainQuery{Source: "x/b", Destination: "x/a"},
			want: `x/b -> x/a any: partial
  10.0.0.2 -> 10.0.0.1 partial ports TCP/80
    egress x/b here partial [x/b-egress x/deny-all] by [x/b-egress egress[0] TCP/80-90]
    ingress x/a here partial [x/a-from-b x/deny-all] by [x/a-from-b ingress[0] TCP/80]`,
		},
		{
			name: "SCTP from a namespace selector",
			q:    ExplainQuery{Source: "y/c", Destination: "x/a", Port: 9, Protocol: "SCTP"},
			want: `y/c -> x/a SCTP/9: allowed
  10.0.1.3 -> 10.0.0.1 allowed
    egress y/c elsewhere allowed [] by []
    ingress x/a here allowed [x/a-from-b x/deny-all] by [x/a-from-b ingress[1] SCTP/9]`,
		},
		{
			name: "loopback",
			q:    ExplainQuery{Source: "x/a", Destination: "10.0.0.1", Port: 80},
			want: `x/a -> 10.0.0.1 TCP/80: allowed
  10.0.0.1 -> 10.0.0.1 allowed
    egress x/a here allowed [] by []
    ingress x/a here allowed [] by []`,
			contains: []string{"loopback"},
		},
		{
			name: "dual stack: one flow per family",
			q:    ExplainQuery{Source: "x/a", Destination: "x/a", Port: 80},
			want: `x/a -> x/a TCP/80: allowed
  10.0.0.1 -> 10.0.0.1 allowed
    egress x/a here allowed [] by []
    ingress x/a here allowed [] by []
  fd00:1::1 -> fd00:1::1 allowed
    egress x/a here allowed [] by []
    ingress x/a here allowed [] by []`,
		},
		{
			name: "a host-network pod is not subject to policy, its address is no node address here",
			q:    ExplainQuery{Source: "x/h", Destination: "x/a", Port: 80},
			want: `x/h -> x/a TCP/80: denied
  192.168.0.10 -> 10.0.0.1 denied
    egress - - allowed [] by []
    ingress x/a here denied [x/a-from-b x/deny-all] by []`,
			contains: []string{"uses the host network"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := Explain(in, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := explainSummary(x); got != tt.want {
				t.Errorf("explanation:\n%s\nwant:\n%s", got, tt.want)
			}
			all := fmt.Sprintf("%+v", *x)
			for _, s := range tt.contains {
				if !strings.Contains(all, s) {
					t.Errorf("explanation lacks %q:\n%s", s, all)
				}
			}
		})
	}
}

// explainSummary renders what the tests compare: verdicts, who decides,
// the isolating policies and the allowing rules with their ports and peers.
func explainSummary(x *Explanation) string {
	port := "any"
	if x.Port != 0 {
		port = fmt.Sprintf("%s/%d", x.Protocol, x.Port)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s -> %s %s: %s", x.Source.Input, x.Destination.Input, port, x.Verdict)
	for _, f := range x.Flows {
		fmt.Fprintf(&b, "\n  %s -> %s %s", addrString(f.Source), addrString(f.Destination), f.Verdict)
		if len(f.AllowedPorts) > 0 && f.Verdict == VerdictPartial {
			fmt.Fprintf(&b, " ports %s", strings.Join(f.AllowedPorts, ","))
		}
		for _, d := range []DirectionVerdict{f.Egress, f.Ingress} {
			where := "-"
			if d.Pod != "" {
				where = "elsewhere"
				if d.Enforced {
					where = "here"
				}
			}
			var rules []string
			for _, r := range d.AllowedBy {
				s := r.String() + " " + strings.Join(r.Ports, ",")
				if len(r.Peers) > 0 {
					var peers []string
					for _, p := range r.Peers {
						peers = append(peers, p.String())
					}
					s += " " + strings.Join(peers, ",")
				}
				rules = append(rules, s)
			}
			fmt.Fprintf(&b, "\n    %s %s %s %s [%s] by [%s]", d.Direction, orDash(d.Pod), where, d.Verdict,
				strings.Join(d.Policies, " "), strings.Join(rules, ", "))
		}
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func addrString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func TestExplainErrors(t *testing.T) {
	in, _ := explainInput(t, explainCluster(), explainPolicies)
	tests := []struct {
		q    ExplainQuery
		want error
		msg  string
	}{
		{ExplainQuery{Source: "x/nope", Destination: "x/a"}, ErrExplainNotFound, "pod x/nope: not found"},
		{ExplainQuery{Source: "x/a", Destination: "not an endpoint"}, ErrExplainInvalid, `"not an endpoint" is not namespace/name`},
		{ExplainQuery{Source: "x/a/b", Destination: "x/a"}, ErrExplainInvalid, "is not namespace/name"},
		{ExplainQuery{Source: "", Destination: "x/a"}, ErrExplainInvalid, "empty"},
		{ExplainQuery{Source: "10.0.0.0/8", Destination: "10.1.2.3/8"}, ErrExplainInvalid, "host bits set"},
		{ExplainQuery{Source: "x/b", Destination: "x/a", PortName: "nope"}, ErrExplainNotFound, `no container port named "nope"`},
		{ExplainQuery{Source: "x/b", Destination: "10.0.0.1", Port: 80, PortName: "http"}, ErrExplainInvalid, "not both"},
		{ExplainQuery{Source: "x/b", Destination: "10.9.9.9", PortName: "http"}, ErrExplainInvalid, "needs a destination pod"},
		{ExplainQuery{Source: "x/b", Destination: "x/a", Port: 70000}, ErrExplainInvalid, "out of range"},
		{ExplainQuery{Source: "x/b", Destination: "x/a", Port: 80, Protocol: "ICMP"}, ErrExplainInvalid, "want TCP, UDP or SCTP"},
		{ExplainQuery{Source: "x/b", Destination: "fd00::1"}, ErrExplainInvalid, "no IP family in common"},
	}
	for _, tt := range tests {
		t.Run(tt.q.Source+" "+tt.q.Destination, func(t *testing.T) {
			_, err := Explain(in, tt.q)
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.msg) {
				t.Errorf("error %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

// TestExplainPending: a verdict the firewall in force does not give yet
// says so, with the last apply error.
func TestExplainPending(t *testing.T) {
	c := explainCluster()
	in, _ := explainInput(t, c, explainPolicies)
	a := localKey(c.pod(t, "x/a"))
	in.InForce[a] = &Firewall{} // nothing isolated in force yet
	in.ApplyErrors = map[string]error{a: errors.New("iptables-nft-restore: exit status 4")}
	x, err := Explain(in, ExplainQuery{Source: "x/b", Destination: "x/a", Port: 81})
	if err != nil {
		t.Fatal(err)
	}
	got := x.Flows[0].Ingress.Pending
	want := "the firewall in force still says allowed: the next sync applies the current policies; the last apply failed: iptables-nft-restore: exit status 4"
	if got != want {
		t.Errorf("pending = %q, want %q", got, want)
	}
	if p := x.Flows[0].Egress.Pending; p != "" {
		t.Errorf("egress pending = %q, want none (in force as compiled)", p)
	}
	delete(in.InForce, a)
	x, _ = Explain(in, ExplainQuery{Source: "x/b", Destination: "x/a", Port: 81})
	if got := x.Flows[0].Ingress.Pending; !strings.HasPrefix(got, "no firewall applied yet (in force: allowed)") {
		t.Errorf("pending without a firewall in force = %q", got)
	}
}

// TestExplainAgreesWithTheEvaluator compares every verdict of a port query
// between every pair of addresses with the package's evaluator of compiled
// firewalls, and checks that the rules named are exactly those that, alone,
// allow the flow: an allowed isolated direction names at least one rule (or
// the node), a denied one none.
func TestExplainAgreesWithTheEvaluator(t *testing.T) {
	c := explainCluster()
	c.pod(t, "y/c").NodeName = "node-1" // every pod local: the evaluator judges both sides
	in, w := explainInput(t, c, explainPolicies)
	addrs := []string{"10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.1.3", "10.0.1.7", "10.0.0.254", "10.0.3.1"}
	ports := []struct {
		proto corev1.Protocol
		port  int32
	}{{"TCP", 80}, {"TCP", 81}, {"TCP", 91}, {"UDP", 53}, {"UDP", 80}, {"SCTP", 80}, {"SCTP", 7}}
	var allowed, denied int
	for _, src := range addrs {
		for _, dst := range addrs {
			if src == dst {
				continue
			}
			for _, p := range ports {
				x, err := Explain(in, ExplainQuery{Source: src, Destination: dst, Port: p.port, Protocol: p.proto})
				if err != nil {
					t.Fatal(err)
				}
				want := w.allowed(netip.MustParseAddr(src), netip.MustParseAddr(dst), p.port, p.proto)
				if src == "10.0.0.254" {
					// The node's address is always allowed in; the
					// evaluator knows no node addresses.
					want = true
				}
				if got := x.Verdict == VerdictAllowed; got != want {
					t.Errorf("%s -> %s %s/%d: explain says %s, the evaluator %v\n%s", src, dst, p.proto, p.port, x.Verdict, want, explainSummary(x))
				}
				if want {
					allowed++
				} else {
					denied++
				}
				for _, d := range []DirectionVerdict{x.Flows[0].Egress, x.Flows[0].Ingress} {
					named := len(d.AllowedBy) > 0 || strings.Contains(d.Reason, "address of this node")
					if d.Isolated && (d.Verdict == VerdictAllowed) != named {
						t.Errorf("%s -> %s %s/%d %s: verdict %s but rules %v (%s)", src, dst, p.proto, p.port, d.Direction, d.Verdict, d.AllowedBy, d.Reason)
					}
				}
			}
		}
	}
	if allowed == 0 || denied == 0 {
		t.Fatalf("%d allowed and %d denied cells; want both", allowed, denied)
	}
	t.Logf("%d allowed, %d denied cells agree", allowed, denied)
}

// TestExplainServices: a ClusterIP is judged as the dataplane judges it: on
// a Service port by the Service's endpoints (allowed when the pod's egress
// rules allow every ready one), on any other port dropped by the guard even
// when an ipBlock holds the address.
func TestExplainServices(t *testing.T) {
	c := explainCluster()
	c.serviceCIDRs = prefixes("10.0.96.0/24")
	c.addService("x", "web", "http", 8080, "10.0.96.10")
	c.addSlice("x", "web", "http", 80, "10.0.0.1")
	in, w := explainInput(t, c, explainPolicies)
	tests := []struct {
		port int32
		want Verdict
		why  string
	}{
		{8080, VerdictAllowed, "allowed by x/b-egress egress[0]; a Service frontend is judged by its endpoints"},
		{85, VerdictDenied, "no rule allows 10.0.96.10 on TCP/85"},
	}
	for _, tt := range tests {
		x, err := Explain(in, ExplainQuery{Source: "x/b", Destination: "10.0.96.10", Port: tt.port})
		if err != nil {
			t.Fatal(err)
		}
		e := x.Flows[0].Egress
		if x.Verdict != tt.want || !strings.HasSuffix(e.Reason, tt.why) {
			t.Errorf("x/b -> 10.0.96.10:%d: %s, egress %q; want %s, %q", tt.port, x.Verdict, e.Reason, tt.want, tt.why)
		}
		want := w.allowed(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.96.10"), tt.port, corev1.ProtocolTCP)
		if (x.Verdict == VerdictAllowed) != want {
			t.Errorf("x/b -> 10.0.96.10:%d: explain %s, the evaluator %v", tt.port, x.Verdict, want)
		}
	}
}
