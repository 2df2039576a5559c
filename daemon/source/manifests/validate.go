package manifests

import (
	"errors"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// No API server checks a manifests directory: these checks reject, with the
// field named, what the API server would reject in the parts of Services,
// EndpointSlices and ServiceCIDRs that podwall reads, so that a typo is
// reported instead of silently dropped.

func validateService(svc *corev1.Service) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch svc.Spec.Type {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		fail("spec.type: unsupported value %q", svc.Spec.Type)
	}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone && !isIP(ip) {
		fail("spec.clusterIP: %q is not an IP address", ip)
	}
	families := map[bool]bool{} // by Is4
	for i, ip := range svc.Spec.ClusterIPs {
		if ip == corev1.ClusterIPNone {
			if len(svc.Spec.ClusterIPs) > 1 {
				fail("spec.clusterIPs[%d]: \"None\" must be the only entry", i)
			}
			continue
		}
		a, err := parseIP(ip)
		if err != nil {
			fail("spec.clusterIPs[%d]: %q is not an IP address", i, ip)
			continue
		}
		if families[a.Is4()] {
			fail("spec.clusterIPs[%d]: a second address of one IP family", i)
		}
		families[a.Is4()] = true
	}
	if len(svc.Spec.ClusterIPs) > 2 {
		fail("spec.clusterIPs: at most 2 addresses, one per IP family")
	}
	if len(svc.Spec.ClusterIPs) > 0 && svc.Spec.ClusterIP != "" && svc.Spec.ClusterIPs[0] != svc.Spec.ClusterIP {
		fail("spec.clusterIPs[0]: must equal spec.clusterIP %q", svc.Spec.ClusterIP)
	}
	for i, ip := range svc.Spec.ExternalIPs {
		if !isIP(ip) {
			fail("spec.externalIPs[%d]: %q is not an IP address", i, ip)
		}
	}
	if p := svc.Spec.InternalTrafficPolicy; p != nil && *p != corev1.ServiceInternalTrafficPolicyCluster && *p != corev1.ServiceInternalTrafficPolicyLocal {
		fail("spec.internalTrafficPolicy: unsupported value %q", *p)
	}
	names := map[string]bool{}
	for i, p := range svc.Spec.Ports {
		if err := validateProtocol(p.Protocol); err != nil {
			fail("spec.ports[%d].protocol: %w", i, err)
		}
		if p.Port < 1 || p.Port > 65535 {
			fail("spec.ports[%d].port: %d is not between 1 and 65535", i, p.Port)
		}
		if p.NodePort < 0 || p.NodePort > 65535 {
			fail("spec.ports[%d].nodePort: %d is not between 0 and 65535", i, p.NodePort)
		}
		if len(svc.Spec.Ports) > 1 && p.Name == "" {
			fail("spec.ports[%d].name: required when there are several ports", i)
		}
		if p.Name != "" && names[p.Name] {
			fail("spec.ports[%d].name: %q used twice", i, p.Name)
		}
		names[p.Name] = true
	}
	for i, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" && !isIP(ing.IP) {
			fail("status.loadBalancer.ingress[%d].ip: %q is not an IP address", i, ing.IP)
		}
	}
	return errors.Join(errs...)
}

func validateEndpointSlice(slice *discoveryv1.EndpointSlice) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch slice.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
	case "":
		fail("addressType: required (IPv4, IPv6 or FQDN)")
	default:
		fail("addressType: unsupported value %q", slice.AddressType)
	}
	for i, p := range slice.Ports {
		if p.Protocol != nil {
			if err := validateProtocol(*p.Protocol); err != nil {
				fail("ports[%d].protocol: %w", i, err)
			}
		}
		if p.Port != nil && (*p.Port < 0 || *p.Port > 65535) {
			fail("ports[%d].port: %d is not between 0 and 65535", i, *p.Port)
		}
	}
	for i, e := range slice.Endpoints {
		if len(e.Addresses) == 0 {
			fail("endpoints[%d].addresses: required", i)
		}
		for j, s := range e.Addresses {
			if slice.AddressType == discoveryv1.AddressTypeFQDN {
				continue
			}
			a, err := parseIP(s)
			switch {
			case err != nil:
				fail("endpoints[%d].addresses[%d]: %q is not an IP address", i, j, s)
			case a.Is4() != (slice.AddressType == discoveryv1.AddressTypeIPv4):
				fail("endpoints[%d].addresses[%d]: %q is not of addressType %s", i, j, s, slice.AddressType)
			}
		}
	}
	return errors.Join(errs...)
}

func validateServiceCIDR(c *networkingv1.ServiceCIDR) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch n := len(c.Spec.CIDRs); {
	case n == 0:
		fail("spec.cidrs: required")
	case n > 2:
		fail("spec.cidrs: at most 2 ranges, one per IP family")
	}
	families := map[bool]bool{} // by Is4
	for i, s := range c.Spec.CIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
			fail("spec.cidrs[%d]: %q is not a CIDR", i, s)
			continue
		}
		if families[p.Addr().Is4()] {
			fail("spec.cidrs[%d]: a second range of one IP family", i)
		}
		families[p.Addr().Is4()] = true
	}
	return errors.Join(errs...)
}

func validateProtocol(p corev1.Protocol) error {
	switch p {
	case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		return nil
	}
	return fmt.Errorf("unsupported value %q (want TCP, UDP or SCTP)", p)
}

// parseIP parses a plain IP address (no zone; IPv4-mapped IPv6 unmapped).
func parseIP(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q has a zone", s)
	}
	return a.Unmap(), nil
}

func isIP(s string) bool {
	_, err := parseIP(s)
	return err == nil
}
