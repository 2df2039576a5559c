package policy

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/podwall/podwall/internal/fuzzinput"
	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCompilerMatchesCompile is the differential test of the persistent
// Compiler: random clusters go through random sequences of changes, and
// after every change the persistent compiler and a fresh Compile must
// agree on every firewall, every Service verdict and every problem.
func TestCompilerMatchesCompile(t *testing.T) {
	seeds := 600
	if testing.Short() {
		seeds = 100
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15))
		data := make([]byte, 4096)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		checkCompilerSequence(t, fmt.Sprintf("seed %d", seed), data, 60, seed%2 == 1)
	}
}

// FuzzCompilerIncremental is TestCompilerMatchesCompile driven by the fuzz
// input: the initial cluster and every change come from data.
func FuzzCompilerIncremental(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x02\x05\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add(slices.Repeat([]byte{0x11, 0x07, 0xe3, 0x42, 0x00, 0x9c}, 120))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkCompilerSequence(t, "fuzz", data, 30, len(data)%2 == 1)
	})
}

// checkCompilerSequence builds a cluster from data, then applies up to
// steps changes, comparing the persistent compiler with Compile after each.
// eagerPrune makes the compiler drop what it did not use in the last two
// calls, every other call.
func checkCompilerSequence(t *testing.T, name string, data []byte, steps int, eagerPrune bool) {
	t.Helper()
	in := fuzzinput.New(data)
	st, local := fuzzState(t, in)
	m := &mutator{in: in, next: 100}
	c := NewCompiler()
	if eagerPrune {
		c.pruneEvery, c.pruneAge = 2, 2
	}
	for step := 0; step <= steps; step++ {
		what := "initial"
		if step > 0 {
			st, local, what = m.change(t, st, local)
		}
		got := c.Compile(st, local)
		want := Compile(st, local)
		if diff := resultDiff(got, want); diff != "" {
			t.Fatalf("%s, step %d (%s): persistent compiler differs from Compile: %s", name, step, what, diff)
		}
	}
}

// resultDiff describes how got differs from want; "" when they agree.
func resultDiff(got, want *Result) string {
	if !slices.Equal(slices.Sorted(maps.Keys(got.Firewalls)), slices.Sorted(maps.Keys(want.Firewalls))) {
		return fmt.Sprintf("firewalls for %v, want %v", slices.Sorted(maps.Keys(got.Firewalls)), slices.Sorted(maps.Keys(want.Firewalls)))
	}
	for key, fw := range want.Firewalls {
		if !got.Firewalls[key].Equal(fw) || !reflect.DeepEqual(normalize(got.Firewalls[key]), normalize(fw)) {
			return fmt.Sprintf("firewall of %s:\n got %+v\nwant %+v", key, got.Firewalls[key], fw)
		}
	}
	if !reflect.DeepEqual(got.Services, want.Services) {
		return fmt.Sprintf("services:\n got %+v\nwant %+v", got.Services, want.Services)
	}
	if g, w := errorStrings(got.Problems), errorStrings(want.Problems); !slices.Equal(g, w) {
		return fmt.Sprintf("problems %q, want %q", g, w)
	}
	return ""
}

func errorStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, err := range errs {
		out[i] = err.Error()
	}
	return out
}

// mutator makes one random change to a state, never modifying an object
// it was given: a changed object is a new one, and an unchanged object is
// now and then republished as a new pointer too.
type mutator struct {
	in   *fuzzInput
	next int // for names and UIDs of new objects
}

// change returns a new state and local pods with one change (or several
// for the "burst" change), and what it did.
func (m *mutator) change(t *testing.T, st *State, local []LocalPod) (*State, []LocalPod, string) {
	in := m.in
	next := *st
	next.Pods = slices.Clone(st.Pods)
	var what string
	switch op := in.Intn(30); op {
	case 0: // a new pod
		p := m.pod(in)
		if len(next.Pods) > 0 && in.Intn(3) == 0 {
			if listed := next.Pods[in.Intn(len(next.Pods))]; listed != nil {
				// A twin of a listed pod (same name, UID, phase,
				// addresses) with other labels: the claim order cannot
				// tell them apart, the input order decides which one
				// owns the addresses.
				twin := *listed
				twin.Labels = fuzzLabels(in)
				p = &twin
			}
		}
		next.Pods = append(next.Pods, p)
		what = "add pod " + p.Key()
	case 1: // a pod goes away
		if len(next.Pods) > 0 {
			i := in.Intn(len(next.Pods))
			what = "remove pod " + podKey(next.Pods[i])
			next.Pods = slices.Delete(next.Pods, i, i+1)
		}
	case 2: // relabelled
		if p := m.clonePod(&next); p != nil {
			p.Labels = fuzzLabels(in)
			what = "relabel " + p.Key()
		}
	case 3: // new address, maybe one another pod has
		if p := m.clonePod(&next); p != nil {
			p.IPs = nil
			for range in.Intn(3) {
				p.IPs = append(p.IPs, m.addr(in))
			}
			what = fmt.Sprintf("readdress %s to %v", p.Key(), p.IPs)
		}
	case 4: // terminating, finished, restarted
		if p := m.clonePod(&next); p != nil {
			p.Deleting = in.Bool()
			p.Phase = fuzzinput.Pick(in, corev1.PodRunning, corev1.PodPending, corev1.PodSucceeded, corev1.PodFailed, "")
			p.HostNetwork = in.Intn(6) == 0
			p.Created = metav1.Unix(int64(1_700_000_000+in.Intn(3)), 0)
			what = fmt.Sprintf("phase of %s: deleting=%v %s hostNetwork=%v", p.Key(), p.Deleting, p.Phase, p.HostNetwork)
		}
	case 5: // ports
		if p := m.clonePod(&next); p != nil {
			p.Ports = nil
			for range in.Intn(3) {
				p.Ports = append(p.Ports, ContainerPort{Name: fuzzinput.Pick(in, append([]string{""}, fuzzPortNames...)...),
					Protocol: fuzzinput.Pick(in, fuzzProtocols...), Port: fuzzPortNumber(in)})
			}
			what = "ports of " + p.Key()
		}
	case 6: // an unchanged pod under a new pointer
		if p := m.clonePod(&next); p != nil {
			what = "same pod, new pointer " + p.Key()
		}
	case 7: // the same pods in another order, maybe under new pointers
		fresh := in.Bool()
		for i, p := range next.Pods {
			if p != nil && fresh {
				cp := *p
				next.Pods[i] = &cp
			}
		}
		slices.Reverse(next.Pods)
		what = fmt.Sprintf("all pods reversed, new pointers %v", fresh)
	case 8: // namespace relabelled (or unchanged under a new pointer)
		next.Namespaces = slices.Clone(st.Namespaces)
		if len(next.Namespaces) > 0 {
			i := in.Intn(len(next.Namespaces))
			ns := *next.Namespaces[i]
			if in.Bool() {
				ns.Labels = fuzzLabels(in)
			}
			next.Namespaces[i] = &ns
			what = "namespace " + ns.Name
		}
	case 9: // namespace added or removed
		next.Namespaces = slices.Clone(st.Namespaces)
		if len(next.Namespaces) > 0 && in.Bool() {
			i := in.Intn(len(next.Namespaces))
			what = "remove namespace " + next.Namespaces[i].Name
			next.Namespaces = slices.Delete(next.Namespaces, i, i+1)
		} else {
			name := fuzzNamespaces[in.Intn(len(fuzzNamespaces))]
			next.Namespaces = append(next.Namespaces, &Namespace{Name: name, Labels: fuzzLabels(in)})
			what = "add namespace " + name
		}
	case 10, 11, 20, 21, 22: // a policy added or replaced
		next.Policies = slices.Clone(st.Policies)
		name := fmt.Sprintf("np-%d", in.Intn(6))
		np := fuzzPolicy(in, name, fuzzNamespaces[in.Intn(len(fuzzNamespaces))])
		if in.Intn(8) == 0 {
			// Something the compiler reports as a problem.
			np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
				From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "not-a-cidr"}}}})
		}
		i := slices.IndexFunc(next.Policies, func(p *networkingv1.NetworkPolicy) bool {
			return p.Name == np.Name && p.Namespace == np.Namespace
		})
		if i >= 0 {
			next.Policies[i] = np
			what = "replace policy " + np.Namespace + "/" + np.Name
		} else {
			next.Policies = append(next.Policies, np)
			what = "add policy " + np.Namespace + "/" + np.Name
		}
	case 12: // a policy removed
		next.Policies = slices.Clone(st.Policies)
		if len(next.Policies) > 0 {
			i := in.Intn(len(next.Policies))
			what = "remove policy " + next.Policies[i].Name
			next.Policies = slices.Delete(next.Policies, i, i+1)
		}
	case 13: // every policy under a new pointer (same content), reordered
		next.Policies = nil
		for _, np := range st.Policies {
			next.Policies = append(next.Policies, np.DeepCopy())
		}
		slices.Reverse(next.Policies)
		what = "all policies new pointers"
	case 14: // Services and EndpointSlices replaced
		svc := &State{}
		fuzzServices(in, svc)
		next.Services, next.EndpointSlices, next.ServiceCIDRs = svc.Services, svc.EndpointSlices, svc.ServiceCIDRs
		if len(next.Services) > 0 && in.Intn(4) == 0 {
			bad := *next.Services[0]
			bad.Ports = append(slices.Clone(bad.Ports), ServicePort{Name: "bad", Protocol: "ICMP", Port: 1})
			next.Services[0] = &bad
		}
		what = "services"
	case 15: // an endpoint slice replaced (same Services)
		next.EndpointSlices = slices.Clone(st.EndpointSlices)
		if len(next.EndpointSlices) > 0 {
			i := in.Intn(len(next.EndpointSlices))
			es := *next.EndpointSlices[i]
			es.Endpoints = slices.Clone(es.Endpoints)
			for j := range es.Endpoints {
				es.Endpoints[j].Ready = in.Bool()
			}
			es.Endpoints = append(es.Endpoints, Endpoint{Addrs: []netip.Addr{m.addr(in)}, Ready: true, NodeName: "node-1"})
			next.EndpointSlices[i] = &es
			what = "endpoint slice " + es.Name
		}
	case 16, 17: // other local pods, as the syncer builds them: new pointers
		local = nil
		for _, p := range next.Pods {
			if p != nil && in.Intn(3) == 0 {
				cp := *p
				cp.Phase = corev1.PodRunning
				cp.Deleting = false
				local = append(local, LocalPod{Key: "podwall/" + p.UID + "/eth0", Pod: &cp})
			}
		}
		what = fmt.Sprintf("%d local pods", len(local))
	case 18: // nothing changed, same objects
		return st, local, "nothing"
	case 23: // pods inserted in the middle: new ones, or listed ones again
		i := in.Intn(len(next.Pods) + 1)
		var ins []*Pod
		for range 1 + in.Intn(3) {
			if len(st.Pods) > 0 && in.Bool() {
				ins = append(ins, st.Pods[in.Intn(len(st.Pods))]) // the same pointer twice
			} else {
				ins = append(ins, m.pod(in))
			}
		}
		next.Pods = slices.Insert(next.Pods, i, ins...)
		what = fmt.Sprintf("insert %d pods at %d", len(ins), i)
	case 24: // a run of pods removed from the middle
		if len(next.Pods) > 0 {
			i := in.Intn(len(next.Pods))
			j := min(len(next.Pods), i+1+in.Intn(3))
			next.Pods = slices.Delete(next.Pods, i, j)
			what = fmt.Sprintf("remove pods %d..%d", i, j)
		}
	case 25: // a pod moved
		if len(next.Pods) > 1 {
			i, j := in.Intn(len(next.Pods)), in.Intn(len(next.Pods))
			p := next.Pods[i]
			next.Pods = slices.Insert(slices.Delete(next.Pods, i, i+1), j, p)
			what = fmt.Sprintf("move pod %s from %d to %d", podKey(p), i, j)
		}
	case 26: // a nil entry added or dropped
		if k := slices.Index(next.Pods, nil); k >= 0 && in.Bool() {
			next.Pods = slices.Delete(next.Pods, k, k+1)
			what = fmt.Sprintf("drop the nil entry at %d", k)
		} else {
			i := in.Intn(len(next.Pods) + 1)
			next.Pods = slices.Insert(next.Pods, i, nil)
			what = fmt.Sprintf("nil entry at %d", i)
		}
	case 27: // a pod replaced in place by another one (new, or listed elsewhere)
		if len(next.Pods) > 0 {
			i := in.Intn(len(next.Pods))
			p := m.pod(in)
			if in.Bool() {
				p = st.Pods[in.Intn(len(st.Pods))]
			}
			what = fmt.Sprintf("pod %s at %d replaced by %s", podKey(next.Pods[i]), i, podKey(p))
			next.Pods[i] = p
		}
	case 28: // tied claimants change places
		if i, j := twins(next.Pods); i >= 0 {
			next.Pods[i], next.Pods[j] = next.Pods[j], next.Pods[i]
			what = fmt.Sprintf("twins %s at %d and %d swapped", podKey(next.Pods[i]), i, j)
		} else if len(next.Pods) > 0 && next.Pods[0] != nil {
			i := in.Intn(len(next.Pods))
			if p := next.Pods[i]; p != nil {
				twin := *p
				twin.Labels = fuzzLabels(in)
				next.Pods = slices.Insert(next.Pods, i+in.Intn(2), &twin)
				what = "twin of " + p.Key() + " next to it"
			}
		}
	case 29: // the previous slice modified in place (a caller reusing its slice)
		next.Pods = st.Pods
		if len(next.Pods) > 1 {
			i, j := in.Intn(len(next.Pods)), in.Intn(len(next.Pods))
			next.Pods[i], next.Pods[j] = next.Pods[j], next.Pods[i]
			if p := next.Pods[i]; p != nil && in.Bool() {
				cp := *p
				cp.Labels = fuzzLabels(in)
				next.Pods[i] = &cp
			}
			what = fmt.Sprintf("pods %d and %d swapped in place", i, j)
		}
	case 19: // a burst of changes at once
		s, l := st, local
		for range 2 + in.Intn(4) {
			var w string
			s, l, w = m.change(t, s, l)
			what += w + "; "
		}
		return s, l, "burst: " + what
	}
	if what == "" {
		what = "no-op"
	}
	return &next, local, what
}

// podKey is p.Key(), or "nil".
func podKey(p *Pod) string {
	if p == nil {
		return "nil"
	}
	return p.Key()
}

// twins returns the positions of two different pods listed with the same
// name and UID (claimants the claim order may not tell apart), or -1, -1.
func twins(pods []*Pod) (int, int) {
	for i, p := range pods {
		for j := i + 1; j < len(pods); j++ {
			if q := pods[j]; p != nil && q != nil && p != q && p.Key() == q.Key() && p.UID == q.UID {
				return i, j
			}
		}
	}
	return -1, -1
}

// clonePod replaces a random pod of st by a copy and returns the copy.
func (m *mutator) clonePod(st *State) *Pod {
	if len(st.Pods) == 0 {
		return nil
	}
	i := m.in.Intn(len(st.Pods))
	if st.Pods[i] == nil {
		return nil
	}
	p := *st.Pods[i]
	st.Pods[i] = &p
	return &p
}

// pod returns a new pod in the generator's namespaces and address range.
func (m *mutator) pod(in *fuzzInput) *Pod {
	m.next++
	p := &Pod{
		Namespace: fuzzNamespaces[in.Intn(len(fuzzNamespaces))],
		Name:      fmt.Sprintf("pod-%d", m.next),
		UID:       fmt.Sprintf("uid-%d", m.next),
		Labels:    fuzzLabels(in),
		Phase:     fuzzinput.Pick(in, corev1.PodRunning, corev1.PodRunning, corev1.PodPending, corev1.PodFailed),
		Created:   metav1.Unix(int64(1_700_000_000+in.Intn(3)), 0),
		NodeName:  "node-1",
		Deleting:  in.Intn(6) == 0,
	}
	if in.Intn(8) == 0 {
		// Same name and UID as another pod now and then: the claim order
		// cannot tell them apart, input order decides.
		p.Name, p.UID = "pod-0", "uid-0"
	}
	for range 1 + in.Intn(2) {
		p.IPs = append(p.IPs, m.addr(in))
	}
	if in.Bool() {
		p.Ports = []ContainerPort{{Name: fuzzinput.Pick(in, fuzzPortNames...), Protocol: fuzzinput.Pick(in, fuzzProtocols...), Port: fuzzPortNumber(in)}}
	}
	return p
}

// addr returns an address of 10.9.0.0/28 or fd09::/124 (where the
// generator's pods live, so that addresses collide), now and then an
// IPv4-mapped one.
func (m *mutator) addr(in *fuzzInput) netip.Addr {
	switch in.Intn(5) {
	case 0:
		return netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x09, 15: byte(in.Intn(16))})
	case 1:
		return netip.AddrFrom16(netip.AddrFrom4([4]byte{10, 9, 0, byte(in.Intn(16))}).As16())
	default:
		return netip.AddrFrom4([4]byte{10, 9, 0, byte(in.Intn(16))})
	}
}

// TestCompilerReusesWork checks that an unchanged state compiles to the
// same peer slices (the syncer's Firewall.Equal then compares pointers) and
// that a change is seen through a new pointer with equal content.
func TestCompilerReusesWork(t *testing.T) {
	st, local := benchmarkState(1000, 100, 100, 20)
	c := NewCompiler()
	first := c.Compile(st, local)
	again := c.Compile(st, local)
	for key, fw := range first.Firewalls {
		for i, r := range fw.Ingress.Rules {
			if len(r.Peer.Prefixes) > 0 && !sameSlice(r.Peer.Prefixes, again.Firewalls[key].Ingress.Rules[i].Peer.Prefixes) {
				t.Fatalf("%s: ingress rule %d: peer recomputed although nothing changed", key, i)
			}
		}
	}
	// Relabel a peer so that it leaves every tier=frontend selection: the
	// result must follow, as Compile's does.
	next := *st
	next.Pods = slices.Clone(st.Pods)
	for i, p := range next.Pods {
		if p.Labels["tier"] == "frontend" {
			cp := *p
			cp.Labels = map[string]string{"app": p.Labels["app"], "tier": "backend"}
			next.Pods[i] = &cp
			break
		}
	}
	if diff := resultDiff(c.Compile(&next, local), Compile(&next, local)); diff != "" {
		t.Fatal(diff)
	}
}

// TestCompilerTiedClaims: two listings of one pod (same name, UID, phase
// and creation time) claim one address with different labels; the one
// listed first owns it. Reordering the same objects must move the address,
// as it does for Compile.
func TestCompilerTiedClaims(t *testing.T) {
	var cl cluster
	cl.addNamespace("a", nil)
	server := cl.addPod("a", "server", map[string]string{"app": "server"}, nil, "10.1.0.1")
	first := cl.addPod("a", "twin", map[string]string{"app": "client"}, nil, "10.1.0.2")
	second := *first
	second.Labels = map[string]string{"app": "other"}
	np := fromClientsPolicy(t)
	local := []LocalPod{{Key: localKey(server), Pod: server}}
	c := NewCompiler()
	for i, pods := range [][]*Pod{{server, first, &second}, {server, &second, first}, {server, first, &second}} {
		st := &State{Namespaces: cl.namespaces, Pods: pods, Policies: []*networkingv1.NetworkPolicy{np}}
		if diff := resultDiff(c.Compile(st, local), Compile(st, local)); diff != "" {
			t.Fatalf("order %d: %s", i, diff)
		}
	}
}

// TestHostSet checks hostSet against netipx's builder fed one address at a
// time: runs of IPv4 addresses, duplicates, IPv6, mapped and invalid ones.
func TestHostSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		var addrs []netip.Addr
		for range rng.IntN(300) {
			switch rng.IntN(6) {
			case 0:
				addrs = append(addrs, netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(rng.IntN(40))}))
			case 1:
				addrs = append(addrs, netip.Addr{})
			case 2:
				addrs = append(addrs, netip.AddrFrom4([4]byte{255, 255, 255, byte(250 + rng.IntN(6))}))
			default:
				addrs = append(addrs, netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(2)), byte(rng.IntN(256))}))
			}
		}
		var b netipx.IPSetBuilder
		for _, a := range addrs {
			if a.IsValid() {
				b.Add(a)
			}
		}
		want, _ := b.IPSet()
		got := hostSet(slices.Clone(addrs))
		if !slices.Equal(got.Prefixes(), want.Prefixes()) {
			t.Fatalf("round %d: hostSet(%v) = %v, want %v", round, addrs, got.Prefixes(), want.Prefixes())
		}
	}
}
