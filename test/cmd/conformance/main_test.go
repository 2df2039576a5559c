package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podwall/podwall/test/netpol"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestSubtestName(t *testing.T) {
	tests := []struct {
		parent, name, want string
	}{
		{"TestA", "should support a 'default-deny' policy [Feature:NetworkPolicy]", "TestA/should_support_a_'default-deny'_policy_[Feature:NetworkPolicy]"},
		{"TestA", "should work with Ingress, Egress specified together", "TestA/should_work_with_Ingress,_Egress_specified_together"},
		{"TestA", "tab\tand\u00a0nbsp", "TestA/tab_and_nbsp"},
		{"TestA", "bell\a", `TestA/bell\a`},
	}
	for _, tt := range tests {
		if got := SubtestName(tt.parent, tt.name); got != tt.want {
			t.Errorf("SubtestName(%q, %q) = %q, want %q", tt.parent, tt.name, got, tt.want)
		}
	}
}

// TestSubtestNamesMatchGoTest checks SubtestName against the names the
// testing package itself gives the upstream tests.
func TestSubtestNamesMatchGoTest(t *testing.T) {
	for _, suite := range Suites() {
		// One suite per parent, as each suite has its own Go test (the
		// protocol suites reuse names).
		t.Run(suite[0].Suite, func(t *testing.T) {
			parent := t.Name()
			for _, test := range suite {
				t.Run(test.Name, func(t *testing.T) {
					if want := SubtestName(parent, test.Name); t.Name() != want {
						t.Errorf("go test names it %q, SubtestName says %q", t.Name(), want)
					}
				})
			}
		})
	}
}

func TestParseStream(t *testing.T) {
	tests := []struct {
		file        string
		results     map[string]Result
		kubeVersion string
	}{
		{
			file: "manifests.json",
			results: map[string]Result{
				"TestUpstreamLegacy118/should_support_a_'default-deny'_policy_[Feature:NetworkPolicy]": Pass,
				"TestUpstreamLegacy118/should_enforce_updated_policy_[Feature:NetworkPolicy]":          Fail,
				"TestUpstreamLegacy118": Fail,
				"TestUpstreamNetpolUDP": Skip,
			},
		},
		{
			file: "kube.json",
			results: map[string]Result{
				"TestKubeUpstreamLegacy118/should_support_a_'default-deny'_policy_[Feature:NetworkPolicy]": Pass,
				"TestKubeUpstreamLegacy118/should_enforce_updated_policy_[Feature:NetworkPolicy]":          Pass,
				"TestKubeUpstreamLegacy118": Pass,
				"TestKubeUpstreamNetpolUDP/should_support_a_'default-deny-ingress'_policy": Pass,
				"TestKubeUpstreamNetpolUDP": Pass,
				"TestKubeUpstreamService/Legacy118/should_support_a_'default-deny'_policy_[Feature:NetworkPolicy]": Pass,
				"TestKubeUpstreamService/Legacy118/should_enforce_updated_policy_[Feature:NetworkPolicy]":          Fail,
				"TestKubeUpstreamService/Legacy118":                                                Fail,
				"TestKubeUpstreamService/NetpolUDP/should_support_a_'default-deny-ingress'_policy": Pass,
				"TestKubeUpstreamService/NetpolUDP":                                                Pass,
				"TestKubeUpstreamService":                                                          Fail,
				"TestKubeUpstreamIPv6":                                                             Skip,
				"TestKubeUpstreamDualStack/IPv6/NetpolUDP/should_support_a_'default-deny-ingress'_policy": Pass,
				"TestKubeUpstreamDualStack/IPv6/NetpolUDP":                                                Pass,
				"TestKubeUpstreamDualStack/IPv6":                                                          Pass,
				"TestKubeUpstreamDualStack":                                                               Fail,
			},
			kubeVersion: "v1.34.4",
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			s, err := readStream(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Results) != len(tt.results) {
				t.Errorf("got %d results %v, want %d", len(s.Results), s.Results, len(tt.results))
			}
			for name, want := range tt.results {
				if got := s.Results[name]; got != want {
					t.Errorf("result of %s = %q, want %q", name, got, want)
				}
			}
			if s.KubeVersion != tt.kubeVersion {
				t.Errorf("kube version %q, want %q", s.KubeVersion, tt.kubeVersion)
			}
			for name := range tt.results {
				if _, ok := s.Elapsed[name]; !ok {
					t.Errorf("no elapsed time of %s", name)
				}
			}
		})
	}
}

func TestParseStreamErrors(t *testing.T) {
	for _, in := range []string{"", "not json\n", "{broken\n"} {
		if _, err := ParseStream(strings.NewReader(in)); err == nil {
			t.Errorf("ParseStream(%q): no error", in)
		}
	}
}

// testSuites is a small stand-in for the real suites: two legacy tests and
// one UDP test.
func testSuites() [][]netpol.Test {
	legacy := netpol.Legacy118()
	var picked []netpol.Test
	for _, test := range legacy {
		if strings.Contains(test.Name, "'default-deny'") || strings.Contains(test.Name, "updated policy") {
			picked = append(picked, test)
		}
	}
	return [][]netpol.Test{picked, netpol.NetpolUDP()[:1]}
}

func testStreams(t *testing.T) map[string]*Stream {
	t.Helper()
	streams := map[string]*Stream{}
	for name, file := range map[string]string{"manifests": "manifests.json", "kube": "kube.json"} {
		s, err := readStream(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		streams[name] = s
	}
	return streams
}

// modeIndex returns the index of the mode named name in Modes.
func modeIndex(t *testing.T, name string) int {
	t.Helper()
	i := slices.IndexFunc(Modes, func(m Mode) bool { return m.Name == name })
	if i < 0 {
		t.Fatalf("no mode %q", name)
	}
	return i
}

func TestModesCoverEveryRun(t *testing.T) {
	type key struct{ source, pods, probes, path string }
	seen := map[key]bool{}
	for _, m := range Modes {
		k := key{m.Source, m.Pods, m.Probes, m.Path}
		if seen[k] {
			t.Errorf("mode %s duplicates %v", m.Name, k)
		}
		seen[k] = true
		if len(m.Funcs) != len(Suites()) {
			t.Errorf("mode %s has %d suites, want %d", m.Name, len(m.Funcs), len(Suites()))
		}
	}
	for _, pods := range []string{"IPv4", "IPv6", "dual-stack"} {
		for _, path := range []string{"pod IP", "Service"} {
			probes := []string{pods}
			if pods == "dual-stack" {
				probes = []string{"IPv4", "IPv6"}
			}
			for _, f := range probes {
				if !seen[key{"kubernetes", pods, f, path}] {
					t.Errorf("no kubernetes mode for %s pods, %s probes, %s", pods, f, path)
				}
			}
		}
	}
}

func TestRows(t *testing.T) {
	rows := Rows(testSuites(), Modes, testStreams(t))
	if len(rows) != 3 {
		t.Fatalf("got %d rows, want 3: %+v", len(rows), rows)
	}
	byTest := map[string]Row{}
	for _, r := range rows {
		if len(r.Results) != len(Modes) {
			t.Fatalf("row %s has %d cells, want %d", r.Test, len(r.Results), len(Modes))
		}
		byTest[r.Test] = r
	}
	const (
		defaultDeny  = "should support a 'default-deny' policy [Feature:NetworkPolicy]"
		updated      = "should enforce updated policy [Feature:NetworkPolicy]"
		udpDenyInput = "should support a 'default-deny-ingress' policy"
	)
	tests := []struct {
		test, mode string
		result     Result
		notRun     bool
	}{
		{defaultDeny, "manifests", Pass, false},
		{updated, "manifests", Fail, false},
		{udpDenyInput, "manifests", Skip, false}, // its suite skipped
		{defaultDeny, "kube-ipv4", Pass, false},
		{updated, "kube-ipv4", Pass, false},
		{udpDenyInput, "kube-ipv4", Pass, false},
		{defaultDeny, "kube-ipv4-svc", Pass, false},
		{updated, "kube-ipv4-svc", Fail, false},
		{udpDenyInput, "kube-ipv4-svc", Pass, false},
		{defaultDeny, "kube-ipv6", Skip, false}, // the whole run skipped
		{udpDenyInput, "kube-dual-6", Pass, false},
		{udpDenyInput, "kube-dual-4", Fail, true}, // the run failed without it
		{defaultDeny, "kube-dual-6-svc", Fail, true},
	}
	for _, tt := range tests {
		c := byTest[tt.test].Results[modeIndex(t, tt.mode)]
		if c.Result != tt.result || c.NotRun != tt.notRun {
			t.Errorf("%s (%s): %q notRun=%t, want %q notRun=%t", tt.test, tt.mode, c.Result, c.NotRun, tt.result, tt.notRun)
		}
	}

	// Tests the stream has nothing of never ran: they fail.
	rows = Rows(testSuites(), Modes, map[string]*Stream{"kube": {Results: map[string]Result{}}})
	for _, r := range rows {
		for i, c := range r.Results {
			if c.Result != Fail || !c.NotRun {
				t.Errorf("%s (%s) with no result: %q notRun=%t, want a failure not run", r.Test, Modes[i].Name, c.Result, c.NotRun)
			}
		}
	}
}

func TestRenderGolden(t *testing.T) {
	r := &Report{
		PodwallVersion: "v0.1.0-3-gabcdef0",
		KubeVersion:    "v1.34.4",
		Date:           time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC),
		Modes:          Modes,
		Rows:           Rows(testSuites(), Modes, testStreams(t)),
		Streams:        testStreams(t),
	}
	var b bytes.Buffer
	if err := Render(&b, r); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.golden.md")
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Errorf("report differs from %s (run with -update to accept):\n%s", golden, b.String())
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "conformance.md")
	args := []string{
		"-manifests", filepath.Join("testdata", "manifests.json"),
		"-kube", filepath.Join("testdata", "kube.json"),
		"-out", out, "-podwall-version", "v9", "-date", "2026-11-25T20:00:00Z",
	}
	// The streams have failures and tests that never ran: the report is
	// written and the run fails, unless failures are allowed.
	if err := run(args, io.Discard); !errors.Is(err, errNotAllPassed) {
		t.Errorf("run = %v, want %v", err, errNotAllPassed)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"podwall: `v9`", "Kubernetes: `v1.34.4`", "2026-11-25 20:00 UTC",
		"| [sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly] NetworkPolicy between server and client using SCTP |"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if rows := strings.Count(string(b), "\n| [sig-network]"); rows != 73 {
		t.Errorf("report has %d test rows, want 73", rows)
	}
	if want := "| kube-ipv4-svc | kubernetes | IPv4 | IPv4 | Service | 2 | 71 (70 not run) | 0 | 28s |"; !strings.Contains(string(b), want) {
		t.Errorf("report lacks the kube-ipv4-svc summary %q", want)
	}
	if err := run(append(args, "-allow-failures"), io.Discard); err != nil {
		t.Errorf("run -allow-failures = %v", err)
	}

	for _, bad := range [][]string{
		{"-kube", "x.json"},
		{"-manifests", filepath.Join("testdata", "manifests.json"), "-kube", filepath.Join(dir, "missing.json")},
		append(slices.Clone(args), "-date", "yesterday"),
		append(slices.Clone(args), "extra"),
	} {
		if err := run(bad, io.Discard); err == nil || errors.Is(err, errNotAllPassed) {
			t.Errorf("run %v = %v, want a usage or input error", bad, err)
		}
	}
}
