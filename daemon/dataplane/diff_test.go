package dataplane

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// prefixDiffs against the definition: the members of one sorted list the
// other lacks, over random lists that share most members (as a set before
// and after a peer change does) and lists that share none.
func TestPrefixDiffs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	member := func() netip.Prefix {
		if rng.IntN(4) == 0 {
			return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0x33, 15: byte(rng.IntN(256))}), 120+rng.IntN(9)).Masked()
		}
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 33, byte(rng.IntN(4)), byte(rng.IntN(256))}), 24+rng.IntN(9)).Masked()
	}
	sorted := func(ps []netip.Prefix) []netip.Prefix {
		slices.SortFunc(ps, comparePrefix)
		return slices.Compact(ps)
	}
	missing := func(a, b []netip.Prefix) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range a {
			if !slices.Contains(b, p) {
				out = append(out, p)
			}
		}
		return out
	}
	for range 500 {
		var a, b []netip.Prefix
		for range rng.IntN(60) {
			p := member()
			switch rng.IntN(5) {
			case 0:
				a = append(a, p)
			case 1:
				b = append(b, p)
			default:
				a, b = append(a, p), append(b, p)
			}
		}
		a, b = sorted(a), sorted(b)
		onlyA, onlyB := prefixDiffs(a, b)
		if want := missing(a, b); !slices.Equal(onlyA, want) {
			t.Fatalf("only in a = %v, want %v (a %v, b %v)", onlyA, want, a, b)
		}
		if want := missing(b, a); !slices.Equal(onlyB, want) {
			t.Fatalf("only in b = %v, want %v (a %v, b %v)", onlyB, want, a, b)
		}
	}
}

// canonicalRuns answers as canonicalRun does, from its cache the second
// time a list comes, and never from the entry of another list.
func TestCanonicalRunsCache(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var lists [][]netip.Prefix
	for i := range 200 {
		var l []netip.Prefix
		for j := range 64 + rng.IntN(100) {
			l = append(l, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 34, byte(j >> 8), byte(j)}), 32))
		}
		switch i % 4 {
		case 1: // out of order
			l[3], l[40] = l[40], l[3]
		case 2: // not masked
			l[10] = netip.PrefixFrom(l[10].Addr(), 24)
		case 3: // an IPv6 member in the middle
			l = slices.Insert(l, 20, netip.MustParsePrefix("fd00:34::/64"))
		}
		lists = append(lists, l)
	}
	for round := range 2 {
		for _, l := range lists {
			for _, f := range []family{familyV4, familyV6} {
				run, ok := canonicalRuns.get(f, l)
				wantRun, wantOK := canonicalRun(f, l)
				if ok != wantOK || !slices.Equal(run, wantRun) {
					t.Fatalf("round %d: canonicalRuns.get = %v, %v; canonicalRun = %v, %v", round, run, ok, wantRun, wantOK)
				}
			}
		}
	}
	// A list of the same length at another address is another entry.
	a := lists[0]
	b := slices.Clone(a)
	b[5] = netip.PrefixFrom(b[5].Addr(), 24)
	if _, ok := canonicalRuns.get(familyV4, a); !ok {
		t.Fatal("the first list is canonical")
	}
	if _, ok := canonicalRuns.get(familyV4, b); ok {
		t.Error("a list with an unmasked member at another address was taken for the cached canonical one")
	}
}

// SetMembers counts what Render's sets hold, for every rendering case and
// a large spec.
func TestSetMembers(t *testing.T) {
	specs := []Spec{largeSpec(3000, false, false)}
	for _, rc := range renderCases {
		specs = append(specs, rc.spec)
	}
	for i, spec := range specs {
		want := 0
		for _, set := range Render(spec, 0).Sets {
			want += len(set.Members)
		}
		if got := SetMembers(spec); got != want {
			t.Errorf("spec %d: SetMembers = %d, Render's sets hold %d", i, got, want)
		}
	}
}

// canonicalRuns holds at most maxRunMembers members of the lists it
// remembers: it must not keep every replaced peer list alive.
func TestCanonicalRunsBounded(t *testing.T) {
	for i := range 200 {
		l := make([]netip.Prefix, 4000)
		for j := range l {
			l[j] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 35, byte(j >> 8), byte(j)}), 32)
		}
		if _, ok := canonicalRuns.get(familyV4, l); !ok {
			t.Fatalf("list %d is canonical", i)
		}
		canonicalRuns.mu.Lock()
		n := 0
		for _, e := range canonicalRuns.entries {
			n += len(e.prefixes)
		}
		held := canonicalRuns.members
		canonicalRuns.mu.Unlock()
		if n > maxRunMembers || n != held {
			t.Fatalf("after %d lists the cache holds %d members (counted %d), at most %d", i+1, n, held, maxRunMembers)
		}
	}
}
