// Package report turns what podwall's benchmarks measured into
// docs/performance.json (each metric of issue 6's table with its baseline,
// podwall's figure, their ratio, the target and whether it is met),
// docs/performance.md (the same table, the details behind each figure, the
// profiles, the micro-benchmarks, and what would close each missed target)
// and PNG plots drawn by gnuplot. Everything but the plots is pure: it only
// reads the benchmarks' results (their packages' Result types), and must
// not import podwall's daemon.
package report

import (
	"math"
	"slices"
	"time"

	"github.com/podwall/podwall/test/bench/controlplane"
	"github.com/podwall/podwall/test/bench/datapath"
	"github.com/podwall/podwall/test/bench/stats"
)

// Input is what the benchmarks of one `make bench` wrote. Any part may be
// missing (nil or empty): its metrics are then reported as not measured.
type Input struct {
	Machine      Machine
	Date         time.Time
	Datapath     *datapath.Result
	Controlplane *controlplane.Result
	// Micro is the output of `go test -bench -count N`; Benchstat
	// benchstat's summary of it.
	Micro, Benchstat string
	// CPUTop and HeapTop are `go tool pprof -top` of podwalld's profiles,
	// CPUCum the CPU profile's `-top -cum`.
	CPUTop, CPUCum, HeapTop string
	// Seconds is how long the whole `make bench` took, 0 if unknown.
	Seconds float64
}

// Machine describes where the benchmarks ran.
type Machine struct {
	CPU     string `json:"cpu"`
	Cores   int    `json:"cores"`
	MemGiB  int    `json:"memGiB"`
	Kernel  string `json:"kernel"`
	Go      string `json:"go"`
	Podwall string `json:"podwall"`
	// Load is /proc/loadavg when the report was written.
	Load string `json:"load"`
}

// Comparison says how a metric's value is held against its target.
type Comparison string

// The comparisons.
const (
	AtLeast Comparison = ">="
	AtMost  Comparison = "<="
	None    Comparison = ""
)

// Metric is one row of the table.
type Metric struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Unit string `json:"unit"`
	// Baseline is the same figure without podwall (nil: not applicable or
	// not measured); Podwall podwall's; Ratio Podwall/Baseline.
	Baseline *float64 `json:"baseline"`
	Podwall  *float64 `json:"podwall"`
	Ratio    *float64 `json:"ratio"`
	// Target is the target in words; Value the figure it applies to (the
	// ratio, podwall's figure, or what podwall adds), TargetValue and
	// Comparison the target as a number.
	Target      string     `json:"target"`
	Value       *float64   `json:"value"`
	ValueUnit   string     `json:"valueUnit"`
	Comparison  Comparison `json:"comparison,omitempty"`
	TargetValue float64    `json:"targetValue,omitempty"`
	// Met is nil when there is no numeric target or no value.
	Met *bool `json:"met"`
	// Samples is how many measurements the figures summarise.
	Samples int    `json:"samples"`
	Note    string `json:"note,omitempty"`
}

// Document is docs/performance.json.
type Document struct {
	Machine Machine  `json:"machine"`
	Date    string   `json:"date"`
	Metrics []Metric `json:"metrics"`
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// judge sets Value, Met from value and the target.
func (m *Metric) judge(value float64, cmp Comparison, target float64, unit string) {
	m.Value, m.Comparison, m.TargetValue, m.ValueUnit = ptr(value), cmp, target, unit
	if m.Value == nil || cmp == None {
		return
	}
	met := (cmp == AtLeast && value >= target) || (cmp == AtMost && value <= target)
	m.Met = &met
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// Metrics computes the table from what was measured.
func Metrics(in Input) []Metric {
	var out []Metric
	out = append(out, datapathMetrics(in.Datapath)...)
	out = append(out, controlplaneMetrics(in.Controlplane)...)
	out = append(out, growthMetrics(in)...)
	return out
}

func datapathMetrics(r *datapath.Result) []Metric {
	type row struct {
		id, name string
		mode     datapath.Mode
		latency  bool
		cmp      Comparison
		target   float64
		words    string
	}
	rows := []row{
		{"qps-keepalive", "HTTP QPS through a pod under a policy selecting all pods, keep-alive connections", datapath.KeepAlive, false, AtLeast, 0.98, "≥ 0.98 × baseline"},
		{"qps-newconn", "HTTP QPS, a new connection per request (as the seed's ApacheBench run)", datapath.NewConnection, false, AtLeast, 0.95, "≥ 0.95 × baseline"},
		{"p99-keepalive", "request latency p99, keep-alive connections", datapath.KeepAlive, true, AtMost, 1.05, "≤ 1.05 × baseline"},
		{"p99-newconn", "request latency p99, a new connection per request", datapath.NewConnection, true, AtMost, 1.05, "≤ 1.05 × baseline"},
	}
	var out []Metric
	for _, rw := range rows {
		m := Metric{ID: rw.id, Name: rw.name, Unit: "req/s", Target: rw.words}
		if rw.latency {
			m.Unit = "ms"
		}
		if r == nil {
			m.Note = "not measured"
			out = append(out, m)
			continue
		}
		value := func(w datapath.WrkRun) float64 { return w.QPS }
		if rw.latency {
			value = func(w datapath.WrkRun) float64 { return w.P99Ms }
		}
		base := r.Samples(r.Main, rw.mode, false, value)
		pw := r.Samples(r.Main, rw.mode, true, value)
		m.Name += " — " + itoa(r.Main) + " selected pods"
		m.Samples = min(len(base), len(pw))
		if m.Samples == 0 {
			m.Note = "not measured"
			out = append(out, m)
			continue
		}
		b, p := stats.Median(base), stats.Median(pw)
		m.Baseline, m.Podwall, m.Ratio = ptr(b), ptr(p), ptr(ratio(p, b))
		m.judge(ratio(p, b), rw.cmp, rw.target, "× baseline")
		m.Note = "medians of " + itoa(m.Samples) + " runs each, alternating; spread (max−min)/median: baseline " +
			pct(stats.Spread(base)) + ", podwall " + pct(stats.Spread(pw))
		if paired := pairedRatios(r, rw.mode, value); len(paired) > 0 {
			m.Note += "; the ratios of the runs paired by round (adjacent in time): median " + ratio3(stats.Median(paired)) +
				", " + ratio3(slices.Min(paired)) + "–" + ratio3(slices.Max(paired))
		}
		out = append(out, m)
	}
	return out
}

// pairedRatios returns podwall/baseline of value for each round of the
// main comparison that has both runs.
func pairedRatios(r *datapath.Result, mode datapath.Mode, value func(datapath.WrkRun) float64) []float64 {
	base := map[int]float64{}
	for _, w := range r.Runs {
		if w.Selected == r.Main && w.Mode == mode && !w.Podwall {
			base[w.Round] = value(w)
		}
	}
	var out []float64
	for _, w := range r.Runs {
		if b, ok := base[w.Round]; ok && w.Selected == r.Main && w.Mode == mode && w.Podwall && b > 0 {
			out = append(out, value(w)/b)
		}
	}
	return out
}

// changes returns the ObservedMs (or DaemonMs) of the changes of kind with
// the given number of affected pods (0: any), leaving out the missing ones;
// missing counts them.
func changes(r *controlplane.Result, kind string, affected int, daemon bool) (xs []float64, missing int) {
	for _, c := range r.Changes {
		if c.Kind != kind || (affected > 0 && c.Affected != affected) {
			continue
		}
		v := c.ObservedMs
		if daemon {
			v = c.DaemonMs
		}
		if v < 0 {
			missing++
			continue
		}
		xs = append(xs, v)
	}
	return xs, missing
}

func controlplaneMetrics(r *controlplane.Result) []Metric {
	var out []Metric
	maxGroup := 0
	if r != nil && len(r.Groups) > 0 {
		maxGroup = slices.Max(r.Groups)
	}
	local := 0
	if r != nil {
		local = r.Scale.LocalPods
	}
	type row struct {
		id, name, kind string
		affected       int
		daemon         bool
		target         float64
	}
	rows := []row{
		{"peer-change", "a peer pod appears, disappears or is relabelled → peer sets updated in every affected local pod (" + itoa(maxGroup) + "), p99, ipsets read over netlink", "peer", maxGroup, false, 100},
		{"peer-change-daemon", "the same, by podwalld's own log (last affected pod applied)", "peer", maxGroup, true, 100},
		{"namespace-relabel", "a namespace of peers is relabelled → peer sets updated in every selected local pod (" + itoa(local) + "), p99, ipsets", "namespace", 0, false, 100},
		{"policy-one", "a policy is created, changed or deleted → enforced in the one selected local pod, p99, probed with new connections", "policy-one", 0, false, 100},
		{"policy-one-daemon", "the same, by podwalld's own log", "policy-one", 0, true, 100},
		{"policy-all", "a policy is created, changed or deleted → enforced in all " + itoa(local) + " selected local pods, p99, probed", "policy-all", 0, false, 500},
		{"policy-all-daemon", "the same, by podwalld's own log", "policy-all", 0, true, 500},
	}
	for _, rw := range rows {
		m := Metric{ID: rw.id, Name: rw.name, Unit: "ms", Target: "≤ " + itoa(int(rw.target)) + " ms"}
		if r == nil {
			m.Note = "not measured"
			out = append(out, m)
			continue
		}
		xs, missing := changes(r, rw.kind, rw.affected, rw.daemon)
		m.Samples = len(xs) + missing
		if m.Samples == 0 {
			m.Note = "not measured"
			out = append(out, m)
			continue
		}
		p99 := stats.Percentile(xs, 99)
		m.Podwall = ptr(p99)
		m.judge(p99, AtMost, rw.target, "ms")
		if missing > 0 {
			// A change never observed is slower than any target.
			f := false
			m.Met = &f
			m.Note = itoa(missing) + " of " + itoa(m.Samples) + " changes not observed within the timeout (the figures are of the others); "
		}
		m.Note += "p50 " + ms1(stats.Median(xs)) + " ms, max " + ms1(slices.Max(append([]float64{0}, xs...))) + " ms over " + itoa(m.Samples) + " changes (p99 of fewer than 100 samples is their maximum)"
		out = append(out, m)
	}

	// CNI ADD.
	for _, q := range []struct {
		id     string
		p      float64
		target float64
	}{{"add-p50", 50, 25}, {"add-p99", 99, 50}} {
		m := Metric{ID: q.id, Unit: "ms", Target: "podwall adds ≤ " + itoa(int(q.target)) + " ms",
			Name: "CNI ADD latency, p" + itoa(int(q.p)) + ": baseline ptp + host-local, podwall the whole chain; the target applies to the podwall plugin's own process (start-up included)"}
		if r == nil || len(r.Add) == 0 {
			m.Note = "not measured"
			out = append(out, m)
			continue
		}
		var base, chain, plugin []float64
		for _, a := range r.Add {
			base = append(base, a.BaseMs)
			chain = append(chain, a.BaseMs+a.PodwallMs)
			plugin = append(plugin, a.PodwallMs)
		}
		b, c, pl := stats.Percentile(base, q.p), stats.Percentile(chain, q.p), stats.Percentile(plugin, q.p)
		m.Baseline, m.Podwall, m.Ratio = ptr(b), ptr(c), ptr(ratio(c, b))
		m.judge(pl, AtMost, q.target, "ms added")
		m.Samples = len(r.Add)
		m.Note = itoa(len(r.Add)) + " ADDs of new selected pods at " + itoa(local) + " local pods, " + itoa(r.Scale.Policies) + " policies"
		out = append(out, m)
	}

	// Memory and CPU.
	rss := Metric{ID: "rss", Name: "podwalld resident memory (VmRSS) with the cluster loaded, median while steady", Unit: "MiB", Target: "≤ 64 MiB"}
	peak := Metric{ID: "rss-peak", Name: "podwalld peak resident memory (VmHWM) over the whole run", Unit: "MiB", Target: "≤ 64 MiB"}
	cpu := Metric{ID: "cpu-churn", Name: "podwalld CPU during the churn (own + the processes it runs), cores", Unit: "cores", Target: "— (reported)"}
	if r == nil || len(r.Process) == 0 {
		rss.Note, peak.Note, cpu.Note = "not measured", "not measured", "not measured"
	} else {
		var steady []float64
		var hwm float64
		for _, s := range r.Process {
			if s.Phase == "steady" {
				steady = append(steady, s.RSSBytes/(1<<20))
			}
			hwm = max(hwm, s.HWMBytes/(1<<20))
		}
		if len(steady) > 0 {
			v := stats.Median(steady)
			rss.Podwall = ptr(v)
			rss.judge(v, AtMost, 64, "MiB")
			rss.Samples = len(steady)
			rss.Note = scaleNote(r.Scale)
		}
		peak.Podwall = ptr(hwm)
		peak.judge(hwm, AtMost, 64, "MiB")
		peak.Samples = len(r.Process)
		if c, ok := churnCPU(r); ok {
			cpu.Podwall = ptr(c)
			cpu.Value, cpu.ValueUnit = ptr(c), "cores"
			cpu.Note = "over " + ms1(r.ChurnEnd-r.ChurnStart) + " s of churn"
		}
	}
	return append(out, rss, peak, cpu)
}

// churnCPU is the daemon's CPU (own and children) over the churn, in cores.
func churnCPU(r *controlplane.Result) (float64, bool) {
	var first, last *controlplane.ProcSample
	for i := range r.Process {
		s := &r.Process[i]
		if s.Phase != "churn" {
			continue
		}
		if first == nil {
			first = s
		}
		last = s
	}
	if first == nil || last == first || last.At <= first.At {
		return 0, false
	}
	cpu := (last.CPUSeconds + last.ChildCPUSeconds) - (first.CPUSeconds + first.ChildCPUSeconds)
	return cpu / (last.At - first.At), true
}

func scaleNote(s controlplane.Scale) string {
	return itoa(s.Pods) + " pods, " + itoa(s.Namespaces) + " namespaces, " + itoa(s.Policies) + " policies, " +
		itoa(s.Services) + " Services, " + itoa(s.LocalPods+1) + " local pods"
}

// growthMetrics say how sync cost grows: with the pods a change affects
// (peer changes in groups of 1 … 110 local pods) and with the size of the
// cluster (the compiler micro-benchmark at 1k and 10k pods, one local pod).
func growthMetrics(in Input) []Metric {
	aff := Metric{ID: "growth-affected", Unit: "ms",
		Name:   "how sync cost grows with the pods a change affects: peer change p50, all affected pods updated, 1 affected pod (baseline) vs the most",
		Target: "— (grows with the pods a change affects)"}
	if r := in.Controlplane; r != nil && len(r.Groups) > 1 {
		lo, hi := slices.Min(r.Groups), slices.Max(r.Groups)
		a, _ := changes(r, "peer", lo, false)
		b, _ := changes(r, "peer", hi, false)
		if len(a) > 0 && len(b) > 0 {
			aff.Baseline, aff.Podwall = ptr(stats.Median(a)), ptr(stats.Median(b))
			aff.Ratio = ptr(ratio(stats.Median(b), stats.Median(a)))
			aff.Value, aff.ValueUnit = aff.Ratio, "×"
			aff.Samples = len(a) + len(b)
			aff.Name = "how sync cost grows with the pods a change affects: peer change p50, " + itoa(lo) + " affected pod(s) (baseline) vs " + itoa(hi)
		}
	} else {
		aff.Note = "not measured"
	}
	size := Metric{ID: "growth-cluster", Unit: "ms",
		Name:   "how sync cost grows with the cluster: compiling one local pod's firewall, 1k pods (baseline) vs 10k pods in the cluster (micro-benchmark)",
		Target: "≈ flat: ≤ 1.5 × (not with the size of the cluster)"}
	_, ns := parseMicro(in.Micro)
	small, big := ns["BenchmarkCompileScale/pods=1000/local=1"], ns["BenchmarkCompileScale/pods=10000/local=1"]
	if g1, g10 := ns["BenchmarkCompileGrowth/pods=1000"], ns["BenchmarkCompileGrowth/pods=10000"]; len(g1) > 0 && len(g10) > 0 {
		// What a sync compiles in the daemon: the persistent compiler after
		// one change, rather than a fresh compile.
		small, big = g1, g10
		size.Name = "how sync cost grows with the cluster: a sync's compile after one remote pod is relabelled (the daemon's persistent compiler, 110 local pods), 1k pods (baseline) vs 10k pods in the cluster (micro-benchmark)"
	}
	if len(small) > 0 && len(big) > 0 {
		a, b := stats.Median(small)/1e6, stats.Median(big)/1e6
		size.Baseline, size.Podwall, size.Ratio = ptr(a), ptr(b), ptr(ratio(b, a))
		size.judge(ratio(b, a), AtMost, 1.5, "×")
		size.Samples = len(small) + len(big)
	} else {
		size.Note = "not measured"
	}
	return []Metric{aff, size}
}
