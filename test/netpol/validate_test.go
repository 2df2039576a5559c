package netpol

import (
	"context"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// scriptedCluster answers probes from a function and records them. Only
// Probe and Teardown do anything.
type scriptedCluster struct {
	probe func(from, to PodRef, port int, proto corev1.Protocol, attempt int) (bool, error)

	mu        sync.Mutex
	attempts  map[string]int
	probes    []string
	inFlight  atomic.Int32
	maxFlight atomic.Int32
	teardowns int
	setupErr  error
	created   []string
}

func (c *scriptedCluster) Setup(context.Context, *Model) error { return c.setupErr }
func (c *scriptedCluster) CreatePolicy(_ context.Context, np *networkingv1.NetworkPolicy) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.created = append(c.created, np.Namespace+"/"+np.Name)
	return nil
}
func (c *scriptedCluster) UpdatePolicy(context.Context, *networkingv1.NetworkPolicy) error {
	return nil
}
func (c *scriptedCluster) DeletePolicy(context.Context, string, string) error { return nil }
func (c *scriptedCluster) DeleteAllPolicies(context.Context) error            { return nil }
func (c *scriptedCluster) SetNamespaceLabels(context.Context, string, map[string]string) error {
	return nil
}
func (c *scriptedCluster) SetPodLabels(context.Context, string, string, map[string]string) error {
	return nil
}
func (c *scriptedCluster) PodIP(string, string, Family) (netip.Addr, bool) {
	return netip.Addr{}, false
}
func (c *scriptedCluster) Teardown(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.teardowns++
	return nil
}

func (c *scriptedCluster) Probe(_ context.Context, from, to PodRef, _ Family, port int, proto corev1.Protocol) (bool, error) {
	n := c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	for {
		m := c.maxFlight.Load()
		if n <= m || c.maxFlight.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(100 * time.Microsecond) // let workers overlap
	c.mu.Lock()
	key := from.String() + "->" + to.String()
	if c.attempts == nil {
		c.attempts = make(map[string]int)
	}
	c.attempts[key]++
	attempt := c.attempts[key]
	c.probes = append(c.probes, key)
	c.mu.Unlock()
	return c.probe(from, to, port, proto, attempt)
}

// threePodModel is x/a, x/b, y/a with fixed names.
func threePodModel(t *testing.T) *Model {
	t.Helper()
	m, err := newModel(modelSpec{
		prefix: "netpol", family: IPv4,
		ports: []int32{80}, protocols: []corev1.Protocol{corev1.ProtocolTCP},
		portName: truthTablePortName, podLabelKey: "pod",
		pods: []string{"x/a", "x/b", "y/a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// denyIntoXA is the truth: nothing reaches netpol-x/a.
func denyIntoXA(_, to PodRef, _ int, _ corev1.Protocol, _ int) (bool, error) {
	return to != Ref("netpol-x", "a"), nil
}

func TestValidatePasses(t *testing.T) {
	m := threePodModel(t)
	c := &scriptedCluster{probe: denyIntoXA}
	r := NewReachability(m.AllPodRefs(), true)
	r.ExpectAllIngress(Ref("netpol-x", "a"), false)
	if err := Validate(context.Background(), c, m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: r}, Options{}); err != nil {
		t.Fatal(err)
	}
	// 3×3 cells, loopback not probed, each right at once.
	if len(c.probes) != 6 {
		t.Errorf("%d probes, want 6: %v", len(c.probes), c.probes)
	}
	for _, p := range c.probes {
		if from, to, _ := strings.Cut(p, "->"); from == to {
			t.Errorf("loopback probed: %s", p)
		}
	}
}

func TestValidateFailureReport(t *testing.T) {
	m := threePodModel(t)
	c := &scriptedCluster{probe: func(from, to PodRef, port int, proto corev1.Protocol, attempt int) (bool, error) {
		if from == Ref("netpol-y", "a") && to == Ref("netpol-x", "b") {
			return false, errors.New("exec failed: no such container")
		}
		return denyIntoXA(from, to, port, proto, attempt)
	}}
	// Expects x/b isolated too, which the cluster does not do.
	r := NewReachability(m.AllPodRefs(), true)
	r.ExpectAllIngress(Ref("netpol-x", "a"), false)
	r.ExpectAllIngress(Ref("netpol-x", "b"), false)
	var logs []string
	opts := Options{CellTimeout: 5 * time.Millisecond, PollInterval: time.Millisecond, Logf: func(f string, a ...any) {
		logs = append(logs, f)
	}}
	err := Validate(context.Background(), c, m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: r}, opts)
	merr, ok := errors.AsType[*MatrixError](err)
	if !ok {
		t.Fatalf("Validate = %v, want a *MatrixError", err)
	}
	// x/a -> x/b connects; y/a -> x/b could not be probed: wrong although
	// a denial was expected, an error is no denial.
	if merr.Wrong != 2 || len(merr.ProbeErrors) != 1 {
		t.Errorf("Wrong = %d, probe errors %q; want 2 and 1", merr.Wrong, merr.ProbeErrors)
	}
	if !strings.Contains(strings.Join(logs, "\n"), "SECOND TRY") {
		t.Errorf("no SECOND TRY logged: %q", logs)
	}
	// The wrong cell was retried until the bound, in both tries.
	if n := c.attempts["netpol-x/a->netpol-x/b"]; n < 4 {
		t.Errorf("wrong cell probed %d times, want it retried in both tries", n)
	}
	golden(t, "validate_failure.golden", err.Error())
}

func TestValidateReportsProbeErrors(t *testing.T) {
	m := threePodModel(t)
	c := &scriptedCluster{probe: func(from, to PodRef, _ int, _ corev1.Protocol, _ int) (bool, error) {
		if to == Ref("netpol-y", "a") {
			return false, errors.New("exec failed")
		}
		return true, nil
	}}
	r := NewReachability(m.AllPodRefs(), true)
	err := Validate(context.Background(), c, m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: r},
		Options{CellTimeout: time.Millisecond, PollInterval: time.Millisecond})
	merr, ok := errors.AsType[*MatrixError](err)
	if !ok {
		t.Fatalf("Validate = %v, want a *MatrixError", err)
	}
	if len(merr.ProbeErrors) != 2 || !strings.Contains(err.Error(), "netpol-x/a -> netpol-y/a: exec failed") {
		t.Errorf("probe errors %q not reported in:\n%v", merr.ProbeErrors, err)
	}
}

func TestValidateRetriesUntilExpected(t *testing.T) {
	m := threePodModel(t)
	// Policies take effect late: every cell is wrong for its first 3 probes.
	c := &scriptedCluster{probe: func(from, to PodRef, port int, proto corev1.Protocol, attempt int) (bool, error) {
		ok, err := denyIntoXA(from, to, port, proto, attempt)
		if attempt <= 3 {
			return !ok, err
		}
		return ok, err
	}}
	r := NewReachability(m.AllPodRefs(), true)
	r.ExpectAllIngress(Ref("netpol-x", "a"), false)
	var logs []string
	opts := Options{CellTimeout: time.Second, PollInterval: time.Millisecond, Logf: func(f string, a ...any) { logs = append(logs, f) }}
	if err := Validate(context.Background(), c, m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: r}, opts); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(logs, "\n"), "SECOND TRY") {
		t.Error("needed a SECOND TRY although the per-cell retry suffices")
	}
	for cell, n := range c.attempts {
		if n != 4 {
			t.Errorf("%s probed %d times, want 4", cell, n)
		}
	}
}

func TestValidateSecondTry(t *testing.T) {
	m := threePodModel(t)
	// One attempt per cell (tiny bound), wrong on the first probe of each
	// cell only: the first pass fails and the SECOND TRY passes.
	c := &scriptedCluster{probe: func(from, to PodRef, port int, proto corev1.Protocol, attempt int) (bool, error) {
		ok, err := denyIntoXA(from, to, port, proto, attempt)
		return ok == (attempt > 1), err
	}}
	r := NewReachability(m.AllPodRefs(), true)
	r.ExpectAllIngress(Ref("netpol-x", "a"), false)
	if err := Validate(context.Background(), c, m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: r},
		Options{CellTimeout: time.Nanosecond, PollInterval: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if len(c.probes) != 12 {
		t.Errorf("%d probes, want 12 (6 cells, two passes)", len(c.probes))
	}
}

func TestValidateUsesWorkers(t *testing.T) {
	m := threePodModel(t)
	c := &scriptedCluster{probe: func(PodRef, PodRef, int, corev1.Protocol, int) (bool, error) {
		time.Sleep(2 * time.Millisecond)
		return true, nil
	}}
	r := NewReachability(m.AllPodRefs(), true)
	if err := Validate(context.Background(), c, m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: r}, Options{Workers: 2}); err != nil {
		t.Fatal(err)
	}
	if n := c.maxFlight.Load(); n != 2 {
		t.Errorf("max concurrent probes = %d, want 2", n)
	}
}

func TestValidateStopsWithContext(t *testing.T) {
	m := threePodModel(t)
	ctx, cancel := context.WithCancel(context.Background())
	c := &scriptedCluster{probe: func(PodRef, PodRef, int, corev1.Protocol, int) (bool, error) {
		cancel()
		return false, nil
	}}
	r := NewReachability(m.AllPodRefs(), true)
	start := time.Now()
	err := Validate(ctx, c, m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: r}, Options{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Validate = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Validate took %v after cancel", d)
	}
}

func TestValidateRejectsBadTestCases(t *testing.T) {
	m := threePodModel(t)
	good := func() *Reachability { return NewReachability(m.AllPodRefs(), true) }
	bad := good()
	bad.Expect(Ref("netpol-q", "a"), Ref("netpol-x", "a"), false)
	tests := []struct {
		name string
		m    *Model
		tc   TestCase
	}{
		{"no model", nil, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: good()}},
		{"no reachability", m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP}},
		{"bad expectation", m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: bad}},
		{"bad protocol", m, TestCase{ToPort: 80, Protocol: "ICMP", Reachability: good()}},
		{"no protocol", m, TestCase{ToPort: 80, Reachability: good()}},
		{"port 0", m, TestCase{ToPort: 0, Protocol: corev1.ProtocolTCP, Reachability: good()}},
		{"port too big", m, TestCase{ToPort: 65536, Protocol: corev1.ProtocolTCP, Reachability: good()}},
		{"pod not in model", m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: NewReachability([]PodRef{Ref("netpol-x", "z")}, true)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &scriptedCluster{probe: func(PodRef, PodRef, int, corev1.Protocol, int) (bool, error) { return true, nil }}
			err := Validate(context.Background(), c, tt.m, tt.tc, Options{})
			if err == nil || !strings.HasPrefix(err.Error(), "invalid test case: ") {
				t.Errorf("Validate = %v, want an invalid test case error", err)
			}
			if len(c.probes) != 0 {
				t.Errorf("probed %d cells of an invalid test case", len(c.probes))
			}
		})
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestValidateConfirmsConnectedCells(t *testing.T) {
	m := threePodModel(t)
	// x/b -> y/a connects on its first probe only, as when the probe runs
	// before the node enforces a change that wrongly blocks it.
	probe := func(from, to PodRef, port int, proto corev1.Protocol, attempt int) (bool, error) {
		if from == Ref("netpol-x", "b") && to == Ref("netpol-y", "a") {
			return attempt == 1, nil
		}
		return denyIntoXA(from, to, port, proto, attempt)
	}
	tests := []struct {
		name         string
		confirmAfter time.Duration
		wantErr      bool
	}{
		{"upstream: settled on the first probe", 0, false},
		{"confirmed later", 50 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &scriptedCluster{probe: probe}
			r := NewReachability(m.AllPodRefs(), true)
			r.ExpectAllIngress(Ref("netpol-x", "a"), false)
			opts := Options{CellTimeout: 20 * time.Millisecond, PollInterval: time.Millisecond, ConfirmAfter: tt.confirmAfter}
			start := time.Now()
			err := Validate(context.Background(), c, m, TestCase{ToPort: 80, Protocol: corev1.ProtocolTCP, Reachability: r}, opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate = %v, want error %t", err, tt.wantErr)
			}
			if !tt.wantErr {
				if len(c.probes) != 6 {
					t.Errorf("%d probes, want 6 (one per cell, no confirmation)", len(c.probes))
				}
				return
			}
			merr, ok := errors.AsType[*MatrixError](err)
			if !ok || merr.Wrong != 1 || !strings.Contains(merr.What, "confirmation") {
				t.Errorf("Validate = %v, want one wrong cell found by the confirmation", err)
			}
			if d := time.Since(start); d < tt.confirmAfter {
				t.Errorf("Validate returned after %s, before ConfirmAfter %s", d, tt.confirmAfter)
			}
			// Only the cells expected to connect are confirmed.
			if n := c.attempts["netpol-y/a->netpol-x/a"]; n != 1 {
				t.Errorf("blocked cell probed %d times, want 1 (not confirmed)", n)
			}
		})
	}
}
