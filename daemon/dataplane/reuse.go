package dataplane

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// A rules change moves a pod to a new generation of set names, so that its
// rules switch from complete old sets to complete new ones in one
// transaction. A set whose members the change leaves alone — typically the
// big peer sets, when a policy gains a port — need not be rebuilt: the new
// generation's rules may reference the old set as it is. An alias maps the
// name Render gives a set in the pod's generation (its canonical name) to
// the name of the set in force that holds its members; the Manager remembers
// it per netns and finds it again after a restart by matching the rules in
// force with the canonical ones (adopt).

// renamed returns r with its sets, and the set names in its rules, renamed
// by alias; r itself when alias is empty.
func (r *rendered) renamed(alias map[string]string) *rendered {
	if len(alias) == 0 {
		return r
	}
	out := &rendered{gen: r.gen, sets: make([]Set, len(r.sets))}
	for i, s := range r.sets {
		if a, ok := alias[s.Name]; ok {
			s.Name = a
		}
		out.sets[i] = s
	}
	for _, f := range families {
		t := table{jumps: r.tables[f].jumps, chains: make([]chain, len(r.tables[f].chains))}
		for i, c := range r.tables[f].chains {
			rules := make([]string, len(c.rules))
			for j, rule := range c.rules {
				rules[j] = renameSets(rule, alias)
			}
			t.chains[i] = chain{name: c.name, rules: rules}
		}
		out.tables[f] = t
		out.texts[f] = t.text()
	}
	return out
}

// renameSets renames the sets a rule matches on.
func renameSets(rule string, alias map[string]string) string {
	if !strings.Contains(rule, "--match-set ") {
		return rule
	}
	words := strings.Split(rule, " ")
	for i := 1; i < len(words); i++ {
		if words[i-1] == "--match-set" {
			if a, ok := alias[words[i]]; ok {
				words[i] = a
			}
		}
	}
	return strings.Join(words, " ")
}

// reuseSets returns the alias that lets want (canonically named) use the
// sets of have that hold exactly the members one of its sets needs, each
// set of have at most once.
func reuseSets(want *rendered, have []Set) map[string]string {
	alias := map[string]string{}
	claimed := map[string]bool{}
	for _, w := range want.sets {
		for _, h := range have {
			if !claimed[h.Name] && h.Family == w.Family && sameMembers(h.Members, w.Members) {
				claimed[h.Name] = true
				if h.Name != w.Name {
					alias[w.Name] = h.Name
				}
				break
			}
		}
	}
	return alias
}

// reusable returns the observed sets a new generation may reference as they
// are: hash:net sets with nothing but plain members.
func (o *observed) reusable() []Set {
	var out []Set
	for _, name := range o.setNames() {
		s := o.sets[name]
		if s.typ == setType && len(s.extras) == 0 {
			out = append(out, s.Set)
		}
	}
	return out
}

// adopt finds the alias under which what is in force (got) is exactly want,
// a canonically named rendering: the rules must be want's word for word but
// for the names of the sets they match on. It reports false when there is
// none.
func adopt(want *rendered, got *observed) (map[string]string, bool) {
	canonical := map[string]bool{}
	for _, s := range want.sets {
		canonical[s.Name] = true
	}
	alias := map[string]string{}
	for _, f := range families {
		wl, gl := strings.Split(want.texts[f], "\n"), strings.Split(got.tables[f].text(), "\n")
		if len(wl) != len(gl) {
			return nil, false
		}
		for i := range wl {
			if wl[i] == gl[i] {
				continue
			}
			ww, gw := strings.Split(wl[i], " "), strings.Split(gl[i], " ")
			if len(ww) != len(gw) {
				return nil, false
			}
			for j := range ww {
				if ww[j] == gw[j] {
					continue
				}
				if j == 0 || ww[j-1] != "--match-set" || !canonical[ww[j]] || !isPodwallSet(gw[j]) {
					return nil, false
				}
				if a, ok := alias[ww[j]]; ok && a != gw[j] {
					return nil, false
				}
				alias[ww[j]] = gw[j]
			}
		}
	}
	used := map[string]bool{}
	for _, s := range want.sets {
		name := s.Name
		if a, ok := alias[name]; ok {
			name = a
		}
		if used[name] {
			return nil, false // two sets of want in one set in force
		}
		used[name] = true
	}
	if len(diff(want.renamed(alias), got)) > 0 {
		return nil, false
	}
	return alias, true
}

// RenderAs renders spec as a Manager keeps it in force next to inForce (what
// Inspect returned): in inForce's generation, with each set that generation
// reused from an earlier one under its name in inForce. When no naming of the
// sets makes the rendering inForce's, it returns Render(spec,
// inForce.Generation), whose differences from inForce are then real.
func RenderAs(spec Spec, inForce *Ruleset) *Ruleset {
	canonical := render(spec, inForce.Generation)
	got, err := observedFromRuleset(inForce)
	if err != nil {
		return canonical.ruleset()
	}
	alias, ok := adopt(canonical, got)
	if !ok {
		return canonical.ruleset()
	}
	rs := canonical.renamed(alias).ruleset()
	slices.SortFunc(rs.Sets, func(a, b Set) int { return strings.Compare(a.Name, b.Name) })
	return rs
}

// observedFromRuleset turns a Ruleset back into what inspect observes.
func observedFromRuleset(rs *Ruleset) (*observed, error) {
	o := &observed{sets: map[string]*observedSet{}}
	for f, text := range [2]string{rs.V4, rs.V6} {
		t, err := parseRulesetText(text)
		if err != nil {
			return nil, err
		}
		o.tables[f] = t
	}
	for _, s := range rs.Sets {
		o.sets[s.Name] = &observedSet{Set: s, typ: setType}
	}
	return o, nil
}

// parseRulesetText parses the text table.text writes.
func parseRulesetText(text string) (table, error) {
	var t table
	index := map[string]int{}
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "" || line == "*filter" || line == "COMMIT":
		case strings.HasPrefix(line, ":"):
			name, _, _ := strings.Cut(line[1:], " ")
			index[name] = len(t.chains)
			t.chains = append(t.chains, chain{name: name})
		case strings.HasPrefix(line, "-I "):
			words := strings.SplitN(line, " ", 4)
			if len(words) < 4 {
				return table{}, fmt.Errorf("unexpected ruleset line %q", line)
			}
			pos, err := strconv.Atoi(words[2])
			if err != nil {
				return table{}, fmt.Errorf("unexpected ruleset line %q", line)
			}
			t.jumps = append(t.jumps, jump{from: words[1], pos: pos, spec: words[3], to: ruleTarget(words[3])})
		case strings.HasPrefix(line, "-A "):
			name, _, _ := strings.Cut(line[len("-A "):], " ")
			i, ok := index[name]
			if !ok {
				return table{}, fmt.Errorf("rule for undeclared chain %s", name)
			}
			t.chains[i].rules = append(t.chains[i].rules, line)
		default:
			return table{}, fmt.Errorf("unexpected ruleset line %q", line)
		}
	}
	return t, nil
}
