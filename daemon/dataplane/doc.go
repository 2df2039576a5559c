// Package dataplane enforces a pod's desired firewall (policy.Firewall) inside
// the pod's own network namespace: iptables chains in the filter table, on the
// nf_tables backend (iptables-nft-restore / ip6tables-nft-restore, never
// iptables-legacy), matching peers through hash:net ipsets that it makes
// and changes over netlink (ipsetnl.go), never through ipset(8). Render turns
// a firewall into iptables-restore text and sets and is pure; Manager
// applies, checks, inspects and removes them in a netns without a window in
// which the pod is open or half updated. It may import the policy
// types, the CNI ns package, netns and x/sys; it must not import the daemon's
// sync, server or source packages.
//
// Node-visible names (chains, set names) are frozen and live in names.go.
// The chain layout is documented, as the literal rules, on Render; the
// update protocol on Manager.Apply.
package dataplane
