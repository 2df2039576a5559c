package policy

import (
	"fmt"
	"slices"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
)

// TestCompilerPodListChanges runs the persistent compiler through pod lists
// that share a prefix and a suffix with the previous one, as a source's
// snapshots do, and compares every step with Compile: a pod listed twice
// and then once, nil entries, pods moved, twins (claimants only input order
// tells apart) changing places, and a caller's slice modified in place.
func TestCompilerPodListChanges(t *testing.T) {
	var cl cluster
	cl.addNamespace("a", nil)
	server := cl.addPod("a", "server", map[string]string{"app": "server"}, nil, "10.1.0.1")
	client := cl.addPod("a", "client", map[string]string{"app": "client"}, nil, "10.1.0.2")
	other := cl.addPod("a", "other", map[string]string{"app": "other"}, nil, "10.1.0.3")
	twin := *client // same name, UID and address, other labels
	twin.Labels = map[string]string{"app": "other"}
	relabelled := *other
	relabelled.Labels = map[string]string{"app": "client"}
	np := fromClientsPolicy(t)
	local := []LocalPod{{Key: localKey(server), Pod: server}}
	for _, tc := range []struct {
		name  string
		lists [][]*Pod
	}{
		{"listed twice, then once", [][]*Pod{
			{server, client, other}, {server, client, client, other}, {server, client, other}, {server, other, client, other}, {server, other},
		}},
		{"nil entries", [][]*Pod{
			{server, nil, client, other}, {nil, server, client, nil, other}, {server, client, other, nil}, {nil},
		}},
		{"moved", [][]*Pod{
			{server, client, other}, {client, server, other}, {client, other, server}, {server, client, other},
		}},
		{"twins change places", [][]*Pod{
			{server, client, other, &twin}, {server, &twin, other, client}, {server, client, other, &twin},
			{server, other, &twin, client}, {server, other, client},
		}},
		{"replaced in place", [][]*Pod{
			{server, client, other}, {server, client, &relabelled}, {server, &relabelled, other}, {server, other, other},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCompiler()
			for i, pods := range tc.lists {
				st := &State{Namespaces: cl.namespaces, Pods: pods, Policies: []*networkingv1.NetworkPolicy{np}}
				if diff := resultDiff(c.Compile(st, local), Compile(st, local)); diff != "" {
					t.Fatalf("list %d %s: %s", i, podKeys(pods), diff)
				}
			}
		})
	}
	t.Run("a slice modified in place", func(t *testing.T) {
		pods := []*Pod{server, client, other}
		c := NewCompiler()
		for i, change := range []func(){
			func() {},
			func() { pods[1], pods[2] = pods[2], pods[1] },
			func() { pods[2] = &relabelled },
			func() { pods[0], pods[2] = pods[2], pods[0] },
		} {
			change()
			st := &State{Namespaces: cl.namespaces, Pods: pods, Policies: []*networkingv1.NetworkPolicy{np}}
			if diff := resultDiff(c.Compile(st, local), Compile(st, local)); diff != "" {
				t.Fatalf("change %d %s: %s", i, podKeys(pods), diff)
			}
		}
	})
}

// TestCompilerRecountsWhenItsCopyIsWrong: should the compiler's copy of the
// previous pods name a pod it does not know (it cannot, short of a bug), it
// counts every pod again instead of trusting the windows.
func TestCompilerRecountsWhenItsCopyIsWrong(t *testing.T) {
	st, local := benchmarkState(200, 10, 10, 5)
	c := NewCompiler()
	c.Compile(st, local)
	stranger := *st.Pods[0]
	c.prevPods[0] = &stranger
	next := *st
	next.Pods = slices.Clone(st.Pods)
	cp := *next.Pods[3]
	cp.Labels = map[string]string{"app": "app9"}
	next.Pods[3] = &cp
	if diff := resultDiff(c.Compile(&next, local), Compile(&next, local)); diff != "" {
		t.Fatal(diff)
	}
	for _, p := range next.Pods {
		if e := c.pods[p]; e == nil || e.count != 1 {
			t.Fatalf("pod %s: entry %+v, want one listing", p.Key(), e)
		}
	}
	if len(c.pods) != len(next.Pods) {
		t.Fatalf("the compiler knows %d pods, want %d", len(c.pods), len(next.Pods))
	}
}

func podKeys(pods []*Pod) string {
	keys := make([]string, len(pods))
	for i, p := range pods {
		keys[i] = podKey(p)
	}
	return fmt.Sprint(keys)
}

// fromClientsPolicy admits the pods labelled app=client of namespace a to
// the pods labelled app=server there.
func fromClientsPolicy(t *testing.T) *networkingv1.NetworkPolicy {
	t.Helper()
	return parsePolicies(t, `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: a, name: from-clients}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
`)[0]
}
