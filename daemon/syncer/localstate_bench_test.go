package syncer

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/policy"
)

// BenchmarkSyncCompileGrowth is the compile path of a sync (localState and
// the persistent compiler) after one remote pod is relabelled, with 110
// local attachments in clusters of 1k and 10k pods (1k namespaces, 1k
// policies): how the part of a sync that does not touch the dataplane grows
// with the cluster. It reports; it asserts nothing about time.
func BenchmarkSyncCompileGrowth(b *testing.B) {
	for _, pods := range []int{1000, 10_000} {
		b.Run(fmt.Sprintf("pods=%d", pods), func(b *testing.B) {
			st, recs := growthCluster(pods, 1000, 110)
			next := *st
			next.Pods = slices.Clone(st.Pods)
			p := *next.Pods[2] // not local: local pods are 1, 1+step, ...
			p.Labels = map[string]string{"app": "app3", "tier": p.Labels["tier"]}
			next.Pods[2] = &p
			states := []*policy.State{st, &next}

			tb := newTestBed(b, st)
			atts := make([]*attachment, 0, len(recs))
			for _, rec := range recs {
				a, err := newAttachment(rec)
				if err != nil {
					b.Fatal(err)
				}
				tb.sync.atts[rec.Key()] = a
				atts = append(atts, a)
			}
			if fws, _ := tb.sync.compile(atts); len(fws) != len(recs) {
				b.Fatalf("%d firewalls, want %d", len(fws), len(recs))
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				tb.src.setState(states[i%2])
				tb.sync.compile(atts)
			}
		})
	}
}

// growthCluster is a synthetic cluster of nPods pods over nNamespaces
// namespaces, one policy per namespace (default deny, same-namespace
// selectors, cross-namespace selectors on a named port, egress to prod
// namespaces), and the CNI attachments of nLocal of its pods, spread over
// the list, with the addresses the source has for them.
func growthCluster(nPods, nNamespaces, nLocal int) (*policy.State, []checkpoint.Attachment) {
	st := &policy.State{}
	for i := range nNamespaces {
		env := "prod"
		if i%3 == 0 {
			env = "dev"
		}
		name := fmt.Sprintf("ns-%04d", i)
		st.Namespaces = append(st.Namespaces, &policy.Namespace{Name: name, Labels: map[string]string{
			corev1.LabelMetadataName: name, "team": fmt.Sprintf("t%d", i%10), "env": env,
		}})
	}
	for i := range nPods {
		tier := "backend"
		if i%4 == 0 {
			tier = "frontend"
		}
		st.Pods = append(st.Pods, &policy.Pod{
			Namespace: st.Namespaces[i%nNamespaces].Name,
			Name:      fmt.Sprintf("pod-%05d", i),
			UID:       fmt.Sprintf("uid-%05d", i),
			Labels:    map[string]string{"app": fmt.Sprintf("app%d", i%20), "tier": tier},
			Ports:     []policy.ContainerPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080}},
			IPs:       []netip.Addr{netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})},
			NodeName:  fmt.Sprintf("node-%d", i%90),
			Phase:     corev1.PodRunning,
			Created:   metav1.Unix(int64(1_700_000_000+i), 0),
		})
	}
	tcp := corev1.ProtocolTCP
	http := intstr.FromString("http")
	for i := range nNamespaces {
		ns := st.Namespaces[i].Name
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("policy-%04d", i)}}
		switch i % 4 {
		case 0:
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		case 1:
			np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"tier": "backend"}}
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{
				{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%20)}}}}}}
		case 2:
			np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "frontend"}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}},
			}}
		case 3:
			np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}}}}
		}
		policy.ApplyDefaults(np)
		st.Policies = append(st.Policies, np)
	}
	var recs []checkpoint.Attachment
	step := max(nPods/max(nLocal, 1), 1)
	for i := 1; i < nPods && len(recs) < nLocal; i += step {
		p := st.Pods[i]
		recs = append(recs, checkpoint.Attachment{
			Network: testNetwork, ContainerID: "ctr-" + p.Name, IfName: "eth0",
			Namespace: p.Namespace, Name: p.Name, UID: p.UID,
			Netns: "/run/netns/pw-bench-" + p.Name, IPs: []string{p.IPs[0].String() + "/32"},
			Gateways: []string{"10.250.0.254"}, Added: addedAt,
		})
	}
	return st, recs
}
