// Package reliability proves podwall's reliability guarantees end to end, as
// root, on the real binaries: podwalld killed with SIGKILL at random moments
// while policies, pods and namespaces change (TestCrashSoak); the daemon down
// at ADD, DEL and STATUS (TestDaemonDown); a kube-apiserver outage
// (TestAPIServerOutage); 110 pods added and deleted in parallel, with
// resource leak measurements, and the odd CNI sequences a runtime can send
// (TestParallelPods, TestOddSequences); hand-made drift in a pod's netns and
// GC (TestDrift, TestGCRemovesEverythingElse); malformed manifests
// (TestMalformedManifest); and the daemon's attack surface
// (TestDaemonSurface, TestRBACReadOnly). docs/reliability.md says what each
// test shows and quotes the figures of the last run.
//
// Every test compares what is in force inside each pod's netns with what an
// independent compile of the test's own model of the cluster wants
// (expected_test.go:  policy.Compile and dataplane.RenderAs, against
// dataplane's Inspect), and pairs every denied probe with an allowed one.
//
// The long settings run with PODWALL_SOAK=1 (`make soak`): see settings_test.go.
//
// Address ranges: pods 10.214.0.0/16 (a /24 per bed) and fd00:214::/64, a
// Service range 10.214.240.0/20 for the API server; bed names start with
// "rl". The package has no API; it must not be imported.
package reliability
