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
func renderTransition(want, cur table) string {
	if len(want.chains) == 0 && len(cur.chains) == 0 && len(cur.jumps) == 0 {
		return ""
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
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range want.chains {
		wanted[c.name] = true
		fmt.Fprintf(&b, ":%s - [0:0]\n", c.name)
	}
	for _, j := range cur.jumps {
		if !kept[j] {
			fmt.Fprintf(&b, "-D %s %s\n", j.from, j.spec)
		}
	}
	for _, w := range want.jumps {
		if !kept[w] {
			fmt.Fprintf(&b, "-I %s %d %s\n", w.from, w.pos, w.spec)
		}
	}
	for _, c := range want.chains {
		for _, r := range c.rules {
			b.WriteString(r)
			b.WriteByte('\n')
		}
	}
	var gone []string
	for _, c := range cur.chains {
		if !wanted[c.name] {
			gone = append(gone, c.name)
		}
	}
	for _, name := range gone {
		fmt.Fprintf(&b, "-F %s\n", name)
	}
	for _, name := range gone {
		fmt.Fprintf(&b, "-X %s\n", name)
	}
	b.WriteString("COMMIT\n")
	return b.String()
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
		for _, p := range prefixDiff(o, w.Members) {
			dels = append(dels, ipsetOp{cmd: ipsetCmdDel, set: w.Name, member: p})
		}
		for _, p := range prefixDiff(w.Members, o) {
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
