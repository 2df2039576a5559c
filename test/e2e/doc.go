// Package e2e runs podwall end to end on one machine, as root: pods are
// network namespaces plumbed by the real CNI chain (ptp + host-local, then
// the podwall plugin) through libcni, the real podwalld enforces the
// NetworkPolicies it reads from a manifests directory, and probes are real
// TCP and UDP connections and raw SCTP packets between pods.
//
// Its tests (all in _test.go files) run the upstream NetworkPolicy e2e suites
// of test/netpol against such a node (manifestsCluster); env_test.go holds the
// small harness they share: the binaries TestMain finds or builds, and
// testEnv, a test bed plus the podwalld serving it, with helpers that write
// Namespace, Pod and NetworkPolicy manifests.
//
// Address ranges: pods 10.210.0.0/16, bed names starting with "e2n". The
// package has no non-test code; it must not be imported.
package e2e
