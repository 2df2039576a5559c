package policy

import (
	"fmt"
	"testing"
)

// The 25 tests of the legacy suite, test/e2e/network/network_policy.go at
// release-1.18, expressed at compiler level. Subtest names are the upstream
// It strings. Policies live in nsA, the server's namespace, unless a test
// says otherwise. Namespaces carry ns-name=<name>; pods carry
// pod-name=<name>; servers serve TCP 80 and 81 as container ports serve-80
// and serve-81.

// legacyCluster builds the legacy model:
//
//	nsA 10.10.1.x: server .1, server-b .2, client-a .3, client-b .4, client-c .5, pod-a .6, pod-b .7
//	nsB 10.10.2.x: client-a .1, client-b .2, ns-b-server-a .3, ns-b-server-b .4
//	nsC 10.10.3.x: client-a .1
func legacyCluster() *cluster {
	c := &cluster{}
	serve := []ContainerPort{
		{Name: "serve-80", Protocol: "TCP", Port: 80},
		{Name: "serve-81", Protocol: "TCP", Port: 81},
	}
	layout := []struct {
		ns   string
		pods []string
	}{
		{"nsA", []string{"server", "server-b", "client-a", "client-b", "client-c", "pod-a", "pod-b"}},
		{"nsB", []string{"client-a", "client-b", "ns-b-server-a", "ns-b-server-b"}},
		{"nsC", []string{"client-a"}},
	}
	for i, l := range layout {
		c.addNamespace(l.ns, map[string]string{"ns-name": l.ns})
		for j, name := range l.pods {
			var ports []ContainerPort
			if name != "client-a" && name != "client-b" && name != "client-c" {
				ports = serve
			}
			c.addPod(l.ns, name, map[string]string{"pod-name": name}, ports, fmt.Sprintf("10.10.%d.%d", i+1, j+1))
		}
	}
	return c
}

// dns is the cluster DNS address the legacy egress policies allow UDP 53 to.
const dns = "10.96.0.10"

type legacyStep struct {
	policies string
	mutate   func(t *testing.T, c *cluster)
	probes   []probe
}

// Probe shorthands.
func tcp(from, to string, port int32, allow bool) probe {
	return probe{from: from, to: to, port: port, allow: allow}
}

func dnsProbe(from string) probe {
	return probe{from: from, to: dns, port: 53, proto: udp, allow: true}
}

var legacyTests = []struct {
	name  string
	steps []legacyStep
}{
	{"should support a 'default-deny' policy [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: deny-all, namespace: nsA}
spec: {podSelector: {}, ingress: []}`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, false),
			tcp("nsB/client-a", "nsA/server", 80, false),
			tcp("nsA/client-a", "nsB/ns-b-server-a", 80, true),
		},
	}}},
	{"should enforce policy to allow traffic from pods within server namespace based on PodSelector [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-client-a-via-pod-selector, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchLabels: {pod-name: client-a}}}]}]}`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, true),
			tcp("nsA/client-b", "nsA/server", 80, false),
			tcp("nsB/client-a", "nsA/server", 80, false),
		},
	}}},
	{"should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-ns-b-via-namespace-selector, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns-name: nsB}}}]}]}`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, false),
			tcp("nsB/client-a", "nsA/server", 80, true),
		},
	}}},
	{"should enforce policy based on PodSelector with MatchExpressions[Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-client-a-via-pod-selector-with-match-expressions, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod-name, operator: In, values: [client-a]}]}}]}]}`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, true),
			tcp("nsA/client-b", "nsA/server", 80, false),
		},
	}}},
	{"should enforce policy based on NamespaceSelector with MatchExpressions[Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-any-client-with-not-in-ns-selector, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns-name, operator: NotIn, values: [nsC]}]}}]}]}`,
		probes: []probe{
			tcp("nsC/client-a", "nsA/server", 80, false),
			tcp("nsB/client-a", "nsA/server", 80, true),
		},
	}}},
	{"should enforce policy based on PodSelector or NamespaceSelector [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-ns-b-client-a-via-namespace-pod-selector-or, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchLabels: {pod-name: client-b}}}, {namespaceSelector: {matchLabels: {ns-name: nsB}}}]}]}`,
		probes: []probe{
			tcp("nsB/client-a", "nsA/server", 80, true),
			tcp("nsA/client-b", "nsA/server", 80, true),
			tcp("nsA/client-c", "nsA/server", 80, false),
		},
	}}},
	{"should enforce policy based on PodSelector and NamespaceSelector [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-ns-b-client-b-via-namespace-pod-selector-and, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchLabels: {pod-name: client-b}}, namespaceSelector: {matchLabels: {ns-name: nsB}}}]}]}`,
		probes: []probe{
			tcp("nsB/client-a", "nsA/server", 80, false),
			tcp("nsA/client-b", "nsA/server", 80, false),
			tcp("nsB/client-b", "nsA/server", 80, true),
		},
	}}},
	{"should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-ns-b-client-a-via-namespace-pod-selector, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns-name: nsB}}, podSelector: {matchLabels: {pod-name: client-a}}}]}]}`,
		probes: []probe{
			tcp("nsB/client-a", "nsA/server", 80, true),
			tcp("nsA/client-a", "nsA/server", 80, false),
			tcp("nsA/client-b", "nsA/server", 80, false),
			tcp("nsB/client-b", "nsA/server", 80, false),
		},
	}}},
	{"should enforce policy based on Ports [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-ingress-on-port-81, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{ports: [{port: 81}]}]}`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, false),
			tcp("nsA/client-a", "nsA/server", 81, true),
		},
	}}},
	{"should enforce multiple, stacked policies with overlapping podSelectors [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-ingress-on-port-80, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{ports: [{port: 80}]}]}
---
metadata: {name: allow-ingress-on-port-81, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{ports: [{port: 81}]}]}`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, true),
			tcp("nsA/client-a", "nsA/server", 81, true),
			tcp("nsA/client-a", "nsA/server", 82, false),
		},
	}}},
	{"should support allow-all policy [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: `
metadata: {name: allow-all, namespace: nsA}
spec: {podSelector: {}, ingress: [{}]}`,
			probes: []probe{
				tcp("nsA/client-a", "nsA/server", 80, true),
				tcp("nsA/client-a", "nsA/server", 81, true),
			},
		},
		{
			// Negative control: the same policy without its rule.
			policies: `
metadata: {name: allow-all, namespace: nsA}
spec: {podSelector: {}, ingress: []}`,
			probes: []probe{tcp("nsA/client-a", "nsA/server", 80, false)},
		},
	}},
	{"should allow ingress access on one named port [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-client-a-via-named-port-ingress-rule, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{ports: [{port: serve-80}]}]}`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, true),
			tcp("nsA/client-a", "nsA/server", 81, false),
		},
	}}},
	{"should allow ingress access from namespace on one named port [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-client-in-ns-b-via-named-port-ingress-rule, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns-name: nsB}}}], ports: [{port: serve-80, protocol: TCP}]}]}`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, false),
			tcp("nsB/client-a", "nsA/server", 80, true),
			tcp("nsB/client-a", "nsA/server", 81, false),
		},
	}}},
	{"should allow egress access on one named port [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-client-a-via-named-port-egress-rule, namespace: nsA}
spec:
  podSelector: {matchLabels: {pod-name: client-a}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}, {ports: [{port: serve-80}]}]`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server", 80, true),
			tcp("nsA/client-a", "nsA/server", 81, false),
			tcp("nsA/client-a", "10.99.0.1", 80, false), // no pod: no named port
			dnsProbe("nsA/client-a"),
		},
	}}},
	{"should enforce updated policy [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: `
metadata: {name: allow-ingress, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchLabels: {pod-name: client-a}}}], ports: [{port: 80}]}]}`,
			probes: []probe{
				tcp("nsA/client-a", "nsA/server", 80, true),
				tcp("nsA/client-b", "nsA/server", 80, false),
				tcp("nsA/client-a", "nsA/server", 81, false),
			},
		},
		{
			policies: `
metadata: {name: allow-ingress, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchLabels: {pod-name: client-b}}}], ports: [{port: 81}]}]}`,
			probes: []probe{
				tcp("nsA/client-b", "nsA/server", 80, false),
				tcp("nsA/client-a", "nsA/server", 80, false),
				tcp("nsA/client-b", "nsA/server", 81, true),
			},
		},
	}},
	{"should allow ingress access from updated namespace [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: legacyAllowFromUpdatedNamespace,
			probes:   []probe{tcp("nsB/client-a", "nsA/server", 80, false)},
		},
		{
			policies: legacyAllowFromUpdatedNamespace,
			mutate:   func(t *testing.T, c *cluster) { c.namespace(t, "nsB").Labels["ns-name"] = "nsB-updated" },
			probes: []probe{
				tcp("nsB/client-a", "nsA/server", 80, true),
				tcp("nsA/client-a", "nsA/server", 80, false),
			},
		},
	}},
	{"should allow ingress access from updated pod [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: legacyAllowFromUpdatedPod,
			probes:   []probe{tcp("nsA/client-a", "nsA/server", 80, false)},
		},
		{
			policies: legacyAllowFromUpdatedPod,
			mutate:   func(t *testing.T, c *cluster) { c.pod(t, "nsA/client-a").Labels = map[string]string{} },
			probes: []probe{
				tcp("nsA/client-a", "nsA/server", 80, true),
				tcp("nsA/client-b", "nsA/server", 80, false),
			},
		},
	}},
	{"should deny ingress access to updated pod [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: legacyDenyIngressToUpdatedPod,
			probes:   []probe{tcp("nsA/client-a", "nsA/server", 80, true)},
		},
		{
			policies: legacyDenyIngressToUpdatedPod,
			mutate:   func(t *testing.T, c *cluster) { c.pod(t, "nsA/server").Labels["isolated"] = "true" },
			probes: []probe{
				tcp("nsA/client-a", "nsA/server", 80, false),
				tcp("nsA/client-a", "nsA/server-b", 80, true),
			},
		},
	}},
	{"should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-to-ns-b-server-a-via-namespace-selector, namespace: nsA}
spec:
  podSelector: {matchLabels: {pod-name: client-a}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 53, protocol: UDP}]
  - to: [{namespaceSelector: {matchLabels: {ns-name: nsB}}, podSelector: {matchLabels: {pod-name: ns-b-server-a}}}]`,
		probes: []probe{
			tcp("nsA/client-a", "nsB/ns-b-server-a", 80, true),
			tcp("nsA/client-a", "nsB/ns-b-server-b", 80, false),
			tcp("nsA/client-a", "nsA/server", 80, false),
			dnsProbe("nsA/client-a"),
		},
	}}},
	{"should enforce multiple ingress policies with ingress allow-all policy taking precedence [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: legacyAllowOnlyFromClientB,
			probes: []probe{
				tcp("nsA/client-a", "nsA/server", 80, false),
				tcp("nsA/client-b", "nsA/server", 80, true),
			},
		},
		{
			policies: legacyAllowOnlyFromClientB + `
---
metadata: {name: allow-all, namespace: nsA}
spec: {podSelector: {}, ingress: [{}]}`,
			probes: []probe{
				tcp("nsA/client-a", "nsA/server", 80, true),
				tcp("nsA/client-b", "nsA/server", 80, true),
			},
		},
	}},
	{"should enforce multiple egress policies with egress allow-all policy taking precedence [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: legacyAllowEgressToServer,
			probes: []probe{
				tcp("nsA/client-a", "nsA/server-b", 80, false),
				tcp("nsA/client-a", "nsA/server", 80, true),
			},
		},
		{
			policies: legacyAllowEgressToServer + `
---
metadata: {name: allow-egress-all, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: client-a}}, policyTypes: [Egress], egress: [{}]}`,
			probes: []probe{
				tcp("nsA/client-a", "nsA/server-b", 80, true),
				tcp("nsA/client-a", "nsA/server", 80, true),
			},
		},
	}},
	{"should stop enforcing policies after they are deleted [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: legacyDenyAll,
			probes:   []probe{tcp("nsA/client-a", "nsA/server", 80, false)},
		},
		{
			policies: legacyDenyAll + "\n---\n" + legacyAllowFromClientA,
			probes: []probe{
				tcp("nsA/client-a", "nsA/server", 80, true),
				tcp("nsA/client-b", "nsA/server", 80, false),
			},
		},
		{
			policies: legacyDenyAll,
			probes:   []probe{tcp("nsA/client-a", "nsA/server", 80, false)},
		},
		{
			policies: ``,
			probes:   []probe{tcp("nsA/client-a", "nsA/server", 80, true)},
		},
	}},
	{"should allow egress access to server in CIDR block [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: allow-client-a-via-cidr-egress-rule, namespace: nsA}
spec:
  podSelector: {matchLabels: {pod-name: client-a}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}, {to: [{ipBlock: {cidr: 10.10.1.1/32}}]}]`,
		probes: []probe{
			tcp("nsA/client-a", "nsA/server-b", 80, false),
			tcp("nsA/client-a", "nsA/server", 80, true),
			dnsProbe("nsA/client-a"),
		},
	}}},
	{"should enforce except clause while egress access to server in CIDR block [Feature:NetworkPolicy]", []legacyStep{
		{
			policies: ``,
			probes:   []probe{tcp("nsA/client-a", "nsA/server", 80, true)},
		},
		{
			policies: `
metadata: {name: deny-client-a-via-except-cidr-egress-rule, namespace: nsA}
spec:
  podSelector: {matchLabels: {pod-name: client-a}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}, {to: [{ipBlock: {cidr: 10.10.1.0/24, except: [10.10.1.1/32]}}]}]`,
			probes: []probe{
				tcp("nsA/client-a", "nsA/server", 80, false),
				tcp("nsA/client-a", "nsA/server-b", 80, true),
				tcp("nsA/client-a", "nsB/ns-b-server-a", 80, false),
			},
		},
	}},
	{"should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector [Feature:NetworkPolicy]", []legacyStep{{
		policies: `
metadata: {name: pod-a-egress-to-pod-b-no-ingress, namespace: nsA}
spec:
  podSelector: {matchLabels: {pod-name: pod-a}}
  policyTypes: [Ingress, Egress]
  ingress: []
  egress: [{ports: [{port: 53, protocol: UDP}]}, {to: [{podSelector: {matchLabels: {pod-name: pod-b}}}]}]`,
		probes: []probe{
			tcp("nsA/pod-a", "nsA/pod-b", 80, true),
			tcp("nsA/pod-b", "nsA/pod-a", 80, false),
			tcp("nsA/pod-a", "nsA/server", 80, false),
		},
	}}},
}

const (
	legacyAllowFromUpdatedNamespace = `
metadata: {name: allow-client-a-via-ns-selector, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns-name: nsB-updated}}}]}]}`
	legacyAllowFromUpdatedPod = `
metadata: {name: allow-pod-b-via-pod-selector, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod-name, operator: DoesNotExist}]}}]}]}`
	legacyDenyIngressToUpdatedPod = `
metadata: {name: deny-ingress-via-isolated-label-selector, namespace: nsA}
spec:
  podSelector: {matchLabels: {pod-name: server}, matchExpressions: [{key: isolated, operator: Exists}]}
  policyTypes: [Ingress]
  ingress: []`
	legacyAllowOnlyFromClientB = `
metadata: {name: allow-client-b, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchLabels: {pod-name: client-b}}}]}]}`
	legacyAllowEgressToServer = `
metadata: {name: allow-client-a-to-server, namespace: nsA}
spec:
  podSelector: {matchLabels: {pod-name: client-a}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}, {to: [{podSelector: {matchLabels: {pod-name: server}}}]}]`
	legacyDenyAll = `
metadata: {name: deny-all, namespace: nsA}
spec: {podSelector: {}, ingress: []}`
	legacyAllowFromClientA = `
metadata: {name: allow-from-client-a, namespace: nsA}
spec: {podSelector: {matchLabels: {pod-name: server}}, ingress: [{from: [{podSelector: {matchLabels: {pod-name: client-a}}}]}]}`
)

func TestUpstreamLegacy(t *testing.T) {
	if n := len(legacyTests); n != 25 {
		t.Errorf("%d legacy tests, want 25", n)
	}
	for _, tt := range legacyTests {
		t.Run(tt.name, func(t *testing.T) {
			c := legacyCluster()
			var allowed, denied int
			for i, step := range tt.steps {
				if step.mutate != nil {
					step.mutate(t, c)
				}
				w := compileCluster(t, c, parsePolicies(t, step.policies)...)
				if len(w.result.Problems) > 0 {
					t.Fatalf("step %d: problems: %v", i, w.result.Problems)
				}
				a, d := w.check(t, step.probes)
				allowed += a
				denied += d
			}
			if allowed == 0 || denied == 0 {
				t.Errorf("test checks %d allowed and %d denied probes; want both", allowed, denied)
			}
		})
	}
}
