package source

// Stand-ins for policy.ApplyDefaults and policy.Validate, which
// daemon/policy/compile.go will export; switch to those once they exist.

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// applyPolicyDefaults applies the API server's defaults to np: port protocol
// TCP; policyTypes Ingress, plus Egress when there are egress rules.
func applyPolicyDefaults(np *networkingv1.NetworkPolicy) {
	for i := range np.Spec.Ingress {
		defaultPortProtocols(np.Spec.Ingress[i].Ports)
	}
	for i := range np.Spec.Egress {
		defaultPortProtocols(np.Spec.Egress[i].Ports)
	}
	if len(np.Spec.PolicyTypes) == 0 {
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		if len(np.Spec.Egress) > 0 {
			np.Spec.PolicyTypes = append(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress)
		}
	}
}

func defaultPortProtocols(ports []networkingv1.NetworkPolicyPort) {
	for i := range ports {
		if ports[i].Protocol == nil {
			tcp := corev1.ProtocolTCP
			ports[i].Protocol = &tcp
		}
	}
}

// validatePolicy reports the problems the API server would reject np for,
// as far as they matter to enforcement: selectors, ports, peers, ipBlocks
// and policyTypes.
func validatePolicy(np *networkingv1.NetworkPolicy) error {
	var errs []error
	add := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
	}
	add("spec.podSelector", validateSelector(&np.Spec.PodSelector))
	for i, pt := range np.Spec.PolicyTypes {
		if pt != networkingv1.PolicyTypeIngress && pt != networkingv1.PolicyTypeEgress {
			add(fmt.Sprintf("spec.policyTypes[%d]", i), fmt.Errorf("unsupported value %q (want Ingress or Egress)", pt))
		}
	}
	for i, rule := range np.Spec.Ingress {
		field := fmt.Sprintf("spec.ingress[%d]", i)
		for j := range rule.Ports {
			add(fmt.Sprintf("%s.ports[%d]", field, j), validatePort(&rule.Ports[j]))
		}
		for j := range rule.From {
			add(fmt.Sprintf("%s.from[%d]", field, j), validatePeer(&rule.From[j]))
		}
	}
	for i, rule := range np.Spec.Egress {
		field := fmt.Sprintf("spec.egress[%d]", i)
		for j := range rule.Ports {
			add(fmt.Sprintf("%s.ports[%d]", field, j), validatePort(&rule.Ports[j]))
		}
		for j := range rule.To {
			add(fmt.Sprintf("%s.to[%d]", field, j), validatePeer(&rule.To[j]))
		}
	}
	return errors.Join(errs...)
}

func validateSelector(sel *metav1.LabelSelector) error {
	if sel == nil {
		return nil
	}
	_, err := metav1.LabelSelectorAsSelector(sel)
	return err
}

func validatePort(p *networkingv1.NetworkPolicyPort) error {
	if p.Protocol != nil {
		switch *p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			return fmt.Errorf("unsupported protocol %q (want TCP, UDP or SCTP)", *p.Protocol)
		}
	}
	if p.Port == nil {
		if p.EndPort != nil {
			return errors.New("endPort requires port")
		}
		return nil
	}
	switch p.Port.Type {
	case intstr.Int:
		if p.Port.IntVal < 1 || p.Port.IntVal > 65535 {
			return fmt.Errorf("port %d out of range 1-65535", p.Port.IntVal)
		}
		if p.EndPort != nil && (*p.EndPort < p.Port.IntVal || *p.EndPort > 65535) {
			return fmt.Errorf("endPort %d must be within %d-65535", *p.EndPort, p.Port.IntVal)
		}
	case intstr.String:
		if msgs := validation.IsValidPortName(p.Port.StrVal); len(msgs) > 0 {
			return fmt.Errorf("invalid port name %q: %s", p.Port.StrVal, msgs[0])
		}
		if p.EndPort != nil {
			return errors.New("endPort requires a numeric port")
		}
	}
	return nil
}

func validatePeer(peer *networkingv1.NetworkPolicyPeer) error {
	if peer.IPBlock == nil {
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			return errors.New("must specify podSelector, namespaceSelector or ipBlock")
		}
		if err := validateSelector(peer.PodSelector); err != nil {
			return fmt.Errorf("podSelector: %w", err)
		}
		if err := validateSelector(peer.NamespaceSelector); err != nil {
			return fmt.Errorf("namespaceSelector: %w", err)
		}
		return nil
	}
	if peer.PodSelector != nil || peer.NamespaceSelector != nil {
		return errors.New("ipBlock may not be combined with podSelector or namespaceSelector")
	}
	cidr, err := netip.ParsePrefix(peer.IPBlock.CIDR)
	if err != nil {
		return fmt.Errorf("ipBlock.cidr: %w", err)
	}
	cidr = cidr.Masked()
	for i, s := range peer.IPBlock.Except {
		except, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("ipBlock.except[%d]: %w", i, err)
		}
		if except.Addr().Is4() != cidr.Addr().Is4() || except.Bits() <= cidr.Bits() || !cidr.Contains(except.Addr()) {
			return fmt.Errorf("ipBlock.except[%d]: %s is not strictly within cidr %s", i, s, cidr)
		}
	}
	return nil
}
