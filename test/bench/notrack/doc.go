// Package notrack measures whether podwall could judge TCP without
// conntrack: only a pure SYN is judged by the policy, every later segment is
// accepted, and the raw table marks TCP "CT --notrack", while UDP, SCTP and
// ICMP stay stateful. It installs, by hand and side by side, the rulesets it
// compares (see Variant): none, podwall's current ruleset (rendered by
// dataplane.Render), the stateless-TCP form of the same ruleset, that form
// with an ingress socket match, and that form without any conntrack.
//
// The bed is network namespaces named pwt-<name>, each linked to the host by
// a veth pair the way the ptp plugin does it: the pod holds its /32 and a
// default route via the gateway 10.218.0.1, which every host side holds; the
// host routes each /32 to its veth. Addresses come from 10.218.0.0/16 only,
// blackholed on the host while a bed exists.
//
// It changes nothing in daemon/: it reads the ruleset podwall renders today
// and rewrites a copy of it. It imports daemon/dataplane and daemon/policy
// (to render) and the benchmarks' stats and machine packages, nothing else
// of podwall.
package notrack
