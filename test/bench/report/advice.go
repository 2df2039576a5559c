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
		return fmt.Sprintf("a peer change (p50 over every churn group) spends %s ms before podwalld's sync starts — the informer's delivery; a change after a quiet spell is reported at once, one within 10 ms of the last waits for its burst to settle (daemon/source/kube) — and %s ms in the sync. "+
			"The sync's compile follows the change (the persistent compiler and the syncer compare the snapshot with the last one by pointer and look only at the pods and EndpointSlices that differ), then set members change in place over netlink, on a socket kept per pod netns (no process, no thread switched into the netns; %s), 8 pods at a time on 2 cores. "+
			"What is left is shared: the kernel's ipset lock and the 2 cores, which the observer polling 110 pods' ipsets every millisecond uses too (+25 %% on 110 member changes, 8 at a time, in a one-off test next to the Manager alone), and the collector, which the 44 MiB soft memory limit runs more often than GOGC alone would.",
			ms1(f.queue["peer"]), ms1(f.sync["peer"]),
			strings.TrimSuffix(strings.TrimPrefix(measured(f.apply["peer"], "per pod here", f.members8000, "for a change of one member of a set of 8000 in the micro-benchmark"), " ("), ")"))
	case "policy-one":
		return fmt.Sprintf("a policy change is a change of rules: the pod moves to a new generation — new sets only for members no set in force holds (the peer sets are reused) — and both families' chains switch in one nf_tables transaction podwalld writes over netlink (no process)%s, after %s ms of queueing. "+
			"What is left is mostly the queue (the informer's delivery) and the kernel's deferred destruction of the replaced rules, which the next transaction in the same netns waits for.",
			measured(f.apply["policy-one"], "per pod here", f.structure8000, "in the micro-benchmark with peer sets of 8000 and 4000"), ms1(f.queue["policy-one"]))
	case "policy-all":
		return fmt.Sprintf("each selected pod gets its own nf_tables transaction in its own netns%s, 8 at a time on 2 cores; no process is started. "+
			"What is left is the kernel: each transaction that replaces rules is followed by their deferred destruction after an RCU grace period.",
			measured(f.apply["policy-all"], "per pod here, 8 at a time"))
	case "add":
		return fmt.Sprintf("the plugin process took %s ms (p50), of which podwalld spent %s ms on average: the ADD looks the pod up, compiles the new pod with the persistent compiler and writes its sets and chains over netlink (no process; the netns being new, nothing is read with iptables-nft-save) while the checkpoint is written (two fsyncs). "+
			"The rest is the plugin's own process: on a quiet machine the static `podwall` (8 MB) answering VERSION took 2.4 ms against 3.9 ms for the same code linked against libc with gRPC's x/net/trace (hyperfine, side by side), and its gRPC dial and exit come on top; under the bench's load the syncs that other pods' ADDs trigger compete for the same 2 cores. "+
			"What would shorten it further is a plugin without gRPC and protobuf (less to load at start).", ms1(f.addPlugin), ms1(f.addDaemon))
	case "rss":
		return fmt.Sprintf("the live heap after the churn was %s (heap profile above) against an RSS of %s MiB while steady. "+
			"About 19 MiB of the RSS is podwalld's own binary (file-backed pages of a static binary, 22 MB, built without gRPC's x/net/trace and with no libc), the rest is what the Go runtime manages, held under the 44 MiB soft memory limit (GOMEMLIMIT overrides it): the live heap, the garbage of the syncs until the next collection, stacks and the runtime's own tables. "+
			"The limit trades RSS for the collector's CPU (docs/operations.md has the figures at 40, 44 and 48 MiB). "+
			"Below that it takes a smaller live heap: the Kubernetes source (about 10 MiB for its 10k pods and the other objects), the compiler's kept per-pod work and the local pods' firewalls are most of it, or a smaller binary (minimal API types of its own instead of k8s.io/api/core/v1, 1.8 MB of its code).",
			heapTotal(in.HeapTop), ms1(f.rssSteady))
	case "growth-cluster":
		return "a sync's compile follows the change: the compiler and the syncer compare the snapshot with the last one by pointer and look only at the window where it differs (daemon/policy/incremental.go, daemon/syncer/localstate.go). " +
			"What still grows with the cluster is the change's own work: the peer set the relabelled pod leaves or joins is rebuilt, and in a larger cluster it holds more pods."
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
