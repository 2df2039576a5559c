package netpol

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestRunTestTearsDownOnFailure(t *testing.T) {
	c := &scriptedCluster{probe: func(PodRef, PodRef, int, corev1.Protocol, int) (bool, error) { return true, nil }}
	test := Test{Suite: SuiteNetpol, Name: "fails", Run: func(ctx context.Context, t *T) error {
		m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
		nsX, _, _ := namespacesXYZ(m)
		r := NewReachability(m.AllPodRefs(), true)
		r.ExpectAllIngress(Ref(nsX, "a"), false) // the cluster allows everything
		t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: r})
		t.CreatePolicy(ctx, genNetworkPolicyWithNameAndPodSelector("after-failure", metav1.LabelSelector{}), nsX)
		return t.Err()
	}}
	err := RunTest(context.Background(), c, test, modelOptions(IPv4))
	if err == nil || !strings.Contains(err.Error(), "validation #1") {
		t.Errorf("RunTest = %v, want the first validation to fail", err)
	}
	if c.teardowns != 1 {
		t.Errorf("%d teardowns, want 1", c.teardowns)
	}
	if len(c.created) != 0 {
		t.Errorf("actions ran after the failure: created %v", c.created)
	}
}

func TestRunTestSetupFailure(t *testing.T) {
	c := &scriptedCluster{setupErr: errors.New("no room"), probe: func(PodRef, PodRef, int, corev1.Protocol, int) (bool, error) {
		return true, nil
	}}
	err := RunTest(context.Background(), c, Legacy118()[1], modelOptions(IPv4))
	if err == nil || !strings.Contains(err.Error(), "set up model: no room") {
		t.Errorf("RunTest = %v, want the setup error", err)
	}
	if len(c.probes) != 0 || len(c.created) != 0 {
		t.Errorf("probed %d cells and created %v after a failed setup", len(c.probes), c.created)
	}
	if c.teardowns != 1 {
		t.Errorf("%d teardowns, want 1 (a failed setup may leave things behind)", c.teardowns)
	}
}

func TestRunTestRecoversPanics(t *testing.T) {
	c := &scriptedCluster{}
	test := Test{Suite: SuiteNetpol, Name: "panics", Run: func(context.Context, *T) error {
		var m map[string]int
		m["boom"]++
		return nil
	}}
	err := RunTest(context.Background(), c, test, Options{})
	if err == nil || !strings.Contains(err.Error(), "test panicked") {
		t.Errorf("RunTest = %v, want a recovered panic", err)
	}
	if c.teardowns != 0 {
		t.Errorf("%d teardowns without a setup", c.teardowns)
	}
}

func TestRunTestRejectsBadInput(t *testing.T) {
	c := &scriptedCluster{}
	if err := RunTest(context.Background(), c, Test{Name: "no body"}, Options{}); err == nil {
		t.Error("no error for a test without a body")
	}
	if err := RunTest(context.Background(), c, Netpol()[0], Options{Family: 5}); err == nil {
		t.Error("no error for an invalid family")
	}
	noSetup := Test{Suite: SuiteNetpol, Name: "no setup", Run: func(ctx context.Context, t *T) error {
		t.AddPodLabels(ctx, "x", "a", map[string]string{"k": "v"})
		_ = t.PodIP("x", "a")
		t.ValidateOrFail(ctx, TestCase{})
		return t.Err()
	}}
	if err := RunTest(context.Background(), c, noSetup, Options{}); err == nil || !strings.Contains(err.Error(), "has not set up a model") {
		t.Errorf("RunTest = %v, want an error for actions before the setup", err)
	}
}

func TestModelLayout(t *testing.T) {
	var got *Model
	c := &scriptedCluster{probe: func(PodRef, PodRef, int, corev1.Protocol, int) (bool, error) { return true, nil }}
	test := Test{Suite: SuiteNetpolUDP, Name: "layout", Run: func(ctx context.Context, t *T) error {
		got = t.InitializeResources(ctx, []corev1.Protocol{protocolTCP, protocolUDP}, []int32{80, 81})
		return t.Err()
	}}
	if err := RunTest(context.Background(), c, test, Options{NamespaceSuffix: "ab12c", Family: IPv6}); err != nil {
		t.Fatal(err)
	}
	if got.Family != IPv6 {
		t.Errorf("family %v, want IPv6", got.Family)
	}
	wantNS := []string{"udp-network-policy-x-ab12c", "udp-network-policy-y-ab12c", "udp-network-policy-z-ab12c"}
	for i, ns := range got.Namespaces {
		if ns.Name != wantNS[i] || len(ns.Pods) != 3 || len(ns.Labels) != 0 {
			t.Errorf("namespace %d = %s with %d pods and labels %v", i, ns.Name, len(ns.Pods), ns.Labels)
		}
	}
	p := got.Pod(Ref("udp-network-policy-y-ab12c", "b"))
	if p == nil || p.Labels["pod"] != "b" || len(p.Labels) != 1 {
		t.Fatalf("pod y/b = %+v", p)
	}
	wantPorts := []ContainerPort{
		{"serve-80-tcp", 80, corev1.ProtocolTCP}, {"serve-80-udp", 80, corev1.ProtocolUDP},
		{"serve-81-tcp", 81, corev1.ProtocolTCP}, {"serve-81-udp", 81, corev1.ProtocolUDP},
	}
	if len(p.Ports) != len(wantPorts) {
		t.Fatalf("ports %v, want %v", p.Ports, wantPorts)
	}
	for i := range wantPorts {
		if p.Ports[i] != wantPorts[i] {
			t.Errorf("port %d = %v, want %v", i, p.Ports[i], wantPorts[i])
		}
	}
	// waitForHTTPServers: one all-allowed matrix per port×protocol, 72
	// non-loopback cells each.
	if len(c.probes) != 4*72 {
		t.Errorf("%d readiness probes, want %d", len(c.probes), 4*72)
	}
}

func TestLegacyLayout(t *testing.T) {
	var got *Model
	c := &scriptedCluster{probe: func(PodRef, PodRef, int, corev1.Protocol, int) (bool, error) { return true, nil }}
	test := Test{Suite: SuiteLegacy, Name: "layout", Run: func(ctx context.Context, t *T) error {
		got = t.LegacyServer(ctx, "b/client-a", "c/client-a")
		return t.Err()
	}}
	if err := RunTest(context.Background(), c, test, Options{NamespaceSuffix: "q"}); err != nil {
		t.Fatal(err)
	}
	if ns := got.Namespace("network-policy-a-q"); ns == nil || len(ns.Labels) != 0 || len(ns.Pods) != 3 {
		t.Errorf("namespace a = %+v, want 3 pods and no labels", ns)
	}
	for _, base := range []string{"b", "c"} {
		ns := got.Namespace("network-policy-" + base + "-q")
		if ns == nil || ns.Labels["ns-name"] != ns.Name {
			t.Errorf("namespace %s = %+v, want ns-name=<its name>", base, ns)
		}
	}
	server := got.Pod(Ref("network-policy-a-q", "server"))
	if server == nil || server.Labels["pod-name"] != "server" || server.Ports[0].Name != "serve-80" || server.Ports[1].Name != "serve-81" {
		t.Errorf("server = %+v", server)
	}
	// The BeforeEach: one probe per port.
	want := []string{"network-policy-a-q/client-can-connect-80->network-policy-a-q/server", "network-policy-a-q/client-can-connect-81->network-policy-a-q/server"}
	if strings.Join(c.probes, ",") != strings.Join(want, ",") {
		t.Errorf("probes %v, want %v", c.probes, want)
	}
}

func TestPolicyBuilders(t *testing.T) {
	np := genNetworkPolicyWithNameAndPodMatchLabel("p", map[string]string{"pod": "a"}, setSpecIngressRules(), setSpecEgressRules(networkingv1.NetworkPolicyEgressRule{}))
	if np.Name != "p" || np.Spec.PodSelector.MatchLabels["pod"] != "a" {
		t.Errorf("metadata/selector: %+v", np)
	}
	if np.Spec.Ingress == nil || len(np.Spec.Ingress) != 0 || len(np.Spec.Egress) != 1 {
		t.Errorf("rules: ingress %v, egress %v", np.Spec.Ingress, np.Spec.Egress)
	}
	if len(np.Spec.PolicyTypes) != 2 || np.Spec.PolicyTypes[0] != networkingv1.PolicyTypeIngress || np.Spec.PolicyTypes[1] != networkingv1.PolicyTypeEgress {
		t.Errorf("policyTypes %v", np.Spec.PolicyTypes)
	}
}

func TestCIDRHelpers(t *testing.T) {
	tests := []struct {
		ip          string
		host, large string
		subnetBits  int
		subnet      string
	}{
		{"10.77.3.9", "10.77.3.9/32", "0.0.0.0/4", 24, "10.77.3.0/24"},
		{"192.168.1.2", "192.168.1.2/32", "192.0.0.0/4", 24, "192.168.1.0/24"},
		{"fd00:77::1a", "fd00:77::1a/128", "f000::/4", 64, "fd00:77::/64"},
	}
	for _, tt := range tests {
		ip := mustAddr(t, tt.ip)
		if got := hostCIDR(ip); got != tt.host {
			t.Errorf("hostCIDR(%s) = %s, want %s", tt.ip, got, tt.host)
		}
		if got := makeLargeCIDRForIP(ip); got != tt.large {
			t.Errorf("makeLargeCIDRForIP(%s) = %s, want %s", tt.ip, got, tt.large)
		}
		if got := subnetCIDR(ip, tt.subnetBits); got != tt.subnet {
			t.Errorf("subnetCIDR(%s, %d) = %s, want %s", tt.ip, tt.subnetBits, got, tt.subnet)
		}
	}
}
