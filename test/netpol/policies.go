package netpol

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The builders below are upstream's policies.go, unexported.

type setFunc func(*networkingv1.NetworkPolicy)

func genNetworkPolicy(fns ...setFunc) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{
		TypeMeta: metav1.TypeMeta{Kind: "NetworkPolicy", APIVersion: "networking.k8s.io/v1"},
	}
	for _, fn := range fns {
		fn(np)
	}
	return np
}

// genNetworkPolicyWithNameAndPodMatchLabel returns a policy named name that
// selects pods by matchLabels targetLabels.
func genNetworkPolicyWithNameAndPodMatchLabel(name string, targetLabels map[string]string, fns ...setFunc) *networkingv1.NetworkPolicy {
	return genNetworkPolicyWithNameAndPodSelector(name, metav1.LabelSelector{MatchLabels: targetLabels}, fns...)
}

// genNetworkPolicyWithNameAndPodSelector returns a policy named name that
// selects pods by selector.
func genNetworkPolicyWithNameAndPodSelector(name string, selector metav1.LabelSelector, fns ...setFunc) *networkingv1.NetworkPolicy {
	fns = append([]setFunc{func(np *networkingv1.NetworkPolicy) {
		np.Name = name
		np.Spec.PodSelector = selector
	}}, fns...)
	return genNetworkPolicy(fns...)
}

// setSpecIngressRules appends ingress rules; the first call creates the
// (possibly empty) list and adds policyType Ingress, so setSpecIngressRules()
// means "deny all ingress to the selected pods".
func setSpecIngressRules(rules ...networkingv1.NetworkPolicyIngressRule) setFunc {
	return func(np *networkingv1.NetworkPolicy) {
		if np.Spec.Ingress == nil {
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
		}
		np.Spec.Ingress = append(np.Spec.Ingress, rules...)
	}
}

// setSpecEgressRules is setSpecIngressRules for egress.
func setSpecEgressRules(rules ...networkingv1.NetworkPolicyEgressRule) setFunc {
	return func(np *networkingv1.NetworkPolicy) {
		if np.Spec.Egress == nil {
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{}
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
		np.Spec.Egress = append(np.Spec.Egress, rules...)
	}
}

var (
	protocolTCP  = corev1.ProtocolTCP
	protocolUDP  = corev1.ProtocolUDP
	protocolSCTP = corev1.ProtocolSCTP
)

// portNumber is a numbered policy port (upstream &intstr.IntOrString{IntVal: n}).
func portNumber(n int32) *intstr.IntOrString {
	p := intstr.FromInt32(n)
	return &p
}

// portName is a named policy port.
func portName(name string) *intstr.IntOrString {
	p := intstr.FromString(name)
	return &p
}

// hostCIDR returns ip/32 or ip/128 (upstream fmt.Sprintf("%s/%d", ip, hostMask)).
func hostCIDR(ip netip.Addr) string {
	return netip.PrefixFrom(ip, ip.BitLen()).String()
}

// makeLargeCIDRForIP returns the /4 that contains ip, canonical, for IPv4
// and IPv6 alike (upstream makeLargeCIDRForIP).
func makeLargeCIDRForIP(ip netip.Addr) string {
	return netip.PrefixFrom(ip, 4).Masked().String()
}

// subnetCIDR returns the canonical prefix of length bits containing ip
// (upstream ParseCIDRSloppy(ip/len)).
func subnetCIDR(ip netip.Addr, bits int) string {
	return netip.PrefixFrom(ip, bits).Masked().String()
}
