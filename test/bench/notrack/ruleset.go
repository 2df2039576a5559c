package notrack

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/podwall/podwall/daemon/dataplane"
)

// Variant is one way of firewalling a pod that the experiment compares. All
// but None judge the same policy with the same ipsets.
type Variant string

// The variants. The letters are the brief's.
const (
	// None (a): no rules, no sets, no conntrack in the pod.
	None Variant = "none"
	// Podwall (b): dataplane.Render's ruleset as is: every direction's
	// second rule accepts RELATED,ESTABLISHED, so every packet is tracked.
	Podwall Variant = "podwall"
	// NoTrack (c): the raw table marks TCP untracked; in each podwall chain
	// a TCP segment that is not a pure SYN is accepted first, so only pure
	// SYNs reach the policy's rules; UDP, SCTP and ICMP keep the conntrack
	// rule; ICMP errors that quote a TCP header are accepted (conntrack
	// cannot relate them to an untracked connection).
	NoTrack Variant = "notrack"
	// NoConntrack (d): NoTrack without the raw table and without the
	// conntrack rule: no conntrack at all, for a pod that only talks TCP
	// (its UDP replies are dropped).
	NoConntrack Variant = "no-conntrack"
	// NoTrackSocket (e): NoTrack whose ingress chain accepts a non-SYN
	// segment early only when it belongs to a socket of the pod (xt_socket,
	// listeners bound to the wildcard address excluded); the others fall
	// through to the policy's rules. Egress is NoTrack's (xt_socket only
	// works on the receive path).
	NoTrackSocket Variant = "notrack-socket"
	// NoTrackNoICMP is NoTrack without its ICMP error rules: the denied
	// twin of the check that path MTU discovery still works.
	NoTrackNoICMP Variant = "notrack-no-icmp"
)

// Variants lists every variant, in the brief's order.
var Variants = []Variant{None, Podwall, NoTrack, NoConntrack, NoTrackSocket, NoTrackNoICMP}

// Ruleset is a variant's firewall of one pod, ready to load into a netns
// that holds no rules and no sets.
type Ruleset struct {
	Variant Variant
	// V4 and V6 are iptables-restore input for --noflush (filter, and for
	// the untracked variants raw); "" loads nothing.
	V4, V6 string
	// Sets are the ipsets the rules match, as dataplane.Render made them.
	Sets []dataplane.Set
}

// icmpErrorMatch selects, per family, the ICMP errors the untracked variants
// accept: destination unreachable (fragmentation needed among them), time
// exceeded and parameter problem (ICMPv6: also packet too big) whose quoted
// packet is TCP. u32 reads the protocol of the quoted header: IPv4 at the
// outer header's length + 8 (ICMP header) + 9; IPv6 at 40 + 8 + 6 (an outer
// or quoted IPv6 header with extension headers is not recognised).
var icmpErrorMatch = [2][]string{
	{
		`-p icmp -m icmp --icmp-type 3 -m u32 --u32 "0>>22&0x3C@17>>24=6"`,
		`-p icmp -m icmp --icmp-type 11 -m u32 --u32 "0>>22&0x3C@17>>24=6"`,
		`-p icmp -m icmp --icmp-type 12 -m u32 --u32 "0>>22&0x3C@17>>24=6"`,
	},
	{
		`-p ipv6-icmp -m icmp6 --icmpv6-type 1 -m u32 --u32 "52>>8&0xFF=6"`,
		`-p ipv6-icmp -m icmp6 --icmpv6-type 2 -m u32 --u32 "52>>8&0xFF=6"`,
		`-p ipv6-icmp -m icmp6 --icmpv6-type 3 -m u32 --u32 "52>>8&0xFF=6"`,
		`-p ipv6-icmp -m icmp6 --icmpv6-type 4 -m u32 --u32 "52>>8&0xFF=6"`,
	},
}

// The pieces of the rewrite. A pure SYN is what `--syn` means: SYN set and
// ACK, RST and FIN clear (URG, PSH, ECE, CWR ignored, so an ECN SYN is a
// SYN). Linux opens a connection at a listener only for such a segment; a
// SYN-ACK (the reply to the pod's own connection) has ACK set and so is not
// one.
const (
	conntrackMatch = "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
	notSyn         = "-p tcp ! --syn -j ACCEPT"
	notSynSocket   = "-p tcp ! --syn -m socket -j ACCEPT"
	rawNoTrack     = "*raw\n-A PREROUTING -p tcp -j CT --notrack\n-A OUTPUT -p tcp -j CT --notrack\nCOMMIT\n"
	ingressChain   = "PODWALL-INGRESS"
)

// RenderVariant renders spec with dataplane.Render and rewrites the result
// into variant v. It fails when Render's output no longer has the shape the
// rewrite relies on (one conntrack rule per podwall chain).
func RenderVariant(v Variant, spec dataplane.Spec, gen uint32) (*Ruleset, error) {
	if !slices.Contains(Variants, v) {
		return nil, fmt.Errorf("render variant %q: unknown variant", v)
	}
	rs := &Ruleset{Variant: v}
	if v == None {
		return rs, nil
	}
	base := dataplane.Render(spec, gen)
	rs.Sets = base.Sets
	for f, text := range []string{base.V4, base.V6} {
		out, err := rewrite(v, f, text)
		if err != nil {
			return nil, fmt.Errorf("render variant %s of %s: %w", v, spec.Pod, err)
		}
		if f == 0 {
			rs.V4 = out
		} else {
			rs.V6 = out
		}
	}
	return rs, nil
}

// rewrite turns one family's iptables-restore text from dataplane.Render into
// variant v's. f is 0 for IPv4, 1 for IPv6.
func rewrite(v Variant, f int, text string) (string, error) {
	if text == "" || v == Podwall {
		return text, nil
	}
	var b strings.Builder
	chains := 0
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		chain, ok := conntrackRuleChain(line)
		if !ok {
			b.WriteString(line + "\n")
			continue
		}
		chains++
		add := func(rule string) { b.WriteString("-A " + chain + " " + rule + "\n") }
		if v == NoTrackSocket && chain == ingressChain {
			add(notSynSocket)
		} else {
			add(notSyn)
		}
		if v != NoConntrack {
			add(conntrackMatch)
		}
		if v != NoTrackNoICMP {
			for _, m := range icmpErrorMatch[f] {
				add(m + " -j ACCEPT")
			}
		}
	}
	if chains == 0 {
		return "", fmt.Errorf("no %q rule in the rendered ruleset:\n%s", conntrackMatch, text)
	}
	if v != NoConntrack {
		b.WriteString(rawNoTrack)
	}
	return b.String(), nil
}

// conntrackRuleChain returns the chain of a rule "-A <chain> -m conntrack
// --ctstate RELATED,ESTABLISHED -j ACCEPT".
func conntrackRuleChain(line string) (string, bool) {
	rest, ok := strings.CutPrefix(line, "-A ")
	if !ok {
		return "", false
	}
	chain, rule, ok := strings.Cut(rest, " ")
	return chain, ok && rule == conntrackMatch && strings.HasPrefix(chain, "PODWALL-")
}

// ipsetText is `ipset restore` input creating sets as podwall does.
func ipsetText(sets []dataplane.Set, suffix string) string {
	var b strings.Builder
	for _, s := range sets {
		name := s.Name + suffix
		fmt.Fprintf(&b, "create %s hash:net family %s hashsize 64 maxelem %d\n", name, s.Family, max(65536, len(s.Members)))
		for _, m := range s.Members {
			fmt.Fprintf(&b, "add %s %s\n", name, m)
		}
	}
	return b.String()
}

// Install loads rs into p's netns, which must hold no rules and no sets:
// the sets first, then the IPv4 and IPv6 rules, each family in one
// transaction.
func (rs *Ruleset) Install(p *Pod) error {
	if len(rs.Sets) > 0 {
		if _, err := p.Exec(ipsetText(rs.Sets, ""), "ipset", "restore"); err != nil {
			return fmt.Errorf("install %s in %s: %w", rs.Variant, p.Netns, err)
		}
	}
	for _, l := range []struct{ text, cmd string }{{rs.V4, "iptables-nft-restore"}, {rs.V6, "ip6tables-nft-restore"}} {
		if l.text == "" {
			continue
		}
		if _, err := p.Exec(l.text, l.cmd, "--noflush"); err != nil {
			return fmt.Errorf("install %s in %s: %w", rs.Variant, p.Netns, err)
		}
	}
	return nil
}

// SwapSets replaces the members of p's sets of the same names with those of
// sets, the way podwall applies a change of peers: fill a temporary set,
// swap it in, destroy the old contents.
func SwapSets(p *Pod, sets []dataplane.Set) error {
	text := ipsetText(sets, "-tmp")
	for _, s := range sets {
		text += fmt.Sprintf("swap %s %s-tmp\ndestroy %s-tmp\n", s.Name, s.Name, s.Name)
	}
	if _, err := p.Exec(text, "ipset", "restore"); err != nil {
		return fmt.Errorf("swap sets in %s: %w", p.Netns, err)
	}
	return nil
}

// Reset removes every rule and set from p's netns: it empties the filter
// and raw tables of both families (deleting podwall's chains) and destroys
// every ipset. Conntrack entries stay until they time out, as they would on
// a node.
func Reset(p *Pod) error {
	for _, cmd := range []string{"iptables-nft-restore", "ip6tables-nft-restore"} {
		if _, err := p.Exec("*filter\nCOMMIT\n*raw\nCOMMIT\n", cmd); err != nil {
			return fmt.Errorf("reset %s: %w", p.Netns, err)
		}
	}
	// The kernel drops the rules' references to the sets asynchronously.
	var err error
	for range 50 {
		if _, err = p.Exec("", "ipset", "destroy"); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("reset %s: %w", p.Netns, err)
}

// Save returns what iptables-nft-save and ip6tables-nft-save print in p's
// netns, without their comment lines.
func Save(p *Pod) (string, error) {
	var b strings.Builder
	for _, cmd := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
		out, err := p.Exec("", cmd)
		if err != nil {
			return "", fmt.Errorf("save %s: %w", p.Netns, err)
		}
		for line := range strings.Lines(out) {
			if !strings.HasPrefix(line, "#") {
				b.WriteString(line)
			}
		}
	}
	return b.String(), nil
}

// ConntrackCount returns the number of conntrack entries in p's netns.
func ConntrackCount(p *Pod) (string, error) {
	out, err := p.Exec("", "cat", "/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// RuleCounter returns the packets counted by the first IPv4 filter rule in
// p's netns whose iptables-save text (without counters) contains every one
// of parts.
func RuleCounter(p *Pod, parts ...string) (int64, error) {
	out, err := p.Exec("", "iptables-nft-save", "-c", "-t", "filter")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(out) {
		counters, rule, ok := strings.Cut(strings.TrimSpace(line), "] ")
		if !ok || !strings.HasPrefix(counters, "[") {
			continue
		}
		match := true
		for _, part := range parts {
			match = match && strings.Contains(rule, part)
		}
		if !match {
			continue
		}
		var pkts, bytes int64
		if _, err := fmt.Sscanf(counters, "[%d:%d", &pkts, &bytes); err != nil {
			return 0, fmt.Errorf("counters of %q in %s: %w", rule, p.Netns, err)
		}
		return pkts, nil
	}
	return 0, fmt.Errorf("no rule with %q in %s:\n%s", parts, p.Netns, out)
}
