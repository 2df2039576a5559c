package policy

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Selects reports whether np selects p: same namespace and spec.podSelector
// matches p's labels. A podSelector that does not parse selects every pod of
// the namespace, as in Compile (fail closed).
func Selects(np *networkingv1.NetworkPolicy, p *Pod) bool {
	if np == nil || p == nil || np.Namespace != p.Namespace {
		return false
	}
	sel, err := parseSelector(&np.Spec.PodSelector)
	if err != nil {
		return true
	}
	return sel.Matches(labels.Set(p.Labels))
}

// ApplyDefaults applies the API server's defaults to np in place: protocol TCP
// on port entries without a protocol, and, when spec.policyTypes is empty,
// Ingress plus Egress if there are egress rules.
func ApplyDefaults(np *networkingv1.NetworkPolicy) {
	if np == nil {
		return
	}
	defaultProtocols := func(ports []networkingv1.NetworkPolicyPort) {
		for i := range ports {
			if ports[i].Protocol == nil {
				tcp := corev1.ProtocolTCP
				ports[i].Protocol = &tcp
			}
		}
	}
	for i := range np.Spec.Ingress {
		defaultProtocols(np.Spec.Ingress[i].Ports)
	}
	for i := range np.Spec.Egress {
		defaultProtocols(np.Spec.Egress[i].Ports)
	}
	if len(np.Spec.PolicyTypes) == 0 {
		np.Spec.PolicyTypes = effectivePolicyTypes(np)
	}
}

// Validate returns what the API server would reject in np, all of it joined
// with errors.Join, each error naming its field; nil when np is valid.
func Validate(np *networkingv1.NetworkPolicy) error {
	if np == nil {
		return errors.New("networkpolicy is nil")
	}
	var errs []error
	if np.Name == "" {
		errs = append(errs, errors.New("metadata.name: required"))
	}
	if np.Namespace == "" {
		errs = append(errs, errors.New("metadata.namespace: required"))
	}
	_, parseErrs := parsePolicy(np, true)
	errs = append(errs, parseErrs...)
	if n := len(np.Spec.PolicyTypes); n > 2 {
		errs = append(errs, fmt.Errorf("spec.policyTypes: %d values, at most 2 allowed", n))
	}
	seen := make(map[networkingv1.PolicyType]bool)
	for i, t := range np.Spec.PolicyTypes {
		if seen[t] {
			errs = append(errs, fmt.Errorf("spec.policyTypes[%d]: duplicate value %q", i, t))
		}
		seen[t] = true
	}
	return errors.Join(errs...)
}
