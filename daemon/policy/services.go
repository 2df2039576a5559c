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
	// memo holds the outcome per distinct egress rules (and node). A
	// serviceCache keeps it while the table stays the same; sweep drops
	// what the last compile did not use.
	memo map[string]*serviceOutcome
	// prev is the table this one replaced, while the compile that built
	// this one runs: its outcomes' verdicts on the ports both have carry
	// over (a servicePort is the same object while its Service and
	// EndpointSlices are). index is prev's position of each port.
	prev  *serviceTable
	index map[*servicePort]int
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
	from     []Rule // the egress rules judged
	used     bool   // since the last sweep
}

// sweep drops the outcomes no compile used since the last sweep: the memo
// holds the outcomes of the rules the local pods had in the last compile.
func (t *serviceTable) sweep() {
	for key, o := range t.memo {
		if !o.used {
			delete(t.memo, key)
		}
		o.used = false
	}
}

// newServiceTable indexes the Services, EndpointSlices and ServiceCIDRs of
// state. Service ports it cannot use are reported in res.Problems.
func newServiceTable(state *State, res *Result) *serviceTable {
	var c serviceCache
	t, problems := c.update(state)
	res.Problems = append(res.Problems, problems...)
	return t
}

// serviceCache builds the service table of successive states, redoing only
// the Services whose object or EndpointSlices changed: an endpoint joining
// or leaving one Service (any pod change behind a Service) must not re-index
// every Service of the cluster. Like the persistent Compiler it rests on the
// sources' promise that published objects are never modified.
type serviceCache struct {
	// Inputs of the last update, and what it built from them.
	services []*Service
	slices   []*EndpointSlice
	cidrs    []netip.Prefix
	// entries are the Services in table order; byRef finds them by name.
	entries []*serviceEntry
	byRef   map[serviceRef]*serviceEntry
	// bySvc are the EndpointSlices of each Service (in no particular
	// order: an entry's endpoints are sorted). A list is replaced, never
	// modified, when its slices change: entries keep the one they were
	// built from.
	bySvc     map[serviceRef][]*EndpointSlice
	table     *serviceTable
	problems  []error
	guardFrom []*serviceEntry // the entries the table's guard was built from
}

// serviceRef names a Service.
type serviceRef struct{ namespace, name string }

// serviceEntry is one Service's part of the table, valid while the Service
// and its EndpointSlices are the same objects.
type serviceEntry struct {
	svc      *Service
	key      string
	slices   []*EndpointSlice
	built    bool
	stale    bool // its EndpointSlices changed since it was built
	ports    []*servicePort
	problems []error
	// clusterIPs and external (external IPs per service port) feed the
	// guard.
	clusterIPs []netip.Addr
	external   map[Port][]netip.Addr
}

// update returns the table of state and the Service ports it cannot use.
// The table is new whenever anything changed (its memo starts empty);
// otherwise the last one, its memo swept. What it looks at follows the
// change: the EndpointSlices that differ from the last update's (compared
// by pointer), the Services they belong to, and all Services only when the
// Services changed.
func (c *serviceCache) update(state *State) (*serviceTable, []error) {
	sameServices := c.table != nil && slices.Equal(state.Services, c.services)
	sameSlices := c.table != nil && slices.Equal(state.EndpointSlices, c.slices)
	if sameServices && sameSlices && slices.Equal(state.ServiceCIDRs, c.cidrs) {
		c.table.prev = nil
		c.table.sweep()
		return c.table, c.problems
	}
	if !sameServices {
		c.index(state.Services)
	}
	switch {
	case c.bySvc == nil:
		c.bySvc = make(map[serviceRef][]*EndpointSlice)
		c.patch(nil, state.EndpointSlices)
	case !sameSlices:
		c.followSlices(state.EndpointSlices)
	}

	t := &serviceTable{memo: make(map[string]*serviceOutcome)}
	if c.table != nil {
		c.table.prev = nil // one generation back is enough
		c.table.sweep()    // what the last compile used
		t.prev = c.table
	}
	var problems []error
	for _, e := range c.entries {
		if !e.built || e.stale {
			esList := c.bySvc[serviceRef{e.svc.Namespace, e.svc.Name}]
			if !e.built || !slices.Equal(esList, e.slices) {
				e.build(esList)
			}
			e.stale = false
		}
		problems = append(problems, e.problems...)
		t.ports = append(t.ports, e.ports...)
		t.anyLocal = t.anyLocal || e.svc.InternalTrafficLocal && len(e.ports) > 0
	}
	if c.table != nil && slices.Equal(c.entries, c.guardFrom) && slices.Equal(state.ServiceCIDRs, c.cidrs) {
		t.guard = c.table.guard
	} else {
		t.guard = buildGuard(c.entries, state.ServiceCIDRs)
		c.guardFrom = c.entries
	}
	c.table, c.problems = t, problems
	c.services, c.slices, c.cidrs = state.Services, state.EndpointSlices, state.ServiceCIDRs
	return t, problems
}

// index orders the entries of services by key (the first of a key in input
// order wins), keeping the entries of the Services that stay.
func (c *serviceCache) index(services []*Service) {
	entries := make([]*serviceEntry, 0, len(services))
	seen := make(map[*Service]*serviceEntry, len(services))
	for _, svc := range services {
		if svc == nil {
			continue
		}
		e := seen[svc]
		if e == nil {
			if e = c.byRef[serviceRef{svc.Namespace, svc.Name}]; e == nil || e.svc != svc {
				e = &serviceEntry{svc: svc, key: svc.Key()}
			}
			seen[svc] = e
		}
		entries = append(entries, e)
	}
	byKey := func(a, b *serviceEntry) int { return cmp.Compare(a.key, b.key) }
	if !slices.IsSortedFunc(entries, byKey) {
		slices.SortStableFunc(entries, byKey)
	}
	c.entries = slices.CompactFunc(entries, func(a, b *serviceEntry) bool { return a.key == b.key })
	c.byRef = make(map[serviceRef]*serviceEntry, len(c.entries))
	for _, e := range c.entries {
		c.byRef[serviceRef{e.svc.Namespace, e.svc.Name}] = e
	}
}

// followSlices brings bySvc from the last update's EndpointSlices to
// slices: only the window between their common prefix and suffix (by
// pointer) is patched.
func (c *serviceCache) followSlices(now []*EndpointSlice) {
	prev := c.slices
	start, oldEnd, newEnd := ChangedWindow(prev, now)
	c.patch(prev[start:oldEnd], now[start:newEnd])
}

// patch removes the slices of gone from bySvc and adds those of added,
// marking the entries of the Services whose lists change stale.
func (c *serviceCache) patch(gone, added []*EndpointSlice) {
	changed := make(map[serviceRef][]*EndpointSlice)
	list := func(ref serviceRef) []*EndpointSlice {
		l, ok := changed[ref]
		if !ok {
			l = slices.Clone(c.bySvc[ref]) // entries hold the old list
		}
		return l
	}
	for _, es := range gone {
		if es != nil && es.Service != "" {
			ref := serviceRef{es.Namespace, es.Service}
			l := list(ref)
			if i := slices.Index(l, es); i >= 0 {
				l = slices.Delete(l, i, i+1)
			}
			changed[ref] = l
		}
	}
	for _, es := range added {
		if es != nil && es.Service != "" {
			ref := serviceRef{es.Namespace, es.Service}
			changed[ref] = append(list(ref), es)
		}
	}
	for ref, l := range changed {
		if len(l) == 0 {
			delete(c.bySvc, ref)
		} else {
			c.bySvc[ref] = l
		}
		if e := c.byRef[ref]; e != nil {
			e.stale = true
		}
	}
}

// build computes the entry's ports, problems and guard inputs from its
// Service and esList, the EndpointSlices that belong to it.
func (e *serviceEntry) build(esList []*EndpointSlice) {
	svc := e.svc
	e.slices, e.built = esList, true
	e.ports, e.problems, e.clusterIPs, e.external = nil, nil, nil, nil
	var ports []ServicePort
	for i, sp := range svc.Ports {
		if sp.Protocol == "" {
			sp.Protocol = corev1.ProtocolTCP
		}
		if !serviceProtocols[sp.Protocol] || sp.Port < 1 || sp.Port > 65535 {
			e.problems = append(e.problems, fmt.Errorf("service %s: spec.ports[%d]: unusable protocol %q or port %d", e.key, i, sp.Protocol, sp.Port))
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
		e.clusterIPs = append(e.clusterIPs, cips...)
		eips := familyAddrs(svc.ExternalIPs, v6)
		frontends := familyAddrs(slices.Concat(cips, eips), v6)
		for _, sp := range ports {
			if len(eips) > 0 {
				if e.external == nil {
					e.external = make(map[Port][]netip.Addr)
				}
				port := Port{Protocol: sp.Protocol, Port: sp.Port}
				e.external[port] = append(e.external[port], eips...)
			}
			e.ports = append(e.ports, &servicePort{
				service:   e.key,
				port:      sp,
				local:     svc.InternalTrafficLocal,
				frontends: frontends,
				endpoints: readyEndpoints(esList, sp, v6),
			})
		}
	}
}

// buildGuard returns the guard of the Services of entries and the cidrs.
func buildGuard(entries []*serviceEntry, cidrs []netip.Prefix) []Rule {
	var clusterIPs netipx.IPSetBuilder
	for _, p := range cidrs {
		if p.IsValid() {
			clusterIPs.AddPrefix(unmapPrefix(p))
		}
	}
	external := make(map[Port]*netipx.IPSetBuilder)
	for _, e := range entries {
		addHosts(&clusterIPs, e.clusterIPs)
		for port, addrs := range e.external {
			b := external[port]
			if b == nil {
				b = new(netipx.IPSetBuilder)
				external[port] = b
			}
			addHosts(b, addrs)
		}
	}
	return guardRules(&clusterIPs, external)
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
		o.used = true
		return o
	}
	// The outcome holds rules: the key names their peers' prefix slices by
	// address, which must not be reused for other prefixes while the key is
	// in the memo.
	o := &serviceOutcome{verdicts: make([]ServiceVerdict, 0, len(t.ports)), from: rules, used: true}
	// The table this one replaced judged the same rules (the same key) and
	// most of the same ports: its verdicts on those carry over.
	var before *serviceOutcome
	if t.prev != nil {
		before = t.prev.memo[key]
	}
	open := make(map[Port]*netipx.IPSetBuilder)
	for _, sp := range t.ports {
		if i, ok := t.prev.indexOf(sp); ok && before != nil {
			v := before.verdicts[i]
			if v.Allowed {
				addOpen(open, sp)
			}
			o.verdicts = append(o.verdicts, v)
			continue
		}
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
			addOpen(open, sp)
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
	if before != nil && rulesEqual(o.rules, before.rules) {
		// The same slices as before: comparing each pod's firewall with
		// the one in force then stops at their identity.
		o.rules = before.rules
	}
	t.memo[key] = o
	return o
}

// addOpen adds the frontends of sp to the open ones of its port.
func addOpen(open map[Port]*netipx.IPSetBuilder, sp *servicePort) {
	port := Port{Protocol: sp.port.Protocol, Port: sp.port.Port}
	b := open[port]
	if b == nil {
		b = new(netipx.IPSetBuilder)
		open[port] = b
	}
	addHosts(b, sp.frontends)
}

// indexOf returns the position of sp in t's ports; false when t is nil or
// does not have it.
func (t *serviceTable) indexOf(sp *servicePort) (int, bool) {
	if t == nil {
		return 0, false
	}
	if t.index == nil {
		t.index = make(map[*servicePort]int, len(t.ports))
		for i, p := range t.ports {
			t.index[p] = i
		}
	}
	i, ok := t.index[sp]
	return i, ok
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
