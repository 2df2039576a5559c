// Package bed is podwall's test bed: network namespaces play pods, plumbed by
// the reference CNI plugins (ptp + host-local, optionally chained with podwall)
// through libcni exactly as a container runtime would. Pods run real in-process
// servers (TCP, UDP, and a raw-socket SCTP receiver because the kernel has no
// SCTP sockets) and are probed with real connections from other pod netns.
// Reachability is collected into upstream-style truth tables (Truth).
//
// The bed is used by Go e2e tests and by the demo program, so its API returns
// errors and does not depend on *testing.T; testing.go adds a few helpers that
// take a testing.TB. It needs root. It must not import podwall's own packages:
// it exercises them from the outside, through CNI and the network.
package bed
