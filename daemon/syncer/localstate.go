package syncer

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
	gosync "sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/daemon/policy"
)

// localCache is what localState keeps between calls so that a call costs
// what changed since the previous one, not the cluster's size: where the
// source lists the local pods, and the merged local pods, reused as long as
// what they were merged from is the same (so that an unchanged pod reaches
// the compiler under the same pointer).
type localCache struct {
	mu gosync.Mutex
	// src is a copy of the source's pods at the last call; found are the
	// positions in src of its nil entries and of the pods named as one of
	// names, ascending.
	src   []*policy.Pod
	found []foundPod
	names map[podName]struct{}
	// merged are the merged local pods of the last call, by name.
	merged map[podName]*mergedPod
	// pods is the last call's pods list, handed out again while neither
	// the source's pods nor the merged pods changed (the compiler then
	// sees the same slice and looks at nothing).
	pods []*policy.Pod
	// keys are the attachments' keys (Attachment.Key builds a string).
	keys map[*attachment]string
	ips  []netip.Addr // scratch
}

// foundPod is a position of localCache.src that localState does not pass
// on as it is: a nil entry (pod nil) or the source's view of a local pod.
type foundPod struct {
	index int
	pod   *policy.Pod
}

// mergedPod is a local pod as the compiler sees it, with what it was
// merged from.
type mergedPod struct {
	pod *policy.Pod
	// source is the source's pod of that name (nil when the source does
	// not list it), looked the pod the first attachment's lookup returned,
	// atts the pod's attachments in key order.
	source, looked *policy.Pod
	atts           []*attachment
	node           string
}

// podGroup is a local pod's attachments (in key order) and the pod the
// first one's lookup returned.
type podGroup struct {
	name   podName
	looked *policy.Pod
	atts   []*attachment
}

// localAttachment is an attachment and the pod its lookup returned, as
// localState read them.
type localAttachment struct {
	a      *attachment
	key    string
	looked *policy.Pod
}

// localState merges the source's state with the local attachments: a local
// pod's addresses are those of its CNI result (which may be earlier than the
// source knows them), and a pod the source does not know is the pod its ADD
// lookup returned, else a pod with no labels and no ports. Targets that are
// no longer attached (deleted or replaced meanwhile) are left out.
//
// The pods are the source's, in its order, with each local pod in the place
// of the source's pod of that name (the last one, when the source lists the
// name twice; nil entries are dropped), then the local pods the source does
// not list, by attachment key. A local pod with several attachments gets the
// addresses of all of them, in attachment key order. A merged pod is the
// same pointer as in the previous call while the source's pod, the looked
// up pod, the attachments, their addresses and the node name are.
func (s *Syncer) localState(targets []*attachment) (*policy.State, []policy.LocalPod) {
	src := s.opts.Source.State()
	if src == nil {
		src = &policy.State{}
	}
	c := &s.local
	c.mu.Lock()
	defer c.mu.Unlock()

	s.mu.Lock()
	all := make([]localAttachment, 0, len(s.atts))
	attached := make(map[*attachment]bool, len(s.atts))
	for _, a := range s.atts {
		all = append(all, localAttachment{a: a, looked: a.looked})
		attached[a] = true
	}
	s.mu.Unlock()
	keys := make(map[*attachment]string, len(all))
	names := make(map[podName]struct{}, len(all))
	for i := range all {
		a := all[i].a
		key, ok := c.keys[a]
		if !ok {
			key = a.rec.Key()
		}
		keys[a], all[i].key = key, key
		names[podName{a.rec.Namespace, a.rec.Name}] = struct{}{}
	}
	c.keys = keys
	srcChanged := c.follow(src.Pods, names)

	// The source's view of the local pods: the last pod of each name.
	bySource := make(map[podName]foundPod, len(names))
	for _, f := range c.found {
		if f.pod != nil {
			bySource[podName{f.pod.Namespace, f.pod.Name}] = f
		}
	}
	s.mu.Lock()
	for i, la := range all {
		if la.a.looked != nil && bySource[podName{la.a.rec.Namespace, la.a.rec.Name}].pod != nil {
			la.a.looked = nil // the snapshot has caught up; it is authoritative now
			all[i].looked = nil
		}
	}
	s.mu.Unlock()
	// Deterministic merge order: a pod with several attachments gets its
	// addresses in the same order whatever the map order.
	slices.SortFunc(all, func(x, y localAttachment) int { return cmp.Compare(x.key, y.key) })

	// The attachments of each pod, pods in the order of their first
	// attachment.
	var groups []podGroup
	groupOf := make(map[podName]int, len(names))
	for _, la := range all {
		k := podName{la.a.rec.Namespace, la.a.rec.Name}
		if i, ok := groupOf[k]; ok {
			groups[i].atts = append(groups[i].atts, la.a)
			continue
		}
		groupOf[k] = len(groups)
		groups = append(groups, podGroup{name: k, looked: la.looked, atts: []*attachment{la.a}})
	}
	merged := make(map[podName]*mergedPod, len(groups))
	mergedChanged := len(groups) != len(c.merged)
	for _, g := range groups {
		m := c.merge(bySource[g.name].pod, g.looked, g.atts, s.opts.NodeName)
		merged[g.name] = m
		mergedChanged = mergedChanged || c.merged[g.name] != m
	}
	c.merged = merged
	if srcChanged || mergedChanged || c.pods == nil {
		c.pods = c.podsList(merged, bySource, groups)
	}
	pods := c.pods

	state := &policy.State{Namespaces: src.Namespaces, Pods: pods, Policies: src.Policies,
		Services: src.Services, EndpointSlices: src.EndpointSlices, ServiceCIDRs: src.ServiceCIDRs}
	locals := make([]policy.LocalPod, 0, len(targets))
	for _, a := range targets {
		if !attached[a] {
			continue
		}
		locals = append(locals, policy.LocalPod{Key: keys[a], Pod: merged[podName{a.rec.Namespace, a.rec.Name}].pod})
	}
	return state, locals
}

// podsList returns the source's pods with the local ones in their place
// (copies of the runs between the found positions), then the local pods
// the source does not list.
func (c *localCache) podsList(merged map[podName]*mergedPod, bySource map[podName]foundPod, groups []podGroup) []*policy.Pod {
	pods := make([]*policy.Pod, 0, len(c.src)+len(groups))
	next := 0
	for _, f := range c.found {
		pods = append(pods, c.src[next:f.index]...)
		next = f.index + 1
		if f.pod == nil {
			continue
		}
		k := podName{f.pod.Namespace, f.pod.Name}
		if m := merged[k]; m != nil {
			if bySource[k].index == f.index {
				pods = append(pods, m.pod)
			}
			continue
		}
		pods = append(pods, f.pod) // not local (cannot happen: follow keeps only local names)
	}
	pods = append(pods, c.src[next:]...)
	for _, g := range groups {
		if bySource[g.name].pod == nil {
			pods = append(pods, merged[g.name].pod)
		}
	}
	return pods
}

// follow brings src and found up to pods and names, and reports whether
// either changed. Only the pods between the prefix and the suffix pods
// shares with src (compared by pointer) are looked at, and of those only
// the ones not at the same place in src, unless names has a name found
// does not cover: then every pod is.
func (c *localCache) follow(pods []*policy.Pod, names map[podName]struct{}) bool {
	namesChanged := len(names) != len(c.names)
	for k := range names {
		if _, ok := c.names[k]; !ok {
			namesChanged = true
			clear(c.src) // no hold on pods gone from the source
			c.src, c.found = c.src[:0], c.found[:0]
			break
		}
	}
	if len(c.found) > 0 && len(names) != len(c.names) {
		c.found = slices.DeleteFunc(c.found, func(f foundPod) bool {
			if f.pod == nil {
				return false
			}
			_, ok := names[podName{f.pod.Namespace, f.pod.Name}]
			return !ok
		})
	}
	c.names = names

	prev := c.src
	start, oldEnd, newEnd := policy.ChangedWindow(prev, pods)
	if start == oldEnd && start == newEnd {
		return namesChanged
	}
	lo := sort.Search(len(c.found), func(i int) bool { return c.found[i].index >= start })
	hi := sort.Search(len(c.found), func(i int) bool { return c.found[i].index >= oldEnd })
	// A pod at the same place in both windows keeps what was found of
	// it: only the places that differ cost a name lookup.
	var window []foundPod
	kept := c.found[lo:hi]
	for i := start; i < newEnd; i++ {
		p := pods[i]
		if i < oldEnd && prev[i] == p {
			for len(kept) > 0 && kept[0].index < i {
				kept = kept[1:]
			}
			if len(kept) > 0 && kept[0].index == i {
				window = append(window, kept[0])
			}
			continue
		}
		if p == nil {
			window = append(window, foundPod{index: i})
			continue
		}
		if _, ok := names[podName{p.Namespace, p.Name}]; ok {
			window = append(window, foundPod{index: i, pod: p})
		}
	}
	for i := range c.found[hi:] {
		c.found[hi+i].index += newEnd - oldEnd
	}
	c.found = slices.Replace(c.found, lo, hi, window...)
	c.src = slices.Replace(prev, start, oldEnd, pods[start:newEnd]...)
	return true
}

// merge returns the merged pod of a local pod: the last call's when it was
// merged from the same inputs, else a new one.
func (c *localCache) merge(source, looked *policy.Pod, atts []*attachment, node string) *mergedPod {
	first := atts[0]
	c.ips = append(c.ips[:0], first.ips...)
	for _, a := range atts[1:] {
		c.ips = appendUnique(c.ips, a.ips...)
	}
	k := podName{first.rec.Namespace, first.rec.Name}
	if m := c.merged[k]; m != nil && m.source == source && m.looked == looked && m.node == node &&
		slices.Equal(m.atts, atts) && slices.Equal(m.pod.IPs, c.ips) {
		return m
	}
	var p policy.Pod
	switch {
	case source != nil:
		p = *source
	case looked != nil:
		p = *looked
	default:
		// Unknown to the source: no labels, no ports. It was created
		// when it was attached, so it wins its addresses over an older
		// pod that still claims them.
		p = policy.Pod{Namespace: first.rec.Namespace, Name: first.rec.Name, UID: first.rec.UID,
			Created: metav1.NewTime(first.rec.Added)}
	}
	p.IPs = slices.Clone(c.ips)
	p.NodeName = node
	p.Phase = corev1.PodRunning
	p.Deleting = false
	return &mergedPod{pod: &p, source: source, looked: looked, atts: atts, node: node}
}
