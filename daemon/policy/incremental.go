package policy

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Compiler is a persistent compiler: Compile gives the same Result as the
// package's Compile function, but keeps what it computed between calls and
// redoes only what the change since the previous call affects, so that the
// cost of a compile follows the change rather than the cluster.
//
// What it keeps, and when it is thrown away:
//   - Parsed policies, by *NetworkPolicy (and its resourceVersion and
//     generation).
//   - Per pod, the addresses it claims and owns; per address, its claimants.
//     A pod is known by pointer; a new pointer whose content equals the pod
//     of the same namespace/name that disappeared is taken as unchanged, and
//     one that differs only in labels keeps its addresses.
//   - A copy of the last pods list: a call looks only at the pods between
//     the prefix and the suffix the new list shares with it (compared by
//     pointer), so that one changed pod costs the same at any cluster size.
//   - Per namespace, its eligible peer pods and labels, with versions that
//     change whenever they change, and its pods' addresses per named port.
//   - The matches of selector peers (address set and destinations), valid
//     while the namespaces they read keep their versions; the matches of
//     ipBlocks and of an empty from/to, valid while no pod's addresses or
//     ports changed.
//   - Per policy rule, its resolved address sets, valid while the matches it
//     was resolved from are the ones the current state gives.
//   - The Service table (serviceCache): per Service, its ports and
//     endpoints while the Service and its EndpointSlices are the same
//     objects; the guard while the Services and ServiceCIDRs are; the
//     verdicts per distinct egress rules, carried over for the ports an
//     updated table still has.
//
// Correctness never rests on pointer identity alone: an object that is the
// same pointer must not have been modified (the sources publish new objects
// for changes and never mutate published ones), and a new pointer is
// compared by content or recomputed. Compile may be called from several
// goroutines; calls are serialized.
type Compiler struct {
	mu  sync.Mutex
	gen uint64 // incremented by every Compile

	pods map[*Pod]*podEntry
	// owner is the pod that owns each claimed address; rivals, for the
	// addresses several pods claim, every claimant.
	owner  map[netip.Addr]*podEntry
	rivals map[netip.Addr][]*podEntry
	// tied are the addresses whose owner is decided by input order (two
	// claimants the claim order cannot tell apart): rechecked whenever the
	// pods change.
	tied map[netip.Addr]struct{}
	// prevPods is a copy of the pods of the previous call (see syncPods);
	// positionsCurrent tells whether every entry's index is its position
	// in them, and positionWalk counts the walks that set the indexes.
	prevPods         []*Pod
	positionsCurrent bool
	positionWalk     uint64
	// allGen changes whenever the eligible pods, their addresses or their
	// ports change: what the matches of ipBlocks and of an empty from/to
	// depend on.
	allGen uint64

	namespaces map[string]*nsEntry
	nsList     []*nsEntry
	// nsLabelsGen changes whenever a namespace appears or its labels change.
	nsLabelsGen  uint64
	prevNSInput  []*Namespace
	prevNSLatest map[string]*Namespace

	policies       map[*networkingv1.NetworkPolicy]*policyEntry
	prevPolicies   []*networkingv1.NetworkPolicy
	policiesByNS   map[string][]*parsedPolicy
	policyProblems []error

	selections map[selectionKey]*selectionEntry
	blocks     map[string]*blockEntry
	all        *allEntry
	// unions are the unions computed in this call, by their sets.
	unions unionCache
	seed   maphash.Seed

	// pruneEvery and pruneAge: every pruneEvery calls, what went unused for
	// pruneAge calls is dropped (tests shrink them).
	pruneEvery, pruneAge uint64

	services        *serviceTable
	serviceProblems []error
	serviceCache    serviceCache

	// prefixLists shares equal peer prefix lists across calls.
	prefixLists prefixLists
}

// NewCompiler returns an empty persistent compiler. The zero Compiler is
// ready to use too.
func NewCompiler() *Compiler {
	c := &Compiler{}
	c.init()
	return c
}

func (c *Compiler) init() {
	c.pods = make(map[*Pod]*podEntry)
	c.owner = make(map[netip.Addr]*podEntry)
	c.rivals = make(map[netip.Addr][]*podEntry)
	c.tied = make(map[netip.Addr]struct{})
	c.namespaces = make(map[string]*nsEntry)
	c.policies = make(map[*networkingv1.NetworkPolicy]*policyEntry)
	c.selections = make(map[selectionKey]*selectionEntry)
	c.blocks = make(map[string]*blockEntry)
	c.unions = make(unionCache)
	c.seed = maphash.MakeSeed()
	c.pruneEvery, c.pruneAge = 16, 64
}

// podEntry is what the compiler knows of one pod of the state.
type podEntry struct {
	pod *Pod
	// count is how many times the current pods list the pod (0 once it
	// is gone).
	count int
	// index is where the current pods first list the pod, as of the
	// position walk positionWalk (see Compiler.position; for ties only).
	index        int
	positionWalk uint64
	nsIndex      int // position in ns.members
	ns           *nsEntry
	// claims are the pod's valid addresses, unmapped and unique, when the
	// pod can be a peer.
	claims []netip.Addr
	// pp is the pod as a peer with the addresses it owns (claims itself
	// when it owns them all); nil when it owns none.
	pp *peerPod
}

// nsEntry is one namespace: named by the state or by a pod.
type nsEntry struct {
	name     string
	explicit *Namespace // nil when only pods name it
	labels   labels.Labels
	members  []*podEntry
	pods     []*peerPod // eligible, owning at least one address
	// version changes whenever pods or their labels change, peersVersion
	// only when pods, their addresses or their ports do (what a selection
	// without a podSelector reads).
	version      uint64
	peersVersion uint64
	dirty        bool // a pod was relabelled
	peersDirty   bool // a pod came, went, or its addresses changed
	// named caches the addresses of pods per named port and port number,
	// at namedVersion (a peersVersion).
	named        map[namedPort]map[Port][]netip.Addr
	namedVersion uint64
}

// namedHosts returns the addresses of the namespace's peers per port number
// that named port n resolves to on them. Callers must not modify it.
func (ns *nsEntry) namedHosts(n namedPort) map[Port][]netip.Addr {
	if ns.namedVersion != ns.peersVersion {
		ns.named, ns.namedVersion = nil, ns.peersVersion
	}
	if hosts, ok := ns.named[n]; ok {
		return hosts
	}
	hosts := make(map[Port][]netip.Addr)
	for _, pp := range ns.pods {
		hosts = appendNamedHosts(hosts, pp, n)
	}
	if ns.named == nil {
		ns.named = make(map[namedPort]map[Port][]netip.Addr)
	}
	ns.named[n] = hosts
	return hosts
}

// namedHostsOf returns namedHosts for a match holding every peer of
// namespaces.
func namedHostsOf(namespaces []*nsEntry) func(namedPort) map[Port][]netip.Addr {
	return func(n namedPort) map[Port][]netip.Addr {
		sizes := make(map[Port]int)
		for _, ns := range namespaces {
			for port, addrs := range ns.namedHosts(n) {
				sizes[port] += len(addrs)
			}
		}
		hosts := make(map[Port][]netip.Addr, len(sizes))
		for port, size := range sizes {
			hosts[port] = make([]netip.Addr, 0, size)
		}
		for _, ns := range namespaces {
			for port, addrs := range ns.namedHosts(n) {
				hosts[port] = append(hosts[port], addrs...)
			}
		}
		return hosts
	}
}

// versionFor is the version a selection reads: with a podSelector, labels
// count.
func (ns *nsEntry) versionFor(podSelector bool) uint64 {
	if podSelector {
		return ns.version
	}
	return ns.peersVersion
}

// policyEntry is a parsed NetworkPolicy.
type policyEntry struct {
	rv         string
	generation int64
	parsed     *parsedPolicy
	errs       []error
	seen       uint64
}

// selectionEntry is a cached selector-peer match and what it was read from.
type selectionEntry struct {
	match *peerMatch
	// deps are the namespaces whose pods the match holds, at their version.
	deps        []nsDep
	nsLabelsGen uint64
	used        uint64
}

type nsDep struct {
	ns      *nsEntry
	version uint64
}

type blockEntry struct {
	match  *peerMatch
	allGen uint64
	used   uint64
}

type allEntry struct {
	match  *peerMatch
	allGen uint64
}

// setInfo is an address set's prefixes and their hash, kept with the rule
// resolution that holds the set.
type setInfo struct {
	prefixes []netip.Prefix
	hash     uint64
}

// ruleMemo is a rule's resolution and the matches it was computed from.
type ruleMemo struct {
	// matches are the peers' matches, for rules with named egress ports
	// (resolved against the matches' destinations); sets their sets.
	matches []*peerMatch
	sets    []*netipx.IPSet
	any     bool
	set     *netipx.IPSet
	info    *setInfo // of set, on first use
	named   []namedSet
}

type namedSet struct {
	port Port
	set  *netipx.IPSet
	info *setInfo
}

// Compile is Compile with the work of earlier calls reused. It does not
// modify its input; the Result is the caller's.
func (c *Compiler) Compile(state *State, local []LocalPod) *Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pods == nil {
		c.init()
	}
	if state == nil {
		state = &State{}
	}
	c.gen++
	clear(c.unions)
	res := &Result{Firewalls: make(map[string]*Firewall, len(local)), Services: make(map[string][]ServiceVerdict)}

	c.syncPods(state.Pods)
	c.syncNamespaces(state.Namespaces)
	c.syncPolicies(state.Policies)
	c.syncServices(state)
	res.Problems = append(res.Problems, c.policyProblems...)
	res.Problems = append(res.Problems, c.serviceProblems...)

	run := &compileRun{c: c, bySet: make(map[*netipx.IPSet]int), byHash: make(map[uint64][]int), anyID: -1}
	compileLocal(res, local, run.firewall)
	c.prune()
	return res
}

// podsEqual reports whether a and b are the same pod in content, labels
// aside when withLabels is false.
func podsEqual(a, b *Pod, withLabels bool) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.UID == b.UID &&
		(!withLabels || maps.Equal(a.Labels, b.Labels)) &&
		slices.Equal(a.Ports, b.Ports) && slices.Equal(a.IPs, b.IPs) &&
		a.NodeName == b.NodeName && a.HostNetwork == b.HostNetwork && a.Phase == b.Phase &&
		a.Deleting == b.Deleting && a.Created.Equal(&b.Created)
}

// syncPods brings the pod, address and namespace-membership indexes up to
// pods, marking the namespaces whose peers changed.
//
// Only what changed since the previous call is looked at: pods is compared
// with a copy of the previous call's pods by pointer, and the common prefix
// and suffix (the same pods at the same places) are skipped; the pods of
// the windows in between are counted out (old window) and in (new window),
// so that a pod listed twice, moved, or also listed outside the windows is
// still known to be there. The copy is the compiler's own, so a caller's
// slice modified in place after a call is seen as changed.
func (c *Compiler) syncPods(pods []*Pod) {
	gen := c.gen
	prev := c.prevPods
	start, oldEnd, newEnd := ChangedWindow(prev, pods)
	changed := start < oldEnd || start < newEnd
	added, removed, ok := c.countWindows(prev[start:oldEnd], pods[start:newEnd])
	if !ok {
		added, removed = c.recount(pods)
	}
	if changed {
		c.prevPods = slices.Replace(prev, start, oldEnd, pods[start:newEnd]...)
		c.positionsCurrent = false
	}
	if len(added) == 0 && len(removed) == 0 && (!changed || len(c.tied) == 0) {
		c.rebuildNamespaces()
		return
	}
	// affected are the addresses whose claimants change, with their owner
	// before the change.
	affected := make(map[netip.Addr]*podEntry)
	affect := func(a netip.Addr) {
		if _, ok := affected[a]; !ok {
			affected[a] = c.owner[a]
		}
	}
	var touched []*podEntry

	// A pod republished under a new pointer is usually unchanged (or only
	// relabelled): pair it with the entry of the same name that went away.
	var gone map[podRef]*podEntry
	if len(removed) > 0 && len(added) > 0 {
		gone = make(map[podRef]*podEntry, len(removed))
		for _, e := range removed {
			k := podRef{e.pod.Namespace, e.pod.Name}
			if _, ok := gone[k]; !ok {
				gone[k] = e
			}
		}
	}
	paired := make(map[*podEntry]bool)
	for _, p := range added {
		if e := c.pods[p]; e != nil { // listed twice
			e.count++
			continue
		}
		if old := gone[podRef{p.Namespace, p.Name}]; old != nil && !paired[old] && podsEqual(old.pod, p, false) {
			paired[old] = true
			delete(c.pods, old.pod)
			relabelled := !maps.Equal(old.pod.Labels, p.Labels)
			old.pod, old.count = p, 1
			c.pods[p] = old
			if relabelled && old.pp != nil {
				old.pp = &peerPod{pod: p, addrs: old.pp.addrs}
				old.ns.dirty = true
			}
			continue
		}
		e := &podEntry{pod: p, count: 1, claims: podClaims(p)}
		e.ns = c.namespace(p.Namespace)
		e.nsIndex = len(e.ns.members)
		e.ns.members = append(e.ns.members, e)
		c.pods[p] = e
		for _, a := range e.claims {
			affect(a)
			c.addClaim(a, e)
		}
		touched = append(touched, e)
	}
	for _, e := range removed {
		if paired[e] {
			continue
		}
		delete(c.pods, e.pod)
		members := e.ns.members
		last := members[len(members)-1]
		members[e.nsIndex], last.nsIndex = last, e.nsIndex
		members[len(members)-1] = nil
		e.ns.members = members[:len(members)-1]
		for _, a := range e.claims {
			affect(a)
			c.removeClaim(a, e)
		}
		if e.pp != nil {
			e.ns.peersDirty = true
			c.allGen = gen
		}
	}
	// The owner of an address claimants tie on depends on input order,
	// which may have moved.
	if changed {
		for a := range c.tied {
			affect(a)
		}
	}
	for a, before := range affected {
		delete(c.tied, a)
		owner := c.owner[a]
		if rivals, ok := c.rivals[a]; ok {
			owner = c.bestClaimant(a, rivals)
			c.owner[a] = owner
		}
		if owner != before {
			if before != nil && before.count > 0 {
				touched = append(touched, before)
			}
			if owner != nil {
				touched = append(touched, owner)
			}
		}
	}
	for _, e := range touched {
		owned := e.claims
		for i, a := range e.claims {
			if c.owner[a] != e {
				// Rare: some address is another pod's.
				owned = slices.Clone(e.claims[:i])
				for _, b := range e.claims[i+1:] {
					if c.owner[b] == e {
						owned = append(owned, b)
					}
				}
				break
			}
		}
		if e.pp != nil && slices.Equal(owned, e.pp.addrs) || e.pp == nil && len(owned) == 0 {
			continue
		}
		e.pp = nil
		if len(owned) > 0 {
			e.pp = &peerPod{pod: e.pod, addrs: owned}
		}
		e.ns.peersDirty = true
		c.allGen = gen
	}
	c.rebuildNamespaces()
}

// countWindows counts the pods of the new window in and those of the old
// window out; a pod at the same place in both counts neither (the windows
// of pods republished here and there under new pointers are long, but only
// those places cost a lookup). added are the pods of the new window the
// compiler does not know (a pod listed twice there, twice), removed the
// entries no longer listed anywhere. ok is false when the old window names
// a pod the compiler does not count (it cannot, unless its copy of the
// previous pods is wrong); the counts are then unusable and recount must
// redo them.
func (c *Compiler) countWindows(old, now []*Pod) (added []*Pod, removed []*podEntry, ok bool) {
	for i, p := range now {
		if p == nil || i < len(old) && old[i] == p {
			continue
		}
		if e := c.pods[p]; e != nil {
			e.count++
			continue
		}
		added = append(added, p)
	}
	for i, p := range old {
		if p == nil || i < len(now) && now[i] == p {
			continue
		}
		e := c.pods[p]
		if e == nil || e.count <= 0 {
			return nil, nil, false
		}
		e.count--
		if e.count == 0 {
			removed = append(removed, e)
		}
	}
	return added, removed, true
}

// recount counts every pod of pods from scratch, as countWindows does for
// its windows.
func (c *Compiler) recount(pods []*Pod) (added []*Pod, removed []*podEntry) {
	for _, e := range c.pods {
		e.count = 0
	}
	for _, p := range pods {
		if p == nil {
			continue
		}
		if e := c.pods[p]; e != nil {
			e.count++
			continue
		}
		added = append(added, p)
	}
	for _, e := range c.pods {
		if e.count == 0 {
			removed = append(removed, e)
		}
	}
	return added, removed
}

// position returns where e's pod is first listed in the current pods. The
// positions are found by one walk over the pods, and only once a tie needs
// them after the pods changed: keeping them current on every change would
// cost a walk per call, since one insertion moves every pod after it.
func (c *Compiler) position(e *podEntry) int {
	if !c.positionsCurrent {
		c.positionWalk++
		for i, p := range c.prevPods {
			if p == nil {
				continue
			}
			if pe := c.pods[p]; pe != nil && pe.positionWalk != c.positionWalk {
				pe.positionWalk, pe.index = c.positionWalk, i
			}
		}
		c.positionsCurrent = true
	}
	return e.index
}

// addClaim records that e claims a.
func (c *Compiler) addClaim(a netip.Addr, e *podEntry) {
	if rivals, ok := c.rivals[a]; ok {
		c.rivals[a] = append(rivals, e)
	} else if o, ok := c.owner[a]; ok {
		c.rivals[a] = []*podEntry{o, e}
	} else {
		c.owner[a] = e
	}
}

// removeClaim records that e no longer claims a. An address left with one
// claimant is that claimant's; owners of contested addresses are decided
// once every claim of the call is recorded.
func (c *Compiler) removeClaim(a netip.Addr, e *podEntry) {
	rivals, ok := c.rivals[a]
	if !ok {
		if c.owner[a] == e {
			delete(c.owner, a)
		}
		return
	}
	if i := slices.Index(rivals, e); i >= 0 {
		rivals = slices.Delete(rivals, i, i+1)
	}
	if len(rivals) == 1 {
		delete(c.rivals, a)
		c.owner[a] = rivals[0]
		return
	}
	c.rivals[a] = rivals
	if c.owner[a] == e {
		c.owner[a] = rivals[0] // provisional
	}
}

// bestClaimant returns the pod that wins a: the first by claimsBefore, ties
// going to the pod listed first in the state, as in eligiblePeers.
func (c *Compiler) bestClaimant(a netip.Addr, claimants []*podEntry) *podEntry {
	best := claimants[0]
	for _, e := range claimants[1:] {
		switch {
		case claimsBefore(e.pod, best.pod):
			best = e
		case !claimsBefore(best.pod, e.pod):
			c.tied[a] = struct{}{}
			if c.position(e) < c.position(best) {
				best = e
			}
		}
	}
	return best
}

// namespace returns the entry of the namespace name, adding it.
func (c *Compiler) namespace(name string) *nsEntry {
	if ns := c.namespaces[name]; ns != nil {
		return ns
	}
	ns := &nsEntry{name: name, labels: namespaceLabelSet{name: name},
		version: c.gen, peersVersion: c.gen}
	c.namespaces[name] = ns
	c.nsList = append(c.nsList, ns)
	c.nsLabelsGen = c.gen
	return ns
}

// rebuildNamespaces recomputes the peers of the namespaces marked dirty.
func (c *Compiler) rebuildNamespaces() {
	for _, ns := range c.nsList {
		if !ns.dirty && !ns.peersDirty {
			continue
		}
		if ns.peersDirty {
			ns.peersVersion = c.gen
		}
		ns.dirty, ns.peersDirty = false, false
		ns.pods = ns.pods[:0:0]
		for _, e := range ns.members {
			if e.pp != nil {
				ns.pods = append(ns.pods, e.pp)
			}
		}
		ns.version = c.gen
	}
}

// syncNamespaces brings the namespace labels up to nss (the last of several
// namespaces with one name wins, as in Compile).
func (c *Compiler) syncNamespaces(nss []*Namespace) {
	if c.prevNSLatest != nil && slices.Equal(nss, c.prevNSInput) {
		return
	}
	latest := make(map[string]*Namespace, len(nss))
	for _, n := range nss {
		if n != nil {
			latest[n.Name] = n
		}
	}
	for _, ns := range c.nsList {
		if ns.explicit != nil && latest[ns.name] == nil {
			ns.explicit = nil
			ns.labels = namespaceLabelSet{name: ns.name}
			c.nsLabelsGen = c.gen
		}
	}
	for name, n := range latest {
		ns := c.namespace(name)
		if ns.explicit == n {
			continue
		}
		if ns.explicit != nil && maps.Equal(ns.explicit.Labels, n.Labels) {
			ns.explicit = n
			continue
		}
		ns.explicit = n
		ns.labels = namespaceLabelSet{name: name, labels: n.Labels}
		c.nsLabelsGen = c.gen
	}
	c.prevNSInput = nss
	c.prevNSLatest = latest
}

// syncPolicies parses the policies not parsed before and orders them by
// namespace as Compile does.
func (c *Compiler) syncPolicies(nps []*networkingv1.NetworkPolicy) {
	if c.policiesByNS != nil && slices.Equal(nps, c.prevPolicies) {
		return
	}
	gen := c.gen
	var parsed []*policyEntry
	for _, np := range nps {
		if np == nil {
			continue
		}
		e := c.policies[np]
		if e != nil && (e.rv != np.ResourceVersion || e.generation != np.Generation) {
			e = nil
		}
		if e == nil {
			pp, errs := parsePolicy(np, false)
			e = &policyEntry{rv: np.ResourceVersion, generation: np.Generation, parsed: pp, errs: errs}
			c.policies[np] = e
		}
		e.seen = gen
		parsed = append(parsed, e)
	}
	maps.DeleteFunc(c.policies, func(_ *networkingv1.NetworkPolicy, e *policyEntry) bool { return e.seen != gen })
	slices.SortStableFunc(parsed, func(a, b *policyEntry) int { return cmp.Compare(a.parsed.key, b.parsed.key) })
	c.policiesByNS = make(map[string][]*parsedPolicy)
	c.policyProblems = nil
	for _, e := range parsed {
		for _, err := range e.errs {
			c.policyProblems = append(c.policyProblems, fmt.Errorf("networkpolicy %s: %w", e.parsed.key, err))
		}
		c.policiesByNS[e.parsed.namespace] = append(c.policiesByNS[e.parsed.namespace], e.parsed)
	}
	c.prevPolicies = nps
}

// syncServices rebuilds the Service table unless its inputs are the same
// objects as before; the per-rules outcomes are recomputed every call.
func (c *Compiler) syncServices(state *State) {
	c.services, c.serviceProblems = c.serviceCache.update(state)
}

// prune drops the cached matches no rule used in the last pruneAge calls,
// the resolutions of the policies that selected no local pod in them and
// the entries of freed prefix lists.
// Superseded matches are replaced at once; this only bounds what is kept
// for selectors and rules no local pod has needed for a while.
func (c *Compiler) prune() {
	if c.gen%c.pruneEvery != 0 {
		return
	}
	c.prefixLists.sweep()
	old := func(used uint64) bool { return used+c.pruneAge < c.gen }
	maps.DeleteFunc(c.selections, func(_ selectionKey, e *selectionEntry) bool { return old(e.used) })
	maps.DeleteFunc(c.blocks, func(_ string, e *blockEntry) bool { return old(e.used) })
	for _, e := range c.policies {
		if old(e.parsed.used) {
			for _, rules := range e.parsed.rules {
				for _, r := range rules {
					r.memo = nil
				}
			}
		}
	}
}

// compileRun is the state of one Compile call: the peers interned so far.
type compileRun struct {
	c      *Compiler
	peers  peerTable
	bySet  map[*netipx.IPSet]int
	byHash map[uint64][]int
	anyID  int
	// selecting and rules are firewall's scratch.
	selecting []*parsedPolicy
	rules     ruleSet
}

// internAny returns the id of the any-peer.
func (r *compileRun) internAny() int {
	if r.anyID < 0 {
		r.anyID = len(r.peers.peers)
		r.peers.peers = append(r.peers.peers, Peer{Any: true})
	}
	return r.anyID
}

// internSet returns the id of the peer of set by content; -1 when the set
// is empty or nil. *cache holds the set's prefixes once computed.
func (r *compileRun) internSet(set *netipx.IPSet, cache **setInfo) int {
	if set == nil {
		return -1
	}
	if id, ok := r.bySet[set]; ok {
		return id
	}
	if *cache == nil {
		*cache = r.c.newSetInfo(set)
	}
	info := *cache
	id := -1
	if len(info.prefixes) > 0 {
		for _, cand := range r.byHash[info.hash] {
			if slices.Equal(r.peers.peers[cand].Prefixes, info.prefixes) {
				id = cand
				break
			}
		}
		if id < 0 {
			id = len(r.peers.peers)
			r.peers.peers = append(r.peers.peers, Peer{Prefixes: info.prefixes})
			r.byHash[info.hash] = append(r.byHash[info.hash], id)
		}
	}
	r.bySet[set] = id
	return id
}

// newSetInfo returns the prefixes of set and their hash.
func (c *Compiler) newSetInfo(set *netipx.IPSet) *setInfo {
	info := &setInfo{prefixes: set.Prefixes()}
	{
		var h maphash.Hash
		h.SetSeed(c.seed)
		var buf [18]byte
		for _, p := range info.prefixes {
			a := p.Addr().As16()
			copy(buf[:16], a[:])
			buf[16] = 6
			if p.Addr().Is4() {
				buf[16] = 4
			}
			buf[17] = byte(p.Bits())
			h.Write(buf[:])
		}
		info.hash = h.Sum64()
	}
	info.prefixes = c.prefixLists.intern(info.hash, info.prefixes)
	return info
}

// firewall compiles the firewall of one local pod, as compiler.firewall,
// marking the policies that select it as used.
func (r *compileRun) firewall(pod *Pod) (*Firewall, []ServiceVerdict) {
	r.selecting = selectingPolicies(r.selecting[:0], r.c.policiesByNS[pod.Namespace], pod)
	for _, pp := range r.selecting {
		pp.used = r.c.gen
	}
	return assembleFirewall(pod, r.selecting, r, &r.rules, &r.peers, r.c.services)
}

// addRule adds what rule allows the local pod to rules, as compiler.addRule.
func (r *compileRun) addRule(rules *ruleSet, rule *parsedRule, policyNS string, dir direction, pod *Pod) {
	m := r.c.resolveRule(rule, policyNS, dir)
	peerID := -1
	if m.any {
		peerID = r.internAny()
	} else {
		peerID = r.internSet(m.set, &m.info)
	}
	addRulePorts(rules, peerID, rule, dir, pod)
	for i := range m.named {
		n := &m.named[i]
		if id := r.internSet(n.set, &n.info); id >= 0 {
			rules.add(id, false, []Port{n.port})
		}
	}
}

// resolveRule returns the address sets of a rule's peers, reusing the last
// resolution when every match it was computed from is still current.
func (c *Compiler) resolveRule(r *parsedRule, policyNS string, dir direction) *ruleMemo {
	namedEgress := dir == egress && len(r.named) > 0
	var matches []*peerMatch
	if r.anyPeer {
		if namedEgress {
			matches = []*peerMatch{c.everyPod()}
		}
	} else {
		matches = make([]*peerMatch, 0, len(r.peers))
		for i := range r.peers {
			matches = append(matches, c.matchPeer(&r.peers[i], policyNS))
		}
	}
	var sets []*netipx.IPSet
	if !r.anyPeer {
		sets = make([]*netipx.IPSet, 0, len(matches))
		for _, pm := range matches {
			sets = append(sets, pm.set)
		}
	}
	if m := r.memo; m != nil {
		// Without named egress ports only the peers' sets count (an
		// ipBlock's set outlives its match, which follows the pods).
		if namedEgress && slices.Equal(m.matches, matches) || !namedEgress && slices.Equal(m.sets, sets) {
			return m
		}
	}
	m := &ruleMemo{any: r.anyPeer, sets: sets}
	if namedEgress {
		m.matches = matches
	}
	if !r.anyPeer {
		m.set = c.unions.union(sets)
	}
	if namedEgress {
		resolveNamedEgress(r.named, matches, c.unions, func(port Port, set *netipx.IPSet) {
			if set != nil {
				m.named = append(m.named, namedSet{port: port, set: set})
			}
		})
	}
	r.memo = m
	return m
}

// everyPod is the match of an empty from/to: every eligible pod.
func (c *Compiler) everyPod() *peerMatch {
	if c.all == nil || c.all.allGen != c.allGen {
		var pods []*peerPod
		for _, ns := range c.nsList {
			pods = append(pods, ns.pods...)
		}
		c.all = &allEntry{match: &peerMatch{dests: func() []*peerPod { return pods },
			namedHosts: namedHostsOf(slices.Clone(c.nsList))}, allGen: c.allGen}
	}
	return c.all.match
}

// matchPeer returns what one parsed peer matches, reusing the match of an
// earlier call when what it was read from has not changed.
func (c *Compiler) matchPeer(peer *parsedPeer, policyNS string) *peerMatch {
	if peer.block != nil {
		return c.matchBlock(peer)
	}
	if !peer.keyDone {
		peer.selKey = selectionKeyOf(peer, policyNS)
		peer.keyDone = true
	}
	key := peer.selKey
	e := c.selections[key]
	if e != nil && e.used == c.gen {
		return e.match
	}
	if e != nil && c.selectionCurrent(e, peer, policyNS) {
		e.used = c.gen
		return e.match
	}
	var deps []nsDep
	if peer.namespaceSelector == nil {
		if ns := c.namespaces[policyNS]; ns != nil {
			deps = []nsDep{{ns, ns.versionFor(peer.podSelector != nil)}}
		}
	} else {
		for _, ns := range c.nsList {
			if peer.namespaceSelector.Matches(ns.labels) {
				deps = append(deps, nsDep{ns, ns.versionFor(peer.podSelector != nil)})
			}
		}
	}
	if e != nil && depsCurrent(e.deps, deps) {
		e.nsLabelsGen = c.nsLabelsGen
		e.used = c.gen
		return e.match
	}
	var pods []*peerPod
	if peer.podSelector == nil {
		n := 0
		for _, d := range deps {
			n += len(d.ns.pods)
		}
		pods = make([]*peerPod, 0, n)
	}
	for _, d := range deps {
		for _, pp := range d.ns.pods {
			if peer.podSelector == nil || peer.podSelector.Matches(labels.Set(pp.pod.Labels)) {
				pods = append(pods, pp)
			}
		}
	}
	// Sized for the pods matched, not every pod of the namespaces: a
	// podSelector that picks a few pods out of a cluster-wide
	// namespaceSelector allocated room for all of them (11 % of what
	// podwalld allocated in a control-plane bench run).
	n := 0
	for _, pp := range pods {
		n += len(pp.addrs)
	}
	addrs := make([]netip.Addr, 0, n)
	for _, pp := range pods {
		addrs = append(addrs, pp.addrs...)
	}
	m := &peerMatch{set: hostSet(addrs), dests: func() []*peerPod { return pods }}
	if peer.podSelector == nil {
		// Every peer of the namespaces: their named ports are cached per
		// namespace.
		namespaces := make([]*nsEntry, len(deps))
		for i, d := range deps {
			namespaces[i] = d.ns
		}
		m.namedHosts = namedHostsOf(namespaces)
	}
	c.selections[key] = &selectionEntry{match: m, deps: deps, nsLabelsGen: c.nsLabelsGen, used: c.gen}
	return m
}

// selectionCurrent reports whether a cached selection still holds: the
// namespaces it matched are the ones it would match now, at the versions it
// read.
func (c *Compiler) selectionCurrent(e *selectionEntry, peer *parsedPeer, policyNS string) bool {
	if peer.namespaceSelector == nil {
		ns := c.namespaces[policyNS]
		if ns == nil {
			return len(e.deps) == 0
		}
		return len(e.deps) == 1 && e.deps[0].ns == ns && e.deps[0].version == ns.versionFor(peer.podSelector != nil)
	}
	if e.nsLabelsGen != c.nsLabelsGen {
		return false
	}
	for _, d := range e.deps {
		if d.ns.versionFor(peer.podSelector != nil) != d.version {
			return false
		}
	}
	return true
}

// depsCurrent reports whether the namespaces read before are the ones
// matched now, at the same versions.
func depsCurrent(old, now []nsDep) bool {
	return slices.Equal(old, now)
}

// matchBlock returns the match of an ipBlock, shared by every ipBlock with
// the same addresses.
func (c *Compiler) matchBlock(peer *parsedPeer) *peerMatch {
	if !peer.keyDone {
		peer.blockKey = blockKeyOf(peer.block)
		peer.keyDone = true
	}
	e := c.blocks[peer.blockKey]
	if e != nil && e.allGen == c.allGen {
		e.used = c.gen
		return e.match
	}
	block := peer.block
	if e != nil {
		// Same addresses: keep the set, so that rules without named
		// ports keep their resolution.
		block = e.match.set
	}
	all := c.everyPod()
	m := &peerMatch{set: block, dests: func() []*peerPod { return blockDests(all.destinations(), block) }}
	c.blocks[peer.blockKey] = &blockEntry{match: m, allGen: c.allGen, used: c.gen}
	return m
}

// podRef identifies a pod by namespace and name.
type podRef struct{ namespace, name string }

// namespaceLabelSet is a namespace's labels as selectors see them: with
// kubernetes.io/metadata.name set to its name, as the API server sets it.
type namespaceLabelSet struct {
	name   string
	labels map[string]string
}

func (s namespaceLabelSet) Has(key string) bool {
	_, ok := s.labels[key]
	return ok || key == corev1.LabelMetadataName
}

func (s namespaceLabelSet) Get(key string) string {
	if key == corev1.LabelMetadataName {
		return s.name
	}
	return s.labels[key]
}

func (s namespaceLabelSet) Lookup(key string) (string, bool) {
	if key == corev1.LabelMetadataName {
		return s.name, true
	}
	v, ok := s.labels[key]
	return v, ok
}
