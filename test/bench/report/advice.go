package report

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/podwall/podwall/test/bench/datapath"
	"github.com/podwall/podwall/test/bench/stats"
)

// facts are the figures the advice quotes, from this run.
type facts struct {
	queue, sync, apply map[string]float64 // p50 by change kind
	addDaemon          float64            // podwalld's mean time per ADD, ms
	addPlugin          float64            // the plugin process's p50, ms
	members8000        float64            // ApplyLarge members=8000/members, ms
	structure8000      float64            // ApplyLarge members=8000/structure, ms
	compile10k110      float64            // CompileScale pods=10000/local=110, ms
	rssSteady          float64            // MiB
}

func gather(in Input) facts {
	f := facts{queue: map[string]float64{}, sync: map[string]float64{}, apply: map[string]float64{}}
	if r := in.Controlplane; r != nil {
		byKind := map[string][3][]float64{}
		for _, c := range r.Changes {
			if c.DaemonMs < 0 || c.QueueMs < 0 {
				continue
			}
			v := byKind[c.Kind]
			v[0], v[1] = append(v[0], c.QueueMs), append(v[1], c.DaemonMs-c.QueueMs)
			if c.ApplyMs >= 0 {
				v[2] = append(v[2], c.ApplyMs)
			}
			byKind[c.Kind] = v
		}
		for k, v := range byKind {
			f.queue[k], f.sync[k], f.apply[k] = stats.Median(v[0]), stats.Median(v[1]), stats.Median(v[2])
		}
		f.addDaemon, _ = daemonAddMs(r)
		var pw []float64
		for _, a := range r.Add {
			pw = append(pw, a.PodwallMs)
		}
		f.addPlugin = stats.Median(pw)
		var rss []float64
		for _, p := range r.Process {
			if p.Phase == "steady" {
				rss = append(rss, p.RSSBytes/(1<<20))
			}
		}
		f.rssSteady = stats.Median(rss)
	}
	_, ns := parseMicro(in.Micro)
	med := func(name string) float64 {
		if xs := ns[name]; len(xs) > 0 {
			return stats.Median(xs) / 1e6
		}
		return 0
	}
	f.members8000 = med("BenchmarkApplyLarge/members=8000/members")
	f.structure8000 = med("BenchmarkApplyLarge/members=8000/structure")
	f.compile10k110 = med("BenchmarkCompileScale/pods=10000/local=110")
	return f
}

// adviceGroup returns the group of metrics one piece of advice covers.
func adviceGroup(id string) string {
	switch id {
	case "qps-keepalive", "p99-keepalive":
		return "keepalive"
	case "qps-newconn", "p99-newconn":
		return "newconn"
	case "peer-change", "peer-change-daemon", "namespace-relabel":
		return "peer"
	case "policy-one", "policy-one-daemon":
		return "policy-one"
	case "policy-all", "policy-all-daemon":
		return "policy-all"
	case "add-p50", "add-p99":
		return "add"
	case "rss", "rss-peak":
		return "rss"
	}
	return id
}

// measured quotes figures of this run, given as value, description pairs,
// in one parenthesis; figures not measured (≤ 0) are left out.
func measured(pairs ...any) string {
	var parts []string
	for i := 0; i+1 < len(pairs); i += 2 {
		v, _ := pairs[i].(float64)
		what, _ := pairs[i+1].(string)
		if v > 0 {
			parts = append(parts, ms1(v)+" ms "+what)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// noiseCaveat warns when the datapath runs spread more than the targets'
// margins.
func noiseCaveat(in Input) string {
	r := in.Datapath
	if r == nil {
		return ""
	}
	var spreads []float64
	for _, mode := range []datapath.Mode{datapath.KeepAlive, datapath.NewConnection} {
		for _, pw := range []bool{false, true} {
			if xs := r.Samples(r.Main, mode, pw, func(w datapath.WrkRun) float64 { return w.QPS }); len(xs) > 1 {
				spreads = append(spreads, stats.Spread(xs))
			}
		}
	}
	if len(spreads) == 0 || stats.Median(spreads) <= 0.1 {
		return ""
	}
	return fmt.Sprintf("first, this run's runs spread by %s on the loaded machine, more than the shortfall: measure again on a quiet one before changing anything. If the cost stays: ", pct(stats.Median(spreads)))
}

// advice says what would close the targets of an advice group, quoting
// this run's figures, its proposals ranked by what they would gain.
func advice(group string, in Input) string {
	f := gather(in)
	switch group {
	case "keepalive", "newconn":
		return noiseCaveat(in) + datapathAdvice(group)
	case "peer":
		return fmt.Sprintf("a peer change (p50 over every churn group) spends %s ms before podwalld's sync starts — the informer's delivery and the Kubernetes source's 10 ms settle delay (daemon/source/kube) — and %s ms in the sync. "+
			"The sync recompiles every local pod against the whole cluster%s, then changes set members in place over netlink (no process; %s). "+
			"Ranked by gain: (1) an incremental compiler — pods indexed by namespace and labels, each rule's peer set kept and updated per pod event, only the pods whose peer sets changed recompiled — so a change costs what it affects, not the cluster; "+
			"(2) fewer allocations per sync (the garbage collector's share of the profile above); (3) coalesce events only while a sync runs instead of waiting a settle delay.",
			ms1(f.queue["peer"]), ms1(f.sync["peer"]), measured(f.compile10k110, "to compile 110 local pods at 10k pods in the micro-benchmark"),
			strings.TrimSuffix(strings.TrimPrefix(measured(f.apply["peer"], "per pod here", f.members8000, "for a change of one member of a set of 8000 in the micro-benchmark"), " ("), ")"))
	case "policy-one":
		return fmt.Sprintf("a policy change is a change of rules: the pod moves to a new generation — new sets only for members no set in force holds (the peer sets are reused), "+
			"the chains switched by one `iptables-nft-restore` process per family whose rules change, both families at once%s — after %s ms of queueing. "+
			"Ranked by gain: (1) program the chains over nf_tables netlink from the daemon instead of starting a process per change (≈4 ms vs ≈14 ms per restore on this VM, and no process start competing for the 2 cores); "+
			"(2) the incremental compiler above.", measured(f.apply["policy-one"], "per pod here", f.structure8000, "in the micro-benchmark with peer sets of 8000 and 4000"), ms1(f.queue["policy-one"]))
	case "policy-all":
		return fmt.Sprintf("each selected pod needs its own `iptables-nft-restore` process in its own netns%s; the sync runs 8 applies at a time on 2 cores, so 110 pods cost about 110 process starts and nf_tables transactions of CPU. "+
			"Sets are reused and members no longer exec anything, so what is left is the process per pod: programming the chains over nf_tables netlink from the daemon (one transaction per pod, no process) is what would bring 110 pods under 500 ms here.",
			measured(f.apply["policy-all"], "per pod here, 8 at a time"))
	case "add":
		return fmt.Sprintf("the plugin process took %s ms (p50), of which podwalld spent %s ms on average: the ADD compiles the new pod against the whole cluster, writes the checkpoint (two fsyncs) and, the netns being new (no iptables-nft-save), "+
			"runs `iptables-nft-restore` for both families at once; the plugin's own start-up is ≈15 ms of Go runtime on this VM, and the syncs that other pods' ADDs trigger compete for the same 2 cores. "+
			"Ranked by gain: (1) program the new pod's chains over nf_tables netlink (no restore process); (2) compile the new pod from the incremental compiler's indexes instead of the whole cluster; (3) a smaller plugin binary (less to load at start).", ms1(f.addPlugin), ms1(f.addDaemon))
	case "rss":
		return fmt.Sprintf("the live heap after the churn was %s (heap profile above) against an RSS of %s MiB while steady. "+
			"The Kubernetes source holds each pod once, in a compact form (≈1.6 KB per pod with a real API server: BenchmarkAPIServerMemory in daemon/source/kube), the dataplane shares the compiler's peer sets instead of copying them per pod, "+
			"and podwalld sets a 48 MiB soft memory limit (GOMEMLIMIT overrides it). Much of what is left is not heap: about 44 MiB of podwalld's RSS at 10k pods is its own binary's pages (/proc/PID/smaps, measured with no local pods), "+
			"because client-go's clientset links and registers all 56 API groups at start. Ranked by gain: (1) a client built on a scheme of the four API groups podwall reads (core, networking, discovery, meta) instead of the clientset and informer factory; "+
			"(2) fewer allocations per sync (the incremental compiler), so the collector keeps up below the limit.",
			heapTotal(in.HeapTop), ms1(f.rssSteady))
	case "growth-cluster":
		return "every sync (and every ADD) recompiles against the whole cluster: the compiler walks every pod for each selector of each policy that selects a local pod. " +
			"Indexing pods by namespace and label (and peer sets by selector) once, and updating them per event, would make a change cost what it affects."
	}
	return "see the sections above."
}

// datapathAdvice is what would close the datapath targets.
func datapathAdvice(group string) string {
	common := "test/bench/notrack measured the alternatives side by side (44 paired rounds, FINDINGS.md there): skipping conntrack for TCP only (`CT --notrack` in raw, pure SYNs judged by the policy, later segments accepted, UDP stateful) " +
		"gave keep-alive 0.93 and new connections 0.93 of the unfirewalled rate (podwall's ruleset: 0.92 and 0.86 in the same rounds) and lets a pod with CAP_NET_RAW send TCP segments past egress isolation; " +
		"only a pod netns with no conntrack at all reached 0.99 and 0.97, and that drops UDP replies. What is left is conntrack's presence in the pod netns (its hooks cost ≈5 % CPU per request even when it tracks nothing). "
	if group == "keepalive" {
		return common + "Closing the keep-alive target would take a datapath that judges a flow once without netfilter conntrack in the pod: e.g. an eBPF program on the pod's host veth with its own flow table, which is a different design from iptables in the pod netns."
	}
	return common + "For new connections the per-connection conntrack entry is most of the cost: the same eBPF design would remove it; within iptables, one `hash:net,port` set per direction instead of a rule per (peer, port) would shorten the SYN's walk, a smaller gain."
}

// heapTotalRE matches the total of a `go tool pprof -top` heap listing.
var heapTotalRE = regexp.MustCompile(`of (\S+) total`)

// heapTotal returns the total of a heap profile listing, "unknown" without one.
func heapTotal(top string) string {
	if m := heapTotalRE.FindStringSubmatch(top); m != nil {
		return m[1]
	}
	return "unknown"
}
