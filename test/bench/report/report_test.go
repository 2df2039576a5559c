package report

import (
	"flag"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/podwall/podwall/test/bench/controlplane"
	"github.com/podwall/podwall/test/bench/datapath"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// sampleInput is a small run: two selected-pods points, a few changes of
// each kind (one never observed), ADDs, process samples and micro-benchmarks.
func sampleInput() Input {
	dp := &datapath.Result{Selected: []int{0, 8000}, Main: 8000, Rounds: 2, SweepRounds: 1, DurationSec: 5, Connections: 16,
		Services: 0, ServicesNote: "not read", LoadStart: "1.5", LoadEnd: "2.0",
		Points: []datapath.Point{{Selected: 8000, LargestSet: 8002, LargestSetMembers: 8001, Sets: 6, Checks: []string{"a: allowed", "b: denied"}}}}
	add := func(n int, mode datapath.Mode, pw bool, qps, p99 float64) {
		for i := range n {
			dp.Runs = append(dp.Runs, datapath.WrkRun{Selected: map[bool]int{true: 8000, false: 0}[n == 2], Round: i, Mode: mode, Podwall: pw, QPS: qps + float64(i), P99Ms: p99})
		}
	}
	add(2, datapath.KeepAlive, false, 20000, 2)
	add(2, datapath.KeepAlive, true, 19900, 2.05)
	add(2, datapath.NewConnection, false, 4000, 3)
	add(2, datapath.NewConnection, true, 3000, 4)
	add(1, datapath.KeepAlive, false, 21000, 2)
	add(1, datapath.KeepAlive, true, 21000, 2)

	cp := &controlplane.Result{Scale: controlplane.DefaultScale, Groups: []int{1, 110}, ProfileSeconds: 60, ChurnStart: 10, ChurnEnd: 30,
		Phases: []controlplane.Phase{{Name: "build", Seconds: 12.5}}, LoadStart: "3", LoadEnd: "4",
		Rounds: controlplane.Rounds{PolicyOne: 5, PolicyAll: 1, Peer: 3, Namespace: 3, AddSamples: 4}}
	ch := func(kind, op string, affected int, obs, dmn, queue, apply float64) {
		cp.Changes = append(cp.Changes, controlplane.Change{Kind: kind, Op: op, Affected: affected, Method: "ipset",
			ObservedMs: obs, DaemonMs: dmn, QueueMs: queue, ApplyMs: apply})
	}
	ch("policy-one", "create", 1, 300, 310, 110, 200)
	ch("policy-one", "delete", 1, 90, 95, 60, 30)
	ch("policy-all", "create", 110, 20000, 20010, 120, 180)
	ch("policy-all", "delete", 110, -1, -1, -1, -1)
	ch("peer", "appear", 1, 120, 121, 105, 5)
	ch("peer", "appear", 110, 5000, 5001, 110, 44)
	ch("namespace", "relabel-out", 110, 6000, 6001, 110, 50)
	for i := range 4 {
		cp.Add = append(cp.Add, controlplane.AddSample{BaseMs: 30 + float64(i), PodwallMs: 60 + float64(i), ChainMs: 95, DelBaseMs: 20, DelPodwallMs: 15})
	}
	cp.Process = []controlplane.ProcSample{
		{At: 5, Phase: "steady", RSSBytes: 80 << 20, HWMBytes: 90 << 20},
		{At: 10, Phase: "churn", CPUSeconds: 10, ChildCPUSeconds: 5},
		{At: 30, Phase: "churn", CPUSeconds: 20, ChildCPUSeconds: 25, HWMBytes: 100 << 20},
	}
	cp.Scrapes = []controlplane.MetricsScrape{
		{Phase: "steady", HeapBytes: 40 << 20, DurationMs: 150, CPUSeconds: 0.2},
		{Phase: "add-start", Adds: 111, AddSeconds: 5},
		{Phase: "add-end", Adds: 115, AddSeconds: 5.2},
	}
	micro := "BenchmarkCompileScale/pods=1000/local=1-2 \t 100\t 1000000 ns/op\n" +
		"BenchmarkCompileScale/pods=1000/local=1-2 \t 100\t 1200000 ns/op\n" +
		"BenchmarkCompileScale/pods=10000/local=1-2 \t 10\t 3300000 ns/op\n"
	return Input{
		Machine: Machine{CPU: "AMD EPYC", Cores: 2, MemGiB: 24, Kernel: "6.1", Go: "go1.26", Podwall: "test"},
		Date:    time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Datapath: dp, Controlplane: cp,
		Micro: micro, Benchstat: "benchstat output", CPUTop: "cpu top", HeapTop: "heap top", Seconds: 1234,
	}
}

func byID(ms []Metric) map[string]Metric {
	out := map[string]Metric{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

func TestMetrics(t *testing.T) {
	ms := byID(Metrics(sampleInput()))
	for _, tc := range []struct {
		id             string
		value          float64
		met            bool
		baseline, pwal float64
	}{
		{"qps-keepalive", 19900.5 / 20000.5, true, 20000.5, 19900.5},
		{"qps-newconn", 3000.5 / 4000.5, false, 4000.5, 3000.5},
		{"p99-keepalive", 1.025, true, 2, 2.05},
		{"p99-newconn", 4.0 / 3, false, 3, 4},
		{"policy-one", 300, false, math.NaN(), 300},
		{"policy-one-daemon", 310, false, math.NaN(), 310},
		{"peer-change", 5000, false, math.NaN(), 5000},
		{"add-p50", 61, false, 31, 92},
		{"rss", 80, false, math.NaN(), 80},
		{"rss-peak", 100, false, math.NaN(), 100},
		{"growth-cluster", 3.3 / 1.1, false, 1.1, 3.3},
	} {
		m, ok := ms[tc.id]
		if !ok {
			t.Errorf("%s: missing", tc.id)
			continue
		}
		if m.Value == nil || math.Abs(*m.Value-tc.value) > 1e-6 {
			t.Errorf("%s: value %v, want %v", tc.id, m.Value, tc.value)
		}
		if m.Met == nil || *m.Met != tc.met {
			t.Errorf("%s: met %v, want %t", tc.id, m.Met, tc.met)
		}
		if !math.IsNaN(tc.baseline) && (m.Baseline == nil || math.Abs(*m.Baseline-tc.baseline) > 1e-6) {
			t.Errorf("%s: baseline %v, want %v", tc.id, m.Baseline, tc.baseline)
		}
		if m.Podwall == nil || math.Abs(*m.Podwall-tc.pwal) > 1e-6 {
			t.Errorf("%s: podwall %v, want %v", tc.id, m.Podwall, tc.pwal)
		}
	}
	// A change never observed makes its p99 infinite and the target missed.
	if m := ms["policy-all"]; m.Met == nil || *m.Met || !strings.Contains(m.Note, "1 of 2 changes not observed") {
		t.Errorf("policy-all: %+v", m)
	}
	// 35 s of CPU (own 10 + children 20) over 20 s of churn.
	if m := ms["cpu-churn"]; m.Podwall == nil || math.Abs(*m.Podwall-1.5) > 1e-9 || m.Met != nil {
		t.Errorf("cpu-churn: %+v", m)
	}
}

func TestMetricsNotMeasured(t *testing.T) {
	for _, m := range Metrics(Input{}) {
		if m.Met != nil || m.Podwall != nil {
			t.Errorf("%s: judged without measurements: %+v", m.ID, m)
		}
	}
}

func TestMarkdownGolden(t *testing.T) {
	in := sampleInput()
	got := Markdown(in, Metrics(in))
	const golden = "testdata/performance.golden.md"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update)", err)
	}
	if got != string(want) {
		t.Errorf("Markdown differs from %s (run with -update and review the diff)", golden)
	}
}

func TestParseMicro(t *testing.T) {
	out := "goos: linux\nBenchmarkRenderLarge/members=100-2   \t 9000\t 119381 ns/op\t 51704 B/op\n" +
		"BenchmarkRenderLarge/members=100-2   \t 9000\t 120000 ns/op\n" +
		"BenchmarkCompileSelectAll/selected=8000-2 \t 50\t 23613006 ns/op\t 12004 prefixes\n" +
		"PASS\n"
	names, ns := parseMicro(out)
	if len(names) != 2 || names[0] != "BenchmarkRenderLarge/members=100" || names[1] != "BenchmarkCompileSelectAll/selected=8000" {
		t.Fatalf("names = %v", names)
	}
	if got := ns["BenchmarkRenderLarge/members=100"]; len(got) != 2 || got[0] != 119381 || got[1] != 120000 {
		t.Errorf("ns/op = %v", got)
	}
}

func TestProfileReading(t *testing.T) {
	cum := `Showing top 40 nodes out of 180
      flat  flat%   sum%        cum   cum%
         0     0%     0%      2.86s 17.41%  github.com/podwall/podwall/daemon/syncer.(*Syncer).SyncAll
     0.45s  2.74% 20.82%      1.87s 11.38%  reflect.DeepEqual
     0.22s  1.34%  1.83%      4.10s 24.95%  runtime.mallocgc
`
	got := profileReading(cum)
	for _, want := range []string{"the sync loop (SyncAll) 17 %", "(reflect.DeepEqual) 11 %", "allocating 25 %"} {
		if !strings.Contains(got, want) {
			t.Errorf("profileReading = %q, want it to contain %q", got, want)
		}
	}
	if profileReading("nothing here") != "" {
		t.Error("profileReading of no profile is not empty")
	}
}
