package e2e

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/test/netpol"
)

// The upstream NetworkPolicy suites (test/netpol) on a real node: one bed and
// one podwalld per suite, the suites in parallel, pods kept across tests
// (manifestsCluster), each test a subtest named after its upstream It string
// and run in upstream order.

func TestUpstreamLegacy118(t *testing.T) {
	runSuite(t, suiteRun{bed: "e2nl", podRange: "10.210.0.0/20", tests: netpol.Legacy118()})
}

func TestUpstreamNetpol(t *testing.T) {
	runSuite(t, suiteRun{bed: "e2nn", podRange: "10.210.16.0/20", tests: netpol.Netpol()})
}

func TestUpstreamNetpolUDP(t *testing.T) {
	runSuite(t, suiteRun{bed: "e2nu", podRange: "10.210.32.0/20", tests: netpol.NetpolUDP()})
}

func TestUpstreamNetpolSCTP(t *testing.T) {
	runSuite(t, suiteRun{bed: "e2ns", podRange: "10.210.48.0/20", tests: netpol.NetpolSCTP()})
}

// suiteRun is one suite on its own bed.
type suiteRun struct {
	bed      string // bed name, also the namespace suffix of every test
	podRange string // inside podRangeV4
	tests    []netpol.Test
}

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

// runSuite runs every test of s in order against one manifestsCluster. A
// failed test is diagnosed (podwallctl's view, rules included) and its pods
// are deleted, so the next test starts from fresh ones.
//
// With $PODWALL_E2E_NO_ENFORCEMENT=1 the node has no podwall and no daemon:
// every test that expects a connection to be denied by a policy must then
// fail, and the others must pass (checkUnenforced).
func runSuite(t *testing.T, s suiteRun) {
	requireE2E(t)
	// Suites share nothing (own bed, range, daemon): they run at once, which
	// takes the run from about 3.6 to 2.5 minutes (probes mostly wait).
	t.Parallel()
	off := enforcementOff()
	prefix := netip.MustParsePrefix(s.podRange)
	if !podRangeV4.Contains(prefix.Addr()) || prefix.Bits() < podRangeV4.Bits() {
		t.Fatalf("pod range %s is not inside %s", prefix, podRangeV4)
	}
	env := newEnv(t, envOptions{Name: s.bed, PodCIDRv4: prefix, NoEnforcement: off})
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
	opts.NamespaceSuffix = s.bed
	if off {
		// Without enforcement the outcome is settled on the first probe;
		// waiting 10 s per wrong cell would only slow the failures down.
		opts.CellTimeout = 2 * time.Second
	}
	var tally unenforcedTally
	for _, test := range s.tests {
		t.Run(test.Name, func(t *testing.T) {
			opts := opts
			opts.Logf = t.Logf
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
			defer cancel()
			if off {
				checkUnenforced(t, ctx, c, test, opts, &tally)
				return
			}
			start := time.Now()
			err := netpol.RunTest(ctx, c, test, opts)
			if err != nil {
				t.Errorf("%s:\n%v", test.FullName(), err)
				t.Logf("podwalld's view after the failure:\n%s", c.diagnose(context.WithoutCancel(ctx)))
				if rerr := c.release(context.WithoutCancel(ctx)); rerr != nil {
					t.Errorf("%v", rerr)
				}
				return
			}
			t.Logf("passed in %s", time.Since(start).Round(time.Millisecond))
		})
	}
	if off {
		t.Logf("without enforcement: %d of %d tests expect a denial and %d of them failed; %d expect none and %d of them passed",
			tally.expectDenial, len(s.tests), tally.failedDenial, tally.expectNone, tally.passedNone)
	}
}

// unenforcedTally counts the outcomes of a suite without enforcement.
type unenforcedTally struct {
	expectDenial, failedDenial int
	expectNone, passedNone     int
}

// checkUnenforced runs test on the node without enforcement and checks the
// outcome: a test that expects a denial somewhere (as the in-memory model
// tells) must fail, one that does not must pass.
func checkUnenforced(t *testing.T, ctx context.Context, c *manifestsCluster, test netpol.Test, opts netpol.Options, tally *unenforcedTally) {
	denials, err := modelDenials(ctx, test)
	if err != nil {
		t.Fatalf("%s on the in-memory model: %v", test.FullName(), err)
	}
	runErr := netpol.RunTest(ctx, c, test, opts)
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
// expects a policy to block (the model passes every test, so each answer is
// the expected one).
func modelDenials(ctx context.Context, test netpol.Test) (int, error) {
	rc := &denialCounter{ModelCluster: netpol.NewModelCluster()}
	opts := netpol.Options{Family: netpol.IPv4, CellTimeout: time.Millisecond, PollInterval: time.Millisecond}
	if err := netpol.RunTest(ctx, rc, test, opts); err != nil {
		return 0, err
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
