package servicese2e

import (
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/test/bed"
)

// TestIPv6IPBlockExcept: on dual-stack pods, the client's egress allows the
// node's IPv6 pod range except server s2's address on 8080, and every IPv6
// address outside the pod range (::/0 except fd00:217::/64). It reaches s1
// over IPv6 but not s2 (the except) nor s1 over IPv4 (no IPv4 rule). Of
// the dual-stack Services over each pod, s1's IPv6 ClusterIP is open (its
// endpoint is allowed), s2's is closed although ::/0 covers it (ipBlocks
// never open a Service), and s1's IPv4 ClusterIP is closed.
func TestIPv6IPBlockExcept(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-ipv6"
	s.namespace(ns, nil)
	pods := s.run(
		podObject(ns, "s1", map[string]string{"which": "s1"}, tcpPort("http", 8080)),
		podObject(ns, "s2", map[string]string{"which": "s2"}, tcpPort("http", 8080)),
		podObject(ns, "client", map[string]string{"role": "client"}),
	)
	s1, s2, client := pods[0], pods[1], pods[2]
	svc1 := s.service(serviceObject(ns, "s1", map[string]string{"which": "s1"}, 80, intstr.FromInt32(8080), dualStack()))
	svc2 := s.service(serviceObject(ns, "s2", map[string]string{"which": "s2"}, 80, intstr.FromInt32(8080), dualStack()))
	s2v6 := s.podIP(s2, bed.IPv6)
	s.policy(egressPolicy(ns, "ipv6-range", map[string]string{"role": "client"},
		networkingv1.NetworkPolicyEgressRule{
			To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
				CIDR: bedCIDRv6.String(), Except: []string{netip.PrefixFrom(s2v6, 128).String()},
			}}},
			Ports: policyPorts(corev1.ProtocolTCP, intstr.FromInt32(8080)),
		},
		networkingv1.NetworkPolicyEgressRule{
			To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "::/0", Except: []string{podRangeV6.String()}}}},
		},
	))
	s.waitProgrammed(svc1, s1)
	s.waitProgrammed(svc2, s2)

	s.expectOpen("IPv6 range", client, s.podIP(s1, bed.IPv6), 8080, bed.TCP)
	s.expectClosed("IPv6 range's except", client, s2v6, 8080, bed.TCP)
	s.expectClosed("IPv4, no IPv4 rule", client, s.podIP(s1, bed.IPv4), 8080, bed.TCP)
	s.expectOpen("IPv6 ClusterIP, its endpoint in the range", client, s.clusterIP(svc1, bed.IPv6), 80, bed.TCP)
	s.expectClosed("IPv6 ClusterIP under ::/0, its endpoint excepted", client, s.clusterIP(svc2, bed.IPv6), 80, bed.TCP)
	s.expectClosed("IPv4 ClusterIP, its endpoint not allowed", client, s.clusterIP(svc1, bed.IPv4), 80, bed.TCP)
	s.expectVerdict(client, svc2, 80, bed.IPv6, false, nil, []string{endpoint(s2v6, 8080)})
	s.expectVerdict(client, svc1, 80, bed.IPv6, true, []string{endpoint(s.podIP(s1, bed.IPv6), 8080)}, nil)
}
