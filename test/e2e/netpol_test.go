package e2e

import (
	"context"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/netpol"
)

// The upstream NetworkPolicy suites (test/netpol) on a real node: one bed and
// one podwalld per suite, the suites in parallel, pods kept across tests
// (manifestsCluster), each test a subtest named after its upstream It string
// and run in upstream order.

func TestUpstreamLegacy118(t *testing.T)  { runSuite(t, "e2nl", "10.210.0.0/20", netpol.Legacy118()) }
func TestUpstreamNetpol(t *testing.T)     { runSuite(t, "e2nn", "10.210.16.0/20", netpol.Netpol()) }
func TestUpstreamNetpolUDP(t *testing.T)  { runSuite(t, "e2nu", "10.210.32.0/20", netpol.NetpolUDP()) }
func TestUpstreamNetpolSCTP(t *testing.T) { runSuite(t, "e2ns", "10.210.48.0/20", netpol.NetpolSCTP()) }

// keepPodsEnv, set to 0, makes every test create and delete its own pods
// (slower; for comparison).
const keepPodsEnv = "PODWALL_E2E_KEEP_PODS"

// suiteOptions are the netpol timings on a real node: podwalld enforces a
// change within about 2 s, a blocked probe costs its 1 s timeout.
func suiteOptions() netpol.Options {
	return netpol.Options{
		Family:       netpol.IPv4,
		CellTimeout:  10 * time.Second,
		PollInterval: 500 * time.Millisecond,
		Workers:      12,
	}
}

// runSuite runs tests in order against one manifestsCluster on a bed of its
// own, named bedName (also the namespace suffix of every test), with the pod
// range podRange (inside podRangeV4). A failed test is diagnosed (podwallctl's view, rules included) and its pods
// are deleted, so the next test starts from fresh ones.
//
// With $PODWALL_E2E_NO_ENFORCEMENT=1 the node has no podwall and no daemon:
// every test that expects a connection to be denied by a policy must then
// fail, and the others must pass (netpol.SuiteOptions.Unenforced).
func runSuite(t *testing.T, bedName, podRange string, tests []netpol.Test) {
	requireE2E(t)
	// Suites share nothing (own bed, range, daemon): they run at once, which
	// takes the run from about 3.6 to 2.5 minutes (probes mostly wait).
	t.Parallel()
	off := harness.EnforcementOff()
	prefix := netip.MustParsePrefix(podRange)
	if !podRangeV4.Contains(prefix.Addr()) || prefix.Bits() < podRangeV4.Bits() {
		t.Fatalf("pod range %s is not inside %s", prefix, podRangeV4)
	}
	env := newEnv(t, envOptions{Name: bedName, PodCIDRv4: prefix, NoEnforcement: off})
	c := newManifestsCluster(env, os.Getenv(keepPodsEnv) != "0")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.release(ctx); err != nil {
			t.Errorf("%v", err)
		}
	})
	opts := suiteOptions()
	// Namespaces are named <prefix>-<base>-<bed>: the same for every test of
	// the suite, so consecutive tests find their pods. They are unique per
	// daemon (each suite has its own), which is what the random upstream
	// suffix is for; what a test leaves behind (policies, labels) is undone
	// and checked gone before the next one starts (manifestsCluster.Setup).
	opts.NamespaceSuffix = bedName
	if off {
		// Without enforcement the outcome is settled on the first probe;
		// waiting 10 s per wrong cell would only slow the failures down.
		opts.CellTimeout = 2 * time.Second
	}
	netpol.RunSuite(t, tests, netpol.SuiteOptions[*manifestsCluster]{
		Options:    opts,
		Unenforced: off,
		Cluster:    func(*testing.T, *netpol.Options) *manifestsCluster { return c },
		Failed: func(ctx context.Context, t *testing.T, c *manifestsCluster) {
			t.Logf("podwalld's view after the failure:\n%s", c.diagnose(context.WithoutCancel(ctx)))
			if rerr := c.release(context.WithoutCancel(ctx)); rerr != nil {
				t.Errorf("%v", rerr)
			}
		},
	})
}
