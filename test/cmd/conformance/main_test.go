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
	for mode, file := range map[string]string{"manifests": "manifests.json", "kubernetes": "kube.json"} {
		s, err := readStream(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		streams[mode] = s
	}
	return streams
}

func TestRows(t *testing.T) {
	rows := Rows(testSuites(), Modes, testStreams(t))
	type key struct{ test, mode string }
	got := map[key]Row{}
	for _, r := range rows {
		got[key{r.Test, r.Mode}] = r
	}
	if len(rows) != 6 || len(got) != 6 {
		t.Fatalf("got %d rows (%d distinct), want 6: %+v", len(rows), len(got), rows)
	}
	tests := []struct {
		test, mode string
		result     Result
		notRun     bool
	}{
		{"should support a 'default-deny' policy [Feature:NetworkPolicy]", "manifests", Pass, false},
		{"should enforce updated policy [Feature:NetworkPolicy]", "manifests", Fail, false},
		{"should support a 'default-deny-ingress' policy", "manifests", Skip, false}, // its suite skipped
		{"should support a 'default-deny' policy [Feature:NetworkPolicy]", "kubernetes", Pass, false},
		{"should enforce updated policy [Feature:NetworkPolicy]", "kubernetes", Pass, false},
		{"should support a 'default-deny-ingress' policy", "kubernetes", Pass, false},
	}
	for _, tt := range tests {
		r := got[key{tt.test, tt.mode}]
		if r.Result != tt.result || r.NotRun != tt.notRun {
			t.Errorf("%s (%s): %q notRun=%t, want %q notRun=%t", tt.test, tt.mode, r.Result, r.NotRun, tt.result, tt.notRun)
		}
	}

	// Tests the stream has nothing of never ran: they fail.
	rows = Rows(testSuites(), Modes, map[string]*Stream{"kubernetes": {Results: map[string]Result{}}})
	for _, r := range rows {
		if r.Result != Fail || !r.NotRun {
			t.Errorf("%s (%s) with no result: %q notRun=%t, want a failure not run", r.Test, r.Mode, r.Result, r.NotRun)
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
	if rows := strings.Count(string(b), "\n| [sig-network]"); rows != 2*73 {
		t.Errorf("report has %d test rows, want %d (73 tests, 2 modes)", rows, 2*73)
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
