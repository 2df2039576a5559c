package cluster

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The proxy tests' ranges: a dual-stack Service range of their own, and
// pod ranges no pod uses (the endpoints are written by hand).
var (
	proxyServiceV4 = netip.MustParsePrefix("10.212.160.0/20")
	proxyServiceV6 = netip.MustParsePrefix("fd00:213:0:9000::/112")
	proxyPodsV4    = netip.MustParsePrefix("10.212.2.0/24")
	proxyPodsV6    = netip.MustParsePrefix("fd00:213:0:100::/80")
)

// kubeRules returns the host's rules of family f that mention KUBE-.
func kubeRules(t *testing.T, f ipFamily) []string {
	t.Helper()
	cmd := "iptables-save"
	if f == familyV6 {
		cmd = "ip6tables-save"
	}
	out, err := exec.Command(cmd).Output()
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	var lines []string
	for line := range strings.Lines(string(out)) {
		if strings.Contains(line, "KUBE-") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	return lines
}

// lockIsFree reports whether ProxyLockPath can be taken right now.
func lockIsFree(t *testing.T) bool {
	t.Helper()
	f, err := os.OpenFile(ProxyLockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return true
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatal(err)
	}
	return false
}

// TestProxy starts a dual-stack cluster with kube-proxy and checks that it
// programs a dual-stack Service's ClusterIPs to exactly its endpoints in
// both families, masquerades only traffic from outside the pod ranges, holds
// the host-wide lock while it runs, and leaves no KUBE- rule and a free lock
// behind when stopped.
func TestProxy(t *testing.T) {
	nodeIPs := []netip.Addr{proxyPodsV4.Addr().Next(), proxyPodsV6.Addr().Next()}
	proxyOpts := ProxyOptions{NodeName: "pw-proxy-node", NodeIPs: nodeIPs, ClusterCIDRs: []netip.Prefix{proxyPodsV4, proxyPodsV6}}
	c := StartForTest(t, Options{ServiceCIDR: proxyServiceV4, SecondaryServiceCIDR: proxyServiceV6, Proxy: &proxyOpts})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := c.Client()
	p := c.Proxy()
	if p == nil {
		t.Fatal("Options.Proxy set, but the cluster has no kube-proxy")
	}

	t.Run("node created with both addresses", func(t *testing.T) {
		n, err := client.CoreV1().Nodes().Get(ctx, proxyOpts.NodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				got = append(got, a.Address)
			}
		}
		if len(got) != 2 || got[0] != nodeIPs[0].String() || got[1] != nodeIPs[1].String() {
			t.Errorf("InternalIPs %v, want %v", got, nodeIPs)
		}
	})

	t.Run("holds the host-wide lock", func(t *testing.T) {
		if lockIsFree(t) {
			t.Error("kube-proxy runs, but the host-wide lock is free")
		}
		if _, err := c.StartProxy(ctx, proxyOpts); err == nil || !strings.Contains(err.Error(), "already running") {
			t.Errorf("second StartProxy: err = %v, want already running", err)
		}
	})

	t.Run("dual-stack service programmed to its endpoints", func(t *testing.T) {
		if _, err := c.CreateNamespace(ctx, "pw-proxy", nil); err != nil {
			t.Fatal(err)
		}
		dual := corev1.IPFamilyPolicyRequireDualStack
		svc, err := client.CoreV1().Services("pw-proxy").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: corev1.ServiceSpec{
				IPFamilyPolicy: &dual,
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
					{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(svc.Spec.ClusterIPs) != 2 {
			t.Fatalf("ClusterIPs %v, want one per family", svc.Spec.ClusterIPs)
		}
		endpoints := []netip.Addr{netip.MustParseAddr("10.212.2.5"), netip.MustParseAddr("fd00:213:0:100::5")}
		for i, e := range endpoints {
			if err := createEndpointSlice(ctx, c, svc, i, e); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		if err := p.WaitService(ctx, svc, endpoints...); err != nil {
			t.Fatal(err)
		}
		if testing.Verbose() {
			t.Logf("rules:\n%s\n%s", strings.Join(kubeRules(t, familyV4), "\n"), strings.Join(kubeRules(t, familyV6), "\n"))
		}
		t.Logf("programmed %s after the EndpointSlices", time.Since(start).Round(time.Millisecond))

		// The twin: the wrong endpoints are never what it programmed.
		short, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		err = p.WaitService(short, svc, netip.MustParseAddr("10.212.2.6"))
		if err == nil || !strings.Contains(err.Error(), "goes to [10.212.2.5]") {
			t.Errorf("WaitService with a wrong endpoint: err = %v, want a timeout saying where it goes", err)
		}

		// Only traffic from outside the pod ranges is masqueraded.
		for f, pods := range map[ipFamily]netip.Prefix{familyV4: proxyPodsV4, familyV6: proxyPodsV6} {
			found := false
			for _, r := range kubeRules(t, f) {
				found = found || strings.Contains(r, "! -s "+pods.String()) && strings.Contains(r, "KUBE-MARK-MASQ")
			}
			if !found {
				t.Errorf("%v: no rule masquerading only traffic from outside %s:\n%s", f, pods, strings.Join(kubeRules(t, f), "\n"))
			}
		}
	})

	t.Run("StopProxy removes its rules and frees the lock", func(t *testing.T) {
		if err := c.StopProxy(); err != nil {
			t.Fatal(err)
		}
		for _, f := range []ipFamily{familyV4, familyV6} {
			if left := kubeRules(t, f); len(left) > 0 {
				t.Errorf("%v: KUBE- rules left after StopProxy:\n%s", f, strings.Join(left, "\n"))
			}
		}
		if !lockIsFree(t) {
			t.Error("host-wide lock still held after StopProxy")
		}
		if c.Proxy() != nil {
			t.Error("Proxy() still returns the stopped kube-proxy")
		}
	})

	t.Run("restart, then Stop cleans up", func(t *testing.T) {
		if _, err := c.StartProxy(ctx, proxyOpts); err != nil {
			t.Fatal(err)
		}
		if lockIsFree(t) {
			t.Error("restarted kube-proxy does not hold the lock")
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		for _, f := range []ipFamily{familyV4, familyV6} {
			if left := kubeRules(t, f); len(left) > 0 {
				t.Errorf("%v: KUBE- rules left after Stop:\n%s", f, strings.Join(left, "\n"))
			}
		}
		if !lockIsFree(t) {
			t.Error("host-wide lock still held after Stop")
		}
		for _, p := range []netip.Prefix{proxyServiceV4, proxyServiceV6} {
			if hasBlackhole(t, p) {
				t.Errorf("blackhole route %s left after Stop", p)
			}
		}
	})
}

// createEndpointSlice writes the EndpointSlice of svc's family of addr with
// addr as its one ready endpoint, as the controller manager would for a
// pod.
func createEndpointSlice(ctx context.Context, c *Cluster, svc *corev1.Service, i int, addr netip.Addr) error {
	family := discoveryv1.AddressTypeIPv4
	if addr.Is6() {
		family = discoveryv1.AddressTypeIPv6
	}
	ready := true
	var ports []discoveryv1.EndpointPort
	for _, sp := range svc.Spec.Ports {
		port := sp.TargetPort.IntVal
		if port == 0 {
			port = sp.Port
		}
		ports = append(ports, discoveryv1.EndpointPort{Name: &sp.Name, Port: &port, Protocol: &sp.Protocol})
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace,
			Name:      svc.Name + "-" + strings.ToLower(string(family)),
			Labels:    map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: "podwall-test"},
		},
		AddressType: family,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{addr.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		}},
		Ports: ports,
	}
	_, err := c.Client().DiscoveryV1().EndpointSlices(svc.Namespace).Create(ctx, slice, metav1.CreateOptions{})
	return err
}

// TestIPv6OnlyCluster starts a cluster whose only Service range is IPv6:
// the API server advertises ::1 and gives the kubernetes Service an IPv6
// ClusterIP.
func TestIPv6OnlyCluster(t *testing.T) {
	v6 := netip.MustParsePrefix("fd00:213:0:9001::/112")
	c := StartForTest(t, Options{ServiceCIDR: v6})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc, err := c.Client().CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ip, err := netip.ParseAddr(svc.Spec.ClusterIP); err != nil || !v6.Contains(ip) {
		t.Errorf("kubernetes Service ClusterIP %q, want one in %s", svc.Spec.ClusterIP, v6)
	}
	if !hasBlackhole(t, v6) {
		t.Errorf("no host blackhole route for %s", v6)
	}
	if got := c.ServiceCIDRs(); len(got) != 1 || got[0] != v6 {
		t.Errorf("ServiceCIDRs() = %v, want [%s]", got, v6)
	}
}

func TestServiceRules(t *testing.T) {
	read := func(name string) ruleSnapshot {
		t.Helper()
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return ruleSnapshot{rules: parseRules(string(b))}
	}
	v4, v6 := read("iptables-save.txt"), read("ip6tables-save.txt")
	addr := netip.MustParseAddr
	tests := []struct {
		name      string
		snap      ruleSnapshot
		ip        string
		port      int
		proto     string
		endpoints []netip.Addr // nil: no jump from KUBE-SERVICES
		mentioned bool
	}{
		{name: "two endpoints", snap: v4, ip: "10.212.168.179", port: 80, proto: "tcp",
			endpoints: []netip.Addr{addr("10.212.2.5"), addr("10.212.2.6")}, mentioned: true},
		{name: "udp port", snap: v4, ip: "10.212.168.179", port: 53, proto: "udp", endpoints: []netip.Addr{addr("10.212.2.5")}, mentioned: true},
		{name: "other protocol", snap: v4, ip: "10.212.168.179", port: 53, proto: "tcp"},
		{name: "other port", snap: v4, ip: "10.212.168.179", port: 81, proto: "tcp"},
		{name: "no endpoints: reject only", snap: v4, ip: "10.212.160.1", port: 443, proto: "tcp", mentioned: true},
		{name: "ipv6", snap: v6, ip: "fd00:213:0:9000::6d1e", port: 80, proto: "tcp",
			endpoints: []netip.Addr{addr("fd00:213:0:100::5")}, mentioned: true},
		{name: "ipv6 address in the ipv4 rules", snap: v4, ip: "fd00:213:0:9000::6d1e", port: 80, proto: "tcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip := addr(tt.ip)
			got, ok := tt.snap.serviceEndpoints(ip, tt.port, tt.proto)
			if ok != (tt.endpoints != nil) || !sameAddrs(got, tt.endpoints) {
				t.Errorf("serviceEndpoints = %v, %t; want %v, %t", got, ok, tt.endpoints, tt.endpoints != nil)
			}
			if m := tt.snap.mentions(ip, tt.port, tt.proto); m != tt.mentioned {
				t.Errorf("mentions = %t, want %t", m, tt.mentioned)
			}
		})
	}
}

func TestSplitQuoted(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{`-A X -m comment --comment "a b" -j Y`, []string{"-A", "X", "-m", "comment", "--comment", "a b", "-j", "Y"}},
		{`-A X  --nfacct-name  n`, []string{"-A", "X", "--nfacct-name", "n"}},
		{`-A X --comment ""`, []string{"-A", "X", "--comment", ""}},
	}
	for _, tt := range tests {
		if got := splitQuoted(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("splitQuoted(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
