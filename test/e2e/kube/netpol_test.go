package kubee2e

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/netpol"
)

// The upstream NetworkPolicy suites (test/netpol) on a real API server: one
// control plane shared by the suites, one node (bed, podwalld, kubelet) per
// suite, fresh namespaces and pods for every test, each test a subtest named
// after its upstream It string.

func TestKubeUpstreamLegacy118(t *testing.T) {
	runSuite(t, "k8nl", "10.213.0.0/20", netpol.Legacy118())
}
func TestKubeUpstreamNetpol(t *testing.T) { runSuite(t, "k8nn", "10.213.16.0/20", netpol.Netpol()) }
func TestKubeUpstreamNetpolUDP(t *testing.T) {
	runSuite(t, "k8nu", "10.213.32.0/20", netpol.NetpolUDP())
}
func TestKubeUpstreamNetpolSCTP(t *testing.T) {
	runSuite(t, "k8ns", "10.213.48.0/20", netpol.NetpolSCTP())
}

// concurrencyEnv names the environment variable setting how many tests of
// a suite run at once (default defaultConcurrency).
const concurrencyEnv = "PODWALL_KUBE_E2E_CONCURRENCY"

// defaultConcurrency: tests mostly wait (for probes to time out, for the
// daemon to converge), so a few at once on one node cut the wall time.
const defaultConcurrency = 4

func concurrency(t *testing.T) int {
	s := os.Getenv(concurrencyEnv)
	if s == "" {
		return defaultConcurrency
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 32 {
		t.Fatalf("$%s=%q: want a number from 1 to 32", concurrencyEnv, s)
	}
	return n
}

// suiteOptions are the netpol timings on a real node: podwalld enforces a
// change within a few seconds of the API write, a blocked probe costs its
// 1 s timeout.
func suiteOptions() netpol.Options {
	return netpol.Options{
		Family:       netpol.IPv4,
		CellTimeout:  10 * time.Second,
		PollInterval: 500 * time.Millisecond,
		Workers:      8,
	}
}

// runSuite runs tests on one node of the shared control plane, with the bed
// bedName and the pod range podRange (inside podRangeV4), concurrency() tests
// at a time, each with its own kubeCluster and its own
// namespaces (the runner's random suffix).
//
// With $PODWALL_E2E_NO_ENFORCEMENT=1 the node has no podwall and no daemon:
// every test that expects a connection to be denied by a policy must then
// fail, and the others must pass (netpol.SuiteOptions.Unenforced).
func runSuite(t *testing.T, bedName, podRange string, tests []netpol.Test) {
	cp := theSharedCluster(t)
	// The suites share the control plane but nothing else: their nodes
	// have their own beds, ranges and daemons.
	t.Parallel()
	off := harness.EnforcementOff()
	node := newNode(t, cp, nodeOptions{Name: bedName, PodCIDRv4: netip.MustParsePrefix(podRange), NoEnforcement: off})
	if v, err := cp.Client().Discovery().ServerVersion(); err == nil {
		// Read by test/cmd/conformance.
		t.Logf("kubernetes-version: %s", v.GitVersion)
	}
	opts := suiteOptions()
	if off {
		// Without enforcement the outcome is settled on the first probe;
		// waiting 10 s per wrong cell would only slow the failures down.
		opts.CellTimeout = 2 * time.Second
	}
	start := time.Now()
	netpol.RunSuite(t, tests, netpol.SuiteOptions[*kubeCluster]{
		Options:     opts,
		Unenforced:  off,
		Concurrency: concurrency(t),
		Cluster: func(t *testing.T, opts *netpol.Options) *kubeCluster {
			c := newKubeCluster(node, t.Logf)
			opts.Logf = c.Logf
			return c
		},
		Failed: func(_ context.Context, t *testing.T, c *kubeCluster) {
			if c.diagnosis != "" {
				t.Logf("podwalld's view before the teardown:\n%s", c.diagnosis)
			}
		},
	})
	t.Logf("%d tests in %s", len(tests), time.Since(start).Round(time.Second))
}
