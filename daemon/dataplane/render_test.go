package dataplane

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podwall/podwall/daemon/policy"
	corev1 "k8s.io/api/core/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from Render's output")

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func tcp(port int32) policy.Port  { return policy.Port{Protocol: corev1.ProtocolTCP, Port: port} }
func udp(port int32) policy.Port  { return policy.Port{Protocol: corev1.ProtocolUDP, Port: port} }
func sctp(port int32) policy.Port { return policy.Port{Protocol: corev1.ProtocolSCTP, Port: port} }

func portRange(proto corev1.Protocol, from, to int32) policy.Port {
	return policy.Port{Protocol: proto, Port: from, EndPort: to}
}

func rule(peer policy.Peer, ports ...policy.Port) policy.Rule {
	return policy.Rule{Peer: peer, Ports: ports}
}

func from(ss ...string) policy.Peer { return policy.Peer{Prefixes: prefixes(ss...)} }

var anyPeer = policy.Peer{Any: true}

func isolated(rules ...policy.Rule) policy.Direction {
	return policy.Direction{Isolated: true, Policies: []string{"default/test"}, Rules: rules}
}

var nodeAddrs = addrs("10.201.0.254", "fd00:201::fe")

// renderCases are the firewalls of the golden files; the privileged tests
// also apply each of them to a real netns and compare Inspect with Render.
var renderCases = []struct {
	name string
	spec Spec
}{
	{"no-isolation", Spec{Pod: "default/open", Firewall: &policy.Firewall{}, NodeAddrs: nodeAddrs}},
	{"ingress-default-deny", Spec{Pod: "default/deny", Firewall: &policy.Firewall{Ingress: isolated()}, NodeAddrs: nodeAddrs}},
	{"egress-only", Spec{Pod: "default/client", Firewall: &policy.Firewall{
		Egress: isolated(rule(from("10.96.0.10/32"), udp(53), tcp(53)), rule(from("10.1.0.0/16"), tcp(443))),
	}, NodeAddrs: nodeAddrs}},
	{"both", Spec{Pod: "shop/api", Firewall: &policy.Firewall{
		Ingress: isolated(rule(from("10.1.0.7/32", "10.1.0.9/32"), tcp(8080))),
		Egress:  isolated(rule(from("10.1.0.20/32"), tcp(5432))),
	}, NodeAddrs: nodeAddrs}},
	{"peer-any", Spec{Pod: "default/web", Firewall: &policy.Firewall{
		Ingress: isolated(rule(anyPeer, tcp(80), tcp(443))),
		Egress:  isolated(rule(anyPeer)),
	}, NodeAddrs: nodeAddrs}},
	{"ipblock-sets", Spec{Pod: "default/db", Firewall: &policy.Firewall{
		// Rules 0 and 2 and the egress rule share one peer, hence one set.
		Ingress: isolated(
			rule(from("10.0.0.0/8", "172.16.0.0/12"), tcp(5432)),
			rule(from("192.168.0.0/16"), tcp(5432)),
			rule(from("10.0.0.0/8", "172.16.0.0/12"), tcp(9187)),
		),
		Egress: isolated(rule(from("10.0.0.0/8", "172.16.0.0/12"))),
	}, NodeAddrs: nodeAddrs}},
	{"port-ranges", Spec{Pod: "default/range", Firewall: &policy.Firewall{
		Ingress: isolated(rule(from("10.1.0.0/24"), portRange(corev1.ProtocolTCP, 8000, 8080), portRange(corev1.ProtocolUDP, 5000, 5010), portRange(corev1.ProtocolTCP, 9000, 9000))),
	}, NodeAddrs: nodeAddrs}},
	{"protocol-only", Spec{Pod: "default/proto", Firewall: &policy.Firewall{
		Ingress: isolated(rule(from("10.1.0.0/24"), tcp(0), udp(0))),
	}, NodeAddrs: nodeAddrs}},
	{"sctp", Spec{Pod: "default/sctp", Firewall: &policy.Firewall{
		Ingress: isolated(rule(from("10.1.0.0/24"), sctp(9000), portRange(corev1.ProtocolSCTP, 9100, 9200), sctp(0))),
	}, NodeAddrs: nodeAddrs}},
	{"dual-stack", Spec{Pod: "default/dual", Firewall: &policy.Firewall{
		Ingress: isolated(
			rule(from("10.1.0.7/32", "fd00:1::7/128"), tcp(80)),
			rule(from("10.1.0.8/32"), tcp(81)),
			rule(from("fd00:1::9/128"), udp(82)),
		),
		Egress: isolated(rule(from("10.1.0.7/32", "fd00:1::7/128"), tcp(8080))),
	}, NodeAddrs: nodeAddrs}},
	{"slash-zero", Spec{Pod: "default/world", Firewall: &policy.Firewall{
		Egress: isolated(rule(from("0.0.0.0/0", "::/0"), tcp(443)), rule(from("0.0.0.0/0"), udp(53))),
	}, NodeAddrs: nodeAddrs}},
	{"services", Spec{Pod: "app/client", Firewall: &policy.Firewall{
		Ingress: isolated(rule(from("10.204.1.0/24"), tcp(8080))),
		Egress: withServices(isolated(rule(from("0.0.0.0/0", "::/0"))),
			[]policy.Rule{
				rule(from("10.204.64.10/32", "10.204.64.40/31", "fd00:204::5:40/128"), tcp(80)),
				rule(from("10.204.64.53/32"), udp(53)),
				rule(from("fd00:204::5:53/128"), tcp(53)),
			},
			[]policy.Rule{
				rule(from("10.204.64.0/20", "fd00:204::5:0/112")),
				rule(from("10.204.200.60/32", "10.204.200.61/32"), tcp(443), tcp(8443)),
			}),
	}, NodeAddrs: nodeAddrs}},
	{"services-guard-only", Spec{Pod: "app/world", Firewall: &policy.Firewall{
		// An Any rule with ports: nothing allowed, the guard still needed.
		Egress: withServices(isolated(rule(anyPeer, tcp(443), udp(53))), nil,
			[]policy.Rule{rule(from("10.204.64.0/20"))}),
	}, NodeAddrs: nodeAddrs}},
}

// withServices returns d with Service rules and a guard.
func withServices(d policy.Direction, services, guard []policy.Rule) policy.Direction {
	d.Services, d.ServiceGuard = services, guard
	return d
}

// formatRuleset is the golden-file form of a Ruleset.
func formatRuleset(rs *Ruleset) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## generation %d\n## V4\n%s## V6\n%s## Sets\n", rs.Generation, rs.V4, rs.V6)
	for _, s := range rs.Sets {
		fmt.Fprintf(&b, "%s %s", s.Name, s.Family)
		for _, p := range s.Members {
			fmt.Fprintf(&b, " %s", p)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range renderCases {
		t.Run(tc.name, func(t *testing.T) {
			if err := validateSpec(tc.spec); err != nil {
				t.Fatalf("validateSpec: %v", err)
			}
			got := formatRuleset(Render(tc.spec, 7))
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Render differs from %s (run with -update to accept):\n--- got\n%s--- want\n%s", path, got, want)
			}
			if again := formatRuleset(Render(tc.spec, 7)); again != got {
				t.Errorf("Render is not deterministic")
			}
		})
	}
}

func TestRenderNoFirewall(t *testing.T) {
	for _, spec := range []Spec{
		{Pod: "a/b"},
		{Pod: "a/b", Firewall: &policy.Firewall{}, NodeAddrs: nodeAddrs},
		{Pod: "a/b", Firewall: &policy.Firewall{Ingress: policy.Direction{Rules: []policy.Rule{rule(anyPeer)}}}},
	} {
		rs := Render(spec, 3)
		if rs.V4 != "" || rs.V6 != "" || len(rs.Sets) != 0 {
			t.Errorf("Render(%+v) = %+v, want no rules and no sets", spec, rs)
		}
	}
}

func TestRenderGenerationOnlyRenamesSets(t *testing.T) {
	spec := renderCases[5].spec
	a, b := render(spec, 1), render(spec, 2)
	if a.sameStructure(b) {
		t.Fatal("different generations render the same set names")
	}
	if strings.ReplaceAll(a.texts[0], "-g1 ", "-g2 ") != b.texts[0] {
		t.Errorf("generation changed more than set names:\n%s\n%s", a.texts[0], b.texts[0])
	}
	for _, s := range b.sets {
		if len(s.Name) > 31 {
			t.Errorf("set name %q longer than 31", s.Name)
		}
	}
	long := setName(familyV6, setIDNode, ^uint32(0)) + setTempSuffix
	if len(long) > 31 || !isPodwallSet(long) {
		t.Errorf("longest set name %q: %d characters", long, len(long))
	}
	if g, ok := setGeneration(long); !ok || g != ^uint32(0) {
		t.Errorf("setGeneration(%q) = %d, %v", long, g, ok)
	}
}

func TestRenderMembersChangeKeepsStructure(t *testing.T) {
	mk := func(peer string) Spec {
		return Spec{Pod: "a/b", Firewall: &policy.Firewall{Ingress: isolated(rule(from(peer), tcp(80)))}}
	}
	a, b := render(mk("10.0.0.1/32"), 4), render(mk("10.0.0.2/32"), 4)
	if !a.sameStructure(b) || a.equal(b) {
		t.Errorf("a peer change must keep the structure and change the members")
	}
}

func TestValidateSpec(t *testing.T) {
	bad := []struct {
		name string
		port policy.Port
		peer policy.Peer
		want string
	}{
		{"protocol", policy.Port{Protocol: "ICMP", Port: 1}, anyPeer, `unsupported protocol "ICMP"`},
		{"port", tcp(70000), anyPeer, "port 70000 out of range"},
		{"negative", tcp(-1), anyPeer, "port -1 out of range"},
		{"end below", portRange(corev1.ProtocolTCP, 90, 80), anyPeer, "end port 80 below port 90"},
		{"end without port", portRange(corev1.ProtocolTCP, 0, 80), anyPeer, "end port 80 without a port"},
		{"prefix", tcp(80), policy.Peer{Prefixes: []netip.Prefix{{}}}, "invalid prefix"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			spec := Spec{Pod: "a/b", Firewall: &policy.Firewall{Egress: isolated(rule(tc.peer, tc.port))}}
			err := validateSpec(spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("validateSpec = %v, want an error containing %q", err, tc.want)
			}
			// Render must not panic and must fail closed: no ACCEPT for it.
			rs := Render(spec, 1)
			if strings.Contains(rs.V4, "egress rule 0") {
				t.Errorf("invalid rule rendered:\n%s", rs.V4)
			}
		})
	}
	if err := validateSpec(Spec{NodeAddrs: []netip.Addr{{}}}); err == nil {
		t.Errorf("invalid node address accepted")
	}
}

func TestQuoteComment(t *testing.T) {
	for in, want := range map[string]string{
		"ingress rule 0":          `"ingress rule 0"`,
		`ns/na"me ingress x`:      `"ns/na_me ingress x"`,
		"nospace":                 `"nospace "`,
		"a\nb c":                  `"a_b c"`,
		strings.Repeat("x ", 300): `"` + strings.Repeat("x ", 100) + `"`,
	} {
		if got := quoteComment(in); got != want {
			t.Errorf("quoteComment(%q) = %s, want %s", in, got, want)
		}
	}
}
