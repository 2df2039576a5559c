package report

import (
	"cmp"
	_ "embed"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podwall/podwall/test/bench/controlplane"
	"github.com/podwall/podwall/test/bench/datapath"
	"github.com/podwall/podwall/test/bench/stats"
)

// The plots Markdown links to (written by Plot next to the document).
const (
	QPSPlot  = "performance-qps.png"
	SyncPlot = "performance-sync.png"
)

// Markdown renders docs/performance.md.
func Markdown(in Input, metrics []Metric) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# podwall performance\n\n")
	w("Written by `make bench` (test/bench/bench.mk, test/cmd/bench) on %s; do not edit by hand, run it again. ", in.Date.UTC().Format("2006-01-02 15:04 UTC"))
	w("The raw figures are in [performance.json](performance.json). Every ratio compares podwall with the same thing without podwall, measured side by side in the same run.\n\n")
	w("Machine: %s, %d cores, %d GiB, Linux %s, %s, podwall %s", in.Machine.CPU, in.Machine.Cores, in.Machine.MemGiB, in.Machine.Kernel, in.Machine.Go, in.Machine.Podwall)
	if in.Seconds > 0 {
		w("; `make bench` measured for %s", (time.Duration(in.Seconds) * time.Second).String())
	}
	w(".\n\n")
	w("This VM is shared with other engineers' builds and tests: while the benchmarks ran the load average was ")
	w("%s. Each benchmark runs in a network namespace of its own that plays the node, so other test beds' interfaces and routes do not reach podwalld, but their CPU use does: ", loads(in))
	w("absolute figures move from run to run; the side-by-side ratios much less.\n\n")

	writeSummary(&b, metrics)
	writeDatapath(&b, in.Datapath)
	writeControlplane(&b, in.Controlplane)
	writeWhereTimeGoes(&b, in)
	writeClosing(&b, in, metrics)
	b.WriteString(tried)
	writeMicro(&b, in)
	writeHowTo(&b)
	return b.String()
}

func loads(in Input) string {
	var parts []string
	if d := in.Datapath; d != nil && d.LoadStart != "" {
		parts = append(parts, "datapath "+d.LoadStart+" → "+d.LoadEnd)
	}
	if c := in.Controlplane; c != nil && c.LoadStart != "" {
		parts = append(parts, "control plane "+c.LoadStart+" → "+c.LoadEnd)
	}
	if len(parts) == 0 {
		return "not recorded"
	}
	return strings.Join(parts, "; ") + " (1-minute averages; 2 would be a full machine)"
}

func metStr(m Metric) string {
	switch {
	case m.Met == nil && m.Value == nil && m.Note == "not measured":
		return "not measured"
	case m.Met == nil:
		return "—"
	case *m.Met:
		return "**met**"
	}
	return "**missed**"
}

func valueStr(m Metric) string {
	if m.Value == nil {
		return "—"
	}
	return num(m.Value) + " " + m.ValueUnit
}

func writeSummary(b *strings.Builder, metrics []Metric) {
	met, judged := 0, 0
	for _, m := range metrics {
		if m.Met != nil {
			judged++
			if *m.Met {
				met++
			}
		}
	}
	fmt.Fprintf(b, "## Summary: %d of %d targets met\n\n", met, judged)
	b.WriteString("| metric | unit | baseline | podwall | ratio | target | measured against the target | |\n|---|---|---|---|---|---|---|---|\n")
	for _, m := range metrics {
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", m.Name, m.Unit, num(m.Baseline), num(m.Podwall), num(m.Ratio), m.Target, valueStr(m), metStr(m))
	}
	b.WriteString("\nNotes on the rows:\n\n")
	for _, m := range metrics {
		if m.Note != "" {
			fmt.Fprintf(b, "- *%s*: %s.\n", m.ID, m.Note)
		}
	}
	b.WriteString("\n")
}

func minMax(xs []float64) string {
	if len(xs) == 0 {
		return "—"
	}
	return ms1(slices.Min(xs)) + "–" + ms1(slices.Max(xs))
}

func writeDatapath(b *strings.Builder, r *datapath.Result) {
	b.WriteString("## Datapath: HTTP through a pod under a policy (the seed's experiment)\n\n")
	if r == nil {
		b.WriteString("Not measured in this run.\n\n")
		return
	}
	fmt.Fprintf(b, "Two pairs of pods on network namespaces, each a server (a small Go HTTP server) and a client running `wrk -t1 -c%d -d%gs --latency`, "+
		"plumbed by the real CNI chain: **baseline** ptp + host-local only (podwall absent: no rules, no conntrack in the pods), **podwall** ptp + host-local + podwall with podwalld on a manifests directory. ", r.Connections, r.DurationSec)
	b.WriteString("Its policy selects every pod of the namespace and admits, on ingress, the seed's three ipBlocks (one each on ports 9090, 8080 and 80) " +
		"and two selector rules whose peer sets hold the namespace's pods (every pod; the role=client ones): the client is admitted by a set lookup, an intruder pod in another namespace is not. " +
		"The namespace also holds *N* remote pods (manifest entries on 50 other nodes, addresses in 10.216/16, none adjacent so none merge into wider prefixes): the policy selects them and its sets hold them. ")
	if r.ServicesNote != "" {
		fmt.Fprintf(b, "Services: %s. ", r.ServicesNote)
	} else if r.Services > 0 {
		fmt.Fprintf(b, "The state also holds %d Services. ", r.Services)
	}
	fmt.Fprintf(b, "Runs alternate between the pairs (baseline first in even rounds, podwall first in odd ones), %d rounds at %d selected pods and %d at the other points; each figure is the median of the runs, with their minimum–maximum.\n\n", r.Rounds, r.Main, r.SweepRounds)
	fmt.Fprintf(b, "![QPS vs selected pods](%s)\n\n", QPSPlot)
	b.WriteString("| selected pods | connections | baseline req/s | podwall req/s | ratio | baseline p99 ms | podwall p99 ms | p99 ratio | errors |\n|---|---|---|---|---|---|---|---|---|\n")
	qps := func(w datapath.WrkRun) float64 { return w.QPS }
	p99 := func(w datapath.WrkRun) float64 { return w.P99Ms }
	for _, n := range r.Selected {
		for _, mode := range datapath.Modes {
			bq, pq := r.Samples(n, mode, false, qps), r.Samples(n, mode, true, qps)
			bl, pl := r.Samples(n, mode, false, p99), r.Samples(n, mode, true, p99)
			if len(bq) == 0 || len(pq) == 0 {
				continue
			}
			errs := int64(0)
			for _, run := range r.Runs {
				if run.Selected == n && run.Mode == mode {
					errs += run.Errors
				}
			}
			fmt.Fprintf(b, "| %d | %s | %s (%s) | %s (%s) | %.3f | %s (%s) | %s (%s) | %.3f | %d |\n", n, mode,
				ms1(stats.Median(bq)), minMax(bq), ms1(stats.Median(pq)), minMax(pq), ratio(stats.Median(pq), stats.Median(bq)),
				ms1(stats.Median(bl)), minMax(bl), ms1(stats.Median(pl)), minMax(pl), ratio(stats.Median(pl), stats.Median(bl)), errs)
		}
	}
	var spreads []float64
	for _, n := range r.Selected {
		for _, mode := range datapath.Modes {
			for _, pw := range []bool{false, true} {
				if xs := r.Samples(n, mode, pw, qps); len(xs) > 1 {
					spreads = append(spreads, stats.Spread(xs))
				}
			}
		}
	}
	if len(spreads) > 0 {
		fmt.Fprintf(b, "\nThe runs of one bed at one point spread by %s (median of (max−min)/median over the table's cells) while the machine's load average was %s → %s: "+
			"when that exceeds the few per cent the targets allow, a ratio here says whether podwall costs a lot, not whether it costs 2 %% or 5 %%. "+
			"The notes under the summary give the ratios of runs paired by round too, which the load drifts less between.\n",
			pct(stats.Median(spreads)), r.LoadStart, r.LoadEnd)
	}
	if first, last := r.Selected[0], r.Selected[len(r.Selected)-1]; first != last {
		var parts []string
		flat := true
		for _, mode := range datapath.Modes {
			rf := ratio(stats.Median(r.Samples(first, mode, true, qps)), stats.Median(r.Samples(first, mode, false, qps)))
			rl := ratio(stats.Median(r.Samples(last, mode, true, qps)), stats.Median(r.Samples(last, mode, false, qps)))
			parts = append(parts, fmt.Sprintf("%s %.2f at %d selected pods and %.2f at %d", mode, rf, first, rl, last))
			flat = flat && rl >= rf-0.05
		}
		fmt.Fprintf(b, "\npodwall/baseline QPS: %s.", strings.Join(parts, "; "))
		if flat {
			b.WriteString(" The ratio does not fall as the peer sets grow (ipset lookups stay flat with their members): what podwall costs here is per packet and per connection in each pod — its chain and conntrack — not per peer.")
		}
		b.WriteString("\n")
	}
	b.WriteString("\nBefore the runs at each point the benchmark checked the firewall in force:\n\n")
	for _, pt := range r.Points {
		fmt.Fprintf(b, "- %d selected pods: the server's largest peer set covers %d addresses (%d entries), %d podwall ipsets; %s.\n",
			pt.Selected, pt.LargestSet, pt.LargestSetMembers, pt.Sets, strings.Join(pt.Checks, "; "))
	}
	b.WriteString("\nwrk's latency is measured from writing a request to reading its response; with `Connection: close` the TCP handshake (where podwall's rules judge the SYN) comes before it and shows in the request rate rather than in the latency.\n\n")
}

type changeRow struct {
	kind, op string
	affected int
}

func writeControlplane(b *strings.Builder, r *controlplane.Result) {
	b.WriteString("## Control plane: convergence on a real API server\n\n")
	if r == nil {
		b.WriteString("Not measured in this run.\n\n")
		return
	}
	s := r.Scale
	fmt.Fprintf(b, "kube-apiserver, etcd and kube-controller-manager (test/kube/cluster) hold %s; the remote pods are objects on %d other nodes with `status.podIPs` (no netns). "+
		"podwalld runs with `--kubeconfig` as the node's daemon; the local pods are network namespaces plumbed through ptp + host-local + podwall by the kubelet stand-in (test/kube/kubelet). ",
		scaleNote(s), s.RemoteNodes)
	b.WriteString("The local pods (t000 …) share one namespace, where standing policies isolate them and give each large peer sets (every frontend pod of the cluster, ≈30 % of it); " +
		"a prober pod in a namespace of its own is admitted by nothing until a measured policy admits it.\n\n")
	b.WriteString("Each change is timed from just before its API write. *Observed* is when every affected pod showed it: for policies by probing with new TCP connections from the prober " +
		"(30 ms per attempt; an opening counts at the first connection that succeeds, a closing at the first of three failures in a row), for peers and namespaces by reading " +
		"the affected pods' ipsets over netlink every millisecond. *Daemon log* is when podwalld's own log (`--log-level debug`) had an apply of the last affected pod. " +
		"*Queue* is the part before podwalld's sync started (watch, work queue, coalescing); *apply* the mean time of one pod's apply in that sync.\n\n")
	if rd := r.Rounds; rd != (controlplane.Rounds{}) {
		fmt.Fprintf(b, "This run made %d rounds of the four policy changes on one pod and %d on all %d local pods, %d rounds of the four peer changes per churn group, "+
			"%d of the two namespace relabels, and %d timed ADDs, at full scale (`make bench` runs fewer rounds of the changes that take seconds each, to stay within 30 minutes; "+
			"p99 of so few samples is their maximum).\n\n", rd.PolicyOne, rd.PolicyAll, s.LocalPods, rd.Peer, rd.Namespace, rd.AddSamples)
	}
	b.WriteString("| setup step | seconds |\n|---|---|\n")
	for _, p := range r.Phases {
		fmt.Fprintf(b, "| %s | %.1f |\n", p.Name, p.Seconds)
	}
	b.WriteString("\n")
	fmt.Fprintf(b, "![sync latency vs affected local pods](%s)\n\n", SyncPlot)

	var rows []changeRow
	seen := map[changeRow]bool{}
	for _, c := range r.Changes {
		k := changeRow{c.Kind, c.Op, c.Affected}
		if !seen[k] {
			seen[k] = true
			rows = append(rows, k)
		}
	}
	b.WriteString("| change | affected pods | n | observed p50 ms | observed p99 ms | daemon log p50 ms | daemon log p99 ms | queue p50 ms | apply per pod ms | not observed |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, k := range rows {
		var obs, dmn, queue, apply []float64
		missing := 0
		for _, c := range r.Changes {
			if (changeRow{c.Kind, c.Op, c.Affected}) != k {
				continue
			}
			if c.ObservedMs >= 0 {
				obs = append(obs, c.ObservedMs)
			} else {
				missing++
			}
			if c.DaemonMs >= 0 {
				dmn = append(dmn, c.DaemonMs)
			}
			if c.QueueMs >= 0 {
				queue = append(queue, c.QueueMs)
			}
			if c.ApplyMs >= 0 {
				apply = append(apply, c.ApplyMs)
			}
		}
		fmt.Fprintf(b, "| %s %s | %d | %d | %s | %s | %s | %s | %s | %s | %d |\n", k.kind, k.op, k.affected, len(obs)+missing,
			ms1(stats.Median(obs)), ms1(stats.Percentile(obs, 99)), ms1(stats.Median(dmn)), ms1(stats.Percentile(dmn, 99)),
			ms1(stats.Median(queue)), ms1(stats.Median(apply)), missing)
	}
	b.WriteString("\n")

	if len(r.Add) > 0 {
		fmt.Fprintf(b, "**CNI ADD** of %d new pods (selected by the local namespace's policies), one after another at this scale, each plugin process timed from fork to exit by libcni's executor "+
			"(hyperfine, in Debian, times whole commands; each ADD here needs a fresh netns and Pod object, so the benchmark times the plugin processes in Go):\n\n", len(r.Add))
		b.WriteString("| | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|\n")
		col := func(name string, f func(controlplane.AddSample) float64) {
			var xs []float64
			for _, a := range r.Add {
				xs = append(xs, f(a))
			}
			sm := stats.Summarize(xs)
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", name, ms1(sm.P50), ms1(sm.P90), ms1(sm.P99), ms1(sm.Max))
		}
		col("ADD ptp + host-local (the ENI stand-in)", func(a controlplane.AddSample) float64 { return a.BaseMs })
		col("ADD podwall (the plugin's process, start-up included)", func(a controlplane.AddSample) float64 { return a.PodwallMs })
		col("ADD, the whole chain", func(a controlplane.AddSample) float64 { return a.ChainMs })
		col("DEL ptp + host-local", func(a controlplane.AddSample) float64 { return a.DelBaseMs })
		col("DEL podwall (podwalld re-syncs every other local pod before it answers)", func(a controlplane.AddSample) float64 { return a.DelPodwallMs })
		if d, ok := daemonAddMs(r); ok {
			var pw []float64
			for _, a := range r.Add {
				pw = append(pw, a.PodwallMs)
			}
			fmt.Fprintf(b, "\npodwalld itself spent %.1f ms per ADD on average (its `podwall_cni_request_duration_seconds`), of the plugin process's %.1f ms mean: the rest, %.1f ms, is the plugin's start-up, config parsing, the gRPC dial and the process's exit.\n",
				d, mean(pw), mean(pw)-d)
		}
		b.WriteString("\n")
	}
	if len(r.Process) > 0 {
		var steady []float64
		var hwm float64
		for _, p := range r.Process {
			if p.Phase == "steady" {
				steady = append(steady, p.RSSBytes/(1<<20))
			}
			hwm = max(hwm, p.HWMBytes/(1<<20))
		}
		fmt.Fprintf(b, "**podwalld's process** (read from /proc every 0.5 s): RSS %s MiB while steady, peak RSS %s MiB.", ms1(stats.Median(steady)), ms1(hwm))
		if sc, ok := steadyScrape(r); ok {
			fmt.Fprintf(b, " Go heap in use while steady: %s MiB.", ms1(sc.HeapBytes/(1<<20)))
		}
		if own, child, wall, ok := churnCPUParts(r); ok {
			fmt.Fprintf(b, " During the %.0f s of churn it used %.2f cores: %.2f its own, %.2f in the processes it ran (iptables-nft-save, for a netns it does not remember).", wall, (own+child)/wall, own/wall, child/wall)
		}
		if sc, ok := steadyScrape(r); ok {
			fmt.Fprintf(b, " One scrape of its /metrics took %s ms and %s ms of its CPU (the state gauges render every pod's firewall to count set members): "+
				"the benchmark reads /metrics only at three phase boundaries.", ms1(sc.DurationMs), ms1(sc.CPUSeconds*1000))
		}
		b.WriteString("\n\n")
	}
	if len(r.Problems) > 0 {
		b.WriteString("Problems during the run:\n\n")
		for _, p := range r.Problems {
			fmt.Fprintf(b, "- %s\n", p)
		}
		b.WriteString("\n")
	}
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// daemonAddMs is the mean time podwalld spent per ADD during the timed
// ADDs (its metrics before and after them).
func daemonAddMs(r *controlplane.Result) (float64, bool) {
	var first, last *controlplane.MetricsScrape
	for i := range r.Scrapes {
		switch r.Scrapes[i].Phase {
		case "add-start":
			first = &r.Scrapes[i]
		case "add-end":
			last = &r.Scrapes[i]
		}
	}
	if first == nil || last == nil || last.Adds <= first.Adds {
		return 0, false
	}
	return (last.AddSeconds - first.AddSeconds) / (last.Adds - first.Adds) * 1000, true
}

// steadyScrape is the /metrics read taken while steady.
func steadyScrape(r *controlplane.Result) (controlplane.MetricsScrape, bool) {
	for _, s := range r.Scrapes {
		if s.Phase == "steady" {
			return s, true
		}
	}
	return controlplane.MetricsScrape{}, false
}

func churnCPUParts(r *controlplane.Result) (own, child, wall float64, ok bool) {
	var first, last *controlplane.ProcSample
	for i := range r.Process {
		p := &r.Process[i]
		if p.Phase != "churn" {
			continue
		}
		if first == nil {
			first = p
		}
		last = p
	}
	if first == nil || last == first {
		return 0, 0, 0, false
	}
	return last.CPUSeconds - first.CPUSeconds, last.ChildCPUSeconds - first.ChildCPUSeconds, last.At - first.At, true
}

func writeWhereTimeGoes(b *strings.Builder, in Input) {
	b.WriteString("## Where the time goes\n\n")
	if r := in.Controlplane; r != nil && len(r.Changes) > 0 {
		kinds := []string{"policy-one", "policy-all", "peer", "namespace"}
		b.WriteString("From API write to the last affected pod applied (podwalld's log), split at the start of the sync that applied the change:\n\n")
		b.WriteString("| change | affected pods | daemon log p50 ms | queue p50 ms (before the sync) | sync p50 ms (compile + applies) | apply per pod ms |\n|---|---|---|---|---|---|\n")
		type key struct {
			kind     string
			affected int
		}
		var keys []key
		seen := map[key]bool{}
		for _, c := range r.Changes {
			k := key{c.Kind, c.Affected}
			if !seen[k] && slices.Contains(kinds, c.Kind) {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		slices.SortStableFunc(keys, func(a, c key) int {
			return cmp.Or(cmp.Compare(slices.Index(kinds, a.kind), slices.Index(kinds, c.kind)), cmp.Compare(a.affected, c.affected))
		})
		for _, k := range keys {
			var d, q, s, a []float64
			for _, c := range r.Changes {
				if c.Kind != k.kind || c.Affected != k.affected || c.DaemonMs < 0 || c.QueueMs < 0 {
					continue
				}
				d, q, s = append(d, c.DaemonMs), append(q, c.QueueMs), append(s, c.DaemonMs-c.QueueMs)
				if c.ApplyMs >= 0 {
					a = append(a, c.ApplyMs)
				}
			}
			fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s |\n", k.kind, k.affected, ms1(stats.Median(d)), ms1(stats.Median(q)), ms1(stats.Median(s)), ms1(stats.Median(a)))
		}
		b.WriteString("\n")
		var del, other []float64
		for _, c := range r.Changes {
			if c.Kind != "peer" || c.QueueMs < 0 {
				continue
			}
			if c.Op == "disappear" {
				del = append(del, c.QueueMs)
			} else {
				other = append(other, c.QueueMs)
			}
		}
		if len(del) > 0 && len(other) > 0 {
			fmt.Fprintf(b, "From the API call until podwalld's sync started, a remote peer deleted (grace period 0) waited %s ms (p50), the other peer changes %s ms.\n\n",
				ms1(stats.Median(del)), ms1(stats.Median(other)))
		}
	}
	if in.CPUCum != "" {
		fmt.Fprintf(b, "podwalld's CPU profile during the first %d s of the churn (its own CPU; the iptables-nft-save processes it runs for a netns it does not remember are not in it). %s\n\n", profileSeconds(in), profileReading(in.CPUCum))
		fmt.Fprintf(b, "`go tool pprof -top -cum`:\n\n```\n%s\n```\n\n", strings.TrimSpace(in.CPUCum))
	}
	if in.CPUTop != "" {
		fmt.Fprintf(b, "`go tool pprof -top` (by own time):\n\n```\n%s\n```\n\n", strings.TrimSpace(in.CPUTop))
	}
	if in.HeapTop != "" {
		fmt.Fprintf(b, "podwalld's heap after the churn (`go tool pprof -sample_index=inuse_space -top`):\n\n```\n%s\n```\n\n", strings.TrimSpace(in.HeapTop))
	}
}

// profileFunctions are the functions profileReading quotes, with what
// they stand for.
var profileFunctions = []struct{ suffix, what string }{
	{"syncer.(*Syncer).SyncAll", "the sync loop (SyncAll)"},
	{"syncer.(*Syncer).compile", "compiling every local pod"},
	{"policy.Compile", "the compiler itself"},
	{"reflect.DeepEqual", "comparing each pod's new firewall with the applied one (reflect.DeepEqual)"},
	{"dataplane.(*Manager).Apply", "applying (the daemon's side of it)"},
	{"dataplane.Render", "rendering rules and sets"},
	{"metrics.(*stateCollector).Collect", "serving /metrics"},
	{"runtime.gcBgMarkWorker", "the garbage collector's background marking"},
	{"runtime.mallocgc", "allocating"},
}

// profileHeaderRE matches pprof's "Duration: 60s, Total samples = 4.55s ( 7.58%)".
var profileHeaderRE = regexp.MustCompile(`Duration: (\S+), Total samples = (\S+) \(\s*([0-9.]+)%\)`)

// profileReading says in words how busy the daemon was and which share of
// the CPU profile went where.
func profileReading(cum string) string {
	busy := ""
	if m := profileHeaderRE.FindStringSubmatch(cum); m != nil {
		busy = fmt.Sprintf("podwalld was on the CPU for %s of the profile's %s (%s %% of one core)", m[2], m[1], m[3])
		if v, err := strconv.ParseFloat(m[3], 64); err == nil && v < 50 {
			busy += ": convergence here is bound by waiting — for the kernel and for the CPU the other processes on the 2 cores use — more than by the daemon's own CPU"
		}
		busy += ". "
	}
	var suffixes []string
	for _, f := range profileFunctions {
		suffixes = append(suffixes, f.suffix)
	}
	shares := cumShares(cum, suffixes)
	var parts []string
	for _, f := range profileFunctions {
		if v, ok := shares[f.suffix]; ok {
			parts = append(parts, fmt.Sprintf("%s %.0f %%", f.what, v))
		}
	}
	if len(parts) == 0 {
		return busy
	}
	return busy + "Shares of its samples (cumulative, so they overlap): " + strings.Join(parts, "; ") + "."
}

func profileSeconds(in Input) int {
	if in.Controlplane != nil {
		return in.Controlplane.ProfileSeconds
	}
	return 0
}

func writeClosing(b *strings.Builder, in Input, metrics []Metric) {
	b.WriteString("## What would close each missed target\n\n")
	var groups []string
	missed := map[string][]Metric{}
	for _, m := range metrics {
		if m.Met == nil || *m.Met {
			continue
		}
		g := adviceGroup(m.ID)
		if _, ok := missed[g]; !ok {
			groups = append(groups, g)
		}
		missed[g] = append(missed[g], m)
	}
	if len(groups) == 0 {
		b.WriteString("Every target with a number was met in this run.\n\n")
		return
	}
	for _, g := range groups {
		var what []string
		for _, m := range missed[g] {
			what = append(what, fmt.Sprintf("%s: %s, target %s", m.ID, valueStr(m), m.Target))
		}
		fmt.Fprintf(b, "- **%s** — %s\n", strings.Join(what, "; "), advice(g, in))
	}
	b.WriteString("\n")
}

// tried is the hand-kept history of what was tried and what it gave.
//
//go:embed tried.md
var tried string

func writeMicro(b *strings.Builder, in Input) {
	b.WriteString("## Micro-benchmarks\n\n")
	if in.Micro == "" {
		b.WriteString("Not run.\n\n")
		return
	}
	b.WriteString("The compiler (`daemon/policy`) and the renderer and dataplane (`daemon/dataplane`), `go test -run '^$' -bench … -count N`. ")
	b.WriteString("To compare a change, save the raw block below as `old.txt`, run `make bench-micro` and `go run golang.org/x/perf/cmd/benchstat@" + BenchstatVersion + " old.txt bin/bench/micro.txt`.\n\n")
	if in.Benchstat != "" {
		fmt.Fprintf(b, "benchstat:\n\n```\n%s\n```\n\n", strings.TrimSpace(in.Benchstat))
	}
	fmt.Fprintf(b, "<details><summary>raw go test output</summary>\n\n```\n%s\n```\n\n</details>\n\n", strings.TrimSpace(in.Micro))
}

// BenchstatVersion is the golang.org/x/perf version `make bench` runs
// benchstat from.
const BenchstatVersion = "v0.0.0-20260908200009-22c9c6c9d4da"

func writeHowTo(b *strings.Builder) {
	b.WriteString("## Running it\n\n")
	b.WriteString("`make bench` (root; installs wrk and gnuplot-nox, builds what it needs) runs the micro-benchmarks, the datapath benchmark and the control-plane benchmark one after the other, " +
		"then writes this file, performance.json and the plots. Its parts: `make bench-micro`, `make bench-datapath`, `make bench-controlplane`, `make bench-report` (the last only reads bin/bench/). " +
		"`BENCH_DATAPATH_FLAGS` and `BENCH_CONTROLPLANE_FLAGS` pass flags, e.g. `BENCH_CONTROLPLANE_FLAGS='-pods 5000 -local-pods 50'` to scale down (see `go run ./test/cmd/bench controlplane -h`).\n")
}
