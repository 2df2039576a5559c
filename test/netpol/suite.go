package netpol

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// SuiteOptions configures RunSuite on clusters of type C.
type SuiteOptions[C Cluster] struct {
	// Options are every test's; RunSuite sets Logf to the subtest's t.Logf
	// before calling Cluster, which may set another.
	Options Options
	// Unenforced says the node enforces nothing: a test that expects a
	// connection to be denied by a policy (as the in-memory model tells) must
	// then fail, and the others must pass.
	Unenforced bool
	// Concurrency is how many tests run at once; 0 or 1 runs them one after
	// the other, in order.
	Concurrency int
	// Cluster returns the cluster the test of t runs on and may change its
	// options.
	Cluster func(t *testing.T, opts *Options) C
	// Failed, when set, is called after a test failed (with enforcement), to
	// log diagnostics or clean up; ctx is the test's.
	Failed func(ctx context.Context, t *testing.T, c C)
}

// suiteTestTimeout bounds each test of RunSuite.
const suiteTestTimeout = 5 * time.Minute

// RunSuite runs every test of tests as a subtest of t named after it, each
// within 5 minutes on the cluster o.Cluster returns, and logs how long a
// passing one took. Subtests run from several goroutines when
// o.Concurrency > 1 (t.Run, not t.Parallel, whose limit the top-level tests
// share).
func RunSuite[C Cluster](t *testing.T, tests []Test, o SuiteOptions[C]) {
	t.Helper()
	var tally unenforcedTally
	run := func(test Test) {
		t.Run(test.Name, func(t *testing.T) {
			opts := o.Options
			opts.Logf = t.Logf
			c := o.Cluster(t, &opts)
			ctx, cancel := context.WithTimeout(t.Context(), suiteTestTimeout)
			defer cancel()
			if o.Unenforced {
				checkUnenforced(t, ctx, c, test, opts, &tally)
				return
			}
			start := time.Now()
			if err := RunTest(ctx, c, test, opts); err != nil {
				t.Errorf("%s:\n%v", test.FullName(), err)
				if o.Failed != nil {
					o.Failed(ctx, t, c)
				}
				return
			}
			t.Logf("passed in %s", time.Since(start).Round(time.Millisecond))
		})
	}
	if o.Concurrency <= 1 {
		for _, test := range tests {
			run(test)
		}
	} else {
		sem := make(chan struct{}, o.Concurrency)
		var wg sync.WaitGroup
		for _, test := range tests {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				run(test)
			})
		}
		wg.Wait()
	}
	if o.Unenforced {
		t.Logf("without enforcement: %d of %d tests expect a denial and %d of them failed; %d expect none and %d of them passed",
			tally.expectDenial, len(tests), tally.failedDenial, tally.expectNone, tally.passedNone)
	}
}

// unenforcedTally counts the outcomes of a suite without enforcement; its
// tests may run at once, so it has a lock.
type unenforcedTally struct {
	mu                       sync.Mutex
	expectDenial, expectNone int
	failedDenial, passedNone int
}

// checkUnenforced runs test on a node without enforcement and checks the
// outcome: a test that expects a denial somewhere (as the in-memory model
// tells) must fail, one that does not must pass.
func checkUnenforced(t *testing.T, ctx context.Context, c Cluster, test Test, opts Options, tally *unenforcedTally) {
	denials, err := modelDenials(ctx, test)
	if err != nil {
		t.Fatalf("%s on the in-memory model: %v", test.FullName(), err)
	}
	runErr := RunTest(ctx, c, test, opts)
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
// expects a policy to block (the model passes every test, so each answer is
// the expected one).
func modelDenials(ctx context.Context, test Test) (int, error) {
	rc := &denialCounter{ModelCluster: NewModelCluster()}
	opts := Options{Family: IPv4, CellTimeout: time.Millisecond, PollInterval: time.Millisecond}
	if err := RunTest(ctx, rc, test, opts); err != nil {
		return 0, fmt.Errorf("run on the model: %w", err)
	}
	return rc.denied, nil
}

// denialCounter is the in-memory cluster counting policy denials.
type denialCounter struct {
	*ModelCluster
	model *Model

	mu     sync.Mutex // Probe runs concurrently
	denied int
}

func (d *denialCounter) Setup(ctx context.Context, m *Model) error {
	d.model = m
	return d.ModelCluster.Setup(ctx, m)
}

func (d *denialCounter) Probe(ctx context.Context, from, to PodRef, family Family, port int, proto corev1.Protocol) (bool, error) {
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
