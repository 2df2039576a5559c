package dataplane

import (
	"testing"

	"github.com/podwall/podwall/daemon/policy"
)

// BenchmarkApply measures one Apply in a real netns: a structure change (a
// new generation: sets created over netlink, iptables-nft-restore for the
// families whose rules change, old sets destroyed), a change of set members
// only (netlink messages for the members that change), and an unchanged
// spec.
func BenchmarkApply(b *testing.B) {
	bed := newTestbed(b, false)
	both := renderCases[3].spec // "both": two chains per family, three sets
	moreRules := both
	moreRules.Firewall = &policy.Firewall{
		Ingress: isolated(append(both.Firewall.Ingress.Rules, rule(from("10.1.0.0/24"), tcp(9090)))...),
		Egress:  both.Firewall.Egress,
	}
	otherMembers := both
	otherMembers.Firewall = &policy.Firewall{
		Ingress: isolated(rule(from("10.1.0.8/32", "10.1.0.9/32"), tcp(8080))),
		Egress:  both.Firewall.Egress,
	}
	for _, bc := range []struct {
		name string
		a, b Spec
	}{
		{"structure", both, moreRules},
		{"members", both, otherMembers},
		{"unchanged", both, both},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m := newManager(b)
			mustApply(b, m, bed.srv, bc.a)
			specs := [2]Spec{bc.b, bc.a}
			i := 0
			for b.Loop() {
				mustApply(b, m, bed.srv, specs[i%2])
				i++
			}
		})
	}
}
