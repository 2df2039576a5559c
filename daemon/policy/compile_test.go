package policy

import (
	"fmt"
	"math/rand"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func labelsOf(kv ...string) map[string]string {
	m := make(map[string]string)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

var http80 = []ContainerPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}}

func TestCompileUnionOfPolicies(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addPod("default", "web", labelsOf("app", "web"), http80, "10.1.0.10")
	c.addPod("default", "api", labelsOf("app", "api"), nil, "10.1.0.20")
	c.addPod("default", "db", labelsOf("app", "db"), nil, "10.1.0.30")
	c.addPod("default", "other", labelsOf("app", "other"), nil, "10.1.0.40")
	// Listed out of name order: Policies must come out sorted.
	w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: allow-db, namespace: default}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 5432}]}]}
---
metadata: {name: allow-api, namespace: default}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 80}]}]}
---
metadata: {name: allow-api-https, namespace: default}
spec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 443}, {port: 80}]}]}`)...)

	want := Firewall{Ingress: Direction{
		Isolated: true,
		Policies: []string{"default/allow-api", "default/allow-api-https", "default/allow-db"},
		Rules: []Rule{
			{Peer: Peer{Prefixes: prefixes("10.1.0.20/32")}, Ports: []Port{{Protocol: "TCP", Port: 80}, {Protocol: "TCP", Port: 443}}},
			{Peer: Peer{Prefixes: prefixes("10.1.0.30/32")}, Ports: []Port{{Protocol: "TCP", Port: 5432}}},
		},
	}}
	if got := w.firewall(t, "default/web"); !reflect.DeepEqual(*got, want) {
		t.Errorf("web firewall:\n got %+v\nwant %+v", *got, want)
	}
	if got := w.firewall(t, "default/api"); got.Isolated() {
		t.Errorf("api is selected by no policy but is isolated: %+v", got)
	}
	w.check(t, []probe{
		tcp("default/api", "default/web", 80, true),
		tcp("default/api", "default/web", 443, true),
		tcp("default/api", "default/web", 5432, false),
		tcp("default/db", "default/web", 5432, true),
		tcp("default/db", "default/web", 80, false),
		tcp("default/other", "default/web", 80, false),
		tcp("default/web", "default/other", 80, true),
	})
}

func TestCompileMergesRules(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addPod("default", "web", labelsOf("app", "web"), nil, "10.1.0.10")
	c.addPod("default", "api", labelsOf("app", "api"), nil, "10.1.0.20")
	tests := []struct {
		name   string
		policy string
		want   []Rule
	}{
		{
			name: "all-ports rule subsumes numbered ports for the same peer",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - {from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 80}]}
  - {from: [{ipBlock: {cidr: 10.1.0.20/32}}]}`,
			want: []Rule{{Peer: Peer{Prefixes: prefixes("10.1.0.20/32")}}},
		},
		{
			name: "any peer with every port leaves only that rule",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - {from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 80}]}
  - {}`,
			want: []Rule{{Peer: Peer{Any: true}}},
		},
		{
			name: "any peer with ports sorts first",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - {from: [{podSelector: {matchLabels: {app: api}}}], ports: [{port: 80}]}
  - {ports: [{port: 9000, endPort: 9100}, {port: 9050}, {protocol: UDP, port: 53}, {port: 9000, endPort: 9000}]}`,
			want: []Rule{
				{Peer: Peer{Any: true}, Ports: []Port{{Protocol: "TCP", Port: 9000, EndPort: 9100}, {Protocol: "UDP", Port: 53}}},
				{Peer: Peer{Prefixes: prefixes("10.1.0.20/32")}, Ports: []Port{{Protocol: "TCP", Port: 80}}},
			},
		},
		{
			name: "protocol-wide entry covers that protocol's ports",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - {ports: [{port: 80}, {port: 80}, {port: 70, endPort: 90}, {protocol: UDP, port: 53}, {protocol: TCP}]}`,
			want: []Rule{{Peer: Peer{Any: true}, Ports: []Port{{Protocol: "TCP"}, {Protocol: "UDP", Port: 53}}}},
		},
		{
			name: "rule whose peers match no address is dropped",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: nobody}}}]}]`,
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := compileCluster(t, c, parsePolicies(t, tt.policy)...)
			got := w.firewall(t, "default/web").Ingress
			if !got.Isolated {
				t.Fatalf("web not isolated")
			}
			if !reflect.DeepEqual(got.Rules, tt.want) {
				t.Errorf("rules:\n got %+v\nwant %+v", got.Rules, tt.want)
			}
		})
	}
}

func TestCompileSelectors(t *testing.T) {
	c := &cluster{}
	c.addNamespace("prod", map[string]string{"env": "prod"})
	c.addNamespace("dev", map[string]string{"env": "dev"})
	c.addNamespace("qa", map[string]string{"env": "qa", "team": "x"})
	c.addPod("prod", "target", labelsOf("role", "target"), nil, "10.1.0.1")
	c.addPod("prod", "web", labelsOf("tier", "web", "env", "prod"), nil, "10.1.0.3")
	c.addPod("prod", "db", labelsOf("tier", "db", "env", "prod"), nil, "10.1.0.5")
	c.addPod("prod", "bare", nil, nil, "10.1.0.7")
	c.addPod("dev", "web", labelsOf("tier", "web"), nil, "10.2.0.3")
	c.addPod("dev", "db", labelsOf("tier", "db"), nil, "10.2.0.5")
	c.addPod("qa", "web", labelsOf("tier", "web"), nil, "10.3.0.3")

	tests := []struct {
		name string
		from string // the from list of the target's only ingress rule
		want []string
	}{
		{"podSelector alone is the policy's namespace", `[{podSelector: {matchLabels: {tier: web}}}]`, []string{"prod/web"}},
		{"empty podSelector is every pod of the namespace", `[{podSelector: {}}]`, []string{"prod/target", "prod/web", "prod/db", "prod/bare"}},
		{"namespaceSelector alone is every pod of matching namespaces", `[{namespaceSelector: {matchLabels: {env: dev}}}]`, []string{"dev/web", "dev/db"}},
		{"empty namespaceSelector is every pod", `[{namespaceSelector: {}}]`, []string{"prod/target", "prod/web", "prod/db", "prod/bare", "dev/web", "dev/db", "qa/web"}},
		{"both selectors are ANDed", `[{namespaceSelector: {matchLabels: {env: dev}}, podSelector: {matchLabels: {tier: web}}}]`, []string{"dev/web"}},
		{"two peers are ORed", `[{namespaceSelector: {matchLabels: {env: dev}}}, {podSelector: {matchLabels: {tier: web}}}]`, []string{"dev/web", "dev/db", "prod/web"}},
		{"In", `[{podSelector: {matchExpressions: [{key: tier, operator: In, values: [web, db]}]}}]`, []string{"prod/web", "prod/db"}},
		{"NotIn matches pods without the key", `[{podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [web]}]}}]`, []string{"prod/target", "prod/db", "prod/bare"}},
		{"Exists", `[{podSelector: {matchExpressions: [{key: env, operator: Exists}]}}]`, []string{"prod/web", "prod/db"}},
		{"DoesNotExist", `[{podSelector: {matchExpressions: [{key: env, operator: DoesNotExist}]}}]`, []string{"prod/target", "prod/bare"}},
		{"matchLabels and matchExpressions are ANDed", `[{podSelector: {matchLabels: {tier: web}, matchExpressions: [{key: env, operator: Exists}]}}]`, []string{"prod/web"}},
		{"namespace NotIn", `[{namespaceSelector: {matchExpressions: [{key: env, operator: NotIn, values: [prod, dev]}]}}]`, []string{"qa/web"}},
		{"namespace Exists", `[{namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}, podSelector: {}}]`, []string{"qa/web"}},
		{"namespace DoesNotExist", `[{namespaceSelector: {matchExpressions: [{key: team, operator: DoesNotExist}]}, podSelector: {matchLabels: {tier: db}}}]`, []string{"prod/db", "dev/db"}},
		{"metadata.name label", `[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: qa}}}]`, []string{"qa/web"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: p, namespace: prod}
spec: {podSelector: {matchLabels: {role: target}}, ingress: [{from: `+tt.from+`}]}`)...)
			var wantSet []string
			for _, key := range tt.want {
				wantSet = append(wantSet, netip.PrefixFrom(c.pod(t, key).IPs[0], 32).String())
			}
			slices.Sort(wantSet)
			got := w.firewall(t, "prod/target").Ingress
			var gotSet []string
			if len(got.Rules) == 1 {
				for _, p := range got.Rules[0].Peer.Prefixes {
					gotSet = append(gotSet, p.String())
				}
			} else {
				t.Fatalf("want 1 rule, got %+v", got.Rules)
			}
			if !slices.Equal(gotSet, wantSet) {
				t.Errorf("peers %v, want %v (%v)", gotSet, wantSet, tt.want)
			}
			// Evaluator twin: every listed pod is allowed, every other denied.
			for _, p := range c.pods {
				if p.Key() == "prod/target" {
					continue
				}
				w.check(t, []probe{tcp(p.Key(), "prod/target", 80, slices.Contains(tt.want, p.Key()))})
			}
		})
	}
}

func TestCompileIPBlock(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addPod("default", "client", labelsOf("app", "client"), nil, "172.16.0.1", "fd10::1")
	c.addPod("default", "pod-in-block", labelsOf("app", "server"), nil, "10.3.0.9")
	tests := []struct {
		name   string
		to     string
		want   []netip.Prefix
		probes []probe
	}{
		{
			name: "except is subtracted",
			to:   `[{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]`,
			want: prefixes("10.0.0.0/16", "10.2.0.0/15", "10.4.0.0/14", "10.8.0.0/13", "10.16.0.0/12", "10.32.0.0/11", "10.64.0.0/10", "10.128.0.0/9"),
			probes: []probe{
				tcp("default/client", "10.2.0.1", 80, true),
				tcp("default/client", "10.1.0.5", 80, false),
				tcp("default/client", "11.0.0.1", 80, false),
			},
		},
		{
			name: "except applies to its own cidr only",
			to:   `[{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {ipBlock: {cidr: 10.0.0.0/12}}]`,
			want: prefixes("10.0.0.0/8"),
			probes: []probe{
				tcp("default/client", "10.1.0.5", 80, true),
				tcp("default/client", "11.0.0.1", 80, false),
			},
		},
		{
			name: "overlapping peer re-adds part of an except",
			to:   `[{ipBlock: {cidr: 10.1.0.0/24}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]`,
			want: prefixes("10.0.0.0/16", "10.1.0.0/24", "10.2.0.0/15", "10.4.0.0/14", "10.8.0.0/13", "10.16.0.0/12", "10.32.0.0/11", "10.64.0.0/10", "10.128.0.0/9"),
			probes: []probe{
				tcp("default/client", "10.1.0.5", 80, true),
				tcp("default/client", "10.1.1.5", 80, false),
			},
		},
		{
			name: "ipBlock matches pod addresses",
			to:   `[{ipBlock: {cidr: 10.3.0.0/16}}]`,
			want: prefixes("10.3.0.0/16"),
			probes: []probe{
				tcp("default/client", "default/pod-in-block", 80, true),
				tcp("default/client", "10.4.0.1", 80, false),
			},
		},
		{
			name: "IPv6 with except, both families",
			to:   `[{ipBlock: {cidr: "2001:db8::/32", except: ["2001:db8:1::/48"]}}, {ipBlock: {cidr: 10.3.0.9/32}}]`,
			want: prefixes("10.3.0.9/32", "2001:db8::/48", "2001:db8:2::/47", "2001:db8:4::/46", "2001:db8:8::/45",
				"2001:db8:10::/44", "2001:db8:20::/43", "2001:db8:40::/42", "2001:db8:80::/41", "2001:db8:100::/40",
				"2001:db8:200::/39", "2001:db8:400::/38", "2001:db8:800::/37", "2001:db8:1000::/36", "2001:db8:2000::/35",
				"2001:db8:4000::/34", "2001:db8:8000::/33"),
			probes: []probe{
				tcp("default/client", "2001:db8:2::1", 80, true),
				tcp("default/client", "2001:db8:1::1", 80, false),
				tcp("default/client", "2001:db9::1", 80, false),
			},
		},
		{
			name: "host bits are masked off",
			to:   `[{ipBlock: {cidr: 10.3.4.5/16}}]`,
			want: prefixes("10.3.0.0/16"),
			probes: []probe{
				tcp("default/client", "10.3.200.1", 80, true),
				tcp("default/client", "10.2.0.1", 80, false),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: p, namespace: default}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{to: `+tt.to+`}]}`)...)
			if len(w.result.Problems) > 0 {
				t.Fatalf("problems: %v", w.result.Problems)
			}
			want := []Rule{{Peer: Peer{Prefixes: tt.want}}}
			if got := w.firewall(t, "default/client").Egress.Rules; !reflect.DeepEqual(got, want) {
				t.Errorf("rules:\n got %v\nwant %v", got, want)
			}
			w.check(t, tt.probes)
		})
	}
}

func TestCompileDualStack(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addPod("default", "server", labelsOf("app", "server"), http80, "10.1.0.10", "fd10::10")
	c.addPod("default", "client", labelsOf("app", "client"), nil, "fd10::20", "10.1.0.20") // v6 listed first
	c.addPod("default", "v6only", labelsOf("app", "client"), nil, "fd10::30")
	c.addPod("default", "other", labelsOf("app", "other"), nil, "10.1.0.40", "fd10::40")
	w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: from-clients, namespace: default}
spec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: http}]}]}
---
metadata: {name: to-server-v6, namespace: default}
spec: {podSelector: {matchLabels: {app: other}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: "fd10::/64"}}]}]}`)...)
	// IPv4 sorts before IPv6 whatever order the pods list their addresses in.
	want := []Rule{{
		Peer:  Peer{Prefixes: prefixes("10.1.0.20/32", "fd10::20/128", "fd10::30/128")},
		Ports: []Port{{Protocol: "TCP", Port: 80}},
	}}
	if got := w.firewall(t, "default/server").Ingress.Rules; !reflect.DeepEqual(got, want) {
		t.Errorf("server ingress:\n got %v\nwant %v", got, want)
	}
	w.check(t, []probe{
		tcp("default/client@4", "default/server", 80, true),
		tcp("default/client@6", "default/server@6", 80, true),
		tcp("default/v6only", "default/server@6", 80, true),
		tcp("default/other", "default/server", 80, false),
		tcp("default/other@6", "default/server@6", 80, false),
		tcp("default/client@4", "default/server", 81, false),
		// Egress of other: the IPv6 block only.
		tcp("default/other@6", "default/client@6", 81, true),
		tcp("default/other", "default/client@4", 81, false),
	})
}

func TestCompilePorts(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addPod("default", "server", labelsOf("app", "server"), []ContainerPort{
		{Name: "http", Protocol: "TCP", Port: 8080},
		{Name: "dns", Protocol: "UDP", Port: 5353},
	}, "10.1.0.10")
	c.addPod("default", "server2", labelsOf("app", "server"), []ContainerPort{
		{Name: "http", Protocol: "TCP", Port: 9090},
	}, "10.1.0.12")
	c.addPod("default", "client", nil, nil, "10.1.0.20")
	tests := []struct {
		name    string
		ports   string
		want    map[string][]Port // ingress ports of the one rule, per server; nil = no rule
		probes  []probe
		problem string
	}{
		{
			name:  "endPort range",
			ports: `[{port: 8000, endPort: 8080}]`,
			want:  map[string][]Port{"default/server": {{Protocol: "TCP", Port: 8000, EndPort: 8080}}},
			probes: []probe{
				tcp("default/client", "default/server", 8050, true),
				tcp("default/client", "default/server", 8080, true),
				tcp("default/client", "default/server", 8081, false),
				tcp("default/client", "default/server", 7999, false),
			},
		},
		{
			name:  "SCTP",
			ports: `[{port: 80, protocol: SCTP}]`,
			want:  map[string][]Port{"default/server": {{Protocol: "SCTP", Port: 80}}},
			probes: []probe{
				{from: "default/client", to: "default/server", port: 80, proto: sctp, allow: true},
				tcp("default/client", "default/server", 80, false),
			},
		},
		{
			name:  "protocol without port is every port of it",
			ports: `[{protocol: UDP}]`,
			want:  map[string][]Port{"default/server": {{Protocol: "UDP"}}},
			probes: []probe{
				{from: "default/client", to: "default/server", port: 5353, proto: udp, allow: true},
				tcp("default/client", "default/server", 5353, false),
			},
		},
		{
			name:  "nil protocol is TCP",
			ports: `[{port: 80}]`,
			want:  map[string][]Port{"default/server": {{Protocol: "TCP", Port: 80}}},
			probes: []probe{
				tcp("default/client", "default/server", 80, true),
				{from: "default/client", to: "default/server", port: 80, proto: udp, allow: false},
			},
		},
		{
			name:  "ingress named port resolves against each local pod",
			ports: `[{port: http}]`,
			want: map[string][]Port{
				"default/server":  {{Protocol: "TCP", Port: 8080}},
				"default/server2": {{Protocol: "TCP", Port: 9090}},
			},
			probes: []probe{
				tcp("default/client", "default/server", 8080, true),
				tcp("default/client", "default/server", 9090, false),
				tcp("default/client", "default/server2", 9090, true),
				tcp("default/client", "default/server2", 8080, false),
			},
		},
		{
			name:  "named port with the wrong protocol matches nothing",
			ports: `[{port: dns, protocol: TCP}]`,
			want:  map[string][]Port{"default/server": nil},
			probes: []probe{
				{from: "default/client", to: "default/server", port: 5353, proto: udp, allow: false},
				tcp("default/client", "default/server", 5353, false),
			},
		},
		{
			name:  "unresolvable named port next to a number keeps the number",
			ports: `[{port: nope}, {port: 81}]`,
			want:  map[string][]Port{"default/server": {{Protocol: "TCP", Port: 81}}},
			probes: []probe{
				tcp("default/client", "default/server", 81, true),
				tcp("default/client", "default/server", 8080, false),
			},
		},
		{
			name:    "invalid protocol matches nothing, not everything",
			ports:   `[{port: 80, protocol: ICMP}]`,
			want:    map[string][]Port{"default/server": nil},
			probes:  []probe{tcp("default/client", "default/server", 80, false)},
			problem: `spec.ingress[0].ports[0]: protocol: unsupported value "ICMP"`,
		},
		{
			name:    "endPort below port matches nothing",
			ports:   `[{port: 90, endPort: 80}, {port: 443}]`,
			want:    map[string][]Port{"default/server": {{Protocol: "TCP", Port: 443}}},
			probes:  []probe{tcp("default/client", "default/server", 85, false), tcp("default/client", "default/server", 443, true)},
			problem: "spec.ingress[0].ports[0]: endPort: 80 is less than port 90",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: p, namespace: default}
spec: {podSelector: {matchLabels: {app: server}}, ingress: [{ports: `+tt.ports+`}]}`)...)
			checkProblems(t, w.result, tt.problem)
			for key, ports := range tt.want {
				got := w.firewall(t, key).Ingress
				var want []Rule
				if ports != nil {
					want = []Rule{{Peer: Peer{Any: true}, Ports: ports}}
				}
				if !got.Isolated || !reflect.DeepEqual(got.Rules, want) {
					t.Errorf("%s ingress:\n got %+v\nwant isolated with %+v", key, got, want)
				}
			}
			w.check(t, tt.probes)
		})
	}
}

// checkProblems checks that res has exactly one problem containing want, or
// none when want is empty.
func checkProblems(t *testing.T, res *Result, want string) {
	t.Helper()
	switch {
	case want == "" && len(res.Problems) > 0:
		t.Errorf("unexpected problems: %v", res.Problems)
	case want != "" && (len(res.Problems) != 1 || !strings.Contains(res.Problems[0].Error(), want)):
		t.Errorf("problems %v, want one containing %q", res.Problems, want)
	}
}

func TestCompileNamedEgressPortPerDestination(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addNamespace("other", nil)
	httpOn := func(port int32) []ContainerPort {
		return []ContainerPort{{Name: "http", Protocol: "TCP", Port: port}, {Name: "metrics", Protocol: "TCP", Port: 9100}}
	}
	c.addPod("default", "client", labelsOf("app", "client"), nil, "10.1.0.1")
	c.addPod("default", "web1", labelsOf("app", "web"), httpOn(8080), "10.1.0.11")
	c.addPod("default", "web2", labelsOf("app", "web"), httpOn(9090), "10.1.0.12", "fd10::12")
	c.addPod("default", "web3", labelsOf("app", "web"), nil, "10.1.0.13")
	c.addPod("default", "web4", labelsOf("app", "web"), httpOn(8080), "10.1.0.14")
	c.addPod("other", "web5", labelsOf("app", "web"), httpOn(8080), "10.2.0.11")
	c.addPod("other", "udp", labelsOf("app", "web"), []ContainerPort{{Name: "http", Protocol: "UDP", Port: 8080}}, "10.2.0.13")

	tests := []struct {
		name   string
		rule   string
		want   []Rule
		probes []probe
	}{
		{
			name: "empty to: every pod of every namespace",
			rule: `{ports: [{port: http}, {port: 443}]}`,
			want: []Rule{
				{Peer: Peer{Any: true}, Ports: []Port{{Protocol: "TCP", Port: 443}}},
				{Peer: Peer{Prefixes: prefixes("10.1.0.11/32", "10.1.0.14/32", "10.2.0.11/32")}, Ports: []Port{{Protocol: "TCP", Port: 8080}}},
				{Peer: Peer{Prefixes: prefixes("10.1.0.12/32", "fd10::12/128")}, Ports: []Port{{Protocol: "TCP", Port: 9090}}},
			},
			probes: []probe{
				tcp("default/client", "default/web1", 8080, true),
				tcp("default/client", "default/web1", 9090, false),
				tcp("default/client", "default/web2", 9090, true),
				tcp("default/client", "default/web2@6", 9090, true),
				tcp("default/client", "default/web2", 8080, false),
				tcp("default/client", "default/web3", 8080, false),
				tcp("default/client", "other/web5", 8080, true),
				{from: "default/client", to: "other/udp", port: 8080, proto: udp, allow: false},
				tcp("default/client", "10.9.0.1", 8080, false),
				tcp("default/client", "10.9.0.1", 443, true),
			},
		},
		{
			name: "selector peer: the selected pods only",
			rule: `{to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: http}]}`,
			want: []Rule{
				{Peer: Peer{Prefixes: prefixes("10.1.0.11/32", "10.1.0.14/32")}, Ports: []Port{{Protocol: "TCP", Port: 8080}}},
				{Peer: Peer{Prefixes: prefixes("10.1.0.12/32", "fd10::12/128")}, Ports: []Port{{Protocol: "TCP", Port: 9090}}},
			},
			probes: []probe{
				tcp("default/client", "default/web4", 8080, true),
				tcp("default/client", "other/web5", 8080, false),
			},
		},
		{
			name: "ipBlock peer: pod addresses inside the block; numbers keep the whole block",
			rule: `{to: [{ipBlock: {cidr: 10.1.0.12/31}}], ports: [{port: http}, {port: 22}]}`,
			want: []Rule{
				{Peer: Peer{Prefixes: prefixes("10.1.0.12/31")}, Ports: []Port{{Protocol: "TCP", Port: 22}}},
				{Peer: Peer{Prefixes: prefixes("10.1.0.12/32")}, Ports: []Port{{Protocol: "TCP", Port: 9090}}},
			},
			probes: []probe{
				tcp("default/client", "default/web2", 9090, true),
				tcp("default/client", "default/web2@6", 9090, false),
				tcp("default/client", "default/web1", 8080, false),
				tcp("default/client", "default/web3", 22, true),
				tcp("default/client", "default/web3", 9090, false),
				tcp("default/client", "default/web4", 22, false),
			},
		},
		{
			name: "two named ports",
			rule: `{ports: [{port: http}, {port: metrics}]}`,
			want: []Rule{
				{Peer: Peer{Prefixes: prefixes("10.1.0.11/32", "10.1.0.12/32", "10.1.0.14/32", "10.2.0.11/32", "fd10::12/128")}, Ports: []Port{{Protocol: "TCP", Port: 9100}}},
				{Peer: Peer{Prefixes: prefixes("10.1.0.11/32", "10.1.0.14/32", "10.2.0.11/32")}, Ports: []Port{{Protocol: "TCP", Port: 8080}}},
				{Peer: Peer{Prefixes: prefixes("10.1.0.12/32", "fd10::12/128")}, Ports: []Port{{Protocol: "TCP", Port: 9090}}},
			},
			probes: []probe{
				tcp("default/client", "default/web2", 9100, true),
				tcp("default/client", "default/web3", 9100, false),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: p, namespace: default}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [`+tt.rule+`]}`)...)
			checkProblems(t, w.result, "")
			if got := w.firewall(t, "default/client").Egress.Rules; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("egress rules:\n got %v\nwant %v", got, tt.want)
			}
			w.check(t, tt.probes)
		})
	}
}

func TestCompileAddressClaims(t *testing.T) {
	const shared = "10.1.0.50"
	older := metav1.NewTime(created.Add(-time.Hour))
	tests := []struct {
		name string
		good func(p *Pod) // the pod labelled app=good, claiming shared
		bad  func(p *Pod) // the pod labelled app=bad, claiming shared
		// owner is the app that owns shared: "good", "bad" or "" for none.
		owner string
	}{
		{"running wins over pending", func(p *Pod) { p.Created = older }, func(p *Pod) { p.Phase = corev1.PodPending }, "good"},
		{"deleting loses even when running", func(p *Pod) { p.Deleting = true }, func(p *Pod) { p.Phase = corev1.PodPending }, "bad"},
		{"newest wins among running pods", func(p *Pod) {}, func(p *Pod) { p.Created = older }, "good"},
		{"succeeded pods are never peers", func(p *Pod) { p.Phase = corev1.PodSucceeded }, func(p *Pod) { p.Created = older }, "bad"},
		{"failed pods are never peers", func(p *Pod) { p.Phase = corev1.PodFailed }, func(p *Pod) { p.Phase = corev1.PodFailed }, ""},
		{"hostNetwork pods are never peers", func(p *Pod) { p.HostNetwork = true }, func(p *Pod) { p.HostNetwork = true; p.Created = older }, ""},
		{"deleting pod alone is still a peer", func(p *Pod) { p.Deleting = true }, func(p *Pod) { p.IPs = nil }, "good"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, reverse := range []bool{false, true} {
				c := &cluster{}
				c.addNamespace("default", nil)
				c.addPod("default", "server", labelsOf("app", "server"), nil, "10.1.0.1")
				good := c.addPod("default", "good", labelsOf("app", "good"), nil, shared)
				bad := c.addPod("default", "bad", labelsOf("app", "bad"), nil, shared)
				tt.good(good)
				tt.bad(bad)
				if reverse {
					slices.Reverse(c.pods)
				}
				for _, app := range []string{"good", "bad"} {
					w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: p, namespace: default}
spec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: `+app+`}}}]}]}`)...)
					rules := w.firewall(t, "default/server").Ingress.Rules
					owns := len(rules) == 1 && slices.Equal(rules[0].Peer.Prefixes, prefixes(shared+"/32"))
					if !owns && len(rules) != 0 {
						t.Fatalf("unexpected rules %v", rules)
					}
					if want := app == tt.owner; owns != want {
						t.Errorf("reverse=%v: allowing app=%s allows %s: %v, want %v", reverse, app, shared, owns, want)
					}
				}
			}
		})
	}
}

func TestCompileMissingNamespace(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	// A Namespace object without the metadata.name label: it is implied.
	c.namespaces = append(c.namespaces, &Namespace{Name: "unlabelled", Labels: map[string]string{"team": "a"}})
	c.addPod("default", "server", labelsOf("app", "server"), nil, "10.1.0.1")
	c.addPod("ghost", "client", labelsOf("app", "client"), nil, "10.9.0.1")
	c.addPod("unlabelled", "client", labelsOf("app", "client"), nil, "10.8.0.1")
	tests := []struct {
		selector string
		want     []string
	}{
		{`{matchLabels: {kubernetes.io/metadata.name: ghost}}`, []string{"ghost/client"}},
		{`{matchLabels: {kubernetes.io/metadata.name: unlabelled}}`, []string{"unlabelled/client"}},
		{`{matchLabels: {team: a}}`, []string{"unlabelled/client"}},
		{`{matchExpressions: [{key: team, operator: DoesNotExist}]}`, []string{"default/server", "ghost/client"}},
		{`{}`, []string{"default/server", "ghost/client", "unlabelled/client"}},
	}
	for _, tt := range tests {
		t.Run(tt.selector, func(t *testing.T) {
			w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: p, namespace: default}
spec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{namespaceSelector: `+tt.selector+`}]}]}`)...)
			for _, from := range []string{"ghost/client", "unlabelled/client"} {
				w.check(t, []probe{tcp(from, "default/server", 80, slices.Contains(tt.want, from))})
			}
		})
	}
}

func TestCompileInvalidInput(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addNamespace("other", nil)
	c.addPod("default", "server", labelsOf("app", "server"), nil, "10.1.0.1")
	c.addPod("default", "client", labelsOf("app", "client"), nil, "10.1.0.3")
	c.addPod("default", "stranger", labelsOf("app", "stranger"), nil, "10.1.0.5")
	c.addPod("other", "server", labelsOf("app", "server"), nil, "10.2.0.1")
	tests := []struct {
		name    string
		spec    string
		problem string
		probes  []probe
	}{
		{
			name:    "broken peer selector matches nothing; the other peer still counts",
			spec:    `{podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: Foo}]}}, {podSelector: {matchLabels: {app: client}}}]}]}`,
			problem: "networkpolicy default/p: spec.ingress[0].from[0]: podSelector:",
			probes: []probe{
				tcp("default/client", "default/server", 80, true),
				tcp("default/stranger", "default/server", 80, false),
			},
		},
		{
			name:    "In without values",
			spec:    `{podSelector: {matchLabels: {app: server}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: app, operator: In}]}}]}]}`,
			problem: "spec.ingress[0].from[0]: namespaceSelector:",
			probes: []probe{
				tcp("default/client", "default/server", 80, false),
				tcp("default/client", "other/server", 80, true),
			},
		},
		{
			name:    "bad CIDR",
			spec:    `{podSelector: {matchLabels: {app: server}}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}`,
			problem: "spec.ingress[0].from[0]: ipBlock: cidr:",
			probes: []probe{
				tcp("default/client", "default/server", 80, false),
				tcp("default/client", "other/server", 80, true),
			},
		},
		{
			name:    "bad except makes the whole block match nothing",
			spec:    `{podSelector: {matchLabels: {app: server}}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [bogus]}}]}]}`,
			problem: "spec.ingress[0].from[0]: ipBlock: except[0]:",
			probes:  []probe{tcp("default/client", "default/server", 80, false), tcp("default/server", "default/client", 80, true)},
		},
		{
			name:    "ipBlock with a selector",
			spec:    `{podSelector: {matchLabels: {app: server}}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}`,
			problem: "ipBlock may not be combined",
			probes:  []probe{tcp("default/client", "default/server", 80, false), tcp("default/server", "default/client", 80, true)},
		},
		{
			name:    "empty peer",
			spec:    `{podSelector: {matchLabels: {app: server}}, ingress: [{from: [{}]}]}`,
			problem: "must specify a peer",
			probes:  []probe{tcp("default/client", "default/server", 80, false), tcp("default/server", "default/client", 80, true)},
		},
		{
			name:    "broken podSelector isolates the whole namespace, with no rules",
			spec:    `{podSelector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}, ingress: [{}]}`,
			problem: "networkpolicy default/p: spec.podSelector:",
			probes: []probe{
				tcp("default/client", "default/server", 80, false),
				tcp("default/server", "default/client", 80, false),
				tcp("default/client", "other/server", 80, true),
			},
		},
		{
			name:    "unknown policyType falls back to the default",
			spec:    `{podSelector: {matchLabels: {app: server}}, policyTypes: [Ingres], ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]}`,
			problem: `spec.policyTypes[0]: unsupported value "Ingres"`,
			probes: []probe{
				tcp("default/client", "default/server", 80, true),
				tcp("default/stranger", "default/server", 80, false),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := compileCluster(t, c, parsePolicies(t, "metadata: {name: p, namespace: default}\nspec: "+tt.spec)...)
			checkProblems(t, w.result, tt.problem)
			in := w.firewall(t, "default/server").Ingress
			if !in.Isolated || !slices.Equal(in.Policies, []string{"default/p"}) {
				t.Errorf("server ingress not isolated by default/p: %+v", in)
			}
			w.check(t, tt.probes)
		})
	}

	t.Run("nil input", func(t *testing.T) {
		res := Compile(nil, nil)
		if len(res.Firewalls) != 0 || len(res.Problems) != 0 {
			t.Errorf("Compile(nil, nil) = %+v", res)
		}
		st := &State{Namespaces: []*Namespace{nil}, Pods: []*Pod{nil}, Policies: []*networkingv1.NetworkPolicy{nil}}
		res = Compile(st, []LocalPod{{Key: "k"}})
		if len(res.Problems) != 1 || !strings.Contains(res.Problems[0].Error(), "local pod k") {
			t.Errorf("problems %v, want one about local pod k", res.Problems)
		}
	})
}

func TestCompilePolicyTypes(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addPod("default", "server", labelsOf("app", "server"), nil, "10.1.0.1")
	c.addPod("default", "client", labelsOf("app", "client"), nil, "10.1.0.3")
	tests := []struct {
		name                    string
		spec                    string
		wantIngress, wantEgress bool
		probes                  []probe
	}{
		{
			name:        "no policyTypes and no egress rules: Ingress only",
			spec:        `{podSelector: {matchLabels: {app: server}}, ingress: []}`,
			wantIngress: true,
			probes:      []probe{tcp("default/client", "default/server", 80, false), tcp("default/server", "default/client", 80, true)},
		},
		{
			name:        "no policyTypes with egress rules: Ingress and Egress",
			spec:        `{podSelector: {matchLabels: {app: server}}, egress: [{ports: [{port: 53, protocol: UDP}]}]}`,
			wantIngress: true, wantEgress: true,
			probes: []probe{
				tcp("default/client", "default/server", 80, false),
				tcp("default/server", "default/client", 80, false),
				{from: "default/server", to: dns, port: 53, proto: udp, allow: true},
			},
		},
		{
			name:       "Egress only ignores ingress rules",
			spec:       `{podSelector: {matchLabels: {app: server}}, policyTypes: [Egress], ingress: [{from: [{podSelector: {matchLabels: {app: nobody}}}]}]}`,
			wantEgress: true,
			probes:     []probe{tcp("default/client", "default/server", 80, true), tcp("default/server", "default/client", 80, false)},
		},
		{
			name:        "Ingress only ignores egress rules",
			spec:        `{podSelector: {matchLabels: {app: server}}, policyTypes: [Ingress], egress: [{ports: [{port: 53}]}]}`,
			wantIngress: true,
			probes:      []probe{tcp("default/client", "default/server", 80, false), tcp("default/server", "default/client", 80, true)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policies := parsePolicies(t, "metadata: {name: p, namespace: default}\nspec: "+tt.spec)
			before := policies[0].DeepCopy()
			w := compileCluster(t, c, policies...)
			if !reflect.DeepEqual(before, policies[0]) {
				t.Errorf("Compile modified its input:\nbefore %+v\n after %+v", before, policies[0])
			}
			fw := w.firewall(t, "default/server")
			if fw.Ingress.Isolated != tt.wantIngress || fw.Egress.Isolated != tt.wantEgress {
				t.Errorf("isolated ingress=%v egress=%v, want %v %v", fw.Ingress.Isolated, fw.Egress.Isolated, tt.wantIngress, tt.wantEgress)
			}
			w.check(t, tt.probes)
		})
	}
}

// TestCompileSharesPeerSets checks that a rule's peer set is computed once
// and shared by every local pod its policy selects.
func TestCompileSharesPeerSets(t *testing.T) {
	c := &cluster{}
	c.addNamespace("default", nil)
	c.addPod("default", "s1", labelsOf("app", "server"), nil, "10.1.0.1")
	c.addPod("default", "s2", labelsOf("app", "server"), nil, "10.1.0.2")
	c.addPod("default", "c1", labelsOf("app", "client"), nil, "10.1.0.11")
	c.addPod("default", "c2", labelsOf("app", "client"), nil, "10.1.0.13")
	w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: p, namespace: default}
spec: {podSelector: {matchLabels: {app: server}}, ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]}`)...)
	r1 := w.firewall(t, "default/s1").Ingress.Rules
	r2 := w.firewall(t, "default/s2").Ingress.Rules
	if len(r1) != 1 || len(r2) != 1 || &r1[0].Peer.Prefixes[0] != &r2[0].Peer.Prefixes[0] {
		t.Errorf("peer sets not shared: %v %v", r1, r2)
	}
}

// TestCompileSameSelectorsInTwoNamespaces checks that sharing peer sets
// between rules keeps a podSelector without namespaceSelector to its own
// policy's namespace.
func TestCompileSameSelectorsInTwoNamespaces(t *testing.T) {
	c := &cluster{}
	for i, ns := range []string{"alpha", "beta"} {
		c.addNamespace(ns, nil)
		c.addPod(ns, "server", labelsOf("app", "server"), http80, fmt.Sprintf("10.%d.0.1", i+1))
		c.addPod(ns, "client", labelsOf("app", "client"), http80, fmt.Sprintf("10.%d.0.3", i+1))
	}
	policy := `
metadata: {name: p, namespace: %s}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
  egress: [{to: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: http}]}]`
	w := compileCluster(t, c, parsePolicies(t, fmt.Sprintf(policy, "alpha"), fmt.Sprintf(policy, "beta"))...)
	w.check(t, []probe{
		tcp("alpha/client", "alpha/server", 80, true),
		tcp("beta/client", "alpha/server", 80, false),
		tcp("beta/client", "beta/server", 80, true),
		tcp("alpha/client", "beta/server", 80, false),
		tcp("alpha/server", "alpha/client", 80, true),
		tcp("alpha/server", "beta/client", 80, false),
		tcp("beta/server", "beta/client", 80, true),
		tcp("beta/server", "alpha/client", 80, false),
	})
}

func TestCompileDeterministic(t *testing.T) {
	st, local := benchmarkState(300, 30, 60, 20)
	first := Compile(st, local)
	second := Compile(st, local)
	if !reflect.DeepEqual(first, second) {
		t.Fatal("two compiles of the same input differ")
	}
	checkInvariants(t, first)
	isolated := 0
	for _, fw := range first.Firewalls {
		if fw.Isolated() {
			isolated++
		}
	}
	if isolated == 0 {
		t.Fatal("benchmark state isolates nothing; the test proves nothing")
	}

	// Input order does not matter either.
	shuffled := &State{
		Namespaces: slices.Clone(st.Namespaces),
		Pods:       slices.Clone(st.Pods),
		Policies:   slices.Clone(st.Policies),
	}
	rng := rand.New(rand.NewSource(1))
	rng.Shuffle(len(shuffled.Pods), func(i, j int) { shuffled.Pods[i], shuffled.Pods[j] = shuffled.Pods[j], shuffled.Pods[i] })
	rng.Shuffle(len(shuffled.Policies), func(i, j int) {
		shuffled.Policies[i], shuffled.Policies[j] = shuffled.Policies[j], shuffled.Policies[i]
	})
	rng.Shuffle(len(shuffled.Namespaces), func(i, j int) {
		shuffled.Namespaces[i], shuffled.Namespaces[j] = shuffled.Namespaces[j], shuffled.Namespaces[i]
	})
	if third := Compile(shuffled, local); !reflect.DeepEqual(first, third) {
		t.Fatal("compiles of the same input in another order differ")
	}
}
