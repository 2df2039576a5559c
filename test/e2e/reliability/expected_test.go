package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
	"github.com/podwall/podwall/test/bed"
)

// What the daemon should have put in each pod's netns, computed by the test
// on its own from its model: the policy compiler and the renderer, fed the
// test's objects and the bed pods' CNI addresses, exactly as a fresh podwalld
// would be; compared with what dataplane's Inspect finds in the netns.

// state is the cluster state the model describes, as the compiler sees it
// on the node: attached pods run here with the addresses of their CNI
// result; pods not attached have no address. It also returns the local
// pods, keyed by attachment (network/containerID/ifName).
func (m *model) state(network string) (*policy.State, []policy.LocalPod, error) {
	st := &policy.State{}
	for _, ns := range sortedKeys(m.namespaces) {
		st.Namespaces = append(st.Namespaces, source.NamespaceFromAPI(m.namespaceObject(ns)))
		for _, np := range m.policies[ns] {
			valid, err := source.PolicyFromAPI(np)
			if err != nil {
				return nil, nil, fmt.Errorf("model policy %s/%s: %w", np.Namespace, np.Name, err)
			}
			st.Policies = append(st.Policies, valid)
		}
	}
	var locals []policy.LocalPod
	for _, k := range sortedKeys(m.pods) {
		mp := m.pods[k]
		p := source.PodFromAPI(mp.object())
		if bp := mp.attached; bp != nil {
			p.IPs = slices.Clone(bp.IPs)
			p.Phase = corev1.PodRunning
			locals = append(locals, policy.LocalPod{Key: network + "/" + bp.ContainerID + "/" + bp.IfName, Pod: p})
		}
		st.Pods = append(st.Pods, p)
	}
	return st, locals, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// firewalls compiles the firewall of every attached pod, by attachment key.
func (m *model) firewalls(network string) (map[string]*policy.Firewall, error) {
	st, locals, err := m.state(network)
	if err != nil {
		return nil, err
	}
	res := policy.Compile(st, locals)
	if len(res.Problems) > 0 {
		return nil, fmt.Errorf("the model does not compile cleanly: %v", errors.Join(res.Problems...))
	}
	return res.Firewalls, nil
}

// exactness is the outcome of one comparison of a node with its model.
type exactness struct {
	podsChecked int
	problems    []string
}

func (e exactness) err() error {
	if len(e.problems) == 0 {
		return nil
	}
	const shown = 12
	p := e.problems
	more := ""
	if len(p) > shown {
		more = fmt.Sprintf("\n(and %d more)", len(p)-shown)
		p = p[:shown]
	}
	return fmt.Errorf("%d differences from the model:\n%s%s", len(e.problems), strings.Join(p, "\n"), more)
}

// checkExact compares the node with the model: for every attached pod, the
// podwall rules and sets in force in its netns with what a fresh compile and
// render want (the node-address set's members are those in force, which
// follow the host's changing addresses, and must include the pod's
// gateway); the daemon's attachments (podwallctl pods) and its checkpoint
// with the attached pods. Pods of extra, attached but not in the model (the
// test keeps them out of its policies' reach), are compared with an empty
// firewall.
func (n *node) checkExact(ctx context.Context, m *model) exactness {
	var res exactness
	fws, err := m.firewalls(n.network())
	if err != nil {
		res.problems = append(res.problems, err.Error())
		return res
	}
	attached := m.attachedPods()
	wantKeys := make([]string, 0, len(attached))
	for _, mp := range attached {
		wantKeys = append(wantKeys, n.attachmentKey(mp.attached))
	}
	slices.Sort(wantKeys)

	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, mp := range attached {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			problems := n.comparePod(ctx, mp.attached, fws[n.attachmentKey(mp.attached)])
			mu.Lock()
			res.podsChecked++
			res.problems = append(res.problems, problems...)
			mu.Unlock()
		}()
	}
	wg.Wait()

	pods, err := n.daemon.Pods(ctx)
	if err != nil {
		res.problems = append(res.problems, fmt.Sprintf("podwallctl pods: %v", err))
	} else {
		var got []string
		for _, p := range pods {
			got = append(got, n.network()+"/"+p.ContainerID+"/"+p.IfName)
		}
		slices.Sort(got)
		if !slices.Equal(got, wantKeys) {
			res.problems = append(res.problems, fmt.Sprintf("daemon's attachments differ: %s", keyDiff(got, wantKeys)))
		}
	}
	recs, err := checkpoint.ReadFile(filepath.Join(n.daemon.StateDir, "attachments.json"))
	if err != nil {
		res.problems = append(res.problems, fmt.Sprintf("checkpoint does not load: %v", err))
	} else {
		var got []string
		for _, r := range recs {
			got = append(got, r.Key())
		}
		if !slices.Equal(got, wantKeys) {
			res.problems = append(res.problems, fmt.Sprintf("checkpoint's attachments differ: %s", keyDiff(got, wantKeys)))
		}
	}
	sort.Strings(res.problems)
	return res
}

// comparePod compares what is in force in p's netns with fw rendered; it
// returns the differences.
func (n *node) comparePod(ctx context.Context, p *bed.Pod, fw *policy.Firewall) []string {
	got, err := n.inspect.Inspect(ctx, p.NetnsPath)
	if err != nil {
		return []string{fmt.Sprintf("%s: inspect: %v", p, err)}
	}
	if fw == nil {
		fw = &policy.Firewall{}
	}
	var nodeAddrs []netip.Addr
	for _, s := range got.Sets {
		if strings.Contains(s.Name, "-node-") {
			for _, m := range s.Members {
				nodeAddrs = append(nodeAddrs, m.Addr())
			}
		}
	}
	// A rules change reuses the sets whose members stay: RenderAs names them
	// as they are in force.
	want := dataplane.RenderAs(dataplane.Spec{Pod: p.String(), Firewall: fw, NodeAddrs: nodeAddrs}, got)
	var problems []string
	if got.V4 != want.V4 {
		problems = append(problems, fmt.Sprintf("%s: IPv4 rules\n got: %q\nwant: %q", p, got.V4, want.V4))
	}
	if got.V6 != want.V6 {
		problems = append(problems, fmt.Sprintf("%s: IPv6 rules\n got: %q\nwant: %q", p, got.V6, want.V6))
	}
	if !sameSets(got.Sets, want.Sets) {
		problems = append(problems, fmt.Sprintf("%s: sets\n got: %v\nwant: %v", p, got.Sets, want.Sets))
	}
	if fw.Ingress.Isolated {
		for _, gw := range gateways(p) {
			if !slices.Contains(nodeAddrs, gw) {
				problems = append(problems, fmt.Sprintf("%s: the node-address set lacks the gateway %s: %v", p, gw, nodeAddrs))
			}
		}
	}
	return problems
}

// sameSets compares two lists of sets (nil and empty are the same).
func sameSets(a, b []dataplane.Set) bool {
	return slices.EqualFunc(a, b, func(x, y dataplane.Set) bool {
		return x.Name == y.Name && x.Family == y.Family && slices.Equal(x.Members, y.Members)
	})
}

func keyDiff(got, want []string) string {
	var missing, extra []string
	for _, k := range want {
		if !slices.Contains(got, k) {
			missing = append(missing, k)
		}
	}
	for _, k := range got {
		if !slices.Contains(want, k) {
			extra = append(extra, k)
		}
	}
	return fmt.Sprintf("missing %v, unexpected %v", missing, extra)
}

// checkHostClean returns an error if the host's own netns has podwall
// chains or sets: the daemon must only ever write inside pod netns.
func checkHostClean(ctx context.Context, inspect *dataplane.Manager) error {
	if hostNetns == "" {
		return errors.New("the host netns was not opened at start")
	}
	rs, err := inspect.Inspect(ctx, hostNetns)
	if err != nil {
		return fmt.Errorf("inspect the host netns: %w", err)
	}
	if rs.V4 != "" || rs.V6 != "" || len(rs.Sets) > 0 {
		return fmt.Errorf("podwall objects in the host netns: v4 %q v6 %q sets %v", rs.V4, rs.V6, rs.Sets)
	}
	return nil
}

// Verdicts over a window of model states: while the daemon is down, what is
// in force in each pod is some firewall it applied before it died, compiled
// from some mix of the manifest files' versions it had read. A probe from
// src to dst is surely denied if no such mix lets it through, surely allowed
// if every mix does.

// pairVerdict is what a window of states says about src -> dst:port/TCP.
type pairVerdict int

const (
	verdictMixed pairVerdict = iota
	verdictDenied
	verdictAllowed
)

// judgePair judges src -> dst:port over every combination of the versions
// (in states) of the objects the verdict depends on: the two pods, their
// namespaces and the two namespaces' policies. src and dst must be
// attached, as the same bed pods, in every state.
func judgePair(states []*model, network string, src, dst string, port int32) (pairVerdict, error) {
	type versions struct {
		pods       [2][]*modelPod
		namespaces [2][]map[string]string
		policies   [2][][]*networkingv1.NetworkPolicy
	}
	var v versions
	keys := [2]string{src, dst}
	for _, st := range states {
		for i, k := range keys {
			p := st.pods[k]
			if p == nil || p.attached == nil {
				return verdictMixed, fmt.Errorf("pod %s is not attached in every state", k)
			}
			v.pods[i] = appendDistinct(v.pods[i], p, func(a, b *modelPod) bool {
				return a.attached == b.attached && reflect.DeepEqual(a.labels, b.labels) && slices.Equal(a.ports, b.ports)
			})
			v.namespaces[i] = appendDistinct(v.namespaces[i], st.namespaces[p.namespace], func(a, b map[string]string) bool { return reflect.DeepEqual(a, b) })
			v.policies[i] = appendDistinct(v.policies[i], st.policies[p.namespace], func(a, b []*networkingv1.NetworkPolicy) bool { return reflect.DeepEqual(a, b) })
		}
	}
	srcPod, dstPod := v.pods[0][0], v.pods[1][0]
	sameNS := srcPod.namespace == dstPod.namespace
	var egressAny, ingressAny, egressAll, ingressAll = false, false, true, true
	for _, sp := range v.pods[0] {
		for _, dp := range v.pods[1] {
			for _, sns := range v.namespaces[0] {
				for _, dns := range v.namespaces[1] {
					for _, snp := range v.policies[0] {
						for _, dnp := range v.policies[1] {
							if sameNS && (!reflect.DeepEqual(sns, dns) || !reflect.DeepEqual(snp, dnp)) {
								continue // one namespace has one version at a time
							}
							m := newModel()
							m.namespaces[sp.namespace], m.namespaces[dp.namespace] = sns, dns
							m.policies[sp.namespace], m.policies[dp.namespace] = snp, dnp
							m.pods[sp.key()], m.pods[dp.key()] = sp, dp
							fws, err := m.firewalls(network)
							if err != nil {
								return verdictMixed, err
							}
							e := allows(fws[network+"/"+sp.attached.ContainerID+"/"+sp.attached.IfName].Egress, dp.attached.IPs, port)
							i := allows(fws[network+"/"+dp.attached.ContainerID+"/"+dp.attached.IfName].Ingress, sp.attached.IPs, port)
							egressAny, ingressAny = egressAny || e, ingressAny || i
							egressAll, ingressAll = egressAll && e, ingressAll && i
						}
					}
				}
			}
		}
	}
	switch {
	case !egressAny || !ingressAny:
		return verdictDenied, nil
	case egressAll && ingressAll:
		return verdictAllowed, nil
	}
	return verdictMixed, nil
}

func appendDistinct[T any](list []T, v T, equal func(a, b T) bool) []T {
	for _, have := range list {
		if equal(have, v) {
			return list
		}
	}
	return append(list, v)
}

// allows reports whether a direction of a firewall admits TCP to or from
// any of remote's addresses on port.
func allows(d policy.Direction, remote []netip.Addr, port int32) bool {
	if !d.Isolated {
		return true
	}
	for _, r := range d.Rules {
		peer := r.Peer.Any
		for _, pfx := range r.Peer.Prefixes {
			for _, a := range remote {
				peer = peer || pfx.Contains(a)
			}
		}
		ports := len(r.Ports) == 0
		for _, p := range r.Ports {
			if p.Protocol != corev1.ProtocolTCP {
				continue
			}
			ports = ports || p.Port == 0 || port == p.Port || (p.EndPort != 0 && port >= p.Port && port <= p.EndPort)
		}
		if peer && ports {
			return true
		}
	}
	return false
}
