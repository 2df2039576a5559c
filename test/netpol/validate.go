package netpol

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Options tune how tests run. The zero value is upstream's behaviour on IPv4.
type Options struct {
	// Family is the IP family probes and ipBlocks use; default IPv4.
	Family Family
	// NamespaceSuffix is appended to every namespace name ("x" becomes
	// "netpol-x-<suffix>"); default a fresh random suffix per test.
	NamespaceSuffix string
	// CellTimeout bounds how long one cell is re-probed until it shows the
	// expected value; default 10 s. Every cell is probed at least once.
	CellTimeout time.Duration
	// PollInterval is the pause between probes of one cell; default 1 s.
	PollInterval time.Duration
	// Workers is the number of concurrent probes; default 3.
	Workers int
	// ConfirmAfter, when positive, makes Validate probe the cells expected
	// to connect once more after the matrix matched, no sooner than
	// ConfirmAfter after Validate began (a cell that connects is settled on
	// its first probe, which may run before the node enforces the change
	// that preceded the validation; the confirmation catches a connection
	// the enforced change wrongly blocks). Cells expected to be blocked are
	// retried until blocked, so their last probe already ran under the
	// change. Default 0: no confirmation, as upstream.
	ConfirmAfter time.Duration
	// Logf receives progress lines; default discard.
	Logf func(format string, args ...any)
}

func (o Options) withDefaults() Options {
	if o.Family == 0 {
		o.Family = IPv4
	}
	if o.CellTimeout == 0 {
		o.CellTimeout = 10 * time.Second
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 3
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// ignoreLoopback is upstream's setting: from == to cells never count.
const ignoreLoopback = true

// Validate probes the matrix of tc (upstream ValidateOrFail): every
// client→server cell except loopback, each retried until it shows the expected
// value or opts.CellTimeout passes. If any cell is wrong it probes the whole
// matrix once more (SECOND TRY). It returns an error with the expected,
// observed and comparison tables when cells are still wrong, and an error
// when the test case is malformed or probes cannot run. m supplies the family
// and the pods the matrix may name.
func Validate(ctx context.Context, c Cluster, m *Model, tc TestCase, opts Options) error {
	start := time.Now()
	opts = opts.withDefaults()
	r := tc.Reachability
	if err := checkTestCase(m, tc); err != nil {
		return fmt.Errorf("invalid test case: %w", err)
	}
	what := fmt.Sprintf("%s/%d", tc.Protocol, tc.ToPort)

	probeErrs, err := probeMatrix(ctx, c, m.Family, tc, opts, nil)
	if err != nil {
		return err
	}
	_, wrong, _, _, err := r.Summary(ignoreLoopback)
	if err != nil {
		return err
	}
	if wrong != 0 {
		opts.Logf("%s: failed first probe %d wrong results ... retrying (SECOND TRY)", what, wrong)
		if probeErrs, err = probeMatrix(ctx, c, m.Family, tc, opts, nil); err != nil {
			return err
		}
	}
	right, wrong, _, comparison, err := r.Summary(ignoreLoopback)
	if err != nil {
		return err
	}
	if wrong == 0 && opts.ConfirmAfter > 0 {
		if probeErrs, err = confirmConnected(ctx, c, m.Family, tc, opts, start); err != nil {
			return err
		}
		if right, wrong, _, comparison, err = r.Summary(ignoreLoopback); err != nil {
			return err
		}
		if wrong != 0 {
			what += fmt.Sprintf(" (confirmation %s after the validation began)", opts.ConfirmAfter)
		}
	}
	opts.Logf("%s: reachability: correct:%d, incorrect:%d, result=%t", what, right, wrong, wrong == 0)
	if wrong == 0 {
		return nil
	}
	return &MatrixError{What: what, Wrong: wrong, Reachability: r, Comparison: comparison, ProbeErrors: probeErrs}
}

// confirmConnected waits until opts.ConfirmAfter has passed since start and
// probes the cells expected to connect again (each retried as in the first
// pass), keeping the other cells' observations.
func confirmConnected(ctx context.Context, c Cluster, family Family, tc TestCase, opts Options, start time.Time) ([]string, error) {
	if wait := opts.ConfirmAfter - time.Since(start); wait > 0 {
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("confirm %s/%d: %w", tc.Protocol, tc.ToPort, ctx.Err())
		case <-timer.C:
		}
	}
	return probeMatrix(ctx, c, family, tc, opts, func(j probeJob) bool { return j.expected })
}

// MatrixError is Validate's error when cells stay wrong.
type MatrixError struct {
	What         string // "TCP/80"
	Wrong        int
	Reachability *Reachability
	Comparison   *TruthTable
	// ProbeErrors are the errors of the cells whose last probe could not
	// run, "from -> to: error"; such cells are unobserved and count as wrong.
	ProbeErrors []string
}

func (e *MatrixError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: had %d wrong results in reachability matrix\n", e.What, e.Wrong)
	fmt.Fprintf(&b, "expected:\n\n%s\n\nobserved:\n\n%s\n\ncomparison:\n\n%s\n",
		e.Reachability.Expected.PrettyPrint(""), e.Reachability.Observed.PrettyPrint(""), e.Comparison.PrettyPrint(""))
	if len(e.ProbeErrors) > 0 {
		fmt.Fprintf(&b, "\nprobe errors:\n%s\n", strings.Join(e.ProbeErrors, "\n"))
	}
	return b.String()
}

func checkTestCase(m *Model, tc TestCase) error {
	if m == nil {
		return errors.New("no model (the test set up no pods)")
	}
	if !m.Family.Valid() {
		return fmt.Errorf("model has invalid IP family %v", m.Family)
	}
	r := tc.Reachability
	if r == nil {
		return errors.New("no reachability")
	}
	if err := r.Err(); err != nil {
		return fmt.Errorf("reachability: %w", err)
	}
	switch tc.Protocol {
	case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		return fmt.Errorf("unsupported protocol %q", tc.Protocol)
	}
	if tc.ToPort < 1 || tc.ToPort > 65535 {
		return fmt.Errorf("port %d out of range 1-65535", tc.ToPort)
	}
	for _, refs := range [][]PodRef{r.Froms, r.Tos} {
		for _, ref := range refs {
			if m.Pod(ref) == nil {
				return fmt.Errorf("pod %s is not in the model", ref)
			}
		}
	}
	return nil
}

type probeJob struct {
	from, to PodRef
	expected bool
}

type probeResult struct {
	job      probeJob
	observed bool
	err      error
}

// probeMatrix probes every non-loopback cell of tc with opts.Workers workers
// and records the observations in a fresh Observed table. With only set, it
// probes only the cells only accepts and keeps the other observations (an
// accepted cell whose probe cannot run becomes unobserved). It returns the
// errors of the cells whose last probe could not run (left unobserved), and
// an error only when ctx ends.
func probeMatrix(ctx context.Context, c Cluster, family Family, tc TestCase, opts Options, only func(probeJob) bool) ([]string, error) {
	r := tc.Reachability
	if only == nil {
		r.Observed = NewTruthTable(r.Expected.Froms, r.Expected.Tos, nil)
	}

	var jobs []probeJob
	for _, from := range r.Froms {
		for _, to := range r.Tos {
			if from == to && ignoreLoopback {
				continue
			}
			expected, _ := r.Expected.Get(from.String(), to.String())
			job := probeJob{from: from, to: to, expected: expected}
			if only == nil || only(job) {
				jobs = append(jobs, job)
			}
		}
	}

	jobCh := make(chan probeJob)
	resCh := make(chan probeResult)
	var wg sync.WaitGroup
	for range min(opts.Workers, max(len(jobs), 1)) {
		wg.Go(func() {
			for job := range jobCh {
				observed, err := probeCell(ctx, c, family, tc, job, opts)
				resCh <- probeResult{job: job, observed: observed, err: err}
			}
		})
	}
	go func() {
		defer close(jobCh)
		for _, job := range jobs {
			select {
			case jobCh <- job:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(resCh)
	}()

	var probeErrs []string
	for res := range resCh {
		if res.err != nil {
			// A probe that could not run observed nothing: the cell stays
			// unset ("?") and counts as wrong, whatever was expected.
			probeErrs = append(probeErrs, fmt.Sprintf("%s -> %s: %v", res.job.from, res.job.to, res.err))
			delete(r.Observed.Values[res.job.from.String()], res.job.to.String())
			continue
		}
		r.Observe(res.job.from, res.job.to, res.observed)
	}
	slices.Sort(probeErrs)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("probe %s/%d: %w", tc.Protocol, tc.ToPort, err)
	}
	return probeErrs, nil
}

// probeCell probes one cell until it shows the expected value or
// opts.CellTimeout passes (upstream wait.PollImmediate(1s, 10s)); it returns
// the last observation and the last probe's error, if any.
func probeCell(ctx context.Context, c Cluster, family Family, tc TestCase, job probeJob, opts Options) (bool, error) {
	deadline := time.Now().Add(opts.CellTimeout)
	for {
		observed, err := c.Probe(ctx, job.from, job.to, family, tc.ToPort, tc.Protocol)
		if err != nil {
			observed = false
		}
		if (err == nil && observed == job.expected) || ctx.Err() != nil {
			return observed, err
		}
		remaining := time.Until(deadline)
		if remaining <= 0 {
			return observed, err
		}
		timer := time.NewTimer(min(opts.PollInterval, remaining))
		select {
		case <-ctx.Done():
			timer.Stop()
			return observed, err
		case <-timer.C:
		}
	}
}
