// Package netpol encodes the upstream Kubernetes NetworkPolicy e2e suites once,
// against a small Cluster interface, so the same tests run against any cluster
// that can create pods and policies and probe connections between pods: the
// in-memory ModelCluster (podwall's policy compiler, no network), network
// namespaces driven by podwalld, or a real kube-apiserver.
//
// The suites are Legacy118 (the 25 tests of release-1.18
// test/e2e/network/network_policy.go), and Netpol, NetpolUDP and NetpolSCTP
// (the 42 + 3 + 3 truth-table tests of test/e2e/network/netpol, in their
// classic 9-pod form: namespaces x, y, z with pods a, b, c). Every test is
// named verbatim after the upstream It string and reads like its upstream
// body. Expectations are reachability truth tables with upstream semantics
// (reachability.go, truthtable.go); Validate probes the matrix with a few
// workers, retries each cell until it matches, re-probes once ("SECOND TRY")
// and fails with the expected, observed and comparison tables.
//
// Differences from upstream, all deliberate: the Cluster decides where a
// probe goes — to the pod's IP, or (test/e2e/kube's Service mode, as
// upstream's 1.3x e2e) to the ClusterIP of a Service per pod, never through
// DNS; loopback cells are not probed (upstream probes and
// ignores them); the legacy one-shot client pods are long-lived pods created
// with the model; the ns-name label of legacy namespaces carries the real
// namespace name, so concurrent runs cannot select each other's namespaces.
//
// This package imports podwall's policy compiler only for ModelCluster; it must
// not import the dataplane, the daemon's sources or client-go.
package netpol
