package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go4.org/netipx"
)

// What the stateless compiler (compile.go) and the persistent Compiler
// (incremental.go) have in common: how a pod's Firewall is assembled from
// the policies that select it, how a rule's ports apply to it, how named
// egress ports and ipBlocks are resolved against destination pods. Each
// compiler keeps only how it resolves and caches peers.

// ruleAdder adds to rules what rule r of a policy in namespace policyNS
// allows the local pod: the part of a firewall each compiler does its own
// way (how the rule's peers are resolved, cached and interned).
type ruleAdder interface {
	addRule(rules *ruleSet, r *parsedRule, policyNS string, dir direction, pod *Pod)
}

// compileLocal adds to res the firewall of every local pod and, for those
// whose egress is isolated, their Service verdicts; a local pod without a
// pod object is a problem.
func compileLocal(res *Result, local []LocalPod, firewall func(*Pod) (*Firewall, []ServiceVerdict)) {
	for _, lp := range local {
		if lp.Pod == nil {
			res.Problems = append(res.Problems, fmt.Errorf("local pod %s: no pod object", lp.Key))
			continue
		}
		fw, verdicts := firewall(lp.Pod)
		res.Firewalls[lp.Key] = fw
		if fw.Egress.Isolated {
			res.Services[lp.Key] = verdicts
		}
	}
}

// selectingPolicies appends to dst the policies of the pod's namespace, in
// order, that select it.
func selectingPolicies(dst, nsPolicies []*parsedPolicy, pod *Pod) []*parsedPolicy {
	for _, pp := range nsPolicies {
		if pp.selects(pod) {
			dst = append(dst, pp)
		}
	}
	return dst
}

// assembleFirewall builds the firewall of one local pod from the policies
// that select it, each rule added by adder with its peers interned in
// peers, and, when the pod's egress is isolated, its Service verdicts.
// rules is the caller's scratch, emptied for each direction (a ruleSet of
// assembleFirewall's own would go to the heap through adder).
func assembleFirewall(pod *Pod, selecting []*parsedPolicy, adder ruleAdder, rules *ruleSet, peers *peerTable, services *serviceTable) (*Firewall, []ServiceVerdict) {
	fw := &Firewall{}
	for _, dir := range directions {
		d := &fw.Egress
		if dir == ingress {
			d = &fw.Ingress
		}
		*rules = ruleSet{}
		for _, pp := range selecting {
			if !pp.isolates[dir] {
				continue
			}
			d.Isolated = true
			d.Policies = append(d.Policies, pp.key)
			for _, r := range pp.rules[dir] {
				adder.addRule(rules, r, pp.namespace, dir, pod)
			}
		}
		d.Policies = slices.Compact(d.Policies)
		d.Rules = rules.rules(peers)
	}
	if !fw.Egress.Isolated {
		return fw, nil
	}
	// Frontends are judged by the pod's own rules, so named ports,
	// ipBlocks, excepts and peer-less rules count exactly as for traffic
	// sent to the endpoints directly.
	o := services.outcome(fw.Egress.Rules, pod.NodeName)
	fw.Egress.Services = o.rules
	if len(fw.Egress.Rules) > 0 {
		// Without ordinary rules nothing could match a frontend.
		fw.Egress.ServiceGuard = services.guard
	}
	return fw, o.verdicts
}

// addRulePorts adds what rule r allows the local pod toward (egress) or from
// (ingress) the peer peerID on the rule's ports: every port, or its numbered
// ports and, on ingress, its named ports as the pod's own containers number
// them. Nothing when peerID is -1 (the peers match no address). Named egress
// ports depend on the destinations and are each compiler's own.
func addRulePorts(rules *ruleSet, peerID int, r *parsedRule, dir direction, pod *Pod) {
	if peerID < 0 {
		return
	}
	if r.allPorts {
		rules.add(peerID, true, nil)
		return
	}
	ports := r.ports
	if dir == ingress && len(r.named) > 0 {
		ports = slices.Clone(ports)
		for _, n := range r.named {
			for _, cp := range pod.Ports {
				if cp.Name == n.name && cp.Protocol == n.protocol && cp.Port > 0 {
					ports = append(ports, Port{Protocol: cp.Protocol, Port: cp.Port})
				}
			}
		}
	}
	if len(ports) > 0 {
		rules.add(peerID, false, ports)
	}
}

// resolveNamedEgress resolves an egress rule's named ports against the
// destinations of its peers' matches: it calls fn, in port order, with each
// port number they resolve to and the union of the addresses that have it.
func resolveNamedEgress(named []namedPort, matches []*peerMatch, unions unionCache, fn func(Port, *netipx.IPSet)) {
	byPort := make(map[Port][]*netipx.IPSet)
	for _, n := range named {
		for _, m := range matches {
			for port, set := range m.namedPortSets(n) {
				byPort[port] = append(byPort[port], set)
			}
		}
	}
	ports := make([]Port, 0, len(byPort))
	for port := range byPort {
		ports = append(ports, port)
	}
	slices.SortFunc(ports, comparePorts)
	for _, port := range ports {
		fn(port, unions.union(byPort[port]))
	}
}

// unionCache holds unions of address sets by the sets' identity.
type unionCache map[string]*netipx.IPSet

// union returns the union of sets (sets[0] itself when there is one),
// computed once per list of sets.
func (u unionCache) union(sets []*netipx.IPSet) *netipx.IPSet {
	switch len(sets) {
	case 0:
		return nil
	case 1:
		return sets[0]
	}
	key := make([]byte, 0, 8*len(sets))
	for _, s := range sets {
		key = fmt.Appendf(key, "%p,", s)
	}
	if set, ok := u[string(key)]; ok {
		return set
	}
	var b netipx.IPSetBuilder
	for _, s := range sets {
		b.AddSet(s)
	}
	set, _ := b.IPSet()
	u[string(key)] = set
	return set
}

// selectionKeyOf returns the key of a selector peer's match.
func selectionKeyOf(peer *parsedPeer, policyNS string) selectionKey {
	key := selectionKey{hasNamespaceSel: peer.namespaceSelector != nil, hasPodSelector: peer.podSelector != nil}
	if key.hasNamespaceSel {
		key.namespaceSelector = peer.namespaceSelector.String()
	} else {
		key.namespace = policyNS
	}
	if key.hasPodSelector {
		key.podSelector = peer.podSelector.String()
	}
	return key
}

// blockKeyOf returns the key of an ipBlock's match: its address ranges.
func blockKeyOf(block *netipx.IPSet) string {
	var key strings.Builder
	for _, r := range block.Ranges() {
		key.WriteString(r.String())
		key.WriteByte(',')
	}
	return key.String()
}

// blockDests returns the pods an ipBlock matches as destinations, each with
// only its addresses inside block.
func blockDests(pods []*peerPod, block *netipx.IPSet) []*peerPod {
	var dests []*peerPod
	for _, pp := range pods {
		var in []netip.Addr
		for _, a := range pp.addrs {
			if block.Contains(a) {
				in = append(in, a)
			}
		}
		if len(in) > 0 {
			dests = append(dests, &peerPod{pod: pp.pod, addrs: in})
		}
	}
	return dests
}
