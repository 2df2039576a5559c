package policy

import (
	"errors"
	"fmt"
	"net/netip"

	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

// direction is ingress or egress; it indexes the per-direction arrays below.
type direction int

const (
	ingress direction = iota
	egress
)

var directions = [...]direction{ingress, egress}

// parsedPolicy is a NetworkPolicy with its selectors, CIDRs and ports parsed
// once per Compile call. Parts that do not parse are left out, so that they
// match nothing (fail closed).
type parsedPolicy struct {
	key       string // "namespace/name"
	namespace string
	// podSelector is nil when spec.podSelector does not parse; the policy
	// then selects every pod of its namespace and contributes no rules.
	podSelector labels.Selector
	// isolates says which directions the policy isolates (policyTypes,
	// defaulted).
	isolates [2]bool
	rules    [2][]*parsedRule
	// used is the persistent Compiler's last call in which the policy
	// selected a local pod (incremental.go).
	used uint64
}

// selects reports whether the policy selects pod (which must be in the
// policy's namespace).
func (p *parsedPolicy) selects(pod *Pod) bool {
	return p.podSelector == nil || p.podSelector.Matches(labels.Set(pod.Labels))
}

// parsedRule is one entry of spec.ingress or spec.egress.
type parsedRule struct {
	// anyPeer is true when from/to is empty: every address is a peer.
	anyPeer bool
	// peers are the peers that parsed; broken ones are left out.
	peers []parsedPeer
	// allPorts is true when ports is empty: every port of every protocol.
	allPorts bool
	// ports are the numbered entries (Port 0 = every port of Protocol).
	ports []Port
	// named are the named-port entries.
	named []namedPort

	// resolved is the rule's peer set, computed once per Compile call and
	// shared by every local pod the policy selects.
	resolved *resolvedRule
	// memo is the persistent Compiler's resolution, kept between calls
	// while the matches it came from are current (incremental.go).
	memo *ruleMemo
}

// parsedPeer is one from/to entry: either selectors or an ipBlock.
type parsedPeer struct {
	// podSelector and namespaceSelector are nil when absent.
	podSelector       labels.Selector
	namespaceSelector labels.Selector
	// block is the ipBlock's cidr minus its excepts; nil for selector peers.
	block *netipx.IPSet

	// The persistent Compiler's keys for the peer's match, computed on
	// first use (incremental.go): selKey for selectors, blockKey for an
	// ipBlock.
	keyDone  bool
	selKey   selectionKey
	blockKey string
}

// namedPort is a port entry that names a container port.
type namedPort struct {
	name     string
	protocol corev1.Protocol
}

// parsePolicy parses np. It returns what parsed and every error found, each
// prefixed with its field path. strict adds the checks the API server makes
// that the compiler can live without (canonical CIDRs, except inside cidr,
// port names).
func parsePolicy(np *networkingv1.NetworkPolicy, strict bool) (*parsedPolicy, []error) {
	var errs []error
	pp := &parsedPolicy{
		key:       np.Namespace + "/" + np.Name,
		namespace: np.Namespace,
	}
	sel, err := parseSelector(&np.Spec.PodSelector)
	if err != nil {
		errs = append(errs, fmt.Errorf("spec.podSelector: %w", err))
	} else {
		pp.podSelector = sel
	}

	isolates, typeErrs := parsePolicyTypes(np)
	pp.isolates = isolates
	errs = append(errs, typeErrs...)

	for i := range np.Spec.Ingress {
		r := &np.Spec.Ingress[i]
		path := fmt.Sprintf("spec.ingress[%d]", i)
		rule, ruleErrs := parseRule(path, "from", r.From, r.Ports, strict)
		errs = append(errs, ruleErrs...)
		if pp.podSelector != nil {
			pp.rules[ingress] = append(pp.rules[ingress], rule)
		}
	}
	for i := range np.Spec.Egress {
		r := &np.Spec.Egress[i]
		path := fmt.Sprintf("spec.egress[%d]", i)
		rule, ruleErrs := parseRule(path, "to", r.To, r.Ports, strict)
		errs = append(errs, ruleErrs...)
		if pp.podSelector != nil {
			pp.rules[egress] = append(pp.rules[egress], rule)
		}
	}
	return pp, errs
}

// effectivePolicyTypes returns spec.policyTypes, or the API server's default
// when it is empty: Ingress, plus Egress when there are egress rules.
func effectivePolicyTypes(np *networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	if len(np.Spec.PolicyTypes) > 0 {
		return np.Spec.PolicyTypes
	}
	types := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if len(np.Spec.Egress) > 0 {
		types = append(types, networkingv1.PolicyTypeEgress)
	}
	return types
}

// parsePolicyTypes returns the directions np isolates. Unknown values are
// errors and are ignored; if no valid value is left, the default applies
// (failing closed rather than isolating nothing).
func parsePolicyTypes(np *networkingv1.NetworkPolicy) ([2]bool, []error) {
	var isolates [2]bool
	var errs []error
	valid := 0
	for i, t := range effectivePolicyTypes(np) {
		switch t {
		case networkingv1.PolicyTypeIngress:
			isolates[ingress] = true
			valid++
		case networkingv1.PolicyTypeEgress:
			isolates[egress] = true
			valid++
		default:
			errs = append(errs, fmt.Errorf("spec.policyTypes[%d]: unsupported value %q (want Ingress or Egress)", i, t))
		}
	}
	if valid == 0 {
		isolates[ingress] = true
		isolates[egress] = len(np.Spec.Egress) > 0
	}
	return isolates, errs
}

// parseRule parses one ingress (peerField "from") or egress ("to") rule.
func parseRule(path, peerField string, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort, strict bool) (*parsedRule, []error) {
	var errs []error
	rule := &parsedRule{anyPeer: len(peers) == 0, allPorts: len(ports) == 0}
	for i := range peers {
		peer, peerErrs := parsePeer(&peers[i], strict)
		errs = append(errs, prefixErrors(fmt.Sprintf("%s.%s[%d]", path, peerField, i), peerErrs)...)
		if len(peerErrs) > 0 {
			continue
		}
		rule.peers = append(rule.peers, peer)
	}
	for i := range ports {
		port, name, portErrs := parsePort(&ports[i], strict)
		errs = append(errs, prefixErrors(fmt.Sprintf("%s.ports[%d]", path, i), portErrs)...)
		if len(portErrs) > 0 {
			continue
		}
		if name != "" {
			rule.named = append(rule.named, namedPort{name: name, protocol: port.Protocol})
		} else {
			rule.ports = append(rule.ports, port)
		}
	}
	return rule, errs
}

// parseSelector converts a label selector. A nil selector selects nothing.
func parseSelector(sel *metav1.LabelSelector) (labels.Selector, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// prefixErrors prefixes each error with a field path.
func prefixErrors(path string, errs []error) []error {
	out := make([]error, len(errs))
	for i, err := range errs {
		out[i] = fmt.Errorf("%s: %w", path, err)
	}
	return out
}

// parsePeer parses one from/to entry, which must be either an ipBlock or one
// or both selectors.
func parsePeer(p *networkingv1.NetworkPolicyPeer, strict bool) (parsedPeer, []error) {
	hasSelector := p.PodSelector != nil || p.NamespaceSelector != nil
	switch {
	case p.IPBlock != nil && hasSelector:
		return parsedPeer{}, []error{errors.New("ipBlock may not be combined with podSelector or namespaceSelector")}
	case p.IPBlock != nil:
		block, errs := parseIPBlock(p.IPBlock, strict)
		if len(errs) > 0 {
			return parsedPeer{}, prefixErrors("ipBlock", errs)
		}
		return parsedPeer{block: block}, nil
	case !hasSelector:
		return parsedPeer{}, []error{errors.New("must specify a peer (podSelector, namespaceSelector or ipBlock)")}
	}
	var peer parsedPeer
	var errs []error
	if p.PodSelector != nil {
		sel, err := parseSelector(p.PodSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("podSelector: %w", err))
		}
		peer.podSelector = sel
	}
	if p.NamespaceSelector != nil {
		sel, err := parseSelector(p.NamespaceSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("namespaceSelector: %w", err))
		}
		peer.namespaceSelector = sel
	}
	if len(errs) > 0 {
		return parsedPeer{}, errs
	}
	return peer, nil
}

// parseIPBlock returns cidr minus every except. Non-strict parsing masks
// non-canonical prefixes (as the API server of older releases accepted them)
// and subtracts excepts from the cidr whatever they are.
func parseIPBlock(b *networkingv1.IPBlock, strict bool) (*netipx.IPSet, []error) {
	var errs []error
	cidr, err := parseCIDR(b.CIDR, strict)
	if err != nil {
		return nil, []error{fmt.Errorf("cidr: %w", err)}
	}
	var builder netipx.IPSetBuilder
	builder.AddPrefix(cidr)
	for i, e := range b.Except {
		except, err := parseCIDR(e, strict)
		if err != nil {
			errs = append(errs, fmt.Errorf("except[%d]: %w", i, err))
			continue
		}
		if strict && (except.Addr().Is4() != cidr.Addr().Is4() || except.Bits() <= cidr.Bits() || !cidr.Contains(except.Addr())) {
			errs = append(errs, fmt.Errorf("except[%d]: %s is not strictly inside cidr %s", i, except, cidr))
			continue
		}
		builder.RemovePrefix(except)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	set, err := builder.IPSet()
	if err != nil {
		return nil, []error{err}
	}
	return set, nil
}

// parseCIDR parses an address prefix. Strict parsing rejects a prefix with
// host bits set; otherwise they are masked off.
func parseCIDR(s string, strict bool) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, errors.New("required")
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Masked() != p {
		if strict {
			return netip.Prefix{}, fmt.Errorf("%q is not a canonical prefix (want %q)", s, p.Masked())
		}
		p = p.Masked()
	}
	return p, nil
}

// parsePort parses one ports entry. It returns either a numbered Port, or the
// name of a named port (with the protocol in Port.Protocol).
func parsePort(p *networkingv1.NetworkPolicyPort, strict bool) (Port, string, []error) {
	proto := corev1.ProtocolTCP
	if p.Protocol != nil {
		proto = *p.Protocol
	}
	var errs []error
	switch proto {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		errs = append(errs, fmt.Errorf("protocol: unsupported value %q (want TCP, UDP or SCTP)", proto))
	}
	if p.Port == nil {
		if p.EndPort != nil {
			errs = append(errs, errors.New("endPort: may not be set without port"))
		}
		if len(errs) > 0 {
			return Port{}, "", errs
		}
		return Port{Protocol: proto}, "", nil
	}
	switch p.Port.Type {
	case intstr.Int:
		port := p.Port.IntVal
		if port < 1 || port > 65535 {
			errs = append(errs, fmt.Errorf("port: %d is out of range 1-65535", port))
		}
		var end int32
		if p.EndPort != nil {
			end = *p.EndPort
			switch {
			case end < port:
				errs = append(errs, fmt.Errorf("endPort: %d is less than port %d", end, port))
			case end > 65535:
				errs = append(errs, fmt.Errorf("endPort: %d is out of range 1-65535", end))
			case end == port:
				end = 0
			}
		}
		if len(errs) > 0 {
			return Port{}, "", errs
		}
		return Port{Protocol: proto, Port: port, EndPort: end}, "", nil
	case intstr.String:
		name := p.Port.StrVal
		if p.EndPort != nil {
			errs = append(errs, errors.New("endPort: may not be set with a named port"))
		}
		if name == "" {
			errs = append(errs, errors.New("port: empty port name"))
		} else if strict {
			for _, msg := range validation.IsValidPortName(name) {
				errs = append(errs, fmt.Errorf("port: %q: %s", name, msg))
			}
		}
		if len(errs) > 0 {
			return Port{}, "", errs
		}
		return Port{Protocol: proto}, name, nil
	default:
		errs = append(errs, fmt.Errorf("port: unknown int-or-string type %d", p.Port.Type))
		return Port{}, "", errs
	}
}
