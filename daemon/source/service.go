package source

import (
	"cmp"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/daemon/policy"
)

// ServiceNameLabel is the label that names the Service an EndpointSlice
// belongs to (in the slice's namespace).
const ServiceNameLabel = discoveryv1.LabelServiceName

// ServiceFromAPI returns what the policy compiler needs of s: the frontends
// kube-proxy rewrites on the node, and the ports (protocol defaulted to TCP).
// It follows kube-proxy (v1.34, pkg/proxy):
//
//   - a headless Service (clusterIP "None") and an ExternalName Service have
//     no frontends at all: kube-proxy skips them, so neither ClusterIPs nor
//     ExternalIPs are set (clients of a headless Service reach pod IPs);
//   - ClusterIPs are spec.clusterIPs, else spec.clusterIP;
//   - ExternalIPs are spec.externalIPs and status.loadBalancer.ingress[].ip,
//     except ingress points with ipMode "Proxy" (the load balancer, not
//     kube-proxy, handles those), and only of an IP family the Service has
//     a ClusterIP of (kube-proxy programs a family only for those).
//
// Unparsable addresses are skipped. The result shares nothing with s.
func ServiceFromAPI(s *corev1.Service) *policy.Service {
	svc := &policy.Service{
		Namespace:            s.Namespace,
		Name:                 s.Name,
		InternalTrafficLocal: s.Spec.InternalTrafficPolicy != nil && *s.Spec.InternalTrafficPolicy == corev1.ServiceInternalTrafficPolicyLocal,
	}
	for _, p := range s.Spec.Ports {
		protocol := p.Protocol
		if protocol == "" {
			protocol = corev1.ProtocolTCP
		}
		svc.Ports = append(svc.Ports, policy.ServicePort{Name: p.Name, Protocol: protocol, Port: p.Port, NodePort: p.NodePort})
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName {
		return svc
	}
	clusterIPs := s.Spec.ClusterIPs
	if len(clusterIPs) == 0 && s.Spec.ClusterIP != "" {
		clusterIPs = []string{s.Spec.ClusterIP}
	}
	if slices.Contains(clusterIPs, corev1.ClusterIPNone) {
		return svc // headless
	}
	svc.ClusterIPs = appendAddrs(nil, clusterIPs...)
	hasFamily := func(a netip.Addr) bool {
		return slices.ContainsFunc(svc.ClusterIPs, func(c netip.Addr) bool { return c.Is4() == a.Is4() })
	}
	external := appendAddrs(nil, s.Spec.ExternalIPs...)
	for _, ing := range s.Status.LoadBalancer.Ingress {
		if ing.IPMode != nil && *ing.IPMode == corev1.LoadBalancerIPModeProxy {
			continue
		}
		external = appendAddrs(external, ing.IP)
	}
	for _, a := range external {
		if hasFamily(a) {
			svc.ExternalIPs = append(svc.ExternalIPs, a)
		}
	}
	return svc
}

// EndpointSliceFromAPI returns what the policy compiler needs of s: the
// Service it belongs to (the kubernetes.io/service-name label), its ports
// (protocol defaulted to TCP; an unset port number is 0) and its endpoints.
// An endpoint is ready when conditions.ready is unset or true, as the API
// defines. Addresses that are not IPs (addressType FQDN) are skipped. The
// result shares nothing with s.
func EndpointSliceFromAPI(s *discoveryv1.EndpointSlice) *policy.EndpointSlice {
	out := &policy.EndpointSlice{
		Namespace: s.Namespace,
		Name:      s.Name,
		Service:   s.Labels[ServiceNameLabel],
	}
	for _, p := range s.Ports {
		port := policy.EndpointPort{Protocol: corev1.ProtocolTCP}
		if p.Name != nil {
			port.Name = *p.Name
		}
		if p.Protocol != nil && *p.Protocol != "" {
			port.Protocol = *p.Protocol
		}
		if p.Port != nil {
			port.Port = *p.Port
		}
		out.Ports = append(out.Ports, port)
	}
	if len(s.Endpoints) > 0 {
		out.Endpoints = make([]policy.Endpoint, 0, len(s.Endpoints))
	}
	for _, e := range s.Endpoints {
		ep := policy.Endpoint{
			Addrs: appendAddrs(nil, e.Addresses...),
			Ready: e.Conditions.Ready == nil || *e.Conditions.Ready,
		}
		if e.NodeName != nil {
			ep.NodeName = *e.NodeName
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out
}

// ServiceCIDRFromAPI returns the ranges of c (spec.cidrs), masked, sorted
// and without duplicates; unparsable ones are skipped.
func ServiceCIDRFromAPI(c *networkingv1.ServiceCIDR) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range c.Spec.CIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" {
			continue
		}
		out = append(out, p.Masked())
	}
	return UniquePrefixes(out)
}

// UniquePrefixes returns the prefixes of every list, sorted (IPv4 first,
// then by address and length) and without duplicates. The result shares
// nothing with the lists.
func UniquePrefixes(lists ...[]netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	return slices.Compact(out)
}

// NodeAddrsFromAPI returns the InternalIP and ExternalIP addresses of n's
// status, sorted and without duplicates; other address types (Hostname,
// InternalDNS, ...) and unparsable addresses are skipped.
func NodeAddrsFromAPI(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			out = appendAddrs(out, a.Address)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// appendAddrs appends the addresses in ss that parse (IPv4-mapped IPv6
// addresses unmapped, zones refused) and are not in addrs yet.
func appendAddrs(addrs []netip.Addr, ss ...string) []netip.Addr {
	for _, s := range ss {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			continue
		}
		a = a.Unmap()
		if !containsAddr(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}
