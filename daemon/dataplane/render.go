package dataplane

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/podwall/podwall/daemon/policy"
	corev1 "k8s.io/api/core/v1"
)

// Spec is the desired firewall of one pod netns.
type Spec struct {
	// Pod is "namespace/name", used in rule comments and errors.
	Pod string
	// Firewall is the desired firewall; nil or !Isolated() means no podwall
	// rules or sets at all in the netns. The Manager keeps the prefix
	// slices of its rules (to tell the next Apply what changed, and what
	// it checked of them), so they must not be modified once passed, as
	// the compiler never modifies the firewalls it returned.
	Firewall *policy.Firewall
	// NodeAddrs are always allowed in when ingress is isolated: the host's
	// addresses and the gateway of the pod's link.
	NodeAddrs []netip.Addr
}

// Ruleset is a firewall as text: what Render wants, or what Inspect found.
type Ruleset struct {
	// V4 and V6 are iptables-restore input for the filter table (empty when
	// the family has no podwall objects). Loaded with --noflush into a netns
	// without podwall objects they create the firewall; the jumps are
	// written "-I INPUT <position> -j PODWALL-INGRESS" so the position shows.
	V4, V6 string
	// Sets are the podwall ipsets, sorted by name.
	Sets []Set
	// Generation is the generation the set names carry.
	Generation uint32
}

// Set is one podwall ipset of type hash:net.
type Set struct {
	Name string
	// Family is "inet" or "inet6".
	Family string
	// Members are sorted; a /0 is held as its two /1 halves.
	Members []netip.Prefix
}

// family is an IP family of the firewall.
type family int

const (
	familyV4 family = iota
	familyV6
)

var families = []family{familyV4, familyV6}

func (f family) String() string {
	if f == familyV6 {
		return "v6"
	}
	return "v4"
}

func (f family) setPrefix() string {
	if f == familyV6 {
		return setPrefixV6
	}
	return setPrefixV4
}

func (f family) setFamily() string {
	if f == familyV6 {
		return "inet6"
	}
	return "inet"
}

func (f family) bits() int {
	if f == familyV6 {
		return 128
	}
	return 32
}

func familyOf(a netip.Addr) family {
	if a.Is4() {
		return familyV4
	}
	return familyV6
}

// table is the podwall part of one family's filter table: podwall's chains
// with their rules, and the rules elsewhere that jump to them.
type table struct {
	chains []chain
	jumps  []jump
}

// chain is one podwall chain; rules are complete "-A <chain> ..." lines in
// iptables-save's canonical form.
type chain struct {
	name  string
	rules []string
}

// jump is a rule in a chain podwall does not own whose target is a podwall
// chain.
type jump struct {
	from string // e.g. INPUT
	pos  int    // 1-based position in from
	spec string // the rule after "-A <from> ", e.g. "-j PODWALL-INGRESS"
	to   string // the podwall chain
}

// text renders t as iptables-restore input; "" when t is empty.
func (t table) text() string {
	if len(t.chains) == 0 && len(t.jumps) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range t.chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", c.name)
	}
	for _, j := range t.jumps {
		fmt.Fprintf(&b, "-I %s %d %s\n", j.from, j.pos, j.spec)
	}
	for _, c := range t.chains {
		for _, r := range c.rules {
			b.WriteString(r)
			b.WriteByte('\n')
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// rendered is a firewall rendered for one generation.
type rendered struct {
	gen    uint32
	tables [2]table
	texts  [2]string
	sets   []Set
}

func (r *rendered) ruleset() *Ruleset {
	return &Ruleset{V4: r.texts[familyV4], V6: r.texts[familyV6], Sets: cloneSets(r.sets), Generation: r.gen}
}

// equal reports whether r and o describe the same rules and set contents.
func (r *rendered) equal(o *rendered) bool {
	return r.sameStructure(o) && slices.EqualFunc(r.sets, o.sets, func(a, b Set) bool { return sameMembers(a.Members, b.Members) })
}

// sameMembers reports whether two sorted member lists are equal; lists
// shared with the compiler's firewalls compare by identity first.
func sameMembers(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || unsafe.SliceData(a) == unsafe.SliceData(b) {
		return true
	}
	return slices.Equal(a, b)
}

// sameStructure reports whether r and o have the same rules and the same sets
// by name, so that only set members may differ.
func (r *rendered) sameStructure(o *rendered) bool {
	return r.texts == o.texts && slices.EqualFunc(r.sets, o.sets, func(a, b Set) bool {
		return a.Name == b.Name && a.Family == b.Family
	})
}

func cloneSets(sets []Set) []Set {
	out := make([]Set, len(sets))
	for i, s := range sets {
		out[i] = Set{Name: s.Name, Family: s.Family, Members: slices.Clone(s.Members)}
	}
	return out
}

// Render returns the firewall spec describes, with set names of generation
// gen. It is pure and deterministic. A firewall that is nil or not isolated
// renders to an empty Ruleset: no rules, no sets. Input Apply would reject
// (see validateSpec) renders fail-closed: an invalid port or prefix allows
// nothing.
//
// Each isolated direction gets one chain, jumped to as the first rule of its
// built-in chain, in both families (a pod with only IPv4 addresses still
// drops IPv6). The ingress chain, as iptables-save prints it:
//
//	-I INPUT 1 -j PODWALL-INGRESS
//	-A PODWALL-INGRESS -i lo -j ACCEPT
//	-A PODWALL-INGRESS -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//	-A PODWALL-INGRESS -m set --match-set pw4-node-g7 src -j ACCEPT
//	-A PODWALL-INGRESS -p ipv6-icmp -m icmp6 --icmpv6-type 133 -j ACCEPT   (IPv6 only: 133, 134, 135, 136)
//	-A PODWALL-INGRESS -p tcp -m set --match-set pw4-0-g7 src -m tcp --dport 80 -m comment --comment "ingress rule 0" -j ACCEPT
//	-A PODWALL-INGRESS -p udp -m set --match-set pw4-0-g7 src -m udp --dport 5000:5010 -m comment --comment "ingress rule 0" -j ACCEPT
//	-A PODWALL-INGRESS -p sctp -m comment --comment "ingress rule 1" -j ACCEPT                  (Peer.Any, every SCTP port)
//	-A PODWALL-INGRESS -m set --match-set pw4-1-g7 src -m comment --comment "ingress rule 2" -j ACCEPT  (every port)
//	-A PODWALL-INGRESS -m comment --comment "ns/name ingress default deny" -j DROP
//
// The egress chain is the same with "-I OUTPUT 1 -j PODWALL-EGRESS",
// "-o lo", "dst" instead of "src" and no node-address rule; between the
// ICMPv6 rules and the ordinary rules come the allowed Service frontends
// (policy.Direction.Services) and then the guard that keeps every other
// frontend away from the ordinary rules (policy.Direction.ServiceGuard):
//
//	-A PODWALL-EGRESS -p tcp -m set --match-set pw4-svc0-g7 dst -m tcp --dport 80 -m comment --comment "egress service 0" -j ACCEPT
//	-A PODWALL-EGRESS -p udp -m set --match-set pw4-svc1-g7 dst -m udp --dport 53 -m comment --comment "egress service 1" -j ACCEPT
//	-A PODWALL-EGRESS -m set --match-set pw4-guard0-g7 dst -m comment --comment "egress service guard 0" -j DROP
//	-A PODWALL-EGRESS -p tcp -m set --match-set pw4-guard1-g7 dst -m tcp --dport 443 -m comment --comment "egress service guard 1" -j DROP
//	-A PODWALL-EGRESS -p tcp -m set --match-set pw4-0-g7 dst -m tcp --dport 8080 -m comment --comment "egress rule 0" -j ACCEPT
//
// There is one ACCEPT per (rule, port) and family. A rule whose peer has no
// prefix of a family renders nothing in that family; Peer.Any renders in both
// without a set. Sets are hash:net, one per distinct list of prefixes per
// family (identical peers share a set across rules and directions), named
// pw4-<index>-g<gen> and pw6-<index>-g<gen>; the node addresses get their own
// set pw4-node-g<gen> / pw6-node-g<gen>. Service and guard rules each get
// their own set per family, named by their index (pw4-svc<i>-g<gen>,
// pw4-guard<i>-g<gen>) and never shared, so that frontends coming and going
// change set members only. hash:net cannot hold a /0, so it is stored as its
// two /1 halves.
func Render(spec Spec, gen uint32) *Ruleset {
	return render(spec, gen).ruleset()
}

// SetMembers returns how many members the sets of Render(spec, 0) hold,
// without copying them as Render does.
func SetMembers(spec Spec) int {
	n := 0
	for _, set := range render(spec, 0).sets {
		n += len(set.Members)
	}
	return n
}

func render(spec Spec, gen uint32) *rendered {
	r := &rendered{gen: gen}
	fw := spec.Firewall
	if fw == nil || !fw.Isolated() {
		return r
	}
	sets := newSetIndex(gen)
	for _, f := range families {
		var t table
		if fw.Ingress.Isolated {
			t.chains = append(t.chains, renderChain(f, dirIngress, chainIngress, "src", "-i", &fw.Ingress, spec, sets))
			t.jumps = append(t.jumps, jump{from: hookIngress, pos: 1, spec: "-j " + chainIngress, to: chainIngress})
		}
		if fw.Egress.Isolated {
			t.chains = append(t.chains, renderChain(f, dirEgress, chainEgress, "dst", "-o", &fw.Egress, spec, sets))
			t.jumps = append(t.jumps, jump{from: hookEgress, pos: 1, spec: "-j " + chainEgress, to: chainEgress})
		}
		r.tables[f] = t
		r.texts[f] = t.text()
	}
	r.sets = sets.sets()
	return r
}

// renderChain renders one isolated direction in family f.
func renderChain(f family, dir, name, match, iface string, d *policy.Direction, spec Spec, sets *setIndex) chain {
	c := chain{name: name}
	add := func(parts ...string) {
		c.rules = append(c.rules, "-A "+name+" "+strings.Join(parts, " "))
	}
	add(iface, "lo", "-j ACCEPT")
	add("-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT")
	if dir == dirIngress {
		var nodes []netip.Prefix
		for _, a := range spec.NodeAddrs {
			a = a.Unmap()
			if a.IsValid() && familyOf(a) == f {
				nodes = append(nodes, netip.PrefixFrom(a.WithZone(""), f.bits()))
			}
		}
		if name := sets.node(f, nodes); name != "" { // nodes is this call's own slice
			add("-m set --match-set", name, match, "-j ACCEPT")
		}
	}
	if f == familyV6 {
		for _, typ := range []int{133, 134, 135, 136} {
			add("-p ipv6-icmp -m icmp6 --icmpv6-type", strconv.Itoa(typ), "-j ACCEPT")
		}
	}
	// Service frontends: the allowed ones first, then the guard, so that no
	// rule below can match a frontend. Each has its own set, named by its
	// index, so a frontend joining or leaving changes set members only.
	for i, rule := range d.Services {
		if rule.Peer.Any {
			continue // fail closed; Apply rejects such a spec
		}
		name := sets.named(f, fmt.Sprintf(setIDServiceFmt, i), familyPrefixes(f, rule.Peer.Prefixes))
		if name != "" {
			addRule(add, []string{"-m set --match-set", name, match}, rule.Ports, fmt.Sprintf(commentService, dir, i), "ACCEPT")
		}
	}
	for i, rule := range d.ServiceGuard {
		var peer []string
		if !rule.Peer.Any {
			name := sets.named(f, fmt.Sprintf(setIDGuardFmt, i), familyPrefixes(f, rule.Peer.Prefixes))
			if name == "" {
				continue // no prefix of this family
			}
			peer = []string{"-m set --match-set", name, match}
		}
		addRule(add, peer, rule.Ports, fmt.Sprintf(commentGuard, dir, i), "DROP")
	}
	for i, rule := range d.Rules {
		var peer []string
		if !rule.Peer.Any {
			name := sets.peer(f, familyPrefixes(f, rule.Peer.Prefixes))
			if name == "" {
				continue // no prefix of this family
			}
			peer = []string{"-m set --match-set", name, match}
		}
		addRule(add, peer, rule.Ports, fmt.Sprintf(commentRule, dir, i), "ACCEPT")
	}
	add("-m comment --comment", quoteComment(strings.TrimSpace(fmt.Sprintf(commentDrop, spec.Pod, dir))), "-j DROP")
	return c
}

// addRule adds the lines of one rule: to target, traffic matching peer (nil:
// any address) on one of ports (none: every port of every protocol), one
// line per port.
func addRule(add func(...string), peer []string, ports []policy.Port, comment, target string) {
	tail := []string{"-m comment --comment", quoteComment(comment), "-j", target}
	if len(ports) == 0 {
		add(slices.Concat(peer, tail)...)
		return
	}
	for _, p := range ports {
		proto, ok := protocolName(p.Protocol)
		if !ok || validatePort(p) != nil {
			continue // fail closed; Apply rejects such a spec
		}
		parts := slices.Concat([]string{"-p", proto}, peer)
		if p.Port != 0 {
			dport := strconv.Itoa(int(p.Port))
			if p.EndPort > p.Port {
				dport += ":" + strconv.Itoa(int(p.EndPort))
			}
			parts = append(parts, "-m", proto, "--dport", dport)
		}
		add(append(parts, tail...)...)
	}
}

// familyPrefixes returns the valid prefixes of family f, masked, sorted and
// deduplicated, with a /0 split into its two /1 halves. The result may share
// its elements with prefixes: treat it as read-only. The compiler's peers
// are sorted, disjoint and masked already, so for them it is a sub-slice:
// pods selected by the same rules share one copy of their peers, however
// large, in the compiler and here.
func familyPrefixes(f family, prefixes []netip.Prefix) []netip.Prefix {
	if run, ok := canonicalRuns.get(f, prefixes); ok {
		return run
	}
	var out []netip.Prefix
	for _, p := range prefixes {
		if !p.IsValid() || familyOf(p.Addr()) != f {
			continue
		}
		p = p.Masked()
		if p.Bits() == 0 {
			// hash:net cannot hold a /0: store its two halves.
			half := netip.MustParsePrefix("128.0.0.0/1")
			if f == familyV6 {
				half = netip.MustParsePrefix("8000::/1")
			}
			out = append(out, netip.PrefixFrom(p.Addr(), 1), half)
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

// canonicalRuns remembers canonicalRun's answers per list. The compiler
// hands every pod a policy rule selects the same prefix slice, and slices
// it published are never modified: one check per slice instead of one per
// pod (thousands of members each). A slice is known by its address and
// length, and held by its entry, so that the address cannot come back as
// another list while the entry exists.
var canonicalRuns = runCache{entries: make(map[runKey]runEntry)}

// maxRunMembers bounds the members of the lists canonicalRuns holds (it
// keeps replaced peer lists alive until it is emptied): a cache that would
// hold more is emptied first. 1<<17 prefixes are 3 MiB.
const maxRunMembers = 1 << 17

type runCache struct {
	mu      sync.Mutex
	entries map[runKey]runEntry
	members int // of the lists held
}

type runKey struct {
	data *netip.Prefix
	n    int
	f    family
}

type runEntry struct {
	prefixes []netip.Prefix // held: see canonicalRuns
	run      []netip.Prefix
	ok       bool
}

// get returns canonicalRun(f, prefixes), from the cache when it has it.
func (c *runCache) get(f family, prefixes []netip.Prefix) ([]netip.Prefix, bool) {
	if len(prefixes) < 64 {
		return canonicalRun(f, prefixes) // cheaper than the lookup
	}
	key := runKey{data: unsafe.SliceData(prefixes), n: len(prefixes), f: f}
	c.mu.Lock()
	e, hit := c.entries[key]
	c.mu.Unlock()
	if hit {
		return e.run, e.ok
	}
	run, ok := canonicalRun(f, prefixes)
	if len(prefixes) > maxRunMembers {
		return run, ok
	}
	c.mu.Lock()
	if c.members+len(prefixes) > maxRunMembers {
		clear(c.entries)
		c.members = 0
	}
	if _, dup := c.entries[key]; !dup {
		c.members += len(prefixes)
	}
	c.entries[key] = runEntry{prefixes: prefixes, run: run, ok: ok}
	c.mu.Unlock()
	return run, ok
}

// canonicalRun returns the prefixes of family f when they form one run of
// prefixes that are valid, masked, not /0 and strictly increasing, with no
// prefix of that family outside the run.
func canonicalRun(f family, prefixes []netip.Prefix) ([]netip.Prefix, bool) {
	start, end := -1, -1
	for i, p := range prefixes {
		if !p.IsValid() {
			return nil, false
		}
		if familyOf(p.Addr()) != f {
			if start >= 0 && end < 0 {
				end = i
			}
			continue
		}
		if end >= 0 || p.Bits() == 0 || p.Masked() != p || p.Addr().Zone() != "" {
			return nil, false
		}
		if start < 0 {
			start = i
		} else if comparePrefix(prefixes[i-1], p) >= 0 {
			return nil, false
		}
	}
	if start < 0 {
		return nil, true
	}
	if end < 0 {
		end = len(prefixes)
	}
	return prefixes[start:end:end], true
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// setIndex assigns set names to distinct prefix lists, in order of first use.
type setIndex struct {
	gen    uint32
	byKey  map[membersKey][]string // peer sets by the outline of their members
	byName map[string]Set
	order  [2][]string
	next   [2]int
}

func newSetIndex(gen uint32) *setIndex {
	return &setIndex{gen: gen, byKey: map[membersKey][]string{}, byName: map[string]Set{}}
}

// peer returns the set holding members, creating it on first use; "" when
// members is empty.
func (s *setIndex) peer(f family, members []netip.Prefix) string {
	if len(members) == 0 {
		return ""
	}
	key := membersKey{n: len(members), first: members[0], last: members[len(members)-1]}
	for _, name := range s.byKey[key] {
		if sameMembers(s.byName[name].Members, members) {
			return name
		}
	}
	name := setName(f, strconv.Itoa(s.next[f]), s.gen)
	s.next[f]++
	s.byKey[key] = append(s.byKey[key], name)
	s.add(f, name, members)
	return name
}

// named returns the set of family f with the given id, holding members;
// "" when members is empty. Unlike peer sets, named sets are not shared by
// content: the id says which rule the set belongs to.
func (s *setIndex) named(f family, id string, members []netip.Prefix) string {
	if len(members) == 0 {
		return ""
	}
	name := setName(f, id, s.gen)
	if _, ok := s.byName[name]; !ok {
		s.add(f, name, members)
	}
	return name
}

// node returns the node-address set of family f; "" when members is empty.
func (s *setIndex) node(f family, members []netip.Prefix) string {
	if len(members) == 0 {
		return ""
	}
	name := setName(f, setIDNode, s.gen)
	if _, ok := s.byName[name]; !ok {
		slices.SortFunc(members, comparePrefix)
		s.add(f, name, slices.Compact(members))
	}
	return name
}

// add records a set; members are shared, not copied.
func (s *setIndex) add(f family, name string, members []netip.Prefix) {
	s.byName[name] = Set{Name: name, Family: f.setFamily(), Members: members}
	s.order[f] = append(s.order[f], name)
}

// sets returns the sets sorted by name.
func (s *setIndex) sets() []Set {
	var out []Set
	for _, f := range families {
		for _, name := range s.order[f] {
			out = append(out, s.byName[name])
		}
	}
	slices.SortFunc(out, func(a, b Set) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// membersKey outlines a list of members in constant time; lists with the
// same outline are compared in full (by identity first: rules of one policy
// share their peer slices).
type membersKey struct {
	n           int
	first, last netip.Prefix
}

// protocolName returns iptables' name of a policy protocol.
func protocolName(p corev1.Protocol) (string, bool) {
	switch p {
	case corev1.ProtocolTCP:
		return "tcp", true
	case corev1.ProtocolUDP:
		return "udp", true
	case corev1.ProtocolSCTP:
		return "sctp", true
	}
	return "", false
}

// quoteComment makes s safe as one iptables-restore word and returns it the
// way iptables-save prints it: characters other than letters, digits and
// " ./:_-" become "_", and the result is always double-quoted (a space is
// appended to a comment that has none, so that iptables-save quotes it too).
func quoteComment(s string) string {
	b := []byte(s)
	if len(b) > maxComment {
		b = b[:maxComment]
	}
	space := false
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte("./:_-", c) >= 0:
		case c == ' ':
			space = true
		default:
			b[i] = '_'
		}
	}
	if !space {
		b = append(b, ' ')
	}
	return `"` + string(b) + `"`
}

// validateSpec returns an error describing the first input Render would have
// to skip: unknown protocols, ports out of range, invalid prefixes.
func validateSpec(spec Spec) error {
	for _, a := range spec.NodeAddrs {
		if !a.IsValid() {
			return fmt.Errorf("invalid node address %q", a)
		}
	}
	fw := spec.Firewall
	if fw == nil {
		return nil
	}
	for _, d := range []struct {
		name string
		dir  *policy.Direction
	}{{dirIngress, &fw.Ingress}, {dirEgress, &fw.Egress}} {
		if d.name == dirIngress && (len(d.dir.Services) > 0 || len(d.dir.ServiceGuard) > 0) {
			return errors.New("ingress: services and a service guard exist only for egress")
		}
		for _, group := range []struct {
			what  string
			rules []policy.Rule
		}{{"rule", d.dir.Rules}, {"service", d.dir.Services}, {"service guard", d.dir.ServiceGuard}} {
			for i, r := range group.rules {
				if err := validateRule(r); err != nil {
					return fmt.Errorf("%s %s %d: %w", d.name, group.what, i, err)
				}
				if group.what == "service" && r.Peer.Any {
					return fmt.Errorf("%s service %d: a service rule needs frontend addresses, not any peer", d.name, i)
				}
			}
		}
	}
	return nil
}

func validateRule(r policy.Rule) error {
	for _, p := range r.Peer.Prefixes {
		if !p.IsValid() {
			return fmt.Errorf("invalid prefix %q", p)
		}
	}
	for _, p := range r.Ports {
		if err := validatePort(p); err != nil {
			return err
		}
	}
	return nil
}

func validatePort(p policy.Port) error {
	if _, ok := protocolName(p.Protocol); !ok {
		return fmt.Errorf("unsupported protocol %q", p.Protocol)
	}
	switch {
	case p.Port < 0 || p.Port > 65535:
		return fmt.Errorf("port %d out of range", p.Port)
	case p.EndPort < 0 || p.EndPort > 65535:
		return fmt.Errorf("end port %d out of range", p.EndPort)
	case p.EndPort != 0 && p.Port == 0:
		return fmt.Errorf("end port %d without a port", p.EndPort)
	case p.EndPort != 0 && p.EndPort < p.Port:
		return fmt.Errorf("end port %d below port %d", p.EndPort, p.Port)
	}
	return nil
}
