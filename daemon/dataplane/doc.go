// Package dataplane enforces a pod's desired firewall (policy.Firewall) inside
// the pod's own network namespace: iptables chains in the filter table, on the
// nf_tables backend (never iptables-legacy), matching peers through hash:net
// ipsets. It starts no process to change anything: sets are made and changed
// over ipset netlink (ipsetnl.go), and rules are written over nf_tables
// netlink (nftrules.go) in exactly the form iptables-nft-restore 1.8.9 gives
// them, both families in one transaction, so that iptables-nft-save prints
// them as usual. It reads rules with iptables-nft-save / ip6tables-nft-save
// (inspect.go): for Check, Inspect and Remove, and before applying to a
// netns it has no memory of, when that netns has a filter table. Render turns
// a firewall into iptables-restore text and sets and is pure; Manager
// applies, checks, inspects and removes them in a netns without a window in
// which the pod is open or half updated. It may import the policy
// types, the CNI ns package, netns and x/sys; it must not import the daemon's
// sync, server or source packages.
//
// Node-visible names (chains, set names) are frozen and live in names.go.
// The chain layout is documented, as the literal rules, on Render; the
// update protocol on Manager.Apply; the transition between two rulesets on
// renderTransition, whose text is what the netlink writer performs (and
// what the tests compare it with).
package dataplane
