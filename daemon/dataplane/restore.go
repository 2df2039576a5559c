package dataplane

import (
	"fmt"
	"slices"
	"strings"
)

// renderTransition returns the iptables-nft-restore --noflush input that
// turns the podwall part cur of one family's filter table into want in one
// transaction; "" when both are empty. In noflush mode ":CHAIN - [0:0]"
// creates a chain or flushes an existing one, so want's chains are
// redeclared and refilled. A jump is kept only when it is already want's
// jump, at position 1, and the only jump to its chain; every other jump to a
// podwall chain is deleted and want's jumps are inserted at position 1.
// Podwall chains want does not have are flushed and deleted.
//
//	*filter
//	:PODWALL-INGRESS - [0:0]
//	-D INPUT -s 10.0.0.1/32 -j PODWALL-INGRESS      (a stray jump)
//	-I INPUT 1 -j PODWALL-INGRESS                   (only when missing)
//	-A PODWALL-INGRESS -i lo -j ACCEPT
//	...
//	-D OUTPUT -j PODWALL-EGRESS                     (egress no longer isolated)
//	-F PODWALL-EGRESS
//	-X PODWALL-EGRESS
//	COMMIT
//
// The Manager no longer runs this text: it writes the same transition,
// planned by planTransition, over nf_tables netlink (nftrules.go). The text
// stays the reference the tests compare that writer with.
func renderTransition(want, cur table) string {
	t, ok := planTransition(want, cur)
	if !ok {
		return ""
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, name := range t.declare {
		fmt.Fprintf(&b, ":%s - [0:0]\n", name)
	}
	for _, j := range t.deleteJumps {
		fmt.Fprintf(&b, "-D %s %s\n", j.from, j.spec)
	}
	for _, j := range t.insertJumps {
		fmt.Fprintf(&b, "-I %s %d %s\n", j.from, j.pos, j.spec)
	}
	for _, r := range t.rules {
		b.WriteString(r)
		b.WriteByte('\n')
	}
	for _, name := range t.gone {
		fmt.Fprintf(&b, "-F %s\n", name)
	}
	for _, name := range t.gone {
		fmt.Fprintf(&b, "-X %s\n", name)
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// transition is the change renderTransition describes, step by step, in
// the order both the text and the netlink writer perform it.
type transition struct {
	declare     []string // want's chains: created, or flushed when they exist
	deleteJumps []jump   // jumps of cur to delete, in cur's order
	insertJumps []jump   // want's jumps to insert at position 1
	rules       []string // want's rules, "-A <chain> ..." lines
	gone        []string // podwall chains of cur want does not have: flushed, then deleted
}

// planTransition plans the transition from cur to want; false when both
// are empty and there is nothing to do.
func planTransition(want, cur table) (transition, bool) {
	var t transition
	if len(want.chains) == 0 && len(cur.chains) == 0 && len(cur.jumps) == 0 {
		return t, false
	}
	jumpsTo := map[string]int{}
	for _, j := range cur.jumps {
		jumpsTo[j.to]++
	}
	kept := map[jump]bool{}
	for _, w := range want.jumps {
		if jumpsTo[w.to] == 1 && slices.Contains(cur.jumps, w) {
			kept[w] = true
		}
	}
	wanted := map[string]bool{}
	for _, c := range want.chains {
		wanted[c.name] = true
		t.declare = append(t.declare, c.name)
	}
	for _, j := range cur.jumps {
		if !kept[j] {
			t.deleteJumps = append(t.deleteJumps, j)
		}
	}
	for _, w := range want.jumps {
		if !kept[w] {
			t.insertJumps = append(t.insertJumps, w)
		}
	}
	for _, c := range want.chains {
		t.rules = append(t.rules, c.rules...)
	}
	for _, c := range cur.chains {
		if !wanted[c.name] {
			t.gone = append(t.gone, c.name)
		}
	}
	return t, true
}

// setCreationOps returns the ipset commands that create sets and fill
// them, destroying first any leftover set of the same name (a destroy of a
// missing set fails with ENOENT, which the caller ignores).
func setCreationOps(sets []Set) []ipsetOp {
	var ops []ipsetOp
	for _, s := range sets {
		ops = append(ops, ipsetOp{cmd: ipsetCmdDestroy, set: s.Name})
	}
	for _, s := range sets {
		ops = append(ops, ipsetOp{cmd: ipsetCmdCreate, set: s.Name, family: familyOfSet(s), size: len(s.Members)})
		for _, p := range s.Members {
			ops = append(ops, ipsetOp{cmd: ipsetCmdAdd, set: s.Name, member: p})
		}
	}
	return ops
}

// memberChangeOps returns the ipset commands that turn the members of the
// live sets old into those of want (the same sets by name, in the same
// order) in place: every removal before any addition, so that at no moment
// does a set hold an address that neither old nor want holds.
func memberChangeOps(old, want []Set) []ipsetOp {
	var dels, adds []ipsetOp
	for i, w := range want {
		o := old[i].Members
		if sameMembers(o, w.Members) {
			continue
		}
		gone, added := prefixDiffs(o, w.Members)
		for _, p := range gone {
			dels = append(dels, ipsetOp{cmd: ipsetCmdDel, set: w.Name, member: p})
		}
		for _, p := range added {
			adds = append(adds, ipsetOp{cmd: ipsetCmdAdd, set: w.Name, member: p})
		}
	}
	return append(dels, adds...)
}

// setDestructionOps returns the ipset commands that destroy the named sets.
func setDestructionOps(names []string) []ipsetOp {
	ops := make([]ipsetOp, 0, len(names))
	for _, name := range names {
		ops = append(ops, ipsetOp{cmd: ipsetCmdDestroy, set: name})
	}
	return ops
}

func familyOfSet(s Set) family {
	if s.Family == familyV6.setFamily() {
		return familyV6
	}
	return familyV4
}
