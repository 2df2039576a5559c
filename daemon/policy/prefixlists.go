package policy

import (
	"net/netip"
	"slices"
	"unsafe"
	"weak"
)

// prefixLists shares the prefix list of equal address sets across Compile
// calls. Within one call internSet gives equal sets one peer, and so one
// list; but each local pod keeps the firewall of the call that last changed
// it (the syncer keeps a firewall equal to the new one), and a pod's ADD or
// a peer change computes its sets afresh. At 110 local pods, 10k pods and
// 1k policies the firewalls held 272 lists, most of them equal, 13.8 MiB of
// a 33 MiB live heap (a heap profile of the control-plane bench while
// steady), until a change recompiled every pod in one call.
//
// Lists are held weakly, by a weak pointer to their first prefix: a list no
// firewall uses any more is freed, and its entry is dropped by the next
// lookup of its hash or the next sweep. The Compiler's lock guards it.
type prefixLists struct {
	byHash map[uint64][]weakPrefixes
}

// weakPrefixes is a list of n prefixes, held weakly.
type weakPrefixes struct {
	first weak.Pointer[netip.Prefix]
	n     int
}

// freed reports whether the list was freed.
func (w weakPrefixes) freed() bool { return w.first.Value() == nil }

// list returns the list, or nil once it was freed.
func (w weakPrefixes) list() []netip.Prefix {
	p := w.first.Value()
	if p == nil {
		return nil
	}
	return unsafe.Slice(p, w.n)
}

// intern returns the list equal to prefixes (whose hash is hash) that an
// earlier call interned and some firewall still uses, or prefixes itself,
// interned from then on. The caller must not modify prefixes afterwards.
func (t *prefixLists) intern(hash uint64, prefixes []netip.Prefix) []netip.Prefix {
	if len(prefixes) == 0 {
		return prefixes
	}
	if t.byHash == nil {
		t.byHash = make(map[uint64][]weakPrefixes)
	}
	bucket := slices.DeleteFunc(t.byHash[hash], weakPrefixes.freed)
	for _, w := range bucket {
		if l := w.list(); l != nil && slices.Equal(l, prefixes) {
			t.byHash[hash] = bucket
			return l
		}
	}
	t.byHash[hash] = append(bucket, weakPrefixes{first: weak.Make(&prefixes[0]), n: len(prefixes)})
	return prefixes
}

// sweep drops the entries of freed lists.
func (t *prefixLists) sweep() {
	for hash, bucket := range t.byHash {
		live := slices.DeleteFunc(bucket, weakPrefixes.freed)
		if len(live) == 0 {
			delete(t.byHash, hash)
		} else {
			t.byHash[hash] = live
		}
	}
}

// len returns the number of lists held (tests).
func (t *prefixLists) len() int {
	n := 0
	for _, bucket := range t.byHash {
		n += len(bucket)
	}
	return n
}
