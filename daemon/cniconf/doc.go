// Package cniconf puts podwall's plugin entry into the node's CNI network
// configuration and takes it out again: the code behind `podwalld
// install-cni` and `podwalld uninstall-cni`.
//
// The entry goes right after the first plugin of the network configuration
// list the container runtime loads (the lexically first *.conf, *.conflist
// or *.json file of the configuration directory, as containerd and CRI-O pick
// it). That first plugin is the one that creates the pod's interface and
// assigns its addresses (tke-route-eni, aws-cni, bridge, ptp, ...); podwall
// needs those addresses in its prevResult, and must run before chained
// helpers such as egress-cni, portmap, bandwidth or tuning, which add
// addresses that are not the pod's (egress-cni's) or have nothing to do with
// the pod's firewall. On DEL, which runs the chain in reverse, podwall then
// runs before the ENI plugin releases the pod's address.
//
// The change is a byte-level splice: the original text outside the inserted
// entry is kept exactly (key order, spacing, number formats, other plugins),
// so removing the entry gives back the original byte for byte. A
// single-plugin .conf (or .json) is converted into a .conflist beside it, as
// libcni's ConfListFromConf does, and the .conf removed; uninstalling puts
// the .conf back. The original is kept next to the file as
// <name>.podwall-orig (an extension no runtime loads). Every file is
// replaced atomically (a temporary file in the same directory, fsync,
// rename, fsync of the directory), so a runtime never reads a half-written
// configuration.
//
// Patch, Unpatch and Convert are pure; Install, Uninstall and Watch work on a
// directory. The package must not import the daemon's policy, dataplane,
// source or syncer packages: it only edits files.
package cniconf
