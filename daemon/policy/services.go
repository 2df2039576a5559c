package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
)

// Service-aware egress. Inside a pod's netns, traffic to a Service still
// carries the frontend address (kube-proxy rewrites it later, on the node), so
// a frontend is judged by judging its endpoints: a pod whose egress is
// isolated may reach frontend:port exactly when the Service has at least one
// ready endpoint behind that port and the pod's own egress rules allow every
// one of them (endpoint address, target port). Frontends are never matched by
// the ordinary rules: the guard drops them first. The frontends and endpoints
// of a Service port are computed once per Compile; each pod only checks them
// against its rules, and pods with identical rules share the outcome.

// ServiceVerdict is the compiler's judgement of one Service port in one IP
// family, for one local pod whose egress is isolated.
type ServiceVerdict struct {
	// Service is "namespace/name".
	Service string
	Port    ServicePort
	// Frontends are the Service's ClusterIPs and external IPs of this
	// family, sorted.
	Frontends []netip.Addr
	// Allowed is true when the pod may reach Frontends on Port: there is at
	// least one ready endpoint and the pod's egress rules allow each.
	Allowed bool
	// AllowedEndpoints and DeniedEndpoints are the ready endpoints that
	// count (with InternalTrafficLocal, those on the pod's node) as
	// address:targetPort, sorted.
	AllowedEndpoints []netip.AddrPort
	DeniedEndpoints  []netip.AddrPort
	// Reason says in a few words why the port is open or closed.
	Reason string
}

// Reasons of a ServiceVerdict.
const (
	reasonAllowed       = "every ready endpoint is allowed"
	reasonNoEndpoints   = "no ready endpoints"
	reasonNoLocal       = "no ready endpoints on the pod's node (internalTrafficPolicy: Local)"
	reasonSomeDeniedFmt = "%d of %d ready endpoints denied"
)

// serviceTable is what one Compile knows about Services: every (Service
// port, family) with frontends, its endpoints, and the guard.
type serviceTable struct {
	ports []*servicePort
	// guard is every frontend as ServiceGuard rules; nil when there are no
	// frontends and no ServiceCIDRs.
	guard []Rule
	// anyLocal is true when some Service has InternalTrafficLocal: the
	// outcome then depends on the pod's node.
	anyLocal bool
	// memo holds the outcome per distinct egress rules (and node).
	memo map[string]*serviceOutcome
}

// servicePort is one port of one Service in one IP family.
type servicePort struct {
	service   string
	port      ServicePort
	local     bool
	frontends []netip.Addr
	// endpoints are the ready endpoints behind the port, sorted by address
	// and port, then node.
	endpoints []serviceEndpoint
}

// serviceEndpoint is one ready endpoint: address and target port, and the
// node it runs on.
type serviceEndpoint struct {
	addrPort netip.AddrPort
	node     string
}

// serviceOutcome is what the Services allow one set of egress rules.
type serviceOutcome struct {
	rules    []Rule
	verdicts []ServiceVerdict
}

// newServiceTable indexes the Services, EndpointSlices and ServiceCIDRs of
// state. Service ports it cannot use are reported in res.Problems.
func newServiceTable(state *State, res *Result) *serviceTable {
	t := &serviceTable{memo: make(map[string]*serviceOutcome)}
	slicesBySvc := make(map[string][]*EndpointSlice)
	for _, es := range state.EndpointSlices {
		if es != nil && es.Service != "" {
			key := es.Namespace + "/" + es.Service
			slicesBySvc[key] = append(slicesBySvc[key], es)
		}
	}
	services := make([]*Service, 0, len(state.Services))
	for _, svc := range state.Services {
		if svc != nil {
			services = append(services, svc)
		}
	}
	slices.SortStableFunc(services, func(a, b *Service) int { return cmp.Compare(a.Key(), b.Key()) })
	services = slices.CompactFunc(services, func(a, b *Service) bool { return a.Key() == b.Key() })

	var clusterIPs netipx.IPSetBuilder
	for _, p := range state.ServiceCIDRs {
		if p.IsValid() {
			clusterIPs.AddPrefix(unmapPrefix(p))
		}
	}
	external := make(map[Port]*netipx.IPSetBuilder)
	for _, svc := range services {
		var ports []ServicePort
		for i, sp := range svc.Ports {
			if sp.Protocol == "" {
				sp.Protocol = corev1.ProtocolTCP
			}
			if !serviceProtocols[sp.Protocol] || sp.Port < 1 || sp.Port > 65535 {
				res.Problems = append(res.Problems, fmt.Errorf("service %s: spec.ports[%d]: unusable protocol %q or port %d", svc.Key(), i, sp.Protocol, sp.Port))
				continue
			}
			ports = append(ports, sp)
		}
		for _, v6 := range []bool{false, true} {
			cips := familyAddrs(svc.ClusterIPs, v6)
			if len(cips) == 0 {
				// kube-proxy programs a family only for a Service with a
				// ClusterIP of it; a headless Service has none at all.
				continue
			}
			addHosts(&clusterIPs, cips)
			eips := familyAddrs(svc.ExternalIPs, v6)
			frontends := familyAddrs(slices.Concat(cips, eips), v6)
			for _, sp := range ports {
				if len(eips) > 0 {
					port := Port{Protocol: sp.Protocol, Port: sp.Port}
					b := external[port]
					if b == nil {
						b = new(netipx.IPSetBuilder)
						external[port] = b
					}
					addHosts(b, eips)
				}
				t.ports = append(t.ports, &servicePort{
					service:   svc.Key(),
					port:      sp,
					local:     svc.InternalTrafficLocal,
					frontends: frontends,
					endpoints: readyEndpoints(slicesBySvc[svc.Key()], sp, v6),
				})
				t.anyLocal = t.anyLocal || svc.InternalTrafficLocal
			}
		}
	}
	t.guard = guardRules(&clusterIPs, external)
	return t
}

// unmapPrefix returns p masked, with an IPv4-mapped IPv6 prefix turned into
// its IPv4 prefix.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() {
		return netip.PrefixFrom(a.Unmap(), max(0, p.Bits()-96)).Masked()
	}
	return p.Masked()
}

// serviceProtocols are the protocols a ServicePort may have.
var serviceProtocols = map[corev1.Protocol]bool{corev1.ProtocolTCP: true, corev1.ProtocolUDP: true, corev1.ProtocolSCTP: true}

// familyAddrs returns the valid addresses of addrs of one family (v6 true:
// IPv6), unmapped, without zones, sorted and unique.
func familyAddrs(addrs []netip.Addr, v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if a.IsValid() && a.Is6() == v6 {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// readyEndpoints returns the ready endpoints of family v6 behind service
// port sp: the slice port with sp's name and protocol gives the target port
// (slices with different numbers for one name exist when a named targetPort
// resolves differently per pod). Like kube-proxy, an endpoint is reached at
// its first address.
func readyEndpoints(esList []*EndpointSlice, sp ServicePort, v6 bool) []serviceEndpoint {
	var out []serviceEndpoint
	for _, es := range esList {
		var target int32
		for _, p := range es.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			if p.Name == sp.Name && proto == sp.Protocol && p.Port >= 1 && p.Port <= 65535 {
				target = p.Port
				break
			}
		}
		if target == 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if !ep.Ready || len(ep.Addrs) == 0 {
				continue
			}
			a := ep.Addrs[0].Unmap().WithZone("")
			if !a.IsValid() || a.Is6() != v6 {
				continue
			}
			out = append(out, serviceEndpoint{addrPort: netip.AddrPortFrom(a, uint16(target)), node: ep.NodeName})
		}
	}
	slices.SortFunc(out, func(a, b serviceEndpoint) int {
		return cmp.Or(a.addrPort.Compare(b.addrPort), strings.Compare(a.node, b.node))
	})
	return slices.Compact(out)
}

// guardRules returns the ServiceGuard: every ClusterIP and Service CIDR on
// every port, then each external IP on its service ports (as few rules as
// ports with distinct address lists), leaving out what the first rule holds.
func guardRules(clusterIPs *netipx.IPSetBuilder, external map[Port]*netipx.IPSetBuilder) []Rule {
	var guard []Rule
	cset, _ := clusterIPs.IPSet()
	if cset != nil && len(cset.Prefixes()) > 0 {
		guard = append(guard, Rule{Peer: Peer{Prefixes: cset.Prefixes()}})
	}
	byPeer := make(map[string]*Rule)
	var keys []string
	for port, b := range external {
		if cset != nil {
			b.RemoveSet(cset)
		}
		set, err := b.IPSet()
		if err != nil || len(set.Prefixes()) == 0 {
			continue
		}
		key := peerKey(Peer{Prefixes: set.Prefixes()})
		r := byPeer[key]
		if r == nil {
			r = &Rule{Peer: Peer{Prefixes: set.Prefixes()}}
			byPeer[key] = r
			keys = append(keys, key)
		}
		r.Ports = append(r.Ports, port)
	}
	var ext []Rule
	for _, key := range keys {
		r := byPeer[key]
		r.Ports = normalizePorts(r.Ports)
		ext = append(ext, *r)
	}
	slices.SortFunc(ext, func(a, b Rule) int { return comparePeers(a.Peer, b.Peer) })
	return append(guard, ext...)
}

// outcome judges every Service port against the egress rules of a pod on
// node, once per distinct rules (and node, when it matters).
func (t *serviceTable) outcome(rules []Rule, node string) *serviceOutcome {
	if len(t.ports) == 0 {
		return &serviceOutcome{}
	}
	key := rulesKey(rules)
	if t.anyLocal {
		key += "\x00node=" + node
	}
	if o, ok := t.memo[key]; ok {
		return o
	}
	o := &serviceOutcome{verdicts: make([]ServiceVerdict, 0, len(t.ports))}
	open := make(map[Port]*netipx.IPSetBuilder)
	for _, sp := range t.ports {
		v := ServiceVerdict{Service: sp.service, Port: sp.port, Frontends: sp.frontends}
		counted := 0
		for _, ep := range sp.endpoints {
			if sp.local && (node == "" || ep.node != node) {
				continue
			}
			counted++
			if rulesAllow(rules, ep.addrPort.Addr(), int32(ep.addrPort.Port()), sp.port.Protocol) {
				v.AllowedEndpoints = append(v.AllowedEndpoints, ep.addrPort)
			} else {
				v.DeniedEndpoints = append(v.DeniedEndpoints, ep.addrPort)
			}
		}
		// The same endpoint may be listed by two slices (or nodes).
		v.AllowedEndpoints = slices.Compact(v.AllowedEndpoints)
		v.DeniedEndpoints = slices.Compact(v.DeniedEndpoints)
		switch {
		case counted == 0 && sp.local && len(sp.endpoints) > 0:
			v.Reason = reasonNoLocal
		case counted == 0:
			v.Reason = reasonNoEndpoints
		case len(v.DeniedEndpoints) > 0:
			v.Reason = fmt.Sprintf(reasonSomeDeniedFmt, len(v.DeniedEndpoints), len(v.DeniedEndpoints)+len(v.AllowedEndpoints))
		default:
			v.Allowed = true
			v.Reason = reasonAllowed
			port := Port{Protocol: sp.port.Protocol, Port: sp.port.Port}
			b := open[port]
			if b == nil {
				b = new(netipx.IPSetBuilder)
				open[port] = b
			}
			addHosts(b, sp.frontends)
		}
		o.verdicts = append(o.verdicts, v)
	}
	ports := make([]Port, 0, len(open))
	for port := range open {
		ports = append(ports, port)
	}
	slices.SortFunc(ports, comparePorts)
	for _, port := range ports {
		if set, err := open[port].IPSet(); err == nil && len(set.Prefixes()) > 0 {
			o.rules = append(o.rules, Rule{Peer: Peer{Prefixes: set.Prefixes()}, Ports: []Port{port}})
		}
	}
	t.memo[key] = o
	return o
}

// rulesKey identifies a pod's compiled egress rules within one Compile: peers
// are interned, so equal peers share their prefix slice.
func rulesKey(rules []Rule) string {
	var b []byte
	for _, r := range rules {
		if r.Peer.Any {
			b = append(b, '*')
		} else {
			b = fmt.Appendf(b, "%p/%d", r.Peer.Prefixes, len(r.Peer.Prefixes))
		}
		for _, p := range r.Ports {
			b = fmt.Appendf(b, ",%s:%d-%d", p.Protocol, p.Port, p.EndPort)
		}
		b = append(b, ';')
	}
	return string(b)
}

// rulesAllow reports whether rules allow traffic to addr on port/proto.
func rulesAllow(rules []Rule, addr netip.Addr, port int32, proto corev1.Protocol) bool {
	for _, r := range rules {
		if (r.Peer.Any || prefixesContain(r.Peer.Prefixes, addr)) && portsAllow(r.Ports, port, proto) {
			return true
		}
	}
	return false
}

// prefixesContain reports whether sorted, disjoint prefixes contain addr.
func prefixesContain(prefixes []netip.Prefix, addr netip.Addr) bool {
	// The last prefix starting at or before addr is the only candidate.
	i, _ := slices.BinarySearchFunc(prefixes, addr, func(p netip.Prefix, a netip.Addr) int {
		if c := p.Addr().Compare(a); c != 0 {
			return c
		}
		return -1 // a prefix starting at addr is "before" it
	})
	return i > 0 && prefixes[i-1].Contains(addr)
}

// portsAllow reports whether ports (empty: every port) match port/proto.
func portsAllow(ports []Port, port int32, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		if p.Protocol != proto {
			continue
		}
		if p.Port == 0 || p.Port == port || (p.EndPort > p.Port && p.Port <= port && port <= p.EndPort) {
			return true
		}
	}
	return false
}
