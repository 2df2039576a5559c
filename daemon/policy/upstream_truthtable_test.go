package policy

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The truth-table suite of test/e2e/network/netpol (42 TCP + 3 UDP + 3 SCTP
// tests), expressed at compiler level on its classic 9-pod model: namespaces
// x, y, z (labelled kubernetes.io/metadata.name), pods a, b, c in each
// (labelled pod=<name>), each serving 80 and 81 on TCP, UDP and SCTP with
// container ports named serve-<port>-<proto>. Every truth table covers all 72
// ordered pairs of distinct pods. Subtest names are the upstream It strings.

// truthTableCluster builds the 9-pod model. x/a is 10.0.1.1, y/b 10.0.2.2...
func truthTableCluster() *cluster {
	c := &cluster{}
	var ports []ContainerPort
	for _, port := range []int32{80, 81} {
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
			ports = append(ports, ContainerPort{
				Name:     fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))),
				Protocol: proto,
				Port:     port,
			})
		}
	}
	for i, ns := range []string{"x", "y", "z"} {
		c.addNamespace(ns, nil)
		for j, name := range []string{"a", "b", "c"} {
			c.addPod(ns, name, map[string]string{"pod": name}, ports, fmt.Sprintf("10.0.%d.%d", i+1, j+1))
		}
	}
	return c
}

// truthTableStep is one step of a test: the policies in force after it (the
// whole set, so deleting is leaving out), an optional relabelling, and the
// truth tables to check.
type truthTableStep struct {
	policies string
	mutate   func(t *testing.T, c *cluster)
	cases    []matrixCase
}

// outside is an address that belongs to no pod (a client outside the cluster).
const outside = "10.200.0.1"

var (
	sctp = corev1.ProtocolSCTP
	udp  = corev1.ProtocolUDP
)

var truthTableTests = []struct {
	name  string
	steps []truthTableStep
}{
	{"should support a 'default-deny-ingress' policy", []truthTableStep{{
		policies: `
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: []}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/*", false}}}},
	}}},
	{"should support a 'default-deny-all' policy", []truthTableStep{{
		policies: `
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress], ingress: [], egress: []}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/*", false}, {"x/*", "*", false}}}},
	}}},
	{"should enforce policy to allow traffic from pods within server namespace based on PodSelector", []truthTableStep{{
		policies: `
metadata: {name: x-a-allows-x-b, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"x/b", "x/a", true}}}},
	}}},
	{"should enforce policy to allow ingress traffic for a target", []truthTableStep{{
		policies: `
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: []}
---
metadata: {name: allow-all-to-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{podSelector: {}, namespaceSelector: {}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/*", false}, {"*", "x/a", true}},
			extra: []probe{{from: outside, to: "x/a", port: 80, allow: false}}}},
	}}},
	{"should enforce policy to allow ingress traffic from pods in all namespaces", []truthTableStep{{
		policies: `
metadata: {name: allow-from-another-ns, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {}}]}]}`,
		// All pods are allowed; an address that is no pod is not.
		cases: []matrixCase{{port: 80, extra: []probe{
			{from: outside, to: "x/a", port: 80, allow: false},
			{from: outside, to: "x/b", port: 80, allow: true},
		}}},
	}}},
	{"should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", []truthTableStep{{
		policies: `
metadata: {name: allow-client-a-via-ns-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}}},
	}}},
	{"should enforce policy based on PodSelector with MatchExpressions", []truthTableStep{{
		policies: `
metadata: {name: x-a-allows-x-b, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [b]}]}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"x/b", "x/a", true}}}},
	}}},
	{"should enforce policy based on NamespaceSelector with MatchExpressions", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-y-match-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: ["y"]}]}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}}},
	}}},
	{"should enforce policy based on PodSelector or NamespaceSelector", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-y-match-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}}, {podSelector: {matchLabels: {pod: b}}}]}]`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"x/b", "x/a", true}, {"y/*", "x/a", true}, {"z/*", "x/a", true}}}},
	}}},
	{"should enforce policy based on PodSelector and NamespaceSelector", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-y-podselector-and-nsselector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}, podSelector: {matchLabels: {pod: b}}}]}]`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"y/b", "x/a", true}, {"z/b", "x/a", true}}}},
	}}},
	{"should enforce policy based on Multiple PodSelectors and NamespaceSelectors", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-y-z-pod-b-c, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress]
  ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [x]}]}, podSelector: {matchExpressions: [{key: pod, operator: In, values: [b, c]}]}}]}]`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"y/b", "x/a", true}, {"y/c", "x/a", true}, {"z/b", "x/a", true}, {"z/c", "x/a", true}}}},
	}}},
	{"should enforce policy based on any PodSelectors", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-x-pod-b-c, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}, {podSelector: {matchLabels: {pod: c}}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"x/b", "x/a", true}, {"x/c", "x/a", true}}}},
	}}},
	{"should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-y-pod-a-via-namespace-pod-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"y/a", "x/a", true}}}},
	}}},
	{"should enforce policy based on Ports", []truthTableStep{{
		policies: `
metadata: {name: allow-client-a-via-ns-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 81, protocol: TCP}]}]}`,
		cases: []matrixCase{
			{port: 81, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}},
			{port: 80, expect: []cell{{"*", "x/a", false}}},
		},
	}}},
	{"should enforce multiple, stacked policies with overlapping podSelectors", []truthTableStep{
		{
			policies: `
metadata: {name: allow-client-a-via-ns-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 81, protocol: TCP}]}]}`,
			cases: []matrixCase{
				{port: 81, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}},
				{port: 80, expect: []cell{{"*", "x/a", false}}},
			},
		},
		{
			policies: `
metadata: {name: allow-client-a-via-ns-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 81, protocol: TCP}]}]}
---
metadata: {name: allow-client-a-via-ns-selector-80, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 80, protocol: TCP}]}]}`,
			cases: []matrixCase{
				{port: 80, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}},
				{port: 81, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}},
			},
		},
	}},
	{"should support allow-all policy", []truthTableStep{
		{
			policies: `
metadata: {name: allow-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: [{}]}`,
			cases: []matrixCase{{port: 80, extra: []probe{{from: outside, to: "x/a", port: 80, allow: true}}}, {port: 81}},
		},
		{
			// Negative control: the same policy with its rule removed.
			policies: `
metadata: {name: allow-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: []}`,
			cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/*", false}}}},
		},
	}},
	{"should allow ingress access on one named port", []truthTableStep{{
		policies: `
metadata: {name: allow-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: [{ports: [{port: serve-81-tcp}]}]}`,
		cases: []matrixCase{
			{port: 81},
			{port: 80, expect: []cell{{"*", "x/*", false}}},
		},
	}}},
	{"should allow ingress access from namespace on one named port", []truthTableStep{{
		policies: `
metadata: {name: allow-client-a-via-ns-selector-80, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: serve-80-tcp, protocol: TCP}]}]}`,
		cases: []matrixCase{
			{port: 80, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}},
			{port: 81, expect: []cell{{"*", "x/a", false}}},
		},
	}}},
	{"should allow egress access on one named port", []truthTableStep{{
		policies: `
metadata: {name: allow-egress, namespace: x}
spec: {podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: serve-80-tcp}]}]}`,
		cases: []matrixCase{
			// Named ports never match an address that is no pod.
			{port: 80, extra: []probe{{from: "x/a", to: outside, port: 80, allow: false}}},
			{port: 81, expect: []cell{{"x/*", "*", false}}},
		},
	}}},
	{"should enforce updated policy", []truthTableStep{
		{
			policies: `
metadata: {name: allow-all-mutate-to-deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: [{}]}`,
			cases: []matrixCase{{port: 81}},
		},
		{
			policies: `
metadata: {name: allow-all-mutate-to-deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: []}`,
			cases: []matrixCase{{port: 81, expect: []cell{{"*", "x/*", false}}}},
		},
	}},
	{"should allow ingress access from updated namespace", []truthTableStep{
		{
			policies: allowFromUpdatedNamespace,
			cases:    []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}}}},
		},
		{
			policies: allowFromUpdatedNamespace,
			mutate:   func(t *testing.T, c *cluster) { c.namespace(t, "y").Labels["ns2"] = "updated" },
			cases:    []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}}},
		},
	}},
	{"should allow ingress access from updated pod", []truthTableStep{
		{
			policies: allowFromUpdatedPod,
			cases:    []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}}}},
		},
		{
			policies: allowFromUpdatedPod,
			mutate:   func(t *testing.T, c *cluster) { c.pod(t, "x/b").Labels["pod2"] = "updated" },
			cases:    []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"x/b", "x/a", true}}}},
		},
	}},
	{"should deny ingress from pods on other namespaces", []truthTableStep{{
		policies: `
metadata: {name: deny-empty-policy, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: [{from: [{podSelector: {}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"y/*", "x/*", false}, {"z/*", "x/*", false}}}},
	}}},
	{"should deny ingress access to updated pod", []truthTableStep{
		{
			policies: denyIngressViaLabelSelector,
			cases:    []matrixCase{{port: 80}},
		},
		{
			policies: denyIngressViaLabelSelector,
			mutate:   func(t *testing.T, c *cluster) { c.pod(t, "x/a").Labels["target"] = "isolated" },
			cases:    []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}}}},
		},
	}},
	{"should deny egress from pods based on PodSelector", []truthTableStep{{
		policies: `
metadata: {name: deny-egress-pod-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: []}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"x/a", "*", false}}}},
	}}},
	{"should deny egress from all pods in a namespace", []truthTableStep{{
		policies: `
metadata: {name: deny-egress-ns-x, namespace: x}
spec: {podSelector: {}, policyTypes: [Egress], egress: []}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"x/*", "*", false}}}},
	}}},
	{"should work with Ingress, Egress specified together", []truthTableStep{{
		policies: `
metadata: {name: allow-client-a-via-pod-selector, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress, Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]
  egress: [{ports: [{port: 80, protocol: TCP}]}]`,
		cases: []matrixCase{
			{port: 80, expect: []cell{{"*", "x/a", false}, {"x/b", "x/a", true}}},
			{port: 81, expect: []cell{{"*", "x/a", false}, {"x/b", "x/a", true}, {"x/a", "*", false}}},
		},
	}}},
	{"should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", []truthTableStep{{
		policies: `
metadata: {name: allow-to-ns-y-pod-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}]}]}
---
metadata: {name: allow-from-xa-on-ya-match-selector, namespace: "y"}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]}]}
---
metadata: {name: allow-from-xa-on-yb-match-selector, namespace: "y"}
spec: {podSelector: {matchLabels: {pod: b}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}, podSelector: {matchLabels: {pod: a}}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"x/a", "*", false}, {"*", "y/a", false}, {"*", "y/b", false}, {"x/a", "y/a", true}}}},
	}}},
	{"should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", []truthTableStep{{
		policies: `
metadata: {name: allow-to-ns-y-pod-a, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"x/a", "*", false}, {"x/a", "y/a", true}}}},
	}}},
	{"should enforce ingress policy allowing any port traffic to a server on a specific protocol", []truthTableStep{{
		policies: `
metadata: {name: allow-ingress-by-proto, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{ports: [{protocol: TCP}]}]}`,
		cases: []matrixCase{
			{port: 80},
			{port: 81},
			{port: 80, proto: udp, expect: []cell{{"*", "x/a", false}}},
		},
	}}},
	{"should enforce multiple ingress policies with ingress allow-all policy taking precedence", []truthTableStep{
		{
			policies: allowIngressPort80,
			cases:    []matrixCase{{port: 81, expect: []cell{{"*", "x/*", false}}}, {port: 80}},
		},
		{
			policies: allowIngressPort80 + `
---
metadata: {name: allow-ingress, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: [{}]}`,
			cases: []matrixCase{{port: 81}},
		},
	}},
	{"should enforce multiple egress policies with egress allow-all policy taking precedence", []truthTableStep{
		{
			policies: allowEgressPort80,
			cases:    []matrixCase{{port: 81, expect: []cell{{"x/*", "*", false}}}, {port: 80}},
		},
		{
			policies: allowEgressPort80 + `
---
metadata: {name: allow-egress, namespace: x}
spec: {podSelector: {}, policyTypes: [Egress], egress: [{}]}`,
			cases: []matrixCase{{port: 81}},
		},
	}},
	{"should stop enforcing policies after they are deleted", []truthTableStep{
		{
			policies: `
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress], ingress: [], egress: []}`,
			cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/*", false}, {"x/*", "*", false}}}},
		},
		{
			policies: ``,
			cases:    []matrixCase{{port: 80}},
		},
	}},
	{"should allow egress access to server in CIDR block", []truthTableStep{{
		policies: `
metadata: {name: allow-client-a-via-cidr-egress-rule, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.0.2.2/32}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"x/a", "*", false}, {"x/a", "y/b", true}}}},
	}}},
	{"should enforce except clause while egress access to server in CIDR block", []truthTableStep{{
		// The 9-pod version writes the cidr as "<x/a IP>/4", host bits
		// set; the compiler masks it as older API servers accepted it.
		policies: exceptClausePolicy,
		cases:    []matrixCase{{port: 80, expect: []cell{{"x/a", "x/b", false}}}},
	}}},
	{"should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", []truthTableStep{
		{
			policies: exceptClausePolicy,
			cases:    []matrixCase{{port: 80, expect: []cell{{"x/a", "x/b", false}}}},
		},
		{
			policies: `
metadata: {name: allow-client-a-via-cidr-egress-rule, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.0.1.2/32}}]}]}`,
			cases: []matrixCase{{port: 80, expect: []cell{{"x/a", "*", false}, {"x/a", "x/b", true}}}},
		},
	}},
	{"should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", []truthTableStep{
		{
			policies: allowEgressForTarget,
			cases:    []matrixCase{{port: 80}},
		},
		{
			policies: allowEgressForTarget + `
---
metadata: {name: deny-ingress-via-label-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: []}`,
			cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}}}},
		},
	}},
	{"should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", []truthTableStep{{
		policies: `
metadata: {name: deny-ingress, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: []}
---
metadata: {name: allow-only-sctp-ingress-on-port-81, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{ports: [{port: 81, protocol: SCTP}]}]}`,
		cases: []matrixCase{
			{port: 81, expect: []cell{{"*", "x/*", false}}},
			{port: 81, proto: sctp, expect: []cell{{"*", "x/*", false}, {"*", "x/a", true}}},
		},
	}}},
	{"should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP", []truthTableStep{{
		policies: `
metadata: {name: allow-only-sctp-ingress-on-port-80, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{ports: [{port: 80, protocol: SCTP}]}]}`,
		cases: []matrixCase{
			{port: 81, expect: []cell{{"*", "x/a", false}}},
			{port: 80, proto: sctp},
		},
	}}},
	{"should not allow access by TCP when a policy specifies only UDP", []truthTableStep{{
		policies: `
metadata: {name: allow-only-udp-ingress-on-port-81, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{ports: [{port: 81, protocol: UDP}]}]}`,
		cases: []matrixCase{
			{port: 81, expect: []cell{{"*", "x/a", false}}},
			{port: 81, proto: udp},
		},
	}}},
	{"should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label", []truthTableStep{{
		policies: `
metadata: {name: allow-client-a-via-ns-selector-for-immutable-ns-label, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}}},
	}}},
	{"should enforce policy based on NamespaceSelector with MatchExpressions using default ns label", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-y-match-selector-for-immutable-ns-label, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["y"]}]}}]}]}`,
		cases: []matrixCase{{port: 80, expect: []cell{{"x/a", "y/*", false}}}},
	}}},

	// "NetworkPolicy between server and client using UDP"
	{"UDP should support a 'default-deny-ingress' policy", []truthTableStep{{
		policies: `
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: []}`,
		cases: []matrixCase{{port: 80, proto: udp, expect: []cell{{"*", "x/*", false}}}},
	}}},
	{"UDP should enforce policy based on Ports", []truthTableStep{{
		policies: `
metadata: {name: allow-ingress-on-port-81-ns-x, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 81, protocol: UDP}]}]}`,
		cases: []matrixCase{
			{port: 81, proto: udp, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}},
			{port: 81, expect: []cell{{"*", "x/a", false}}},
		},
	}}},
	{"UDP should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-y-pod-a-via-namespace-pod-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}], ports: [{port: 80, protocol: UDP}]}]}`,
		cases: []matrixCase{{port: 80, proto: udp, expect: []cell{{"*", "x/a", false}, {"y/a", "x/a", true}}}},
	}}},

	// "NetworkPolicy between server and client using SCTP"
	{"SCTP should support a 'default-deny-ingress' policy", []truthTableStep{{
		policies: `
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: []}`,
		cases: []matrixCase{{port: 80, proto: sctp, expect: []cell{{"*", "x/*", false}}}},
	}}},
	{"SCTP should enforce policy based on Ports", []truthTableStep{{
		policies: `
metadata: {name: allow-ingress-on-port-81-ns-x, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}}], ports: [{port: 81, protocol: SCTP}]}]}`,
		cases: []matrixCase{
			{port: 81, proto: sctp, expect: []cell{{"*", "x/a", false}, {"y/*", "x/a", true}}},
			{port: 81, expect: []cell{{"*", "x/a", false}}},
		},
	}}},
	{"SCTP should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", []truthTableStep{{
		policies: `
metadata: {name: allow-ns-y-pod-a-via-namespace-pod-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}, podSelector: {matchLabels: {pod: a}}}], ports: [{port: 80, protocol: SCTP}]}]}`,
		cases: []matrixCase{{port: 80, proto: sctp, expect: []cell{{"*", "x/a", false}, {"y/a", "x/a", true}}}},
	}}},
}

const (
	allowFromUpdatedNamespace = `
metadata: {name: allow-client-a-via-ns-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{namespaceSelector: {matchLabels: {ns2: updated}}}]}]}`
	allowFromUpdatedPod = `
metadata: {name: allow-client-a-via-pod-selector, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress], ingress: [{from: [{podSelector: {matchLabels: {pod: b, pod2: updated}}}]}]}`
	denyIngressViaLabelSelector = `
metadata: {name: deny-ingress-via-label-selector, namespace: x}
spec: {podSelector: {matchLabels: {target: isolated}}, policyTypes: [Ingress], ingress: []}`
	allowIngressPort80 = `
metadata: {name: allow-ingress-port-80, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress], ingress: [{ports: [{port: 80}]}]}`
	allowEgressPort80 = `
metadata: {name: allow-egress-port-80, namespace: x}
spec: {podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: 80}]}]}`
	exceptClausePolicy = `
metadata: {name: allow-client-a-via-cidr-egress-rule, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 10.0.1.1/4, except: [10.0.1.2/32]}}]}]}`
	allowEgressForTarget = `
metadata: {name: allow-egress-for-target, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, policyTypes: [Egress], egress: [{}]}`
)

func TestUpstreamTruthTable(t *testing.T) {
	if n := len(truthTableTests); n != 48 {
		t.Errorf("%d truth-table tests, want 42 + 3 UDP + 3 SCTP = 48", n)
	}
	for _, tt := range truthTableTests {
		t.Run(tt.name, func(t *testing.T) {
			c := truthTableCluster()
			var allowed, denied int
			for i, step := range tt.steps {
				if step.mutate != nil {
					step.mutate(t, c)
				}
				w := compileCluster(t, c, parsePolicies(t, step.policies)...)
				if len(w.result.Problems) > 0 {
					t.Fatalf("step %d: problems: %v", i, w.result.Problems)
				}
				for _, mc := range step.cases {
					a, d := w.check(t, matrixProbes(t, c, mc))
					allowed += a
					denied += d
				}
			}
			if allowed == 0 || denied == 0 {
				t.Errorf("test checks %d allowed and %d denied probes; want both", allowed, denied)
			}
		})
	}
}
