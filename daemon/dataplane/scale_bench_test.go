package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/daemon/policy"
)

// largeSpec is the datapath benchmark's firewall with peer sets of n pod
// addresses: three ipBlock rules (ports 9090, 8080, 80) and two selector
// rules whose peers are n and n/2 non-adjacent addresses in 10.216/16.
// extra adds one more rule (a structure change); shift moves one member of
// the big set (a member-only change).
func largeSpec(n int, extra, shift bool) Spec {
	port := func(p int32) policy.Port { return policy.Port{Protocol: corev1.ProtocolTCP, Port: p} }
	addr := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 216, byte(i / 127), byte(2*(i%127) + 1)}), 32)
	}
	var all, half []netip.Prefix
	for i := range n {
		if shift && i == 0 {
			continue
		}
		all = append(all, addr(i))
		if i%2 == 0 {
			half = append(half, addr(i))
		}
	}
	if shift {
		all = append(all, addr(n))
	}
	block := func(s string) policy.Peer { return policy.Peer{Prefixes: []netip.Prefix{netip.MustParsePrefix(s)}} }
	rules := []policy.Rule{
		{Peer: block("14.215.0.0/16"), Ports: []policy.Port{port(9090)}},
		{Peer: block("14.216.0.0/16"), Ports: []policy.Port{port(8080)}},
		{Peer: block("14.217.0.0/16"), Ports: []policy.Port{port(80)}},
	}
	if n > 0 {
		rules = append(rules,
			policy.Rule{Peer: policy.Peer{Prefixes: all}, Ports: []policy.Port{port(80), port(8080)}},
			policy.Rule{Peer: policy.Peer{Prefixes: half}, Ports: []policy.Port{port(80)}})
	}
	if extra {
		rules = append(rules, policy.Rule{Peer: block("14.218.0.0/16"), Ports: []policy.Port{port(443)}})
	}
	return Spec{
		Pod:       "bench/server",
		Firewall:  &policy.Firewall{Ingress: policy.Direction{Isolated: true, Policies: []string{"bench/bench-select-all"}, Rules: rules}},
		NodeAddrs: []netip.Addr{netip.MustParseAddr("10.215.1.1")},
	}
}

// BenchmarkRenderLarge renders (pure, no I/O) the firewall of a pod whose
// peer sets hold 100, 1000 and 8000 addresses.
func BenchmarkRenderLarge(b *testing.B) {
	for _, n := range []int{100, 1000, 8000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			spec := largeSpec(n, false, false)
			b.ReportAllocs()
			for b.Loop() {
				Render(spec, 1)
			}
		})
	}
}

// BenchmarkApplyLarge applies such a firewall in a real netns (root; netns
// pw-bnmb-<random>, no interfaces): a change of one set member (a netlink
// del and add), a change of rules (a new generation: every set created and
// filled over netlink, the rules switched in one nf_tables transaction, or
// with iptables-nft-restore for path=restore), and an unchanged spec, with
// peer sets of 1000 and 8000 addresses.
func BenchmarkApplyLarge(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates a network namespace")
	}
	name := "pw-bnmb-" + randomID(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	b.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			b.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	path := "/run/netns/" + name
	for _, n := range []int{1000, 8000} {
		base := largeSpec(n, false, false)
		for _, bc := range []struct {
			name  string
			other Spec
		}{
			{"members", largeSpec(n, false, true)},
			{"structure", largeSpec(n, true, false)},
			{"unchanged", base},
		} {
			for _, p := range benchPaths {
				b.Run(fmt.Sprintf("members=%d/%s/path=%s", n, bc.name, p.name), func(b *testing.B) {
					m, err := NewManager()
					if err != nil {
						b.Fatal(err)
					}
					m.restoreRules = p.restore
					ctx := context.Background()
					specs := [2]Spec{bc.other, base}
					if err := m.Apply(ctx, path, base); err != nil {
						b.Fatal(err)
					}
					i := 0
					for b.Loop() {
						if err := m.Apply(ctx, path, specs[i%2]); err != nil {
							b.Fatal(err)
						}
						i++
					}
					if err := m.Remove(ctx, path); err != nil {
						b.Fatal(err)
					}
				})
			}
		}
	}
}
