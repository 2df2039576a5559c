package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// withIPSet runs fn with an ipset netlink connection in the netns at path.
func withIPSet(t *testing.T, m *Manager, path string, fn func(x *executor) error) {
	t.Helper()
	if err := m.inNetns(context.Background(), path, fn); err != nil {
		t.Fatal(err)
	}
}

// ipsetSave is what ipset(8) — a witness independent of podwall's netlink
// code — lists in the netns: "name member" lines of podwall sets, sorted,
// and the create lines.
func ipsetSave(t *testing.T, netns string) (members, creates []string) {
	t.Helper()
	for line := range strings.Lines(inNS(t, netns, "ipset", "save")) {
		w := strings.Fields(line)
		if len(w) < 3 || !isPodwallSet(w[1]) {
			continue
		}
		switch w[0] {
		case "add":
			m := w[2]
			if !strings.Contains(m, "/") {
				if a := netip.MustParseAddr(m); a.Is4() {
					m += "/32"
				} else {
					m += "/128"
				}
			}
			members = append(members, w[1]+" "+strings.Join(append([]string{m}, w[3:]...), " "))
		case "create":
			creates = append(creates, strings.Join(w[:min(len(w), 5)], " ")) // hashsize grows with the set
		}
	}
	slices.Sort(members)
	slices.Sort(creates)
	return members, creates
}

func hostPrefixes(first netip.Addr, n int) []netip.Prefix {
	out := make([]netip.Prefix, 0, n)
	for a := first; len(out) < n; a = a.Next() {
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out
}

// TestIPSetNetlinkLifecycle creates, fills, changes and destroys sets over
// netlink and checks each step with ipset(8); the sets are larger than a
// batch of messages and than one netlink dump message.
func TestIPSetNetlinkLifecycle(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, false)
	m := newManager(t)
	big := hostPrefixes(netip.MustParseAddr("10.9.0.1"), 3*ipsetBatchOps+7)
	sets := []Set{
		{Name: "pw4-0-g1", Family: "inet", Members: big},
		{Name: "pw4-1-g1", Family: "inet", Members: prefixes("10.0.0.0/8", "172.16.0.0/12")},
		{Name: "pw6-0-g1", Family: "inet6", Members: prefixes("fd00:201::/64", "fd00:202::2/128")},
	}
	withIPSet(t, m, bed.srv, func(x *executor) error {
		return x.ipsetAll(setCreationOps(sets), func(f *ipsetError) bool { return f.errno == unix.ENOENT })
	})
	members, creates := ipsetSave(t, bed.srvName)
	wantCreates := []string{
		"create pw4-0-g1 hash:net family inet",
		"create pw4-1-g1 hash:net family inet",
		"create pw6-0-g1 hash:net family inet6",
	}
	if !slices.Equal(creates, wantCreates) {
		t.Errorf("ipset save creates:\n%s\nwant:\n%s", strings.Join(creates, "\n"), strings.Join(wantCreates, "\n"))
	}
	if want := setLines(sets); !slices.Equal(members, want) {
		t.Fatalf("ipset save lists %d members, want %d (first: %q)", len(members), len(want), members[:min(3, len(members))])
	}

	// The netlink listing agrees with ipset(8).
	withIPSet(t, m, bed.srv, func(x *executor) error {
		got, err := x.listSets()
		if err != nil {
			return err
		}
		for _, s := range sets {
			g := got[s.Name]
			if g == nil || g.typ != setType || g.Family != s.Family || !slices.Equal(g.Members, s.Members) || len(g.extras) > 0 {
				return fmt.Errorf("listed %s = %+v, want %d members of family %s", s.Name, g, len(s.Members), s.Family)
			}
		}
		return nil
	})

	// Members change in place: half of the big set leaves, new ones join.
	changed := slices.Clone(sets)
	changed[0].Members = append(slices.Clone(big[len(big)/2:]), hostPrefixes(netip.MustParseAddr("10.10.0.1"), 300)...)
	changed[2].Members = prefixes("fd00:201::/64")
	ops := memberChangeOps(sets, changed)
	firstAdd, lastDel := -1, -1
	for i, op := range ops {
		if op.cmd == ipsetCmdAdd && firstAdd < 0 {
			firstAdd = i
		}
		if op.cmd == ipsetCmdDel {
			lastDel = i
		}
	}
	if firstAdd < 0 || lastDel < 0 || lastDel >= firstAdd {
		t.Errorf("member change: a removal (op %d) after an addition (op %d)", lastDel, firstAdd)
	}
	if want := len(big)/2 + 300 + 1; len(ops) != want {
		t.Errorf("member change sent %d commands, want %d (one per member changed)", len(ops), want)
	}
	withIPSet(t, m, bed.srv, func(x *executor) error { return x.ipsetAll(ops, nil) })
	if members, _ := ipsetSave(t, bed.srvName); !slices.Equal(members, setLines(changed)) {
		t.Errorf("after the member change ipset save lists %d members, want %d", len(members), len(setLines(changed)))
	}

	// Destroy: one set is referenced by a rule and stays (busy), the others go.
	inNS(t, bed.srvName, "iptables-nft", "-A", "INPUT", "-m", "set", "--match-set", "pw4-1-g1", "src", "-j", "ACCEPT")
	withIPSet(t, m, bed.srv, func(x *executor) error {
		left, err := x.destroySets([]string{"pw4-0-g1", "pw4-1-g1", "pw6-0-g1", "pw4-missing-g1"})
		var ie *ipsetError
		if !slices.Equal(left, []string{"pw4-1-g1"}) || !errors.As(err, &ie) || !ie.busy() {
			return fmt.Errorf("destroySets = %v, %v; want [pw4-1-g1] and a busy error", left, err)
		}
		return nil
	})
	if _, creates := ipsetSave(t, bed.srvName); !slices.Equal(creates, []string{"create pw4-1-g1 hash:net family inet"}) {
		t.Errorf("after destroy ipset save lists %q", creates)
	}
}

func setLines(sets []Set) []string {
	var out []string
	for _, s := range sets {
		for _, p := range s.Members {
			out = append(out, s.Name+" "+p.String())
		}
	}
	slices.Sort(out)
	return out
}

// TestIPSetNetlinkListsForeignEntries lists sets written by ipset(8) with
// options podwall never sets: they come back as extras, other sets are left
// out.
func TestIPSetNetlinkListsForeignEntries(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, false)
	m := newManager(t)
	for _, cmd := range [][]string{
		{"create", "other", "hash:ip"},
		{"add", "other", "1.1.1.1"},
		{"create", "pw4-0-g3", "hash:net", "family", "inet"},
		{"add", "pw4-0-g3", "10.201.0.2"},
		{"add", "pw4-0-g3", "10.0.0.0/8"},
		{"add", "pw4-0-g3", "10.9.0.0/16", "nomatch"},
		{"create", "pw6-node-g3", "hash:net", "family", "inet6", "timeout", "600"},
		{"add", "pw6-node-g3", "fd00:201::2", "timeout", "0"},
		{"add", "pw6-node-g3", "fd00:201::3", "timeout", "500"},
	} {
		inNS(t, bed.srvName, append([]string{"ipset"}, cmd...)...)
	}
	withIPSet(t, m, bed.srv, func(x *executor) error {
		got, err := x.listSets()
		if err != nil {
			return err
		}
		if len(got) != 2 || got["other"] != nil {
			return fmt.Errorf("listed %d sets: %v", len(got), got)
		}
		s := got["pw4-0-g3"]
		if s.Family != "inet" || s.typ != "hash:net" || !slices.Equal(s.Members, prefixes("10.0.0.0/8", "10.201.0.2/32")) || !slices.Equal(s.extras, []string{"10.9.0.0/16 nomatch"}) {
			return fmt.Errorf("pw4-0-g3 = %+v", s)
		}
		s = got["pw6-node-g3"]
		if s.Family != "inet6" || len(s.Members) != 0 || len(s.extras) != 2 || !strings.HasPrefix(s.extras[0], "fd00:201::") || !strings.Contains(s.extras[0], "timeout") {
			return fmt.Errorf("pw6-node-g3 = %+v", s)
		}
		return nil
	})
}

// TestIPSetNetlinkErrors: a failing command is reported with its line and the
// kernel's reason, and does not stop the ones after it.
func TestIPSetNetlinkErrors(t *testing.T) {
	t.Parallel()
	bed := newTestbed(t, false)
	m := newManager(t)
	withIPSet(t, m, bed.srv, func(x *executor) error {
		failures, err := x.ipset([]ipsetOp{
			{cmd: ipsetCmdAdd, set: "pw4-absent-g1", member: netip.MustParsePrefix("10.0.0.1/32")},
			{cmd: ipsetCmdCreate, set: "pw4-0-g1", family: familyV4},
			{cmd: ipsetCmdAdd, set: "pw4-0-g1", member: netip.MustParsePrefix("fd00:201::1/128")},
			{cmd: ipsetCmdAdd, set: "pw4-0-g1", member: netip.MustParsePrefix("10.0.0.1/32")},
			{cmd: ipsetCmdAdd, set: "pw4-0-g1", member: netip.MustParsePrefix("10.0.0.1/32")}, // again: no error
		})
		if err != nil {
			return err
		}
		var lines []string
		for _, f := range failures {
			lines = append(lines, f.Error())
		}
		if len(failures) != 2 || failures[0].errno != unix.ENOENT || !strings.HasPrefix(lines[0], "ipset add pw4-absent-g1 10.0.0.1/32: ") ||
			!strings.HasPrefix(lines[1], "ipset add pw4-0-g1 fd00:201::1/128: ") {
			return fmt.Errorf("failures: %q", lines)
		}
		return nil
	})
	if members, _ := ipsetSave(t, bed.srvName); !slices.Equal(members, []string{"pw4-0-g1 10.0.0.1/32"}) {
		t.Errorf("ipset save lists %q after the failing batch", members)
	}
}
