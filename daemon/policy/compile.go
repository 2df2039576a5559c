package policy

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Result is the output of Compile.
type Result struct {
	// Firewalls holds one firewall per local pod, by LocalPod.Key. The
	// Peer.Prefixes slices are shared between firewalls: treat them as
	// read-only.
	Firewalls map[string]*Firewall
	// Services holds, per local pod whose egress is isolated (by
	// LocalPod.Key), the verdict on every Service port and IP family with
	// frontends, in Service and port order. Verdicts are shared between
	// pods: treat them as read-only.
	Services map[string][]ServiceVerdict
	// Problems are the parts of the input the compiler could not use (a
	// selector that does not parse, a bad CIDR, a Service port without a
	// usable protocol or number, ...), each naming its object. What is
	// broken matches nothing; a policy still isolates the pods it selects.
	Problems []error
}

// Compile computes the firewall of every local pod from the cluster state,
// with networking.k8s.io/v1 NetworkPolicy semantics, and for pods whose
// egress is isolated the Service frontends they may reach (see
// Direction.Services). It does not modify its input. Each rule's peer set is
// computed once per call and shared by every local pod its policy selects;
// each Service port's endpoints are collected once per call.
func Compile(state *State, local []LocalPod) *Result {
	res := &Result{Firewalls: make(map[string]*Firewall, len(local)), Services: make(map[string][]ServiceVerdict)}
	if state == nil {
		state = &State{}
	}
	c := newCompiler(state, res)
	compileLocal(res, local, c.firewall)
	return res
}

// compiler holds the indexes and memoized peer sets of one Compile call.
type compiler struct {
	// pods are the eligible peer pods (with IPs, not terminal, not
	// hostNetwork), each with the addresses it won, in input order.
	pods     []*peerPod
	podsByNS map[string][]*peerPod
	// namespaces are every namespace known or referred to by a pod, sorted.
	namespaces   []namespaceLabels
	policiesByNS map[string][]*parsedPolicy
	peers        peerTable
	// selections are the matches of selector peers, shared by every rule
	// with the same selectors; all is the match of an empty from/to.
	selections map[selectionKey]*peerMatch
	blocks     map[string]*peerMatch
	all        *peerMatch
	// unions are the unions of several peers' sets, by the sets' identity.
	unions unionCache
	// services are the Service frontends, their endpoints and the guard.
	services *serviceTable
	// selecting and rules are firewall's scratch.
	selecting []*parsedPolicy
	rules     ruleSet
}

// peerPod is an eligible peer pod and the addresses it owns.
type peerPod struct {
	pod   *Pod
	addrs []netip.Addr
}

type namespaceLabels struct {
	name   string
	labels labels.Set
}

func newCompiler(state *State, res *Result) *compiler {
	c := &compiler{
		podsByNS:     make(map[string][]*peerPod),
		policiesByNS: make(map[string][]*parsedPolicy),
		peers:        peerTable{ids: make(map[string]int), bySet: make(map[*netipx.IPSet]int)},
		selections:   make(map[selectionKey]*peerMatch),
		blocks:       make(map[string]*peerMatch),
		unions:       make(unionCache),
	}
	c.pods = eligiblePeers(state.Pods)
	for _, pp := range c.pods {
		c.podsByNS[pp.pod.Namespace] = append(c.podsByNS[pp.pod.Namespace], pp)
	}

	nsLabels := make(map[string]labels.Set)
	for _, ns := range state.Namespaces {
		if ns == nil {
			continue
		}
		set := make(labels.Set, len(ns.Labels)+1)
		for k, v := range ns.Labels {
			set[k] = v
		}
		// The API server always sets this label to the namespace's name.
		set[corev1.LabelMetadataName] = ns.Name
		nsLabels[ns.Name] = set
	}
	for name := range c.podsByNS {
		if _, ok := nsLabels[name]; !ok {
			nsLabels[name] = labels.Set{corev1.LabelMetadataName: name}
		}
	}
	for name, set := range nsLabels {
		c.namespaces = append(c.namespaces, namespaceLabels{name: name, labels: set})
	}
	slices.SortFunc(c.namespaces, func(a, b namespaceLabels) int { return cmp.Compare(a.name, b.name) })

	type parsedWithErrors struct {
		policy *parsedPolicy
		errs   []error
	}
	var parsed []parsedWithErrors
	for _, np := range state.Policies {
		if np == nil {
			continue
		}
		pp, errs := parsePolicy(np, false)
		parsed = append(parsed, parsedWithErrors{pp, errs})
	}
	// Policy order, and so the order of Problems, does not depend on input
	// order.
	slices.SortStableFunc(parsed, func(a, b parsedWithErrors) int { return cmp.Compare(a.policy.key, b.policy.key) })
	for _, p := range parsed {
		for _, err := range p.errs {
			res.Problems = append(res.Problems, fmt.Errorf("networkpolicy %s: %w", p.policy.key, err))
		}
		c.policiesByNS[p.policy.namespace] = append(c.policiesByNS[p.policy.namespace], p.policy)
	}
	c.services = newServiceTable(state, res)
	return c
}

// eligiblePeers returns the pods that can be peers, each with the addresses
// it owns. When several eligible pods claim one address, exactly one wins: a
// pod not being deleted over one that is, then a Running pod, then the newest;
// remaining ties go to the smaller namespace/name, then UID.
func eligiblePeers(pods []*Pod) []*peerPod {
	type candidate struct {
		pod    *Pod
		claims []netip.Addr
	}
	owner := make(map[netip.Addr]*Pod)
	candidates := make([]candidate, 0, len(pods))
	for _, p := range pods {
		if p == nil {
			continue
		}
		claims := podClaims(p)
		if len(claims) == 0 {
			continue
		}
		candidates = append(candidates, candidate{pod: p, claims: claims})
		for _, a := range claims {
			if cur, ok := owner[a]; !ok || (cur != p && claimsBefore(p, cur)) {
				owner[a] = p
			}
		}
	}
	out := make([]*peerPod, 0, len(candidates))
	for _, c := range candidates {
		addrs := slices.DeleteFunc(c.claims, func(a netip.Addr) bool { return owner[a] != c.pod })
		if len(addrs) > 0 {
			out = append(out, &peerPod{pod: c.pod, addrs: addrs})
		}
	}
	return out
}

// podEligible reports whether p can be a peer at all.
func podEligible(p *Pod) bool {
	return !p.HostNetwork && len(p.IPs) > 0 && p.Phase != corev1.PodSucceeded && p.Phase != corev1.PodFailed
}

// podClaims returns the addresses an eligible pod claims.
func podClaims(p *Pod) []netip.Addr {
	if !podEligible(p) {
		return nil
	}
	var out []netip.Addr
	for _, a := range p.IPs {
		if !a.IsValid() {
			continue
		}
		a = a.Unmap()
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// claimsBefore reports whether a wins an address both a and b claim.
func claimsBefore(a, b *Pod) bool {
	if a.Deleting != b.Deleting {
		return !a.Deleting
	}
	aRunning, bRunning := a.Phase == corev1.PodRunning, b.Phase == corev1.PodRunning
	if aRunning != bRunning {
		return aRunning
	}
	if !a.Created.Equal(&b.Created) {
		return b.Created.Before(&a.Created)
	}
	if a.Key() != b.Key() {
		return a.Key() < b.Key()
	}
	return a.UID < b.UID
}

// firewall compiles the firewall of one local pod and, when its egress is
// isolated, its Service verdicts.
func (c *compiler) firewall(pod *Pod) (*Firewall, []ServiceVerdict) {
	c.selecting = selectingPolicies(c.selecting[:0], c.policiesByNS[pod.Namespace], pod)
	return assembleFirewall(pod, c.selecting, c, &c.rules, &c.peers, c.services)
}

// addRule adds what rule r allows the local pod to rules.
func (c *compiler) addRule(rules *ruleSet, r *parsedRule, policyNS string, dir direction, pod *Pod) {
	rr := c.resolve(r, policyNS, dir)
	addRulePorts(rules, rr.peerID, r, dir, pod)
	for _, n := range rr.named {
		rules.add(n.peerID, false, []Port{n.port})
	}
}

// resolvedRule is a rule's peers as addresses.
type resolvedRule struct {
	// peerID is the interned peer of the rule, or -1 when the peers match
	// no address.
	peerID int
	// named are the egress rule's named ports resolved against each
	// destination pod: one entry per (protocol, port) with the pods that
	// have it.
	named []resolvedNamedPort
}

type resolvedNamedPort struct {
	port   Port
	peerID int
}

// peerMatch is what one peer matches: an address set and, for named egress
// ports, the destination pods with the addresses of theirs the peer matches.
// Matches of selector peers are shared by every rule with the same selectors.
type peerMatch struct {
	set *netipx.IPSet
	// dests computes the destination pods on first use.
	dests     func() []*peerPod
	destsDone bool
	destPods  []*peerPod
	// named caches, per named port, the address set of each port number it
	// resolves to.
	named map[namedPort]map[Port]*netipx.IPSet
	// namedHosts, when set, gives namedPortSets the addresses per port
	// number instead of a walk over the destinations (the persistent
	// Compiler keeps them per namespace).
	namedHosts func(namedPort) map[Port][]netip.Addr
}

func (m *peerMatch) destinations() []*peerPod {
	if !m.destsDone {
		m.destPods = m.dests()
		m.destsDone = true
	}
	return m.destPods
}

// namedPortSets resolves a named port against the match's destination pods.
func (m *peerMatch) namedPortSets(n namedPort) map[Port]*netipx.IPSet {
	if sets, ok := m.named[n]; ok {
		return sets
	}
	var hosts map[Port][]netip.Addr
	if m.namedHosts != nil {
		hosts = m.namedHosts(n)
	} else {
		hosts = make(map[Port][]netip.Addr)
		for _, d := range m.destinations() {
			hosts = appendNamedHosts(hosts, d, n)
		}
	}
	sets := make(map[Port]*netipx.IPSet, len(hosts))
	for port, addrs := range hosts {
		if set := hostSet(addrs); set != nil {
			sets[port] = set
		}
	}
	if m.named == nil {
		m.named = make(map[namedPort]map[Port]*netipx.IPSet)
	}
	m.named[n] = sets
	return sets
}

// appendNamedHosts adds the addresses of d to hosts under each port number
// named port n resolves to on d.
func appendNamedHosts(hosts map[Port][]netip.Addr, d *peerPod, n namedPort) map[Port][]netip.Addr {
	for _, cp := range d.pod.Ports {
		if cp.Name != n.name || cp.Protocol != n.protocol || cp.Port <= 0 {
			continue
		}
		port := Port{Protocol: cp.Protocol, Port: cp.Port}
		hosts[port] = append(hosts[port], d.addrs...)
	}
	return hosts
}

// selectionKey identifies a selector peer's match: its selectors in
// canonical form and, without a namespaceSelector, the policy's namespace.
type selectionKey struct {
	namespace         string
	hasPodSelector    bool
	podSelector       string
	hasNamespaceSel   bool
	namespaceSelector string
}

// resolve computes (once) the addresses a rule's peers match.
func (c *compiler) resolve(r *parsedRule, policyNS string, dir direction) *resolvedRule {
	if r.resolved != nil {
		return r.resolved
	}
	rr := &resolvedRule{peerID: -1}
	r.resolved = rr

	var matches []*peerMatch
	if r.anyPeer {
		rr.peerID = c.peers.intern(Peer{Any: true})
		matches = []*peerMatch{c.everyPod()}
	} else {
		sets := make([]*netipx.IPSet, 0, len(r.peers))
		for i := range r.peers {
			m := c.matchPeer(&r.peers[i], policyNS)
			matches = append(matches, m)
			sets = append(sets, m.set)
		}
		rr.peerID = c.peers.internSet(c.unions.union(sets))
	}

	if dir == egress && len(r.named) > 0 {
		resolveNamedEgress(r.named, matches, c.unions, func(port Port, set *netipx.IPSet) {
			if id := c.peers.internSet(set); id >= 0 {
				rr.named = append(rr.named, resolvedNamedPort{port: port, peerID: id})
			}
		})
	}
	return rr
}

// everyPod is the match of an empty from/to: every eligible pod is a
// destination (its address set is unused: the peer is Any).
func (c *compiler) everyPod() *peerMatch {
	if c.all == nil {
		c.all = &peerMatch{dests: func() []*peerPod { return c.pods }}
	}
	return c.all
}

// matchPeer returns what one parsed peer matches.
func (c *compiler) matchPeer(peer *parsedPeer, policyNS string) *peerMatch {
	if peer.block != nil {
		return c.matchBlock(peer.block)
	}
	key := selectionKeyOf(peer, policyNS)
	if m, ok := c.selections[key]; ok {
		return m
	}
	var pods []*peerPod
	var addrs []netip.Addr
	c.selectPods(peer, policyNS, func(pp *peerPod) {
		pods = append(pods, pp)
		addrs = append(addrs, pp.addrs...)
	})
	m := &peerMatch{set: hostSet(addrs), dests: func() []*peerPod { return pods }}
	c.selections[key] = m
	return m
}

// matchBlock returns the match of an ipBlock (cidr minus excepts), shared by
// every ipBlock with the same addresses.
func (c *compiler) matchBlock(block *netipx.IPSet) *peerMatch {
	key := blockKeyOf(block)
	if m, ok := c.blocks[key]; ok {
		return m
	}
	m := &peerMatch{set: block, dests: func() []*peerPod { return blockDests(c.pods, block) }}
	c.blocks[key] = m
	return m
}

// selectPods calls fn for every eligible pod a selector peer matches.
func (c *compiler) selectPods(peer *parsedPeer, policyNS string, fn func(*peerPod)) {
	matchPods := func(ns string) {
		for _, pp := range c.podsByNS[ns] {
			if peer.podSelector == nil || peer.podSelector.Matches(labels.Set(pp.pod.Labels)) {
				fn(pp)
			}
		}
	}
	if peer.namespaceSelector == nil {
		matchPods(policyNS)
		return
	}
	for _, ns := range c.namespaces {
		if peer.namespaceSelector.Matches(ns.labels) {
			matchPods(ns.name)
		}
	}
}

// hostSet returns the set of the given addresses (valid ones, as host
// prefixes); it may reorder addrs. IPv4 addresses are sorted as integers and
// merged into ranges before they reach netipx's builder, whose
// normalisation (a reflection-based sort of every range) then costs a
// single pass; IPv6 addresses are sorted with a generic sort first.
func hostSet(addrs []netip.Addr) *netipx.IPSet {
	v4 := make([]uint32, 0, len(addrs))
	v6 := addrs[:0]
	for _, a := range addrs {
		switch {
		case !a.IsValid():
		case a.Is4():
			b := a.As4()
			v4 = append(v4, binary.BigEndian.Uint32(b[:]))
		default:
			v6 = append(v6, a)
		}
	}
	slices.Sort(v4)
	v4 = slices.Compact(v4)
	var b netipx.IPSetBuilder
	for i := 0; i < len(v4); {
		j := i
		for j+1 < len(v4) && v4[j+1] == v4[j]+1 {
			j++
		}
		var from, to [4]byte
		binary.BigEndian.PutUint32(from[:], v4[i])
		binary.BigEndian.PutUint32(to[:], v4[j])
		b.AddRange(netipx.IPRangeFrom(netip.AddrFrom4(from), netip.AddrFrom4(to)))
		i = j + 1
	}
	slices.SortFunc(v6, netip.Addr.Compare)
	addHosts(&b, slices.Compact(v6))
	set, _ := b.IPSet() // only valid addresses are added
	return set
}

// addHosts adds each address to b as a host prefix.
func addHosts(b *netipx.IPSetBuilder, addrs []netip.Addr) {
	for _, a := range addrs {
		b.Add(a)
	}
}
