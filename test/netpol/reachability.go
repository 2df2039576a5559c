package netpol

import (
	corev1 "k8s.io/api/core/v1"
)

// TestCase is one reachability matrix to validate: every client probes every
// server on ToPort/Protocol.
type TestCase struct {
	ToPort       int
	Protocol     corev1.Protocol
	Reachability *Reachability
}

// Peer matches pods by namespace and name; an empty field matches anything.
// ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false) means "everything into
// namespace x is denied".
type Peer struct {
	Namespace string
	Pod       string
}

// Matches reports whether pod matches p.
func (p *Peer) Matches(pod PodRef) bool {
	return (p.Namespace == "" || p.Namespace == pod.Namespace) && (p.Pod == "" || p.Pod == pod.Name)
}

// Reachability is the expected and the observed connectivity of a matrix of
// clients (Froms) and servers (Tos). Mutators apply in order; later calls win.
// A mutator given a pod outside the matrix records an error that Validate
// reports (Err), instead of panicking as upstream's Failf would.
type Reachability struct {
	Expected *TruthTable
	Observed *TruthTable
	Froms    []PodRef
	Tos      []PodRef
	err      error
}

// NewReachability returns the square matrix over pods with every cell
// expected to be defaultExpectation (upstream NewReachability).
func NewReachability(pods []PodRef, defaultExpectation bool) *Reachability {
	return newReachability(pods, pods, defaultExpectation)
}

// newReachability returns a froms×tos matrix, every cell expected to be
// defaultExpectation. The legacy suite uses 1×1 matrices.
func newReachability(froms, tos []PodRef, defaultExpectation bool) *Reachability {
	fromNames, toNames := podStrings(froms), podStrings(tos)
	return &Reachability{
		Expected: NewTruthTable(fromNames, toNames, &defaultExpectation),
		Observed: NewTruthTable(fromNames, toNames, nil),
		Froms:    froms,
		Tos:      tos,
	}
}

func podStrings(pods []PodRef) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.String()
	}
	return out
}

// Err returns the first error a mutator recorded.
func (r *Reachability) Err() error { return r.err }

func (r *Reachability) record(err error) {
	if err != nil && r.err == nil {
		r.err = err
	}
}

// AllowLoopback expects every pod to reach itself. Loopback cells are never
// counted (nor probed) by Validate; this only changes how tables print.
func (r *Reachability) AllowLoopback() {
	for _, from := range r.Froms {
		for _, to := range r.Tos {
			if from == to {
				r.record(r.Expected.Set(from.String(), to.String(), true))
			}
		}
	}
}

// Expect sets the expectation of one cell.
func (r *Reachability) Expect(from, to PodRef, connected bool) {
	r.record(r.Expected.Set(from.String(), to.String(), connected))
}

// ExpectAllIngress sets the whole column →pod: all traffic into pod.
func (r *Reachability) ExpectAllIngress(pod PodRef, connected bool) {
	r.record(r.Expected.SetAllTo(pod.String(), connected))
}

// ExpectAllEgress sets the whole row pod→: all traffic out of pod.
func (r *Reachability) ExpectAllEgress(pod PodRef, connected bool) {
	r.record(r.Expected.SetAllFrom(pod.String(), connected))
}

// ExpectPeer sets every cell whose client matches from and whose server
// matches to.
func (r *Reachability) ExpectPeer(from, to *Peer, connected bool) {
	for _, f := range r.Froms {
		if !from.Matches(f) {
			continue
		}
		for _, t := range r.Tos {
			if to.Matches(t) {
				r.record(r.Expected.Set(f.String(), t.String(), connected))
			}
		}
	}
}

// Observe records one observation.
func (r *Reachability) Observe(from, to PodRef, connected bool) {
	r.record(r.Observed.Set(from.String(), to.String(), connected))
}

// Summary compares expected and observed: trueObs cells agree, falseObs
// disagree (or were not observed), ignoredObs are loopback cells skipped when
// ignoreLoopback is set.
func (r *Reachability) Summary(ignoreLoopback bool) (trueObs, falseObs, ignoredObs int, comparison *TruthTable, err error) {
	comparison, err = r.Expected.Compare(r.Observed)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	for _, from := range comparison.Froms {
		for _, to := range comparison.Tos {
			val, ok := comparison.Get(from, to)
			switch {
			case ignoreLoopback && from == to:
				ignoredObs++
			case ok && val:
				trueObs++
			default:
				falseObs++
			}
		}
	}
	return trueObs, falseObs, ignoredObs, comparison, nil
}
