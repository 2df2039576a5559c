package dataplane

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// observed is the podwall part of a netns as iptables-save prints it and the
// kernel lists its ipsets.
type observed struct {
	tables [2]table
	sets   map[string]*observedSet // podwall sets by name
}

// observedSet is one podwall set found in a netns.
type observedSet struct {
	Set
	typ    string   // e.g. hash:net
	extras []string // members with options podwall never sets, e.g. "10.9.0.0/16 nomatch"
}

// ruleset returns what is in force as a Ruleset: rules in canonical form,
// sets by name.
func (o *observed) ruleset() *Ruleset {
	rs := &Ruleset{V4: o.tables[familyV4].text(), V6: o.tables[familyV6].text(), Generation: o.generation()}
	for _, name := range o.setNames() {
		s := o.sets[name].Set
		rs.Sets = append(rs.Sets, Set{Name: s.Name, Family: s.Family, Members: slices.Clone(s.Members)})
	}
	return rs
}

func (o *observed) setNames() []string {
	names := make([]string, 0, len(o.sets))
	for name := range o.sets {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// generation is the generation in force: the highest one among the sets the
// rules reference, else among all podwall sets, else 0.
func (o *observed) generation() uint32 {
	var gen uint32
	found := false
	for _, t := range o.tables {
		for _, c := range t.chains {
			for _, r := range c.rules {
				for _, name := range matchSets(r) {
					if g, ok := setGeneration(name); ok && (!found || g > gen) {
						gen, found = g, true
					}
				}
			}
		}
	}
	if found {
		return gen
	}
	return o.maxGeneration()
}

// maxGeneration is the highest generation any podwall set carries.
func (o *observed) maxGeneration() uint32 {
	var gen uint32
	for name := range o.sets {
		if g, ok := setGeneration(name); ok && g > gen {
			gen = g
		}
	}
	return gen
}

// parseSave extracts the podwall part of the filter table from
// iptables-save output: podwall chains with their rules, and rules in other
// chains that jump to a podwall chain, with their position.
func parseSave(out string) (table, error) {
	var t table
	inFilter := false
	pos := map[string]int{}
	index := map[string]int{}
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "" || strings.HasPrefix(line, "#") || line == "COMMIT":
			continue
		case strings.HasPrefix(line, "*"):
			inFilter = line == "*filter"
			continue
		case !inFilter:
			continue
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			if isPodwallChain(name) {
				if _, ok := index[name]; !ok {
					index[name] = len(t.chains)
					t.chains = append(t.chains, chain{name: name})
				}
			}
			continue
		case !strings.HasPrefix(line, "-A "):
			return table{}, fmt.Errorf("unexpected iptables-save line %q", line)
		}
		from, spec, ok := strings.Cut(line[len("-A "):], " ")
		if !ok {
			return table{}, fmt.Errorf("unexpected iptables-save line %q", line)
		}
		if isPodwallChain(from) {
			i, ok := index[from]
			if !ok {
				return table{}, fmt.Errorf("rule for undeclared chain %s", from)
			}
			t.chains[i].rules = append(t.chains[i].rules, line)
			continue
		}
		pos[from]++
		if to := ruleTarget(spec); isPodwallChain(to) {
			t.jumps = append(t.jumps, jump{from: from, pos: pos[from], spec: spec, to: to})
		}
	}
	slices.SortStableFunc(t.chains, func(a, b chain) int {
		return cmp.Or(cmp.Compare(rank(chainOrder, a.name), rank(chainOrder, b.name)), strings.Compare(a.name, b.name))
	})
	slices.SortStableFunc(t.jumps, func(a, b jump) int {
		return cmp.Or(cmp.Compare(rank(hookOrder, a.from), rank(hookOrder, b.from)), strings.Compare(a.from, b.from), cmp.Compare(a.pos, b.pos))
	})
	return t, nil
}

// rank is the index of s in order, or len(order) when absent.
func rank(order []string, s string) int {
	if i := slices.Index(order, s); i >= 0 {
		return i
	}
	return len(order)
}

// splitRule splits a rule as iptables-save prints it into words, removing
// the double quotes and backslash escapes of quoted words.
func splitRule(rule string) []string {
	var words []string
	var w strings.Builder
	inWord, quoted, escaped := false, false, false
	for _, c := range rule {
		switch {
		case escaped:
			w.WriteRune(c)
			escaped = false
		case c == '\\':
			escaped, inWord = true, true
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// ruleTarget returns the chain or target a rule jumps or goes to.
func ruleTarget(spec string) string {
	words := splitRule(spec)
	for i := 0; i+1 < len(words); i++ {
		if words[i] == "-j" || words[i] == "-g" || words[i] == "--jump" || words[i] == "--goto" {
			return words[i+1]
		}
	}
	return ""
}

// matchSets returns the sets a rule matches on.
func matchSets(rule string) []string {
	var names []string
	words := splitRule(rule)
	for i := 0; i+1 < len(words); i++ {
		if words[i] == "--match-set" {
			names = append(names, words[i+1])
		}
	}
	return names
}

// diff describes how what is in force differs from want, one line per
// difference; nil when they are the same.
func diff(want *rendered, got *observed) []string {
	var out []string
	for _, f := range families {
		w, g := want.texts[f], got.tables[f].text()
		if w == g {
			continue
		}
		wl, gl := strings.Split(w, "\n"), strings.Split(g, "\n")
		missing, extra := lineDiff(wl, gl), lineDiff(gl, wl)
		for _, l := range missing {
			out = append(out, fmt.Sprintf("%s: missing %q", f, l))
		}
		for _, l := range extra {
			out = append(out, fmt.Sprintf("%s: unexpected %q", f, l))
		}
		if len(missing) == 0 && len(extra) == 0 {
			out = append(out, fmt.Sprintf("%s: rules out of order", f))
		}
	}
	wanted := map[string]bool{}
	for _, s := range want.sets {
		wanted[s.Name] = true
		g, ok := got.sets[s.Name]
		if !ok {
			out = append(out, fmt.Sprintf("set %s: missing", s.Name))
			continue
		}
		if g.typ != setType || g.Family != s.Family {
			out = append(out, fmt.Sprintf("set %s: type %s family %s, want %s family %s", s.Name, g.typ, g.Family, setType, s.Family))
		}
		missing, unexpected := prefixDiffs(s.Members, g.Members)
		for _, p := range missing {
			out = append(out, fmt.Sprintf("set %s: missing member %s", s.Name, p))
		}
		for _, p := range unexpected {
			out = append(out, fmt.Sprintf("set %s: unexpected member %s", s.Name, p))
		}
		for _, e := range g.extras {
			out = append(out, fmt.Sprintf("set %s: unexpected entry %q", s.Name, e))
		}
	}
	for _, name := range got.setNames() {
		if !wanted[name] {
			out = append(out, fmt.Sprintf("set %s: unexpected", name))
		}
	}
	return out
}

// lineDiff returns the lines of a not in b, counting repeats.
func lineDiff(a, b []string) []string {
	count := map[string]int{}
	for _, l := range b {
		count[l]++
	}
	var out []string
	for _, l := range a {
		if count[l] > 0 {
			count[l]--
			continue
		}
		out = append(out, l)
	}
	return out
}

// prefixDiffs returns the prefixes only sorted a has and those only sorted
// b has, in one pass: members that stay are equal at the places the walk
// meets them, which costs a plain comparison rather than an ordering.
func prefixDiffs(a, b []netip.Prefix) (onlyA, onlyB []netip.Prefix) {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] == b[j]:
			i++
			j++
		case comparePrefix(a[i], b[j]) < 0:
			onlyA = append(onlyA, a[i])
			i++
		default:
			onlyB = append(onlyB, b[j])
			j++
		}
	}
	return append(onlyA, a[i:]...), append(onlyB, b[j:]...)
}
