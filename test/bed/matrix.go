package bed

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// matrixWorkers bounds the probes a matrix runs at once.
const matrixWorkers = 16

// MatrixOptions says what a reachability matrix probes.
type MatrixOptions struct {
	Port     int
	Protocol string
	// Timeout of each probe.
	Timeout time.Duration
	// Family restricts the probes to one address family. Zero probes every
	// family both pods of a pair have; the cell is "." or "X" when they all
	// agree and "!" (never matching an expectation) when they disagree.
	Family Family
	// Want, if set, makes every probe retry (every second, for up to Within)
	// until it observes Want's cell, as upstream does.
	Want   *Truth
	Within time.Duration
}

// Matrix probes every ordered pair of distinct pods (loopback cells stay
// unset) on port/proto in every address family both have, in parallel, and
// returns the observed table. Probes that could not run leave their cell
// unset and are reported by the table's Err.
func (b *Bed) Matrix(ctx context.Context, pods []*Pod, port int, proto string, timeout time.Duration) *Truth {
	return b.Reachability(ctx, pods, MatrixOptions{Port: port, Protocol: proto, Timeout: timeout})
}

// MatrixUntil is Matrix where each probe is retried until it observes want's
// cell or within has passed (upstream's probing).
func (b *Bed) MatrixUntil(ctx context.Context, pods []*Pod, want *Truth, port int, proto string, timeout, within time.Duration) *Truth {
	return b.Reachability(ctx, pods, MatrixOptions{Port: port, Protocol: proto, Timeout: timeout, Want: want, Within: within})
}

// Reachability probes the matrix opts describes.
func (b *Bed) Reachability(ctx context.Context, pods []*Pod, opts MatrixOptions) *Truth {
	items := make([]string, len(pods))
	for i, p := range pods {
		items[i] = p.String()
	}
	t := newTruth(items)
	proto, err := parseProtocol(opts.Protocol)
	if err == nil {
		err = checkPort(opts.Port)
	}
	if err == nil && opts.Timeout <= 0 {
		err = fmt.Errorf("timeout %s must be positive", opts.Timeout)
	}
	if err != nil {
		t.addErr(fmt.Errorf("matrix: %w", err))
		return t
	}
	opts.Protocol = proto

	type job struct{ from, to *Pod }
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range min(matrixWorkers, max(1, len(pods)*len(pods))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				c, err := probePair(ctx, j.from, j.to, opts)
				if err != nil {
					t.addErr(err)
					continue
				}
				t.set(j.from.String(), j.to.String(), c)
			}
		}()
	}
	for _, from := range pods {
		for _, to := range pods {
			if from != to {
				jobs <- job{from, to}
			}
		}
	}
	close(jobs)
	wg.Wait()
	return t
}

// probePair probes from -> to in the families opts asks for and folds the
// results into one cell.
func probePair(ctx context.Context, from, to *Pod, opts MatrixOptions) (cell, error) {
	var families []Family
	for _, f := range to.Families() {
		if _, ok := from.IP(f); ok && (opts.Family == 0 || opts.Family == f) {
			families = append(families, f)
		}
	}
	if len(families) == 0 {
		if opts.Family != 0 {
			return unset, nil // the pair has no address of that family: not probed
		}
		return unset, fmt.Errorf("probe %s -> %s: no address family in common", from, to)
	}
	want, wantSet := false, false
	if opts.Want != nil {
		want, wantSet = opts.Want.Get(from.String(), to.String())
	}
	var seen [2]bool // connected, blocked
	for _, f := range families {
		var got bool
		var err error
		if wantSet {
			got, err = ProbePodUntil(ctx, from, to, f, opts.Port, opts.Protocol, opts.Timeout, want, opts.Within)
		} else {
			got, err = ProbePod(ctx, from, to, f, opts.Port, opts.Protocol, opts.Timeout)
		}
		if err != nil {
			return unset, err
		}
		if got {
			seen[0] = true
		} else {
			seen[1] = true
		}
	}
	switch {
	case seen[0] && seen[1]:
		return mixed, nil
	case seen[0]:
		return connected, nil
	}
	return blocked, nil
}
