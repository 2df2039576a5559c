package dataplane

import (
	"fmt"
	"regexp"
	"strconv"
)

// Every name in this file is visible on nodes: in the iptables ruleset and the
// ipset list of every pod network namespace podwall has firewalled. A new
// daemon adopts what an older one left behind by these names, and Remove
// deletes exactly what carries them. They are FROZEN across upgrades: never
// rename one; add new names instead (and teach Remove to clean the old ones).

// Chains podwall owns in the filter table of a pod netns. Every chain whose
// name starts with chainPrefix belongs to podwall.
const (
	chainPrefix  = "PODWALL-"
	chainIngress = "PODWALL-INGRESS" // jumped to from INPUT, first rule
	chainEgress  = "PODWALL-EGRESS"  // jumped to from OUTPUT, first rule

	hookIngress = "INPUT"
	hookEgress  = "OUTPUT"
)

// Set names are "pw4-<id>-g<generation>" (IPv4, family inet) and
// "pw6-<id>-g<generation>" (IPv6, family inet6). <id> is "node" for the node
// addresses, the index of a distinct peer, "svc<i>" for the allowed Service
// frontends of policy.Direction.Services[i], or "guard<i>" for
// policy.Direction.ServiceGuard[i]. Daemons before netlink ipsets filled a
// set for a swap under its name plus setTempSuffix; such a leftover is still
// podwall's (its prefix says so) and Remove and Inspect treat it like any
// other podwall set. Every set whose name starts with setPrefixV4 or setPrefixV6
// belongs to podwall. Names stay within ipset's limit of 31 characters:
// "pw6-guard<i>-g4294967295-tmp" is 25 plus the digits of i.
const (
	setPrefixV4     = "pw4-"
	setPrefixV6     = "pw6-"
	setIDNode       = "node"
	setIDServiceFmt = "svc%d"
	setIDGuardFmt   = "guard%d"
	setTempSuffix   = "-tmp"
	setType         = "hash:net"
)

// Comments on rules (informational; Check compares them like any other text).
const (
	commentRule    = "%s rule %d"          // "ingress rule 3": the index in policy.Direction.Rules
	commentService = "%s service %d"       // "egress service 0": the index in policy.Direction.Services
	commentGuard   = "%s service guard %d" // "egress service guard 0": the index in policy.Direction.ServiceGuard
	commentDrop    = "%s %s default deny"  // "ns/name ingress default deny"
	maxComment     = 200                   // iptables allows 256
	dirIngress     = "ingress"
	dirEgress      = "egress"
)

const (
	setNameFmt  = "%s%s-g%d" // prefix, id, generation
	setNameExpr = `^pw([46])-([a-z0-9]+)-g([0-9]+)(-tmp)?$`
)

var setNameRE = regexp.MustCompile(setNameExpr)

// setName returns the name of a set of family f, identified by id, in
// generation gen.
func setName(f family, id string, gen uint32) string {
	return fmt.Sprintf(setNameFmt, f.setPrefix(), id, gen)
}

// isPodwallSet reports whether an ipset name belongs to podwall.
func isPodwallSet(name string) bool {
	return len(name) > len(setPrefixV4) && (name[:len(setPrefixV4)] == setPrefixV4 || name[:len(setPrefixV6)] == setPrefixV6)
}

// setGeneration returns the generation a podwall set name carries.
func setGeneration(name string) (uint32, bool) {
	m := setNameRE.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	g, err := strconv.ParseUint(m[3], 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(g), true
}

// isPodwallChain reports whether a chain name belongs to podwall.
func isPodwallChain(name string) bool {
	return len(name) > len(chainPrefix) && name[:len(chainPrefix)] == chainPrefix
}

// chainOrder is the canonical order of podwall's chains in rendered and
// inspected rulesets; unknown podwall chains sort after these, by name.
var chainOrder = []string{chainIngress, chainEgress}

// hookOrder is the canonical order of the built-in chains jumps come from.
var hookOrder = []string{"PREROUTING", hookIngress, "FORWARD", hookEgress, "POSTROUTING"}
