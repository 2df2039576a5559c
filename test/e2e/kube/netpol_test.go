package kubee2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/test/netpol"
)

// The upstream NetworkPolicy suites (test/netpol) on a real API server: one
// control plane shared by the suites, one node (bed, podwalld, kubelet) per
// suite, fresh namespaces and pods for every test, each test a subtest named
// after its upstream It string.

func TestKubeUpstreamLegacy118(t *testing.T) {
	runSuite(t, suiteRun{bed: "k8nl", podRange: "10.213.0.0/20", tests: netpol.Legacy118()})
}

func TestKubeUpstreamNetpol(t *testing.T) {
	runSuite(t, suiteRun{bed: "k8nn", podRange: "10.213.16.0/20", tests: netpol.Netpol()})
}

func TestKubeUpstreamNetpolUDP(t *testing.T) {
	runSuite(t, suiteRun{bed: "k8nu", podRange: "10.213.32.0/20", tests: netpol.NetpolUDP()})
}

func TestKubeUpstreamNetpolSCTP(t *testing.T) {
	runSuite(t, suiteRun{bed: "k8ns", podRange: "10.213.48.0/20", tests: netpol.NetpolSCTP()})
}

// suiteRun is one suite on its own node.
type suiteRun struct {
	bed      string // bed name
	podRange string // inside podRangeV4
	tests    []netpol.Test
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

// runSuite runs every test of s on one node of the shared control plane,
// concurrency() tests at a time, each with its own kubeCluster and its own
// namespaces (the runner's random suffix).
//
// With $PODWALL_E2E_NO_ENFORCEMENT=1 the node has no podwall and no daemon:
// every test that expects a connection to be denied by a policy must then
// fail, and the others must pass (checkUnenforced).
func runSuite(t *testing.T, s suiteRun) {
	cp := theSharedCluster(t)
	// The suites share the control plane but nothing else: their nodes
	// have their own beds, ranges and daemons.
	t.Parallel()
	off := enforcementOff()
	node := newNode(t, cp, nodeOptions{Name: s.bed, PodCIDRv4: netip.MustParsePrefix(s.podRange), NoEnforcement: off})
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
	var tally unenforcedTally
	sem := make(chan struct{}, concurrency(t))
	var wg sync.WaitGroup
	for _, test := range s.tests {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// t.Run from several goroutines: subtests run at once without
			// t.Parallel, whose limit (-parallel) the top-level tests share.
			t.Run(test.Name, func(t *testing.T) {
				c := newKubeCluster(node, t.Logf)
				opts := opts
				opts.Logf = c.Logf
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
				defer cancel()
				if off {
					checkUnenforced(t, ctx, c, test, opts, &tally)
					return
				}
				start := time.Now()
				if err := netpol.RunTest(ctx, c, test, opts); err != nil {
					t.Errorf("%s:\n%v", test.FullName(), err)
					if c.diagnosis != "" {
						t.Logf("podwalld's view before the teardown:\n%s", c.diagnosis)
					}
					return
				}
				t.Logf("passed in %s", time.Since(start).Round(time.Millisecond))
			})
		})
	}
	wg.Wait()
	t.Logf("%d tests in %s", len(s.tests), time.Since(start).Round(time.Second))
	if off {
		t.Logf("without enforcement: %d of %d tests expect a denial and %d of them failed; %d expect none and %d of them passed",
			tally.expectDenial, len(s.tests), tally.failedDenial, tally.expectNone, tally.passedNone)
	}
}

// unenforcedTally counts the outcomes of a suite without enforcement; its
// tests run at once, so it has a lock.
type unenforcedTally struct {
	mu                       sync.Mutex
	expectDenial, expectNone int
	failedDenial, passedNone int
}

// checkUnenforced runs test on the node without enforcement and checks the
// outcome: a test that expects a denial somewhere (as the in-memory model
// tells) must fail, one that does not must pass.
func checkUnenforced(t *testing.T, ctx context.Context, c *kubeCluster, test netpol.Test, opts netpol.Options, tally *unenforcedTally) {
	denials, err := modelDenials(ctx, test)
	if err != nil {
		t.Fatalf("%s on the in-memory model: %v", test.FullName(), err)
	}
	runErr := netpol.RunTest(ctx, c, test, opts)
	tally.mu.Lock()
	defer tally.mu.Unlock()
	if denials > 0 {
		tally.expectDenial++
		if runErr == nil {
			t.Errorf("%s expects %d denied probes but passed with enforcement off: it proves nothing", test.FullName(), denials)
			return
		}
		tally.failedDenial++
		t.Logf("FAILED as it must without enforcement (%d denied probes expected): %s", denials, firstLine(runErr.Error()))
		return
	}
	tally.expectNone++
	if runErr != nil {
		t.Errorf("%s expects no denial but failed with enforcement off (a harness problem):\n%v", test.FullName(), runErr)
		return
	}
	tally.passedNone++
	t.Logf("passed without enforcement: the test expects no denial")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// modelDenials runs test on the in-memory cluster and counts the probes it
// answered "denied" to a pod that serves the port: connections the test
// expects a policy to block.
func modelDenials(ctx context.Context, test netpol.Test) (int, error) {
	rc := &denialCounter{ModelCluster: netpol.NewModelCluster()}
	opts := netpol.Options{Family: netpol.IPv4, CellTimeout: time.Millisecond, PollInterval: time.Millisecond}
	if err := netpol.RunTest(ctx, rc, test, opts); err != nil {
		return 0, fmt.Errorf("run on the model: %w", err)
	}
	return rc.denied, nil
}

// denialCounter is the in-memory cluster counting policy denials.
type denialCounter struct {
	*netpol.ModelCluster
	model *netpol.Model

	mu     sync.Mutex // Probe runs concurrently
	denied int
}

func (d *denialCounter) Setup(ctx context.Context, m *netpol.Model) error {
	d.model = m
	return d.ModelCluster.Setup(ctx, m)
}

func (d *denialCounter) Probe(ctx context.Context, from, to netpol.PodRef, family netpol.Family, port int, proto corev1.Protocol) (bool, error) {
	ok, err := d.ModelCluster.Probe(ctx, from, to, family, port, proto)
	if err == nil && !ok {
		if p := d.model.Pod(to); p != nil && p.Serves(port, proto) {
			d.mu.Lock()
			d.denied++
			d.mu.Unlock()
		}
	}
	return ok, err
}
