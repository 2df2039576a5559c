package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// resources are what the parallel test measures of the daemon.
type resources struct {
	goroutines             int
	fds, netnsFDs, threads int
	logErrors, logWarnings int
	logLines               int
}

func (r resources) String() string {
	return fmt.Sprintf("goroutines=%d fds=%d netnsFDs=%d threads=%d", r.goroutines, r.fds, r.netnsFDs, r.threads)
}

// measure reads the daemon's goroutines (go_goroutines from /metrics), its
// descriptors and threads (/proc) and its log.
func (n *node) measure(ctx context.Context) (resources, error) {
	var r resources
	g, err := harness.ScrapeMetric(ctx, n.metrics, "go_goroutines")
	if err != nil {
		return r, err
	}
	r.goroutines = int(g)
	snap, err := harness.SnapshotProcess(n.daemon.PID())
	if err != nil {
		return r, err
	}
	r.fds, r.netnsFDs, r.threads = snap.FDs, snap.NetnsFDs, snap.Threads
	r.logErrors, r.logWarnings = n.logLines("ERROR"), n.logLines("WARN")
	r.logLines = n.logLines("")
	return r, nil
}

// TestParallelPods adds roundPods pods (110, kubelet's default maximum) in
// parallel through the real CNI chain, then deletes them in parallel, for
// several rounds (3 in CI, 10 in `make soak`), while a churner rewrites the
// round namespace's policies and flips its label. After every phase the
// node equals the model exactly (every pod's rules and sets, the daemon's
// attachments, the checkpoint). Before the first round and after the last,
// the daemon's goroutines, file descriptors, netns handles and threads are
// measured: no leak (a few goroutines and descriptors of slack for idle
// connections), no podwall object in the host netns, and no error storm
// (at most one retried error per round, at most one warning per DEL).
func TestParallelPods(t *testing.T) {
	t.Parallel()
	cfg := currentSettings(t)
	m := newModel()
	m.namespaces["rl-keep"] = map[string]string{}
	m.namespaces["rl-round"] = labelsOf("team", "x")
	m.policies["rl-keep"] = []*networkingv1.NetworkPolicy{
		ingressPolicy("rl-keep", "server-from-round-clients", selector("role", "server"), []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: selector("team", "x"), PodSelector: selector("role", "client")},
			podPeer("role", "client"),
		}, 80),
	}
	for _, p := range []struct{ name, role string }{{"server", "server"}, {"client", "client"}, {"other", "other"}} {
		m.pods[podKey("rl-keep", p.name)] = &modelPod{namespace: "rl-keep", name: p.name, labels: labelsOf("role", p.role), ports: []int32{80}}
	}
	n := newNode(t, nodeOptions{name: "rlpar", subnet: 6, resync: 15 * time.Second, metrics: true, cluster: m})
	ctx := t.Context()
	keep := sortedKeys(m.pods)
	kept, err := n.bed.AddPods(ctx, keep, bed.ServePort{Protocol: bed.TCP, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keep {
		m.pods[k].attached = kept[i]
	}
	server, client, other := kept[2], kept[0], kept[1] // sorted: client, other, server
	waitExact(t, n, m)

	before, err := n.measure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before: %s", before)

	var mu sync.Mutex // guards m against the churner
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var churns int
	churn := func(stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(200+r.IntN(400)) * time.Millisecond):
			}
			mu.Lock()
			var err error
			if r.IntN(4) == 0 {
				m.namespaces["rl-round"] = teamLabels(teams[r.IntN(2)])
				err = m.writeNamespace(n.daemon, "rl-round")
			} else {
				m.policies["rl-round"] = randomPolicies(r, "rl-round", "10.214.6.0")
				err = m.writePolicies(n.daemon, "rl-round")
			}
			churns++
			mu.Unlock()
			if err != nil {
				t.Errorf("churn: %v", err)
			}
		}
	}
	// phase runs fn while the churner runs, then checks the node.
	phase := func(name string, fn func()) {
		t.Helper()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() { defer close(done); churn(stop) }()
		start := time.Now()
		fn()
		took := time.Since(start)
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		waitExact(t, n, m)
		t.Logf("%s: %s, then exact", name, took.Round(10*time.Millisecond))
	}

	var added, deleted int
	for round := range cfg.rounds {
		var names []string
		mu.Lock()
		for i := range cfg.roundPods {
			p := &modelPod{namespace: "rl-round", name: fmt.Sprintf("r%d-%d", round, i), ports: []int32{80},
				labels: labelsOf("role", roles[i%len(roles)])}
			m.pods[p.key()] = p
			if err := m.writePod(n.daemon, p); err != nil {
				t.Fatal(err)
			}
			names = append(names, p.key())
		}
		mu.Unlock()
		var pods []*bed.Pod
		phase(fmt.Sprintf("round %d: %d ADDs in parallel", round+1, len(names)), func() {
			var err error
			if pods, err = n.bed.AddPods(ctx, names); err != nil {
				t.Fatalf("round %d: %v", round+1, err)
			}
			mu.Lock()
			for i, k := range names {
				m.pods[k].attached = pods[i]
			}
			mu.Unlock()
		})
		added += len(pods)
		// The round's clients reach the server while the policy admits
		// them; the other pod never does.
		expectProbe(t, other, server, false)
		expectProbe(t, client, server, true)
		phase(fmt.Sprintf("round %d: %d DELs in parallel", round+1, len(pods)), func() {
			var wg sync.WaitGroup
			for _, p := range pods {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := n.bed.DelPod(ctx, p); err != nil {
						t.Errorf("DEL %s: %v", p, err)
					}
				}()
			}
			wg.Wait()
			mu.Lock()
			for _, k := range names {
				mp := m.pods[k]
				delete(m.pods, k)
				if err := m.writePod(n.daemon, mp); err != nil {
					t.Errorf("remove manifest: %v", err)
				}
			}
			mu.Unlock()
		})
		deleted += len(pods)
		if r, err := n.measure(ctx); err == nil {
			t.Logf("round %d done: %s", round+1, r)
		}
	}

	// Idle connections and timers settle within a few seconds.
	var after resources
	const goroutineSlack, fdSlack = 10, 5
	err = harness.Poll(ctx, 20*time.Second, 500*time.Millisecond, func() error {
		var err error
		if after, err = n.measure(ctx); err != nil {
			return err
		}
		if after.goroutines > before.goroutines+goroutineSlack || after.fds > before.fds+fdSlack || after.netnsFDs != before.netnsFDs {
			return fmt.Errorf("before %s, after %s", before, after)
		}
		return nil
	})
	t.Logf("after %d rounds (%d pods added, %d deleted, %d policy changes): %s; log: %d lines, %d WARN, %d ERROR",
		cfg.rounds, added, deleted, churns, after, after.logLines, after.logWarnings, after.logErrors)
	if err != nil {
		t.Errorf("leak: %v", err)
	}
	if err := checkHostClean(ctx, n.inspect); err != nil {
		t.Error(err)
	}
	if after.logWarnings > 0 {
		t.Logf("daemon warnings by message:\n%s", n.logSummary("WARN"))
	}
	// An error storm would be errors repeating for every pod or every
	// sync; a transient failure that the next sync retries is tolerated
	// once per round, and shown.
	if after.logErrors > 0 {
		t.Logf("daemon errors:\n%s", n.logExcerpt("ERROR", 10))
	}
	if after.logErrors > cfg.rounds {
		t.Errorf("%d ERROR lines in the daemon's log over %d rounds", after.logErrors, cfg.rounds)
	}
	if after.logWarnings > deleted {
		t.Errorf("%d warnings in the daemon's log for %d DELs", after.logWarnings, deleted)
	}
	expectProbe(t, other, server, false)
	expectProbe(t, client, server, true)
}

// TestOddSequences sends what runtimes sometimes send: ADD twice for one
// container, DEL twice, DEL before any ADD, and a netns deleted while
// attached (then CHECK, the daemon's resync, DEL). Each is handled cleanly:
// the right result, the node equal to the model after each, no ERROR in the
// log and no repeated warning: the log does not grow with the resyncs that
// follow.
func TestOddSequences(t *testing.T) {
	t.Parallel()
	m := newModel()
	m.namespaces["rl-o"] = map[string]string{}
	m.policies["rl-o"] = []*networkingv1.NetworkPolicy{
		ingressPolicy("rl-o", "server-from-friends", selector("role", "server"), []networkingv1.NetworkPolicyPeer{podPeer("role", "friend")}, 80),
	}
	for _, p := range []struct{ name, role string }{{"server", "server"}, {"friend", "friend"}, {"stranger", "none"}, {"victim", "friend"}, {"twice", "friend"}} {
		m.pods[podKey("rl-o", p.name)] = &modelPod{namespace: "rl-o", name: p.name, labels: labelsOf("role", p.role), ports: []int32{80}}
	}
	n := newNode(t, nodeOptions{name: "rlodd", subnet: 7, resync: driftResync, cluster: m})
	ctx := t.Context()
	names := sortedKeys(m.pods)
	pods, err := n.bed.AddPods(ctx, names, bed.ServePort{Protocol: bed.TCP, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range names {
		m.pods[k].attached = pods[i]
	}
	server, friend, stranger := m.pods["rl-o/server"].attached, m.pods["rl-o/friend"].attached, m.pods["rl-o/stranger"].attached
	victim, twice := m.pods["rl-o/victim"].attached, m.pods["rl-o/twice"].attached
	waitExact(t, n, m)

	t.Run("ADD twice", func(t *testing.T) {
		run, err := n.runPlugin(ctx, pluginCall{verb: "ADD", pod: friend})
		if err != nil || run.code != 0 {
			t.Fatalf("second ADD: %v, code %d %s", err, run.code, run.msg)
		}
		if prev := mustJSON(t, friend.Result); !sameJSON(t, run.stdout, prev) {
			t.Errorf("second ADD printed %s, want the prevResult %s", run.stdout, prev)
		}
		waitExact(t, n, m)
		expectProbe(t, friend, server, true)
	})
	t.Run("DEL twice", func(t *testing.T) {
		for i := range 2 {
			if err := n.bed.CNI().DelNetworkList(ctx, n.bed.NetworkList(), twice.RuntimeConf()); err != nil {
				t.Errorf("DEL %d: %v", i+1, err)
			}
		}
		run, err := n.runPlugin(ctx, pluginCall{verb: "DEL", pod: twice})
		if err != nil || run.code != 0 || run.stdout != "" {
			t.Errorf("third DEL, podwall alone: %v, code %d, stdout %q", err, run.code, run.stdout)
		}
		m.pods["rl-o/twice"].attached = nil
		waitExact(t, n, m)
		if err := n.bed.DelPod(ctx, twice); err != nil {
			t.Errorf("the bed's own DEL: %v", err)
		}
	})
	t.Run("DEL before ADD", func(t *testing.T) {
		run, err := n.runPlugin(ctx, pluginCall{verb: "DEL", pod: stranger, containerID: "never-added"})
		if err != nil || run.code != 0 || run.stdout != "" {
			t.Errorf("DEL of a container never added: %v, code %d, stdout %q", err, run.code, run.stdout)
		}
		waitExact(t, n, m)
	})
	t.Run("netns deleted under the daemon", func(t *testing.T) {
		if out, err := runCmd("ip", "netns", "del", victim.NetnsName); err != nil {
			t.Fatalf("ip netns del: %v: %s", err, out)
		}
		run, err := n.runPlugin(ctx, pluginCall{verb: "CHECK", pod: victim})
		if err != nil || run.code != types.ErrInvalidNetNS {
			t.Errorf("CHECK with the netns gone: %v, code %d %s; want %d (invalid netns)", err, run.code, run.msg, types.ErrInvalidNetNS)
		}
		// The next resync forgets it; the server stops allowing its address.
		m.pods["rl-o/victim"].attached = nil
		waitExact(t, n, m)
		if got := n.logLines("WARN", "netns gone", victim.ContainerID); got != 1 {
			t.Errorf("%d warnings about the gone netns, want 1", got)
		}
		if err := n.bed.CNI().DelNetworkList(ctx, n.bed.NetworkList(), victim.RuntimeConf()); err != nil {
			t.Errorf("DEL after the netns was deleted: %v", err)
		}
	})
	expectProbe(t, stranger, server, false)
	expectProbe(t, friend, server, true)

	// No storm: three more resync periods add no warning or error.
	warnings, errs := n.logLines("WARN"), n.logLines("ERROR")
	time.Sleep(3 * driftResync)
	if w, e := n.logLines("WARN"), n.logLines("ERROR"); w != warnings || e != errs {
		t.Errorf("the log grew by %d warnings and %d errors over three idle resync periods", w-warnings, e-errs)
	}
	if errs > 0 {
		t.Errorf("%d ERROR lines in the daemon's log", errs)
	}
	t.Logf("daemon log: %d lines, %d WARN, %d ERROR", n.logLines(""), warnings, errs)
}
