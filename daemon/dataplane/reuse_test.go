package dataplane

import (
	"cmp"
	"net/netip"
	"slices"
	"testing"

	"github.com/podwall/podwall/daemon/policy"
)

// TestRuleChangeReusesUnchangedSets: a rule added next to a large peer set
// moves the pod to a new generation without rebuilding that set; the reused
// set still changes members in place, and a new daemon adopts the reuse as
// it is.
func TestRuleChangeReusesUnchangedSets(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	many := append(hostPrefixes(netip.MustParseAddr("10.204.16.1"), 2000), prefixes(cliV4+"/32")...)
	slices.SortFunc(many, comparePrefix)
	spec := func(peers []netip.Prefix, extra bool) Spec {
		rules := []policy.Rule{rule(policy.Peer{Prefixes: peers}, tcp(8080))}
		if extra {
			rules = append(rules, rule(from(cliV4b+"/32"), tcp(9090)))
		}
		return Spec{Pod: "test/srv", Firewall: &policy.Firewall{Ingress: isolated(rules...)}, NodeAddrs: addrs(cliV4n)}
	}
	bigSet := func(rs *Ruleset) Set {
		t.Helper()
		for _, s := range rs.Sets {
			if len(s.Members) > 1000 {
				return s
			}
		}
		t.Fatalf("no large set in force: %+v", rs.Sets)
		return Set{}
	}

	mustApply(t, m, bed.srv, spec(many, false))
	before := mustInspect(t, m, bed.srv)
	big := bigSet(before)

	ops := m.netlinkOps.Load()
	mustApply(t, m, bed.srv, spec(many, true))
	after := mustInspect(t, m, bed.srv)
	if after.Generation != before.Generation+1 {
		t.Errorf("generation %d after a rules change, want %d", after.Generation, before.Generation+1)
	}
	if got := bigSet(after); got.Name != big.Name || !slices.Equal(got.Members, many) {
		t.Errorf("the unchanged set of %d members was not reused: %s before, %s after", len(many), big.Name, got.Name)
	}
	if n := m.netlinkOps.Load() - ops; n > 20 {
		t.Errorf("a rules change next to an unchanged set of %d sent %d ipset commands, want a few (the new rule's set)", len(many), n)
	}
	expectOnlyReferencedSets(t, after)
	expect(t, bed.cli,
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), true},
		probe{"tcp", cliV4b, hostPort(srvV4, "8080"), false},
		probe{"tcp", cliV4b, hostPort(srvV4, "9090"), true},
		probe{"tcp", cliV4, hostPort(srvV4, "9090"), false},
	)

	// The reused set's members still change in place.
	fewer := slices.DeleteFunc(slices.Clone(many), func(p netip.Prefix) bool { return p == netip.MustParsePrefix(cliV4+"/32") })
	execs := m.execs.Load()
	mustApply(t, m, bed.srv, spec(fewer, true))
	if n := m.execs.Load() - execs; n != 0 {
		t.Errorf("a member change of a reused set ran %d commands, want none", n)
	}
	if got := bigSet(mustInspect(t, m, bed.srv)); got.Name != big.Name || len(got.Members) != len(fewer) {
		t.Errorf("after the member change: %s with %d members, want %s with %d", got.Name, len(got.Members), big.Name, len(fewer))
	}
	expect(t, bed.cli,
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), false},
		probe{"tcp", cliV4b, hostPort(srvV4, "9090"), true},
	)
	mustCheck(t, m, bed.srv, spec(fewer, true))

	// A new daemon finds the reuse and adopts the firewall as it is.
	fresh := newManager(t)
	mustCheck(t, fresh, bed.srv, spec(fewer, true))
	mustApply(t, fresh, bed.srv, spec(fewer, true))
	if n, ops := fresh.execs.Load(), fresh.netlinkOps.Load(); n != 4 || ops != 0 {
		t.Errorf("a new daemon's Check and Apply of the firewall in force ran %d commands and %d ipset commands, want 4 and 0 (two inspections)", n, ops)
	}
	if g := mustInspect(t, fresh, bed.srv).Generation; g != after.Generation {
		t.Errorf("adoption moved the generation from %d to %d", after.Generation, g)
	}
}

// TestRenderAs: RenderAs names the sets as a reusing generation has them in
// force; without reuse it is Render.
func TestRenderAs(t *testing.T) {
	old := render(largeSpec(50, false, false), 3)
	next := render(largeSpec(50, true, false), 4)
	alias := reuseSets(next, old.sets)
	if len(alias) == 0 {
		t.Fatal("no set of generation 4 reuses one of generation 3")
	}
	inForce := next.renamed(alias).ruleset()
	spec := largeSpec(50, true, false)
	if got, want := formatRuleset(RenderAs(spec, inForce)), formatRuleset(sortedSets(inForce)); got != want {
		t.Errorf("RenderAs:\n%s\nwant:\n%s", got, want)
	}
	plain := Render(spec, 4)
	if got := formatRuleset(RenderAs(spec, plain)); got != formatRuleset(plain) {
		t.Errorf("RenderAs without reuse:\n%s\nwant Render's:\n%s", got, formatRuleset(plain))
	}
	// A ruleset that is not the spec's under any naming: Render's.
	other := render(largeSpec(50, false, false), 4).ruleset()
	if got := formatRuleset(RenderAs(spec, other)); got != formatRuleset(plain) {
		t.Errorf("RenderAs of another firewall:\n%s\nwant Render's:\n%s", got, formatRuleset(plain))
	}
}

func sortedSets(rs *Ruleset) *Ruleset {
	slices.SortFunc(rs.Sets, func(a, b Set) int { return cmp.Compare(a.Name, b.Name) })
	return rs
}
