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

// renderSetCreation returns "ipset -exist restore" input that creates sets
// and fills them, destroying any leftover unreferenced set of the same name
// first (with -exist, destroying a missing set is not an error).
func renderSetCreation(sets []Set) string {
	var b strings.Builder
	for _, s := range sets {
		writeSet(&b, s.Name, s)
	}
	return b.String()
}

// renderSetSwap returns "ipset -exist restore" input that replaces the
// members of live sets atomically per set: fill a temporary set, swap it
// with the live one, destroy the temporary.
func renderSetSwap(sets []Set) string {
	var b strings.Builder
	for _, s := range sets {
		writeSet(&b, s.Name+setTempSuffix, s)
	}
	for _, s := range sets {
		fmt.Fprintf(&b, "swap %s %s\n", s.Name+setTempSuffix, s.Name)
	}
	for _, s := range sets {
		fmt.Fprintf(&b, "destroy %s\n", s.Name+setTempSuffix)
	}
	return b.String()
}

// renderSetDestruction returns "ipset -exist restore" input that destroys
// the named sets (missing ones are not an error with -exist).
func renderSetDestruction(names []string) string {
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "destroy %s\n", name)
	}
	return b.String()
}

func writeSet(b *strings.Builder, name string, s Set) {
	maxelem := max(65536, len(s.Members))
	fmt.Fprintf(b, "destroy %s\n", name)
	fmt.Fprintf(b, "create %s %s family %s hashsize 64 maxelem %d\n", name, setType, s.Family, maxelem)
	for _, p := range s.Members {
		fmt.Fprintf(b, "add %s %s\n", name, p)
	}
}
