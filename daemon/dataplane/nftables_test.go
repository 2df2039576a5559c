package dataplane

import (
	"fmt"
	"testing"
)

// TestFilterTables: a new netns has no filter table; iptables-nft and
// ip6tables-nft each create their family's, and another table (raw)
// does not count.
func TestFilterTables(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, false)
	m := newManager(t)
	expectTables := func(want [2]bool) {
		t.Helper()
		withIPSet(t, m, bed.srv, func(x *executor) error {
			c, err := x.ipsetConn()
			if err != nil {
				return err
			}
			got, err := c.filterTables()
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("filterTables = %v, want %v", got, want)
			}
			return nil
		})
	}
	expectTables([2]bool{false, false})
	inNS(t, bed.srvName, "iptables-nft", "-t", "raw", "-A", "PREROUTING", "-j", "ACCEPT")
	expectTables([2]bool{false, false})
	inNS(t, bed.srvName, "iptables-nft", "-A", "INPUT", "-j", "ACCEPT")
	expectTables([2]bool{true, false})
	inNS(t, bed.srvName, "ip6tables-nft", "-A", "INPUT", "-j", "ACCEPT")
	expectTables([2]bool{true, true})
}

// TestFirstApplyInNewNetns: a netns without filter tables is known empty
// without running iptables-nft-save; the first Apply runs no command at
// all: its rules go in one nf_tables transaction.
func TestFirstApplyInNewNetns(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, true)
	m := newManager(t)
	mustApply(t, m, bed.srv, ingressSpec(cliV4+"/32"))
	if n, b := m.execs.Load(), m.nftBatches.Load(); n != 0 || b != 1 {
		t.Errorf("the first apply in a new netns ran %d commands and %d nf_tables transactions, want 0 and 1", n, b)
	}
	expect(t, bed.cli,
		probe{"tcp", cliV4, hostPort(srvV4, "8080"), true},
		probe{"tcp", cliV4b, hostPort(srvV4, "8080"), false},
	)
}
