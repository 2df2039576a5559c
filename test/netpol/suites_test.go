package netpol

import (
	"bufio"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// modelOptions are the timings for the in-memory cluster: it answers at
// once, so one attempt per cell is enough and failures stay fast.
func modelOptions(family Family) Options {
	return Options{Family: family, CellTimeout: time.Millisecond, PollInterval: time.Millisecond}
}

func allTests() []Test {
	return slices.Concat(Legacy118(), Netpol(), NetpolUDP(), NetpolSCTP())
}

// TestSuitesOnModel runs every test of every suite against the in-memory
// cluster, on IPv4 and on IPv6, reusing one cluster per family as a real
// cluster would be reused; they must all pass and leave the cluster empty.
func TestSuitesOnModel(t *testing.T) {
	for _, family := range []Family{IPv4, IPv6} {
		t.Run(family.String(), func(t *testing.T) {
			c := NewModelCluster()
			for _, suite := range [][]Test{Legacy118(), Netpol(), NetpolUDP(), NetpolSCTP()} {
				t.Run(suite[0].Suite, func(t *testing.T) {
					for _, test := range suite {
						t.Run(test.Name, func(t *testing.T) {
							opts := modelOptions(family)
							opts.Logf = t.Logf
							if err := RunTest(context.Background(), c, test, opts); err != nil {
								t.Fatalf("%s:\n%v", test.FullName(), err)
							}
						})
					}
				})
			}
			if len(c.namespaces) != 0 || len(c.pods) != 0 || len(c.policies) != 0 {
				t.Errorf("cluster not empty after all tests: %d namespaces, %d pods, %d policies",
					len(c.namespaces), len(c.pods), len(c.policies))
			}
		})
	}
}

func TestSuiteCountsAndNames(t *testing.T) {
	tests := []struct {
		suite     string
		tests     []Test
		want      int
		namesFile string
	}{
		{SuiteLegacy, Legacy118(), 25, "legacy118-names.txt"},
		{SuiteNetpol, Netpol(), 42, "netpol-names.txt"},
		{SuiteNetpolUDP, NetpolUDP(), 3, "netpol-udp-sctp-names.txt"},
		{SuiteNetpolSCTP, NetpolSCTP(), 3, "netpol-udp-sctp-names.txt"},
	}
	fullNames := make(map[string]bool)
	for _, tt := range tests {
		t.Run(tt.suite, func(t *testing.T) {
			if len(tt.tests) != tt.want {
				t.Fatalf("got %d tests, want %d", len(tt.tests), tt.want)
			}
			// The upstream It strings, in upstream file order, copied
			// from the sonobuoy lists and the sources.
			want := readLines(t, filepath.Join("testdata", tt.namesFile))
			var got []string
			for _, test := range tt.tests {
				if test.Suite != tt.suite {
					t.Errorf("%q: suite %q, want %q", test.Name, test.Suite, tt.suite)
				}
				if test.Run == nil {
					t.Errorf("%q has no body", test.Name)
				}
				if fullNames[test.FullName()] {
					t.Errorf("duplicate test %q", test.FullName())
				}
				fullNames[test.FullName()] = true
				got = append(got, test.Name)
			}
			if !slices.Equal(got, want) {
				t.Errorf("names differ from upstream:\ngot  %q\nwant %q", got, want)
			}
		})
	}
	if len(fullNames) != 25+42+3+3 {
		t.Errorf("got %d distinct tests, want 73", len(fullNames))
	}
}

func TestFullName(t *testing.T) {
	tests := []struct {
		test Test
		want string
	}{
		{Legacy118()[0], "[sig-network] NetworkPolicy [LinuxOnly] NetworkPolicy between server and client should support a 'default-deny' policy [Feature:NetworkPolicy]"},
		{Netpol()[0], "[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"},
		{NetpolUDP()[1], "[sig-network] Netpol [LinuxOnly] NetworkPolicy between server and client using UDP should enforce policy based on Ports [Feature:NetworkPolicy]"},
		{NetpolSCTP()[2], "[sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly] NetworkPolicy between server and client using SCTP should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector [Feature:NetworkPolicy]"},
	}
	for _, tt := range tests {
		if got := tt.test.FullName(); got != tt.want {
			t.Errorf("FullName() = %q, want %q", got, tt.want)
		}
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if s.Text() != "" {
			lines = append(lines, s.Text())
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// allowAllCluster ignores policies: every probe between existing pods
// connects.
type allowAllCluster struct{ *ModelCluster }

func (c allowAllCluster) Probe(ctx context.Context, from, to PodRef, family Family, port int, proto corev1.Protocol) (bool, error) {
	if _, err := c.ModelCluster.Probe(ctx, from, to, family, port, proto); err != nil {
		return false, err
	}
	return true, nil
}

// denyAllCluster denies every probe.
type denyAllCluster struct{ *ModelCluster }

func (c denyAllCluster) Probe(ctx context.Context, from, to PodRef, family Family, port int, proto corev1.Protocol) (bool, error) {
	_, err := c.ModelCluster.Probe(ctx, from, to, family, port, proto)
	return false, err
}

// oneDirectionCluster enforces only ingress (or only egress) policies.
type oneDirectionCluster struct {
	*ModelCluster
	ingressOnly bool
}

func (c oneDirectionCluster) Probe(_ context.Context, from, to PodRef, family Family, port int, proto corev1.Protocol) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	src, dst := c.pods[from], c.pods[to]
	if src == nil || dst == nil {
		return false, errors.New("unknown pod")
	}
	res, err := c.compile()
	if err != nil || from == to {
		return err == nil, err
	}
	if c.ingressOnly {
		srcIP, _ := podAddr(src, family)
		return directionAllows(&res.Firewalls[to.String()].Ingress, srcIP, port, proto), nil
	}
	dstIP, _ := podAddr(dst, family)
	return directionAllows(&res.Firewalls[from.String()].Egress, dstIP, port, proto), nil
}

// denyAfterPolicyCluster behaves until the first policy is created, then
// denies everything: it passes the readiness checks and fails later.
type denyAfterPolicyCluster struct {
	*ModelCluster
	created *atomic.Bool
}

func (c denyAfterPolicyCluster) CreatePolicy(ctx context.Context, np *networkingv1.NetworkPolicy) error {
	c.created.Store(true)
	return c.ModelCluster.CreatePolicy(ctx, np)
}

func (c denyAfterPolicyCluster) Setup(ctx context.Context, m *Model) error {
	c.created.Store(false)
	return c.ModelCluster.Setup(ctx, m)
}

func (c denyAfterPolicyCluster) Probe(ctx context.Context, from, to PodRef, family Family, port int, proto corev1.Protocol) (bool, error) {
	ok, err := c.ModelCluster.Probe(ctx, from, to, family, port, proto)
	return ok && !c.created.Load(), err
}

// TestSuitesFailOnBrokenClusters proves the runner can fail: clusters that
// enforce too little or too much must fail exactly the tests whose tables
// say otherwise, each with a reachability matrix error.
func TestSuitesFailOnBrokenClusters(t *testing.T) {
	legacy := func(name string) string { return SuiteLegacy + " " + name + " [Feature:NetworkPolicy]" }
	netpol := func(name string) string { return SuiteNetpol + " " + name + " [Feature:NetworkPolicy]" }
	tests := []struct {
		name    string
		cluster func() Cluster
		// wantPass are the only tests that must pass; every other must
		// fail. When wantFailed is set, only the number of failures is
		// checked.
		wantPass   []string
		wantFailed int
	}{
		{
			name:    "ignores policies",
			cluster: func() Cluster { return allowAllCluster{NewModelCluster()} },
			// The tests that expect nothing but allowed connections.
			wantPass: []string{
				legacy("should enforce multiple, stacked policies with overlapping podSelectors"),
				legacy("should support allow-all policy"),
				netpol("should enforce policy to allow ingress traffic from pods in all namespaces"),
				netpol("should support allow-all policy"),
			},
		},
		{
			name:    "denies everything",
			cluster: func() Cluster { return denyAllCluster{NewModelCluster()} },
		},
		{
			name: "denies everything once a policy exists",
			cluster: func() Cluster {
				return denyAfterPolicyCluster{ModelCluster: NewModelCluster(), created: new(atomic.Bool)}
			},
			// The tests that expect nothing but denials after the first
			// policy.
			wantPass: []string{
				legacy("should support a 'default-deny' policy"),
				legacy("should enforce except clause while egress access to server in CIDR block"),
			},
		},
		{
			// Fails the tests with an egress denial: 5 legacy, 13 Netpol.
			name:       "enforces ingress only",
			cluster:    func() Cluster { return oneDirectionCluster{NewModelCluster(), true} },
			wantFailed: 18,
		},
		{
			// Fails the tests with an ingress denial.
			name:       "enforces egress only",
			cluster:    func() Cluster { return oneDirectionCluster{NewModelCluster(), false} },
			wantFailed: 18 + 31 + 3 + 3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.cluster()
			var passed, failed []string
			for _, test := range allTests() {
				err := RunTest(context.Background(), c, test, modelOptions(IPv4))
				if err == nil {
					passed = append(passed, test.FullName())
					continue
				}
				failed = append(failed, test.FullName())
				if _, ok := errors.AsType[*MatrixError](err); !ok {
					t.Errorf("%s: failed with %v, want a reachability matrix error", test.FullName(), err)
				}
			}
			slices.Sort(passed)
			slices.Sort(tt.wantPass)
			switch {
			case tt.wantFailed != 0:
				if len(failed) != tt.wantFailed {
					t.Errorf("failed %d tests, want %d:\n%q", len(failed), tt.wantFailed, failed)
				}
			case !slices.Equal(passed, tt.wantPass):
				t.Errorf("passed %d tests:\n%q\nwant %d:\n%q", len(passed), passed, len(tt.wantPass), tt.wantPass)
			}
			if len(failed)+len(passed) != 73 {
				t.Errorf("ran %d tests, want 73", len(failed)+len(passed))
			}
			t.Logf("%d of 73 tests failed, as they must", len(failed))
		})
	}
}

// TestSuitesUseRealPodIPs checks that the CIDR tests build their ipBlocks
// from the cluster's pod IPs: with different address ranges the suites still
// pass.
func TestSuitesUseRealPodIPs(t *testing.T) {
	for _, test := range allTests() {
		c := NewModelCluster()
		c.lastHost = 40000 // other addresses than TestSuitesOnModel sees
		if err := RunTest(context.Background(), c, test, modelOptions(IPv4)); err != nil {
			t.Errorf("%s: %v", test.FullName(), err)
		}
	}
}
