package dataplane

import (
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
