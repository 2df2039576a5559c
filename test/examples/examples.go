// Package examples holds the seed's five example NetworkPolicies, the pods
// they are shown on, and what each intends for every (client, server, port):
// the data both `make demo` and the end-to-end tests use. The seed's external
// network 14.215.0.0/16 is stood in by 203.0.113.0/24, an external host in a
// network namespace of the test bed. Pure data; no I/O.
package examples

import (
	"fmt"
	"maps"
	"slices"
)

// ExternalCIDR stands in for the seed's 14.215.0.0/16.
const ExternalCIDR = "203.0.113.0/24"

// External names the external host in probes.
const External = "external"

// Namespace is a namespace of the example cluster.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Pod is a pod of the example cluster; it serves TCP on Ports.
type Pod struct {
	Namespace string
	Name      string
	Labels    map[string]string
	Ports     []int
}

// Key is "namespace/name".
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Namespaces of the example cluster.
var Namespaces = []Namespace{
	{Name: "default"},
	{Name: "nsa"},
	{Name: "nsb", Labels: map[string]string{"app": "nsb"}},
	{Name: "nsc"},
}

// Pods of the example cluster.
var Pods = []Pod{
	{Namespace: "nsa", Name: "a1", Labels: map[string]string{"app": "a1"}, Ports: []int{80, 6379}},
	{Namespace: "nsa", Name: "a2", Labels: map[string]string{"app": "a2"}, Ports: []int{80, 6379}},
	{Namespace: "nsb", Name: "b1", Labels: map[string]string{"app": "b1"}, Ports: []int{80, 6379}},
	{Namespace: "nsc", Name: "c1", Labels: map[string]string{"app": "c1"}, Ports: []int{80, 6379}},
	{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}, Ports: []int{80, 6379}},
}

// ExternalPorts are the TCP ports the external host serves.
var ExternalPorts = []int{80, 5978}

// Endpoint is one side of a probe: a pod ("ns/name") or External.
type Endpoint struct {
	Namespace string // empty for External
	Name      string
}

func (e Endpoint) String() string {
	if e.Namespace == "" {
		return e.Name
	}
	return e.Namespace + "/" + e.Name
}

// IsExternal reports whether e is the external host.
func (e Endpoint) IsExternal() bool { return e.Namespace == "" && e.Name == External }

// Example is one of the seed's policies.
type Example struct {
	N     int
	Title string
	// Manifest is the policy as YAML (one or more documents).
	Manifest string
	// Intends says whether the policy means from to reach to on TCP port.
	Intends func(from, to Endpoint, port int) bool
}

// All returns the five examples in the seed's order.
func All() []Example {
	return []Example{
		{
			N:     1,
			Title: "pods of nsa reach each other; no other pod reaches them",
			Manifest: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: nsa-internal-only, namespace: nsa}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {}
`,
			Intends: func(from, to Endpoint, _ int) bool {
				return to.Namespace != "nsa" || from.Namespace == "nsa"
			},
		},
		{
			N:     2,
			Title: "pods of nsa are reachable by nobody",
			Manifest: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: nsa-deny-all, namespace: nsa}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`,
			Intends: func(_, to Endpoint, _ int) bool { return to.Namespace != "nsa" },
		},
		{
			N:     3,
			Title: "pods of nsa reachable only on 6379/TCP, only from namespaces labelled app=nsb",
			Manifest: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: nsa-redis-from-nsb, namespace: nsa}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector:
        matchLabels: {app: nsb}
    ports:
    - {protocol: TCP, port: 6379}
`,
			Intends: func(from, to Endpoint, port int) bool {
				return to.Namespace != "nsa" || (from.Namespace == "nsb" && port == 6379)
			},
		},
		{
			N:     4,
			Title: fmt.Sprintf("pods of nsa may reach only %s on 5978/TCP (egress allow-list; stands in for 14.215.0.0/16)", ExternalCIDR),
			Manifest: fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: nsa-egress-allow-list, namespace: nsa}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock: {cidr: %s}
    ports:
    - {protocol: TCP, port: 5978}
`, ExternalCIDR),
			Intends: func(from, to Endpoint, port int) bool {
				return from.Namespace != "nsa" || (to.IsExternal() && port == 5978)
			},
		},
		{
			N:     5,
			Title: fmt.Sprintf("pods of default reachable only on 80/TCP from %s (stands in for 14.215.0.0/16)", ExternalCIDR),
			Manifest: fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-web-from-outside, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - ipBlock: {cidr: %s}
    ports:
    - {protocol: TCP, port: 80}
`, ExternalCIDR),
			Intends: func(from, to Endpoint, port int) bool {
				return to.Namespace != "default" || (from.IsExternal() && port == 80)
			},
		},
	}
}

// ClusterManifest is the namespaces and pods of the example cluster as YAML,
// for a manifests directory. The pods are on node, so podwalld treats them as
// local and takes their addresses from CNI ADD.
func ClusterManifest(node string) string {
	var out string
	for _, ns := range Namespaces {
		out += "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: " + ns.Name + "\n"
		out += labelsYAML(ns.Labels, "  ")
	}
	for _, p := range Pods {
		out += fmt.Sprintf("---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n", p.Name, p.Namespace)
		out += labelsYAML(p.Labels, "  ")
		out += fmt.Sprintf("spec:\n  nodeName: %s\n  containers:\n  - name: server\n    image: server\n    ports:\n", node)
		for _, port := range p.Ports {
			out += fmt.Sprintf("    - {name: tcp-%d, containerPort: %d, protocol: TCP}\n", port, port)
		}
	}
	return out
}

func labelsYAML(labels map[string]string, indent string) string {
	if len(labels) == 0 {
		return ""
	}
	out := indent + "labels:\n"
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		out += fmt.Sprintf("%s  %s: %q\n", indent, k, labels[k])
	}
	return out
}
