package kubee2e

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
	"github.com/podwall/podwall/test/netpol"
)

// The upstream NetworkPolicy suites (test/netpol) on a real API server: one
// dual-stack control plane shared by every run, fresh namespaces and pods
// for every test, each test a subtest named after its upstream It string.
//
// A run is the four suites in one mode: the pods' families (IPv4, IPv6 or
// dual-stack), the family probed (both, one after the other, on dual-stack
// pods) and the path (the pod's IP, or its Service's ClusterIP through the
// real kube-proxy). The IPv4 pod-IP run is one Go test per suite, each on
// its own node; every other run is one Go test with a subtest per suite (and
// per family on dual-stack pods), its suites at once on one node:
//
//	TestKubeUpstreamLegacy118 …SCTP          IPv4 pods, pod IP
//	TestKubeUpstreamService/<suite>          IPv4 pods, Service
//	TestKubeUpstreamIPv6/<suite>             IPv6 pods, pod IP
//	TestKubeUpstreamIPv6Service/<suite>      IPv6 pods, Service
//	TestKubeUpstreamDualStack/<family>/<suite>         dual-stack pods, pod IP
//	TestKubeUpstreamDualStackService/<family>/<suite>  dual-stack pods, Service
//
// The IPv6 and dual-stack runs skip unless $PODWALL_KUBE_E2E_ALL_MODES=1
// (`make conformance` sets it): with them the package takes over 20 minutes
// on a busy 2-core machine, too long for `make test`.

func TestKubeUpstreamLegacy118(t *testing.T) {
	runSuiteOnOwnNode(t, "k8nl", "10.213.0.0/20", netpol.Legacy118())
}
func TestKubeUpstreamNetpol(t *testing.T) {
	runSuiteOnOwnNode(t, "k8nn", "10.213.16.0/20", netpol.Netpol())
}
func TestKubeUpstreamNetpolUDP(t *testing.T) {
	runSuiteOnOwnNode(t, "k8nu", "10.213.32.0/20", netpol.NetpolUDP())
}
func TestKubeUpstreamNetpolSCTP(t *testing.T) {
	runSuiteOnOwnNode(t, "k8ns", "10.213.48.0/20", netpol.NetpolSCTP())
}

func TestKubeUpstreamService(t *testing.T) {
	runMode(t, modeOptions{Bed: "k8nsv", PodCIDRv4: "10.213.80.0/20", Service: true})
}

func TestKubeUpstreamIPv6(t *testing.T) {
	runMode(t, modeOptions{Bed: "k8s6p", PodCIDRv6: "fd00:213::1:0:0:0/80", Extra: true})
}

func TestKubeUpstreamIPv6Service(t *testing.T) {
	runMode(t, modeOptions{Bed: "k8s6s", PodCIDRv6: "fd00:213::2:0:0:0/80", Service: true, Extra: true})
}

func TestKubeUpstreamDualStack(t *testing.T) {
	runMode(t, modeOptions{Bed: "k8dp", PodCIDRv4: "10.213.96.0/20", PodCIDRv6: "fd00:213::3:0:0:0/80", Extra: true})
}

func TestKubeUpstreamDualStackService(t *testing.T) {
	runMode(t, modeOptions{Bed: "k8ds", PodCIDRv4: "10.213.112.0/20", PodCIDRv6: "fd00:213::4:0:0:0/80", Service: true, Extra: true})
}

// allModesEnv names the environment variable that, set to 1, runs the
// extra runs (modeOptions.Extra) too.
const allModesEnv = "PODWALL_KUBE_E2E_ALL_MODES"

// suites are the upstream suites by the names of their subtests.
var suites = []struct {
	Name  string
	Tests func() []netpol.Test
}{
	{"Legacy118", netpol.Legacy118},
	{"Netpol", netpol.Netpol},
	{"NetpolUDP", netpol.NetpolUDP},
	{"NetpolSCTP", netpol.NetpolSCTP},
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

// testsAtOnceEnv names the environment variable setting how many upstream
// tests run at once in the whole package, over all runs (default
// defaultTestsAtOnce).
const testsAtOnceEnv = "PODWALL_KUBE_E2E_TESTS_AT_ONCE"

// defaultTestsAtOnce bounds the package's upstream tests in flight: the
// runs go at once (go test's -parallel), each with suites at once, and
// more than about eight tests at a time only overload a 2-core machine.
const defaultTestsAtOnce = 8

var (
	testsAtOnceOnce sync.Once
	testsAtOnce     chan struct{}
)

// takeTestSlot waits until fewer than the package's limit of upstream
// tests run, counts t among them until it ends, and returns how long it
// waited.
func takeTestSlot(t *testing.T) time.Duration {
	testsAtOnceOnce.Do(func() {
		n := defaultTestsAtOnce
		if s := os.Getenv(testsAtOnceEnv); s != "" {
			v, err := strconv.Atoi(s)
			if err != nil || v < 1 || v > 64 {
				t.Fatalf("$%s=%q: want a number from 1 to 64", testsAtOnceEnv, s)
			}
			n = v
		}
		testsAtOnce = make(chan struct{}, n)
	})
	start := time.Now()
	select {
	case testsAtOnce <- struct{}{}:
	case <-t.Context().Done():
		t.Fatal("test ended while waiting for a slot")
	}
	t.Cleanup(func() { <-testsAtOnce })
	return time.Since(start)
}

// suiteOptions are the netpol timings on a real node: podwalld enforces a
// change within a few seconds of the API write, a blocked probe costs its
// 1 s timeout. A cell that connects is settled on its first probe, which
// may run before podwalld enforces the change just made: every validation
// probes those cells again 3 s after it began (in Service mode a ClusterIP
// wrongly blocked once the change is enforced would otherwise pass).
func suiteOptions(family netpol.Family) netpol.Options {
	return netpol.Options{
		Family:       family,
		CellTimeout:  10 * time.Second,
		PollInterval: 500 * time.Millisecond,
		Workers:      8,
		ConfirmAfter: 3 * time.Second,
	}
}

// runSuiteOnOwnNode runs tests on a node of its own (bed bedName, IPv4 pod
// range podRange inside podRangeV4) of the shared control plane, probing
// pod IPs. The suites of the IPv4 pod-IP run share the control plane but
// nothing else: their nodes have their own beds, ranges and daemons.
func runSuiteOnOwnNode(t *testing.T, bedName, podRange string, tests []netpol.Test) {
	cp := theSharedCluster(t)
	t.Parallel()
	node := newNode(t, cp, nodeOptions{Name: bedName, PodCIDRv4: netip.MustParsePrefix(podRange), NoEnforcement: harness.EnforcementOff()})
	logKubeVersion(t, cp)
	runSuite(t, node, nil, netpol.IPv4, tests)
}

// modeOptions describe a run of the four suites on one node.
type modeOptions struct {
	// Bed names the node's bed (see nodeOptions.Name).
	Bed string
	// PodCIDRv4 and PodCIDRv6 are the node's pod ranges: IPv4, IPv6 or
	// both (dual-stack pods, each family probed in turn).
	PodCIDRv4, PodCIDRv6 string
	// Service probes the pods' Services instead of their IPs.
	Service bool
	// Extra runs only with $PODWALL_KUBE_E2E_ALL_MODES=1.
	Extra bool
}

// runMode runs the four suites on one new node of the shared control plane
// (with the shared kube-proxy in Service mode), at once, each family of
// the pods in turn.
func runMode(t *testing.T, o modeOptions) {
	if o.Extra && os.Getenv(allModesEnv) != "1" {
		requireKube(t)
		t.Skipf("an extra run: set %s=1 or run make conformance", allModesEnv)
	}
	cp := theSharedCluster(t)
	var proxy *cluster.Proxy
	if o.Service {
		proxy = theSharedProxy(t)
	}
	t.Parallel()
	nodeOpts := nodeOptions{Name: o.Bed, NoEnforcement: harness.EnforcementOff()}
	var families []netpol.Family
	if o.PodCIDRv4 != "" {
		nodeOpts.PodCIDRv4 = netip.MustParsePrefix(o.PodCIDRv4)
		families = append(families, netpol.IPv4)
	}
	if o.PodCIDRv6 != "" {
		nodeOpts.PodCIDRv6 = netip.MustParsePrefix(o.PodCIDRv6)
		families = append(families, netpol.IPv6)
	}
	node := newNode(t, cp, nodeOpts)
	logKubeVersion(t, cp)
	start := time.Now()
	runSuites := func(t *testing.T, family netpol.Family) {
		var wg sync.WaitGroup
		for _, s := range suites {
			wg.Go(func() {
				t.Run(s.Name, func(t *testing.T) { runSuite(t, node, proxy, family, s.Tests()) })
			})
		}
		wg.Wait()
	}
	if len(families) == 1 {
		runSuites(t, families[0])
	} else {
		for _, f := range families {
			t.Run(f.String(), func(t *testing.T) { runSuites(t, f) })
		}
	}
	t.Logf("mode done in %s", time.Since(start).Round(time.Second))
}

// logKubeVersion logs the API server's version, which test/cmd/conformance
// reads from the test output.
func logKubeVersion(t *testing.T, cp *controlPlane) {
	if v, err := cp.Client().Discovery().ServerVersion(); err == nil {
		t.Logf("kubernetes-version: %s", v.GitVersion)
	}
}

// runSuite runs tests on node, probing family, concurrency() tests at a
// time, each with its own kubeCluster and its own namespaces (the runner's
// random suffix); with proxy set, through the pods' Services (their target
// ports named, except in the legacy suite, which upstream wrote with
// numbers).
//
// With $PODWALL_E2E_NO_ENFORCEMENT=1 the node has no podwall and no daemon:
// every test that expects a connection to be denied by a policy must then
// fail, and the others must pass (netpol.SuiteOptions.Unenforced).
func runSuite(t *testing.T, node *kubeNode, proxy *cluster.Proxy, family netpol.Family, tests []netpol.Test) {
	off := harness.EnforcementOff()
	opts := suiteOptions(family)
	if off {
		// Without enforcement the outcome is settled on the first probe;
		// waiting 10 s per wrong cell would only slow the failures down.
		opts.CellTimeout = 2 * time.Second
	}
	named := len(tests) > 0 && tests[0].Suite != netpol.SuiteLegacy
	start := time.Now()
	netpol.RunSuite(t, tests, netpol.SuiteOptions[*kubeCluster]{
		Options:     opts,
		Unenforced:  off,
		Concurrency: concurrency(t),
		Cluster: func(t *testing.T, opts *netpol.Options) *kubeCluster {
			if waited := takeTestSlot(t); waited > time.Second {
				t.Logf("waited %s for one of the %d slots of upstream tests", waited.Round(time.Second), cap(testsAtOnce))
			}
			c := newKubeCluster(node, t.Logf)
			if proxy != nil {
				c = newKubeServiceCluster(node, proxy, named, t.Logf)
			}
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
