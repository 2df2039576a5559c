package dataplane

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/podwall/podwall/daemon/policy"
)

// The oracle: the nf_tables writer must leave exactly what
// iptables-nft-restore --noflush leaves for the same transition text.

// oracleBed is a pair of empty netns, pwnl-<random>-r (the transition goes
// through iptables-nft-restore) and pwnl-<random>-n (through the writer).
type oracleBed struct {
	names [2]string // restore, netlink
}

func newOracleBed(t *testing.T) *oracleBed {
	t.Helper()
	needRoot(t)
	id := randomID(t)
	bed := &oracleBed{names: [2]string{"pwnl-" + id + "-r", "pwnl-" + id + "-n"}}
	for _, name := range bed.names {
		run(t, "ip", "netns", "add", name)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
				t.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		})
	}
	return bed
}

func (bed *oracleBed) path(i int) string { return "/run/netns/" + bed.names[i] }

// restoreText runs iptables-nft-restore --noflush (ip6tables-nft-restore
// for v6) with in in the named netns.
func restoreText(t *testing.T, netns string, f family, in string) {
	t.Helper()
	if in == "" {
		return
	}
	bin := "iptables-nft-restore"
	if f == familyV6 {
		bin = "ip6tables-nft-restore"
	}
	cmd := exec.Command("ip", "netns", "exec", netns, bin, "--noflush")
	cmd.Stdin = strings.NewReader(in)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s in %s: %v: %s\ninput:\n%s", bin, netns, err, out, in)
	}
}

// saveFilter is iptables-nft-save -t filter of both families without the
// comment lines.
func saveFilter(t *testing.T, netns string) string {
	t.Helper()
	var b strings.Builder
	for _, bin := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
		fmt.Fprintf(&b, "## %s\n", bin)
		for l := range strings.Lines(inNS(t, netns, bin, "-t", "filter")) {
			if !strings.HasPrefix(l, "#") {
				b.WriteString(l)
			}
		}
	}
	return b.String()
}

// kernelFilter is both families' filter tables as the kernel dumps them,
// without handles, use counts and counter values: table attributes, chain
// attributes, and each rule's chain, expressions, compat and userdata in
// order.
func kernelFilter(t *testing.T, m *Manager, path string) string {
	t.Helper()
	var b strings.Builder
	withIPSet(t, m, path, func(x *executor) error {
		c, err := x.ipsetConn()
		if err != nil {
			return err
		}
		for _, f := range families {
			err := c.dumpNft(f, nftMsgGetTable, "", func(a map[uint16][]byte) error {
				fmt.Fprintf(&b, "%s table %s\n", f, dumpAttrs(a, nftaTableName, nftaTableFlags, 6 /* userdata */))
				return nil
			})
			if err != nil {
				return err
			}
			chains, err := c.nftChains(f)
			if err != nil {
				return err
			}
			for _, ch := range chains {
				fmt.Fprintf(&b, "%s chain %s\n", f, dumpAttrs(ch.attrs, nftaChainTable, nftaChainName, nftaChainHook, nftaChainPolicy, nftaChainType, 8, 10, 12))
			}
			rules, err := c.nftRules(f, "")
			if err != nil {
				return err
			}
			for _, r := range rules {
				fmt.Fprintf(&b, "%s rule %s compat=%x userdata=%x\n", f, r.chain, r.compat, r.userdata)
				for _, e := range parseAttrList(r.exprs) {
					ea := parseAttrs(e.data)
					name := cString(ea[nftaExprName])
					data := ea[nftaExprData]
					if name == "counter" {
						data = nil // its values count packets
					}
					fmt.Fprintf(&b, "  %s %x\n", name, data)
				}
			}
		}
		return nil
	})
	return b.String()
}

func dumpAttrs(a map[uint16][]byte, types ...uint16) string {
	var parts []string
	for _, typ := range types {
		if v, ok := a[typ]; ok {
			parts = append(parts, fmt.Sprintf("%d=%x", typ, v))
		}
	}
	return strings.Join(parts, " ")
}

// createSets creates the sets in the named netns with ipset(8), in order,
// so that both netns give them the same kernel indexes.
func createSets(t *testing.T, netns string, sets []Set) {
	t.Helper()
	for _, s := range sets {
		inNS(t, netns, "ipset", "create", s.Name, "hash:net", "family", s.Family)
	}
}

// oracleCase is one transition: from the rules of cur (gen 1) plus extra
// iptables-restore lines, to want (gen 2).
type oracleCase struct {
	name      string
	cur, want Spec
	noCur     bool      // no filter table before (nothing of cur applied)
	extra     [2]string // lines restored after cur, per family, e.g. stray jumps
}

func specByName(t *testing.T, name string) Spec {
	t.Helper()
	for _, tc := range renderCases {
		if tc.name == name {
			return tc.spec
		}
	}
	t.Fatalf("no render case %q", name)
	return Spec{}
}

func oracleCases(t *testing.T) []oracleCase {
	var cases []oracleCase
	for i, tc := range renderCases {
		cases = append(cases, oracleCase{name: "new netns to " + tc.name, want: tc.spec, noCur: true})
		next := renderCases[(i+1)%len(renderCases)]
		cases = append(cases, oracleCase{name: tc.name + " to " + next.name, cur: tc.spec, want: next.spec})
		cases = append(cases, oracleCase{name: tc.name + " removed", cur: tc.spec, want: Spec{Pod: tc.spec.Pod}})
		cases = append(cases, oracleCase{name: tc.name + " again", cur: tc.spec, want: tc.spec})
	}
	both, egressOnly, deny := specByName(t, "both"), specByName(t, "egress-only"), specByName(t, "ingress-default-deny")
	stray := "-I INPUT -s 10.219.0.1/32 -j PODWALL-INGRESS\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j PODWALL-INGRESS\n-A OUTPUT -j PODWALL-EGRESS\n"
	stray6 := "-A INPUT -s fd00:219::1/128 -j PODWALL-INGRESS\n-I OUTPUT -j PODWALL-EGRESS\n"
	cases = append(cases,
		oracleCase{name: "both to egress-only (ingress no longer isolated)", cur: both, want: egressOnly},
		oracleCase{name: "deny to both (OUTPUT chain missing)", cur: deny, want: both},
		oracleCase{name: "stray jumps to both", cur: both, want: both, extra: [2]string{stray, stray6}},
		oracleCase{name: "stray jumps to ingress only", cur: both, want: deny, extra: [2]string{stray, stray6}},
		oracleCase{name: "stray jumps removed", cur: both, want: Spec{Pod: "x/y"}, extra: [2]string{stray, stray6}},
		oracleCase{name: "foreign rules, new chains", cur: Spec{Pod: "x/y"}, want: both,
			extra: [2]string{"-A INPUT -p tcp --dport 22 -j ACCEPT\n-A FORWARD -j DROP\n", "-A OUTPUT -p udp --dport 53 -j ACCEPT\n"}},
		oracleCase{name: "unknown podwall chain removed", cur: deny, want: egressOnly,
			extra: [2]string{":PODWALL-OLD - [0:0]\n-A PODWALL-OLD -j DROP\n-A FORWARD -j PODWALL-OLD\n", ""}},
	)
	return cases
}

// TestNftWriterMatchesRestore applies each transition through
// iptables-nft-restore in one netns and through the netlink writer in
// another, and requires the same iptables-nft-save output and the same
// rules in the kernel.
func TestNftWriterMatchesRestore(t *testing.T) {
	m := newManager(t)
	for _, tc := range oracleCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bed := newOracleBed(t)
			cur, want := render(tc.cur, 1), render(tc.want, 2)
			for _, netns := range bed.names {
				createSets(t, netns, cur.sets)
				createSets(t, netns, want.sets)
				if tc.noCur {
					continue
				}
				for _, f := range families {
					restoreText(t, netns, f, cur.texts[f])
					if tc.extra[f] != "" {
						restoreText(t, netns, f, "*filter\n"+tc.extra[f]+"COMMIT\n")
					}
				}
			}
			before := saveFilter(t, bed.names[0])
			if got := saveFilter(t, bed.names[1]); got != before {
				t.Fatalf("the two netns differ before the transition:\n%s\n%s", before, got)
			}
			// What is in force, as the Manager reads it.
			var inForce [2]table
			withIPSet(t, m, bed.path(0), func(x *executor) error {
				got, err := x.inspect()
				if err == nil {
					inForce = got.tables
				}
				return err
			})
			for _, f := range families {
				restoreText(t, bed.names[0], f, renderTransition(want.tables[f], inForce[f]))
			}
			withIPSet(t, m, bed.path(1), func(x *executor) error {
				return x.writeTransitions(want.tables, inForce, [2]bool{true, true})
			})
			viaRestore, viaNetlink := saveFilter(t, bed.names[0]), saveFilter(t, bed.names[1])
			if viaRestore != viaNetlink {
				t.Errorf("iptables-nft-save differs\n--- via iptables-nft-restore\n%s--- via netlink\n%s", viaRestore, viaNetlink)
			}
			kr, kn := kernelFilter(t, m, bed.path(0)), kernelFilter(t, m, bed.path(1))
			if kr != kn {
				t.Errorf("kernel rules differ\n--- via iptables-nft-restore\n%s--- via netlink\n%s", kr, kn)
			}
			// And the result is what Render wants.
			withIPSet(t, m, bed.path(1), func(x *executor) error {
				got, err := x.inspect()
				if err != nil {
					return err
				}
				for _, f := range families {
					if g := got.tables[f].text(); g != want.texts[f] {
						t.Errorf("%s after the transition:\n%s\nwant:\n%s", f, g, want.texts[f])
					}
				}
				return nil
			})
		})
	}
}

// TestNftWriterErrorsChangeNothing: a rule the kernel refuses (an xt set
// match naming a set index that does not exist) fails the whole batch,
// both families, with an error naming that rule; a rule naming a set that
// does not exist fails before anything is sent. The old rules stay.
func TestNftWriterErrorsChangeNothing(t *testing.T) {
	bed := newOracleBed(t)
	m := newManager(t)
	netns := bed.names[1]
	old, next := render(specByName(t, "both"), 1), render(specByName(t, "dual-stack"), 2)
	createSets(t, netns, old.sets)
	for _, f := range families {
		restoreText(t, netns, f, old.texts[f])
	}
	before, kbefore := saveFilter(t, netns), kernelFilter(t, m, bed.path(1))

	// The sets of next do not exist.
	var err error
	withIPSet(t, m, bed.path(1), func(x *executor) error {
		err = x.writeTransitions(next.tables, old.tables, [2]bool{true, true})
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "-g2 does not exist") {
		t.Errorf("writeTransitions with missing sets = %v, want an error naming a missing set", err)
	}

	// The kernel refuses a set index: the v6 rules come after the v4 ones
	// in the batch, so v4's changes must be undone too.
	createSets(t, netns, next.sets)
	withIPSet(t, m, bed.path(1), func(x *executor) error {
		c, cerr := x.ipsetConn()
		if cerr != nil {
			return cerr
		}
		indexes := map[string]uint16{}
		for _, f := range families {
			plan, _ := planTransition(next.tables[f], old.tables[f])
			if cerr := c.setIndexes(plan.rules, indexes); cerr != nil {
				return cerr
			}
		}
		indexes["pw6-0-g2"] = 0xfff0 // no such set
		b := newNftBatch(c)
		for _, f := range families {
			plan, _ := planTransition(next.tables[f], old.tables[f])
			st := nftFamilyState{table: true, chains: map[string]bool{"INPUT": true, "OUTPUT": true, chainIngress: true, chainEgress: true}}
			handles, herr := x.jumpHandles(c, f, old.tables[f], plan.deleteJumps)
			if herr != nil {
				return herr
			}
			if aerr := b.addTransition(f, &plan, &st, handles, indexes); aerr != nil {
				return aerr
			}
		}
		err = b.commit()
		return nil
	})
	const failing = `v6: -A PODWALL-INGRESS -p tcp -m set --match-set pw6-0-g2 src -m tcp --dport 80 -m comment --comment "ingress rule 0" -j ACCEPT`
	if err == nil || !strings.Contains(err.Error(), failing) || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("commit with a bad set index = %v, want an error naming %q", err, failing)
	} else {
		t.Logf("error: %v", err)
	}
	if after := saveFilter(t, netns); after != before {
		t.Errorf("rules changed by failed batches:\n--- before\n%s--- after\n%s", before, after)
	}
	if after := kernelFilter(t, m, bed.path(1)); after != kbefore {
		t.Errorf("kernel rules changed by failed batches")
	}

	// Unsupported rule text never reaches the kernel.
	bad := table{chains: []chain{{name: chainIngress, rules: []string{"-A PODWALL-INGRESS -m recent --rcheck -j DROP"}}}}
	withIPSet(t, m, bed.path(1), func(x *executor) error {
		err = x.writeTransitions([2]table{bad, bad}, old.tables, [2]bool{true, true})
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), `unsupported match "recent"`) {
		t.Errorf("unsupported rule: %v", err)
	}
	if after := saveFilter(t, netns); after != before {
		t.Errorf("rules changed by a refused transition")
	}
}

// TestApplyWritesNoProcesses: a first Apply, a structure change and Remove
// start no iptables-nft-restore: each is one nf_tables transaction, and
// only Remove's inspection runs iptables-nft-save (one per family).
func TestApplyWritesNoProcesses(t *testing.T) {
	bed := newTestbed(t, true)
	m := newManager(t)
	ctx := context.Background()
	a := ingressSpec(cliV4 + "/32")
	if err := m.Apply(ctx, bed.srv, a); err != nil {
		t.Fatal(err)
	}
	b := a
	b.Firewall = &policy.Firewall{Ingress: a.Firewall.Ingress, Egress: isolated(rule(anyPeer, tcp(8080)))}
	if err := m.Apply(ctx, bed.srv, b); err != nil {
		t.Fatal(err)
	}
	if err := m.Remove(ctx, bed.srv); err != nil {
		t.Fatal(err)
	}
	// Remove inspects with iptables-nft-save (two processes); nothing else runs.
	if n := m.execs.Load(); n != 2 {
		t.Errorf("apply, change, remove ran %d commands, want 2 (Remove's iptables-nft-save)", n)
	}
	if n := m.nftBatches.Load(); n != 3 {
		t.Errorf("%d nf_tables transactions, want 3", n)
	}
	if objs := podwallObjects(t, bed.srvName); len(objs) > 0 {
		t.Errorf("left after Remove: %q", objs)
	}
}
