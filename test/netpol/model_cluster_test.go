package netpol

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	ip, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

// newModelClusterWith sets up namespaces x and y with pods a and b, serving
// TCP 80 and 81 and UDP 80 on serve-<port>-<proto>, and creates policies.
func newModelClusterWith(t *testing.T, policies ...*networkingv1.NetworkPolicy) (*ModelCluster, *Model) {
	t.Helper()
	m, err := newModel(modelSpec{
		prefix: "m", family: IPv4,
		ports: []int32{80, 81}, protocols: []corev1.Protocol{corev1.ProtocolTCP},
		portName: truthTablePortName, podLabelKey: "pod",
		pods: []string{"x/a", "x/b", "y/a", "y/b"},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.AllPods() {
		p.Ports = append(p.Ports, ContainerPort{Name: "serve-80-udp", Port: 80, Protocol: corev1.ProtocolUDP})
	}
	c := NewModelCluster()
	ctx := context.Background()
	if err := c.Setup(ctx, m); err != nil {
		t.Fatal(err)
	}
	for _, np := range policies {
		if err := c.CreatePolicy(ctx, np); err != nil {
			t.Fatal(err)
		}
	}
	return c, m
}

func inNS(ns string, np *networkingv1.NetworkPolicy) *networkingv1.NetworkPolicy {
	np.Namespace = ns
	return np
}

func TestModelClusterProbe(t *testing.T) {
	var (
		xa, xb, ya, yb = Ref("m-x", "a"), Ref("m-x", "b"), Ref("m-y", "a"), Ref("m-y", "b")
		tcp, udp, sctp = corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP
	)
	type probe struct {
		from, to PodRef
		port     int
		proto    corev1.Protocol
		want     bool
	}
	tests := []struct {
		name     string
		policies []*networkingv1.NetworkPolicy
		probes   []probe // each allowed probe has a denied twin
	}{
		{
			name: "no policy: open, but only where something listens",
			probes: []probe{
				{xa, yb, 80, tcp, true}, {xa, yb, 82, tcp, false}, {xa, yb, 80, sctp, false},
			},
		},
		{
			name: "default deny ingress isolates the namespace, loopback stays",
			policies: []*networkingv1.NetworkPolicy{
				inNS("m-x", genNetworkPolicyWithNameAndPodSelector("deny", metav1.LabelSelector{}, setSpecIngressRules())),
			},
			probes: []probe{
				{ya, xa, 80, tcp, false}, {xb, xa, 80, tcp, false}, {xa, xa, 80, tcp, true}, {xa, ya, 80, tcp, true},
			},
		},
		{
			name: "egress deny on x/a",
			policies: []*networkingv1.NetworkPolicy{
				inNS("m-x", genNetworkPolicyWithNameAndPodMatchLabel("deny-egress", map[string]string{"pod": "a"}, setSpecEgressRules())),
			},
			probes: []probe{{xa, ya, 80, tcp, false}, {xb, ya, 80, tcp, true}, {ya, xa, 80, tcp, true}},
		},
		{
			name: "ingress named port resolved against the server",
			policies: []*networkingv1.NetworkPolicy{
				inNS("m-x", genNetworkPolicyWithNameAndPodSelector("named", metav1.LabelSelector{}, setSpecIngressRules(
					networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: portName("serve-81-tcp")}}}))),
			},
			probes: []probe{{ya, xa, 81, tcp, true}, {ya, xa, 80, tcp, false}},
		},
		{
			name: "egress named port resolved against the destination",
			policies: []*networkingv1.NetworkPolicy{
				inNS("m-x", genNetworkPolicyWithNameAndPodSelector("named", metav1.LabelSelector{}, setSpecEgressRules(
					networkingv1.NetworkPolicyEgressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: portName("serve-80-tcp")}}}))),
			},
			probes: []probe{{xa, yb, 80, tcp, true}, {xa, yb, 81, tcp, false}, {xa, yb, 80, udp, false}},
		},
		{
			name: "protocol without port",
			policies: []*networkingv1.NetworkPolicy{
				inNS("m-x", genNetworkPolicyWithNameAndPodMatchLabel("by-proto", map[string]string{"pod": "a"}, setSpecIngressRules(
					networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &protocolTCP}}}))),
			},
			probes: []probe{{ya, xa, 81, tcp, true}, {ya, xa, 80, udp, false}},
		},
		{
			name: "a rule for another protocol still isolates",
			policies: []*networkingv1.NetworkPolicy{
				inNS("m-x", genNetworkPolicyWithNameAndPodMatchLabel("sctp-only", map[string]string{"pod": "a"}, setSpecIngressRules(
					networkingv1.NetworkPolicyIngressRule{Ports: []networkingv1.NetworkPolicyPort{{Port: portNumber(80), Protocol: &protocolSCTP}}}))),
			},
			probes: []probe{{ya, xa, 80, tcp, false}, {ya, xb, 80, tcp, true}},
		},
		{
			name: "namespace and pod selector together",
			policies: []*networkingv1.NetworkPolicy{
				inNS("m-x", genNetworkPolicyWithNameAndPodMatchLabel("and", map[string]string{"pod": "a"}, setSpecIngressRules(
					networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: "m-y"}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}},
					}}}))),
			},
			probes: []probe{{yb, xa, 80, tcp, true}, {ya, xa, 80, tcp, false}, {xb, xa, 80, tcp, false}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newModelClusterWith(t, tt.policies...)
			for _, p := range tt.probes {
				got, err := c.Probe(context.Background(), p.from, p.to, IPv4, p.port, p.proto)
				if err != nil {
					t.Fatal(err)
				}
				if got != p.want {
					t.Errorf("%s -> %s %s/%d = %t, want %t", p.from, p.to, p.proto, p.port, got, p.want)
				}
			}
		})
	}
}

func TestModelClusterIPBlocks(t *testing.T) {
	for _, family := range []Family{IPv4, IPv6} {
		t.Run(family.String(), func(t *testing.T) {
			c, _ := newModelClusterWith(t)
			ctx := context.Background()
			xa, xb, ya := Ref("m-x", "a"), Ref("m-x", "b"), Ref("m-y", "a")
			ipXB, ok := c.PodIP("m-x", "b", family)
			if !ok || (family == IPv4) != ipXB.Is4() {
				t.Fatalf("PodIP(x/b, %v) = %v, %t", family, ipXB, ok)
			}
			np := inNS("m-x", genNetworkPolicyWithNameAndPodMatchLabel("cidr", map[string]string{"pod": "a"}, setSpecEgressRules(
				networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
					CIDR: makeLargeCIDRForIP(ipXB), Except: []string{hostCIDR(ipXB)},
				}}}})))
			if err := c.CreatePolicy(ctx, np); err != nil {
				t.Fatal(err)
			}
			for _, p := range []struct {
				to   PodRef
				want bool
			}{{xb, false}, {ya, true}} {
				got, err := c.Probe(ctx, xa, p.to, family, 80, corev1.ProtocolTCP)
				if err != nil || got != p.want {
					t.Errorf("x/a -> %s = %t, %v; want %t", p.to, got, err, p.want)
				}
			}
		})
	}
}

func TestModelClusterAddresses(t *testing.T) {
	c, m := newModelClusterWith(t)
	seen := make(map[netip.Addr]bool)
	for _, ref := range m.AllPodRefs() {
		for _, family := range []Family{IPv4, IPv6} {
			ip, ok := c.PodIP(ref.Namespace, ref.Name, family)
			if !ok || seen[ip] {
				t.Errorf("%s %v: %v, %t (duplicate: %t)", ref, family, ip, ok, seen[ip])
			}
			seen[ip] = true
			if !modelPrefix4.Contains(ip) && !modelPrefix6.Contains(ip) {
				t.Errorf("%s: %v outside the model ranges", ref, ip)
			}
		}
	}
	if ip, ok := c.PodIP("m-x", "nope", IPv4); ok || ip.IsValid() {
		t.Errorf("PodIP of an unknown pod = %v, %t", ip, ok)
	}
	// Teardown forgets everything; addresses are not reused.
	if err := c.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := c.Setup(context.Background(), m); err != nil {
		t.Fatalf("Setup after Teardown: %v", err)
	}
	ip, _ := c.PodIP("m-x", "a", IPv4)
	if seen[ip] {
		t.Errorf("address %v reused after Teardown", ip)
	}
}

func TestModelClusterErrors(t *testing.T) {
	ctx := context.Background()
	deny := func() *networkingv1.NetworkPolicy {
		return inNS("m-x", genNetworkPolicyWithNameAndPodSelector("deny", metav1.LabelSelector{}, setSpecIngressRules()))
	}
	tests := []struct {
		name    string
		do      func(c *ModelCluster, m *Model) error
		wantErr string
	}{
		{"setup twice", func(c *ModelCluster, m *Model) error { return c.Setup(ctx, m) }, "already exists"},
		{"setup nil", func(c *ModelCluster, _ *Model) error { return c.Setup(ctx, nil) }, "no model"},
		{"create twice", func(c *ModelCluster, _ *Model) error {
			_ = c.CreatePolicy(ctx, deny())
			return c.CreatePolicy(ctx, deny())
		}, "already exists"},
		{"create in unknown namespace", func(c *ModelCluster, _ *Model) error {
			np := deny()
			np.Namespace = "nowhere"
			return c.CreatePolicy(ctx, np)
		}, "namespace nowhere not found"},
		{"invalid policy", func(c *ModelCluster, _ *Model) error {
			np := deny()
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.1/4"}}}}}
			return c.CreatePolicy(ctx, np)
		}, "invalid networkpolicy"},
		{"update missing", func(c *ModelCluster, _ *Model) error { return c.UpdatePolicy(ctx, deny()) }, "not found"},
		{"delete missing", func(c *ModelCluster, _ *Model) error { return c.DeletePolicy(ctx, "m-x", "deny") }, "not found"},
		{"label unknown namespace", func(c *ModelCluster, _ *Model) error { return c.SetNamespaceLabels(ctx, "nowhere", nil) }, "not found"},
		{"label unknown pod", func(c *ModelCluster, _ *Model) error { return c.SetPodLabels(ctx, "m-x", "nope", nil) }, "not found"},
		{"probe unknown pod", func(c *ModelCluster, _ *Model) error {
			_, err := c.Probe(ctx, Ref("m-x", "nope"), Ref("m-x", "a"), IPv4, 80, corev1.ProtocolTCP)
			return err
		}, "not found"},
		{"probe bad family", func(c *ModelCluster, _ *Model) error {
			_, err := c.Probe(ctx, Ref("m-x", "b"), Ref("m-x", "a"), 0, 80, corev1.ProtocolTCP)
			return err
		}, "invalid IP family"},
		{"probe bad port", func(c *ModelCluster, _ *Model) error {
			_, err := c.Probe(ctx, Ref("m-x", "b"), Ref("m-x", "a"), IPv4, 0, corev1.ProtocolTCP)
			return err
		}, "invalid port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, m := newModelClusterWith(t)
			err := tt.do(c, m)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestModelClusterChangesTakeEffect(t *testing.T) {
	ctx := context.Background()
	xa, xb := Ref("m-x", "a"), Ref("m-x", "b")
	allowB := inNS("m-x", genNetworkPolicyWithNameAndPodMatchLabel("allow-b", map[string]string{"pod": "a"}, setSpecIngressRules(
		networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}},
		}}})))
	c, _ := newModelClusterWith(t, allowB)
	steps := []struct {
		name   string
		change func() error
		want   bool
	}{
		{"isolated", func() error { return nil }, false},
		{"client labelled", func() error { return c.SetPodLabels(ctx, "m-x", "b", map[string]string{"pod": "b", "role": "client"}) }, true},
		{"policy updated to a namespace label", func() error {
			np := allowB.DeepCopy()
			np.Spec.Ingress[0].From[0] = networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}}}
			return c.UpdatePolicy(ctx, np)
		}, false},
		{"namespace labelled", func() error { return c.SetNamespaceLabels(ctx, "m-x", map[string]string{"team": "blue"}) }, true},
		{"namespace relabelled", func() error { return c.SetNamespaceLabels(ctx, "m-x", map[string]string{"team": "red"}) }, false},
		{"policy deleted", func() error { return c.DeletePolicy(ctx, "m-x", "allow-b") }, true},
		{"deny-all created", func() error {
			return c.CreatePolicy(ctx, inNS("m-x", genNetworkPolicyWithNameAndPodSelector("deny", metav1.LabelSelector{}, setSpecIngressRules())))
		}, false},
		{"all policies deleted", func() error { return c.DeleteAllPolicies(ctx) }, true},
	}
	for _, step := range steps {
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		got, err := c.Probe(ctx, xb, xa, IPv4, 80, corev1.ProtocolTCP)
		if err != nil || got != step.want {
			t.Errorf("%s: x/b -> x/a = %t, %v; want %t", step.name, got, err, step.want)
		}
	}
}
