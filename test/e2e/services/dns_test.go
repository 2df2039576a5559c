package servicese2e

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// The kube-dns Service's ClusterIPs: fixed, as clusters fix theirs, in the
// low (static) band of each Service range, which dynamic allocation leaves
// alone.
var (
	kubeDNSIPv4 = netip.MustParseAddr("10.217.128.10")
	kubeDNSIPv6 = netip.MustParseAddr("fd00:217:8000::a")
)

// TestDNSThroughKubeDNS: a DNS server pod in kube-system, labelled
// k8s-app=kube-dns like CoreDNS, behind the dual-stack kube-dns Service
// (53/UDP and 53/TCP). Clients in a namespace under default-deny egress
// plus the common "allow DNS to kube-dns" policy (namespaceSelector and
// podSelector, UDP and TCP 53) resolve a name through both ClusterIPs over
// UDP and TCP; clients in a namespace with the default-deny alone cannot.
func TestDNSThroughKubeDNS(t *testing.T) {
	s := newScenario(t)
	const allowedNS, deniedNS = "sv-dns-allowed", "sv-dns-denied"
	s.namespace(allowedNS, nil)
	s.namespace(deniedNS, nil)
	waitDefaultServiceAccount(t, s, metav1.NamespaceSystem)
	pods := s.run(
		podObject(metav1.NamespaceSystem, "sv-dns", map[string]string{"k8s-app": "kube-dns"}),
		podObject(allowedNS, "client", nil),
		podObject(deniedNS, "client", nil),
	)
	server, allowed, denied := pods[0], pods[1], pods[2]
	const name = "web.sv-dns-allowed.svc.cluster.local"
	answers := []netip.Addr{netip.MustParseAddr("10.217.140.7"), netip.MustParseAddr("fd00:217:8000::7")}
	if err := server.ServeDNS(53, bed.DNSZone{name: answers}); err != nil {
		t.Fatal(err)
	}

	dual := corev1.IPFamilyPolicyRequireDualStack
	svc := s.service(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: "kube-dns", Labels: map[string]string{"k8s-app": "kube-dns"}},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"k8s-app": "kube-dns"},
			ClusterIP:      kubeDNSIPv4.String(),
			ClusterIPs:     []string{kubeDNSIPv4.String(), kubeDNSIPv6.String()},
			IPFamilyPolicy: &dual,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
				{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
			},
		},
	})
	dnsPorts := append(policyPorts(corev1.ProtocolUDP, intstr.FromInt32(53)), policyPorts(corev1.ProtocolTCP, intstr.FromInt32(53))...)
	for _, ns := range []string{allowedNS, deniedNS} {
		s.policy(egressPolicy(ns, "default-deny-egress", nil))
	}
	s.policy(egressPolicy(allowedNS, "allow-dns", nil, networkingv1.NetworkPolicyEgressRule{
		To: []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: metav1.NamespaceSystem}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}},
		}},
		Ports: dnsPorts,
	}))
	s.waitProgrammed(svc, server)

	for _, f := range families {
		dnsServer := netip.AddrPortFrom(s.clusterIP(svc, f), 53)
		for _, proto := range []string{bed.UDP, bed.TCP} {
			for _, question := range families {
				want := []netip.Addr{answers[0]}
				if question == bed.IPv6 {
					want = []netip.Addr{answers[1]}
				}
				var got []netip.Addr
				err := harness.Poll(s.ctx, convergeWithin, 500*time.Millisecond, func() error {
					var err error
					got, err = bed.LookupDNS(s.ctx, allowed, dnsServer, proto, name, question, probeTimeout)
					return err
				})
				if err != nil {
					t.Errorf("allowed client, %s question via kube-dns %s/%s: %v", question, dnsServer, proto, err)
				} else if !slices.Equal(got, want) {
					t.Errorf("allowed client, %s question via kube-dns %s/%s: answer %v, want %v", question, dnsServer, proto, got, want)
				}
			}
			expectNoDNS(t, s, denied, dnsServer, proto, name)
		}
	}
}

// expectNoDNS asks until the lookup gets no answer (blocked), then
// confirmProbes times more, failing the test if any is answered.
func expectNoDNS(t *testing.T, s *scenario, client *bed.Pod, server netip.AddrPort, proto, name string) {
	t.Helper()
	blocked := func() (bool, error) {
		_, err := bed.LookupDNS(s.ctx, client, server, proto, name, bed.IPv4, probeTimeout)
		if errors.Is(err, bed.ErrNotConnected) {
			return true, nil
		}
		return false, err
	}
	err := harness.Poll(s.ctx, convergeWithin, 500*time.Millisecond, func() error {
		ok, err := blocked()
		if err == nil && !ok {
			err = errors.New("answered")
		}
		return err
	})
	for i := 0; err == nil && i < confirmProbes; i++ {
		if ok, berr := blocked(); berr != nil || !ok {
			err = errors.Join(errors.New("answered"), berr)
		}
	}
	if err != nil {
		t.Errorf("client without the DNS rule, via kube-dns %s/%s: %v; want no answer", server, proto, err)
	}
}

// waitDefaultServiceAccount waits until namespace has its default
// ServiceAccount (the controller manager makes it; pods need it).
func waitDefaultServiceAccount(t *testing.T, s *scenario, namespace string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(s.ctx, 100*time.Millisecond, convergeWithin, true, func(ctx context.Context) (bool, error) {
		_, err := s.n.CP.Client().CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("default ServiceAccount of %s: %v", namespace, err)
	}
}
