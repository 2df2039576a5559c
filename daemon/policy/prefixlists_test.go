package policy

import (
	"maps"
	"net/netip"
	"runtime"
	"slices"
	"testing"
)

// TestCompilerSharesEqualPeerListsAcrossCalls: a selection recomputed in a
// later call (here: a pod of its namespace gained a label no policy reads)
// yields the same prefix list as before, and the firewalls get the list the
// earlier call made, not an equal copy.
func TestCompilerSharesEqualPeerListsAcrossCalls(t *testing.T) {
	st, local := benchmarkState(1000, 100, 100, 20)
	c := NewCompiler()
	first := c.Compile(st, local)
	byContent := map[string][]netip.Prefix{}
	forEachPeerList(first, func(l []netip.Prefix) { byContent[prefixesKey(l)] = l })

	next := *st
	next.Pods = slices.Clone(st.Pods)
	for i, p := range next.Pods {
		cp := *p
		cp.Labels = maps.Clone(p.Labels)
		cp.Labels["unread"] = "yes"
		next.Pods[i] = &cp
	}
	second := c.Compile(&next, local)
	if diff := resultDiff(second, Compile(&next, local)); diff != "" {
		t.Fatal(diff)
	}
	lists, shared := 0, 0
	forEachPeerList(second, func(l []netip.Prefix) {
		lists++
		if old, ok := byContent[prefixesKey(l)]; ok {
			if !sameSlice(l, old) {
				t.Fatalf("a peer list of %d prefixes equal to one of the first call is a copy", len(l))
			}
			shared++
		}
	})
	if shared == 0 {
		t.Fatalf("none of the %d peer lists of the second call has the content of one of the first", lists)
	}
	runtime.KeepAlive(first)
}

// TestPrefixListsHoldWeakly: an interned list is returned for equal
// content while it is used, and once nothing uses it an equal list takes
// its place and the sweep drops its entry.
func TestPrefixListsHoldWeakly(t *testing.T) {
	var lists prefixLists
	mk := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range s {
			out = append(out, netip.MustParsePrefix(p))
		}
		return out
	}
	a := lists.intern(1, mk("10.0.0.1/32", "10.0.0.2/31"))
	if got := lists.intern(1, mk("10.0.0.1/32", "10.0.0.2/31")); !sameSlice(got, a) {
		t.Fatal("an equal list was not given the interned one")
	}
	if got := lists.intern(1, mk("10.0.0.1/32")); sameSlice(got, a) || len(got) != 1 {
		t.Fatalf("a different list under the same hash got %v", got)
	}
	if got := lists.intern(2, mk("10.0.0.9/32")); len(got) != 1 || got[0] != netip.MustParsePrefix("10.0.0.9/32") {
		t.Fatalf("intern(2) = %v", got)
	}
	if n := lists.len(); n != 3 {
		t.Fatalf("%d lists held, want 3", n)
	}
	runtime.KeepAlive(a)

	a = nil
	runtime.GC()
	runtime.GC()
	b := mk("10.0.0.1/32", "10.0.0.2/31")
	if got := lists.intern(1, b); !sameSlice(got, b) {
		t.Fatal("a freed list was handed out again")
	}
	lists.sweep()
	if n := lists.len(); n != 1 {
		t.Fatalf("after the sweep %d lists are held, want 1 (the one still used)", n)
	}
	runtime.KeepAlive(b)
}

// forEachPeerList calls f with every non-empty peer prefix list of res.
func forEachPeerList(res *Result, f func([]netip.Prefix)) {
	for _, fw := range res.Firewalls {
		for _, rules := range [][]Rule{fw.Ingress.Rules, fw.Egress.Rules} {
			for _, r := range rules {
				if len(r.Peer.Prefixes) > 0 {
					f(r.Peer.Prefixes)
				}
			}
		}
	}
}

// prefixesKey returns l's content as a map key.
func prefixesKey(l []netip.Prefix) string {
	b := make([]byte, 0, len(l)*18)
	for _, p := range l {
		b, _ = p.AppendBinary(b)
	}
	return string(b)
}
