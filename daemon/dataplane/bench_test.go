package dataplane

import (
	"fmt"
	"testing"

	"github.com/podwall/podwall/daemon/policy"
)

// BenchmarkApply measures one Apply in a real netns: a structure change (a
// new generation: sets created over netlink, the rules of the families
// that change switched in one nf_tables transaction, old sets destroyed), a
// change of set members only (netlink messages for the members that
// change), and an unchanged spec. path=netlink is the Manager as it is;
// path=restore switches rules as it used to, with one iptables-nft-restore
// process per family.
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
		for _, path := range benchPaths {
			b.Run(bc.name+"/path="+path.name, func(b *testing.B) {
				m := newManager(b)
				m.restoreRules = path.restore
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
}

// benchPaths are the two ways a Manager can switch rules.
var benchPaths = []struct {
	name    string
	restore bool
}{{"restore", true}, {"netlink", false}}

// BenchmarkFirstApply measures the CNI ADD case: the first Apply of the
// "both" firewall into a new netns without a filter table (netns
// pwnl-<random>-first, made and deleted outside the timed part).
func BenchmarkFirstApply(b *testing.B) {
	needRoot(b)
	spec := renderCases[3].spec
	for _, path := range benchPaths {
		b.Run("path="+path.name, func(b *testing.B) {
			m := newManager(b)
			m.restoreRules = path.restore
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				name := "pwnl-" + randomID(b) + "-first"
				run(b, "ip", "netns", "add", name)
				b.StartTimer()
				mustApply(b, m, "/run/netns/"+name, spec)
				b.StopTimer()
				m.Forget("/run/netns/" + name)
				run(b, "ip", "netns", "del", name)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkApplyPods measures structure changes the way a policy change
// reaches a node: one Apply per pod, over several pods (16 netns,
// pwnl-<random>-pod<i>, no links) in turn, rather than one netns over and
// over (where the kernel makes each nf_tables transaction wait for the
// deferred destruction of the previous one's rules).
func BenchmarkApplyPods(b *testing.B) {
	needRoot(b)
	id := randomID(b)
	var paths []string
	for i := range 16 {
		name := fmt.Sprintf("pwnl-%s-pod%d", id, i)
		run(b, "ip", "netns", "add", name)
		b.Cleanup(func() { run(b, "ip", "netns", "del", name) })
		paths = append(paths, "/run/netns/"+name)
	}
	both := renderCases[3].spec
	moreRules := both
	moreRules.Firewall = &policy.Firewall{
		Ingress: isolated(append(both.Firewall.Ingress.Rules, rule(from("10.1.0.0/24"), tcp(9090)))...),
		Egress:  both.Firewall.Egress,
	}
	for _, path := range benchPaths {
		b.Run("structure/path="+path.name, func(b *testing.B) {
			m := newManager(b)
			m.restoreRules = path.restore
			for _, p := range paths {
				mustApply(b, m, p, both)
			}
			specs := [2]Spec{moreRules, both}
			i := 0
			for b.Loop() {
				mustApply(b, m, paths[i%len(paths)], specs[(i/len(paths))%2])
				i++
			}
		})
	}
}
