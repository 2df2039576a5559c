package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// BenchmarkCompileScale compiles the firewall of 1 and of 110 local pods in
// clusters of 1k and 10k pods (1k namespaces, 1k policies each): how the
// compiler's cost grows with the cluster and with the local pods. It
// reports; it asserts nothing about time. `make bench` compares
// pods=1000/local=1 with pods=10000/local=1.
func BenchmarkCompileScale(b *testing.B) {
	for _, pods := range []int{1000, 10_000} {
		for _, local := range []int{1, 110} {
			b.Run(fmt.Sprintf("pods=%d/local=%d", pods, local), func(b *testing.B) {
				st, lp := benchmarkState(pods, 1000, 1000, local)
				b.ReportAllocs()
				for b.Loop() {
					Compile(st, lp)
				}
			})
		}
	}
}

// BenchmarkCompileIncremental recompiles the 110 local pods of the 10k-pod
// cluster (1k namespaces, 1k policies) after one change, with a fresh
// Compile (compiler=fresh) and with a persistent Compiler (compiler=
// persistent). Each iteration switches between two states that differ by
// the change, as a source's snapshots do: pod-relabel (one remote pod, a
// new pointer), pod-add (a remote pod in a namespace cross-namespace rules
// admit), namespace-relabel (one namespace's env label), policy (one
// policy's peer selector), local-pointers (the local pods republished
// under new pointers with the same content, as the syncer did on every
// sync before it kept its merged local pods) and none (the same state
// again). It reports; it asserts nothing
// about time.
func BenchmarkCompileIncremental(b *testing.B) {
	for _, change := range []string{"pod-relabel", "pod-add", "namespace-relabel", "policy", "local-pointers", "none"} {
		states := incrementalStates(change)
		for _, persistent := range []bool{false, true} {
			name := "fresh"
			if persistent {
				name = "persistent"
			}
			b.Run(fmt.Sprintf("change=%s/compiler=%s", change, name), func(b *testing.B) {
				compile := Compile
				if persistent {
					compile = NewCompiler().Compile
				}
				for _, s := range states {
					compile(s.state, s.local)
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					s := states[i%len(states)]
					compile(s.state, s.local)
					i++
				}
			})
		}
	}
}

type benchmarkStep struct {
	state *State
	local []LocalPod
}

// incrementalStates returns the two states BenchmarkCompileIncremental
// switches between for a change (one state for "none").
func incrementalStates(change string) []benchmarkStep {
	st, local := benchmarkState(10_000, 1000, 1000, 110)
	if change == "none" {
		return []benchmarkStep{{st, local}}
	}
	next := *st
	nextLocal := local
	switch change {
	case "pod-relabel":
		// Pod 1001 is not local (local pods are 1, 91, 181, ...); it is
		// in namespace ns-0001, where policy-0001 admits app1 to the local
		// pods 1 and 9001.
		next.Pods = slices.Clone(st.Pods)
		p := *next.Pods[1001]
		p.Labels = map[string]string{"app": "app2", "tier": "backend"}
		next.Pods[1001] = &p
	case "pod-add":
		// A new pod in ns-0002 (env=prod), so in the peers of every egress
		// rule to env=prod and every egress rule to any pod on a named
		// port.
		next.Pods = append(slices.Clone(st.Pods), &Pod{Namespace: "ns-0002", Name: "new", UID: "uid-new",
			Labels: map[string]string{"app": "app2", "tier": "frontend"},
			Ports:  []ContainerPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}},
			IPs:    []netip.Addr{netip.MustParseAddr("10.0.200.1")}, Phase: corev1.PodRunning})
	case "namespace-relabel":
		next.Namespaces = slices.Clone(st.Namespaces)
		ns := *next.Namespaces[5]
		ns.Labels = maps.Clone(ns.Labels)
		ns.Labels["env"] = "dev"
		next.Namespaces[5] = &ns
	case "policy":
		// policy-0001 (a same-namespace selector) selects local pod 1.
		next.Policies = slices.Clone(st.Policies)
		np := next.Policies[1].DeepCopy()
		np.Spec.Ingress[0].From[0].PodSelector.MatchLabels = map[string]string{"app": "app7"}
		next.Policies[1] = np
	case "local-pointers":
		next.Pods = slices.Clone(st.Pods)
		nextLocal = make([]LocalPod, len(local))
		byPod := make(map[*Pod]*Pod)
		for i, lp := range local {
			p := *lp.Pod
			byPod[lp.Pod] = &p
			nextLocal[i] = LocalPod{Key: lp.Key, Pod: &p}
		}
		for i, p := range next.Pods {
			if cp, ok := byPod[p]; ok {
				next.Pods[i] = cp
			}
		}
	}
	return []benchmarkStep{{st, local}, {&next, nextLocal}}
}

// BenchmarkCompileSelectAll compiles the datapath benchmark's policy for one
// local pod: it selects every pod of its namespace and admits three
// ipBlocks and two selector peers holding n pods (all of them, and every
// second one), the peer sets podwall puts in ipsets.
func BenchmarkCompileSelectAll(b *testing.B) {
	for _, n := range []int{0, 2000, 8000} {
		b.Run(fmt.Sprintf("selected=%d", n), func(b *testing.B) {
			st, lp := selectAllState(n)
			var members int
			for _, r := range Compile(st, lp).Firewalls[lp[0].Key].Ingress.Rules {
				members += len(r.Peer.Prefixes)
			}
			b.ReportAllocs()
			for b.Loop() {
				Compile(st, lp)
			}
			b.ReportMetric(float64(members), "prefixes")
		})
	}
}

// selectAllState is the datapath benchmark's cluster: namespace bench with a
// local server and n remote pods at non-adjacent addresses, and its policy.
func selectAllState(n int) (*State, []LocalPod) {
	st := &State{Namespaces: []*Namespace{{Name: "bench", Labels: map[string]string{"team": "bench"}}}}
	server := &Pod{Namespace: "bench", Name: "server", UID: "server", Labels: map[string]string{"app": "server"},
		IPs: []netip.Addr{netip.MustParseAddr("10.215.1.2")}, Phase: corev1.PodRunning, NodeName: "local"}
	st.Pods = append(st.Pods, server)
	for i := range n {
		labels := map[string]string{"app": fmt.Sprintf("r%d", i%20)}
		if i%2 == 0 {
			labels["role"] = "client"
		}
		st.Pods = append(st.Pods, &Pod{
			Namespace: "bench", Name: fmt.Sprintf("r-%05d", i), UID: fmt.Sprintf("uid-%05d", i), Labels: labels,
			IPs:   []netip.Addr{netip.AddrFrom4([4]byte{10, 216, byte(i / 127), byte(2*(i%127) + 1)})},
			Phase: corev1.PodRunning, NodeName: fmt.Sprintf("node-%d", i%50),
		})
	}
	tcp := corev1.ProtocolTCP
	port := func(p int32) []networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(p)
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &v}}
	}
	block := func(cidr string, p int32) networkingv1.NetworkPolicyIngressRule {
		return networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr}}}, Ports: port(p)}
	}
	st.Policies = []*networkingv1.NetworkPolicy{{
		ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "bench-select-all"},
		Spec: networkingv1.NetworkPolicySpec{
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				block("14.215.0.0/16", 9090), block("14.216.0.0/16", 8080), block("14.217.0.0/16", 80),
				{From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}}, Ports: append(port(80), port(8080)...)},
				{From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "bench"}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}},
				}}, Ports: port(80)},
			},
		},
	}}
	return st, []LocalPod{{Key: "podwall/server/eth0", Pod: server}}
}

// BenchmarkCompileGrowth is what a sync's compile costs after one remote pod
// is relabelled, with the persistent compiler the daemon uses, at 110 local
// pods in clusters of 1k and 10k pods (1k namespaces, 1k policies): how a
// sync's cost grows with the cluster. `make bench` compares the two. It
// reports; it asserts nothing about time.
func BenchmarkCompileGrowth(b *testing.B) {
	for _, pods := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			st, local := benchmarkState(pods, 1000, 1000, 110)
			next := *st
			next.Pods = slices.Clone(st.Pods)
			p := *next.Pods[2] // not local: local pods are 1, 1+step, ...
			p.Labels = map[string]string{"app": "app3", "tier": p.Labels["tier"]}
			next.Pods[2] = &p
			states := []*State{st, &next}
			c := NewCompiler()
			c.Compile(st, local)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c.Compile(states[i%2], local)
				i++
			}
		})
	}
}
