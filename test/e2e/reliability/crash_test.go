package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// TestCrashSoak kills podwalld with SIGKILL at random moments (kills times:
// 50 in CI, 300 in `make soak`) while a mutator keeps changing the cluster:
// policies rewritten, namespace labels toggled, pods relabelled, added (CNI
// ADD) and deleted (CNI DEL), namespaces created and deleted with their pods.
// While the daemon is down, probes run in a loop: pairs of churning pods
// that the policies deny in every version of the objects the daemon may
// have applied before it died must never connect, pairs they always allow
// must always connect; the fixed pairs of rl-guard (a denied stranger, an
// allowed friend) are probed through the restart too. ADDs while it is down
// must fail with "try again later", DELs must succeed. After each restart,
// with the mutator paused, the node must equal the model exactly
// (checkExact: every pod's rules and sets, no stale chains or sets, the
// daemon's attachments, the checkpoint loads and holds exactly the
// attached pods). The figures go to the test log.
func TestCrashSoak(t *testing.T) {
	t.Parallel()
	cfg := currentSettings(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PODWALL_SOAK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("$PODWALL_SOAK_SEED: %v", err)
		}
	}
	t.Logf("seed %d (PODWALL_SOAK_SEED reproduces the mutator's and killer's choices)", seed)
	s := &soak{t: t, r: rand.New(rand.NewPCG(seed, seed^0x5eed)), m: newModel(), minPods: cfg.soakPods, maxPods: cfg.soakPods + 6}
	started := time.Now()

	// The fixed part: vault admits friend only; nothing the mutator does
	// touches rl-guard.
	s.m.namespaces["rl-guard"] = map[string]string{}
	s.m.policies["rl-guard"] = []*networkingv1.NetworkPolicy{
		ingressPolicy("rl-guard", "vault-from-friend", selector("role", "vault"), []networkingv1.NetworkPolicyPeer{podPeer("role", "friend")}, 80),
	}
	for _, g := range []struct{ name, role string }{{"vault", "vault"}, {"friend", "friend"}, {"stranger", ""}} {
		p := &modelPod{namespace: "rl-guard", name: g.name, ports: []int32{80}, labels: map[string]string{}}
		if g.role != "" {
			p.labels["role"] = g.role
		}
		s.m.pods[p.key()] = p
	}
	for _, ns := range churnNamespaces {
		s.m.namespaces[ns] = teamLabels(teams[s.r.IntN(len(teams))])
		s.m.policies[ns] = randomPolicies(s.r, ns, soakBase)
	}
	for range cfg.soakPods {
		p := s.newPod(churnNamespaces[s.r.IntN(len(churnNamespaces))])
		s.m.pods[p.key()] = p
	}
	s.n = newNode(t, nodeOptions{name: "rlsoak", subnet: 1, resync: 2 * time.Second, cluster: s.m})
	ctx := t.Context()
	var names []string
	for _, k := range sortedKeys(s.m.pods) {
		names = append(names, k)
	}
	attached, err := s.n.bed.AddPods(ctx, names, bed.ServePort{Protocol: bed.TCP, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range names {
		s.m.pods[k].attached = attached[i]
	}
	s.guard.vault, s.guard.friend, s.guard.stranger = s.m.pods["rl-guard/vault"].attached, s.m.pods["rl-guard/friend"].attached, s.m.pods["rl-guard/stranger"].attached
	if err := s.waitExact(ctx); err != nil {
		t.Fatalf("before the first kill: %v", err)
	}
	s.history = []*model{s.m.clone()}

	mutCtx, stopMutator := context.WithCancel(ctx)
	mutatorDone := make(chan struct{})
	go func() { defer close(mutatorDone); s.mutate(mutCtx) }()
	for i := 0; i < cfg.kills && !t.Failed(); i++ {
		s.killAndRestart(ctx)
	}
	stopMutator()
	<-mutatorDone

	if err := s.waitExact(ctx); err != nil {
		t.Errorf("after the last restart: %v", err)
	}
	if err := checkHostClean(ctx, s.n.inspect); err != nil {
		t.Error(err)
	}
	if n := s.n.logLines("", "checkpoint unreadable"); n > 0 {
		t.Errorf("the checkpoint was unreadable after %d of the restarts", n)
	}
	if got, want := strings.Count(s.n.daemon.Log(), "podwalld serving"), int(s.kills.Load())+1; got != want {
		t.Errorf("podwalld started serving %d times, want %d (one start and one per kill)", got, want)
	}
	f := &s.figures
	t.Logf("crash soak figures: kills=%d restarts=%d podsChecked=%d exactChecks=%d maxPodsPerCheck=%d "+
		"probesWhileDown=%d (denied=%d, of which connected=%d; allowed=%d, of which failed=%d) "+
		"addsOK=%d addsRefusedWhileDown=%d dels=%d delsWhileDown=%d edits=%d namespacesCreated=%d namespacesDeleted=%d duration=%s",
		s.kills.Load(), f.restarts.Load(), f.podsChecked.Load(), f.exactChecks.Load(), f.maxPodsPerCheck.Load(),
		f.deniedProbes.Load()+f.allowedProbes.Load(), f.deniedProbes.Load(), f.deniedConnected.Load(), f.allowedProbes.Load(), f.allowedFailed.Load(),
		f.addsOK.Load(), f.addsRefused.Load(), f.dels.Load(), f.delsWhileDown.Load(), f.edits.Load(), f.nsCreated.Load(), f.nsDeleted.Load(),
		time.Since(started).Round(time.Second))
	if f.deniedProbes.Load() == 0 || f.allowedProbes.Load() == 0 {
		t.Errorf("no denied or no allowed probes while the daemon was down; the soak proved nothing")
	}
}

// soakBase is the first address of the soak bed's pod range.
const soakBase = "10.214.1.0"

// churnNamespaces always exist; temporary ones (rl-t<N>) come and go.
var churnNamespaces = []string{"rl-a", "rl-b", "rl-c"}

// soak is the state of TestCrashSoak.
type soak struct {
	t *testing.T
	n *node

	// opMu is held by the mutator for each change and by the killer while
	// it restarts and checks the node (pausing the mutator).
	opMu sync.Mutex

	mu sync.Mutex // guards the fields below
	r  *rand.Rand
	m  *model
	// history holds the model states since the last exact check, oldest
	// first; a state is recorded before its manifest file is written.
	history          []*model
	pinned           map[string]bool // pods the mutator must not delete now
	deleting         map[string]bool // pods being deleted
	nextPod, nextNS  int
	minPods, maxPods int

	guard struct{ vault, friend, stranger *bed.Pod }

	// down is odd while the daemon is down or starting.
	down  atomic.Int64
	kills atomic.Int64

	figures struct {
		restarts, podsChecked, exactChecks, maxPodsPerCheck                   atomic.Int64
		deniedProbes, deniedConnected, allowedProbes, allowedFailed           atomic.Int64
		addsOK, addsRefused, dels, delsWhileDown, edits, nsCreated, nsDeleted atomic.Int64
	}
}

func (s *soak) newPod(ns string) *modelPod {
	s.nextPod++
	return &modelPod{namespace: ns, name: fmt.Sprintf("p%d", s.nextPod), ports: []int32{80},
		labels: labelsOf("role", roles[s.r.IntN(len(roles))])}
}

// record appends the current model to the history; s.mu is held.
func (s *soak) record() { s.history = append(s.history, s.m.clone()) }

// waitExact polls checkExact until the node equals the model (30 s at
// most: the host's addresses, which every pod's node-address set holds,
// change with other tests' veths and are caught up with by the next
// resync).
func (s *soak) waitExact(ctx context.Context) error {
	s.mu.Lock()
	m := s.m.clone()
	s.mu.Unlock()
	var res exactness
	err := harness.Poll(ctx, 30*time.Second, 300*time.Millisecond, func() error {
		res = s.n.checkExact(ctx, m)
		return res.err()
	})
	if err != nil {
		return err
	}
	s.figures.exactChecks.Add(1)
	s.figures.podsChecked.Add(int64(res.podsChecked))
	if int64(res.podsChecked) > s.figures.maxPodsPerCheck.Load() {
		s.figures.maxPodsPerCheck.Store(int64(res.podsChecked))
	}
	return nil
}

// churnPods returns the attached pods outside rl-guard.
func (s *soak) churnPods() []*modelPod {
	var out []*modelPod
	for _, p := range s.m.attachedPods() {
		if p.namespace != "rl-guard" {
			out = append(out, p)
		}
	}
	return out
}

// mutate changes the cluster until ctx ends, one change at a time.
func (s *soak) mutate(ctx context.Context) {
	for ctx.Err() == nil {
		s.opMu.Lock()
		if ctx.Err() == nil {
			s.mutateOnce(ctx)
		}
		s.opMu.Unlock()
		s.mu.Lock()
		pause := time.Duration(20+s.r.IntN(150)) * time.Millisecond
		s.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
	}
}

func (s *soak) mutateOnce(ctx context.Context) {
	t, d := s.t, s.n.daemon
	s.mu.Lock()
	pods := len(s.churnPods())
	op := s.r.IntN(100)
	var temps []string
	for ns := range s.m.namespaces {
		if strings.HasPrefix(ns, "rl-t") {
			temps = append(temps, ns)
		}
	}
	slices.Sort(temps)
	switch {
	case op < 25: // rewrite a namespace's policies
		all := append(slices.Clone(churnNamespaces), temps...)
		ns := all[s.r.IntN(len(all))]
		s.m.policies[ns] = randomPolicies(s.r, ns, soakBase)
		s.record()
		s.mu.Unlock()
		s.figures.edits.Add(1)
		if err := s.writeManifest(func(m *model) error { return m.writePolicies(d, ns) }); err != nil {
			t.Errorf("write policies: %v", err)
		}
	case op < 35: // toggle a namespace's team
		ns := churnNamespaces[s.r.IntN(len(churnNamespaces))]
		s.m.namespaces[ns] = teamLabels(teams[s.r.IntN(len(teams))])
		s.record()
		s.mu.Unlock()
		s.figures.edits.Add(1)
		if err := s.writeManifest(func(m *model) error { return m.writeNamespace(d, ns) }); err != nil {
			t.Errorf("write namespace: %v", err)
		}
	case op < 50: // relabel a pod
		churn := s.churnPods()
		p := churn[s.r.IntN(len(churn))]
		p.labels = labelsOf("role", roles[s.r.IntN(len(roles))])
		s.record()
		s.mu.Unlock()
		s.figures.edits.Add(1)
		if err := s.writeManifest(func(m *model) error { return m.writePod(d, p) }); err != nil {
			t.Errorf("write pod: %v", err)
		}
	case op < 68 && pods < s.maxPods: // add a pod
		all := append(slices.Clone(churnNamespaces), temps...)
		ns := all[s.r.IntN(len(all))]
		s.mu.Unlock()
		s.addPod(ctx, ns)
	case op < 86 && pods > s.minPods: // delete a pod
		p := s.pickVictim(s.churnPods())
		s.mu.Unlock()
		if p != nil {
			s.delPod(ctx, p)
		}
	case op < 93 && len(temps) < 2 && pods < s.maxPods: // a new namespace with a pod
		s.nextNS++
		ns := fmt.Sprintf("rl-t%d", s.nextNS)
		s.m.namespaces[ns] = teamLabels(teams[s.r.IntN(len(teams))])
		s.m.policies[ns] = randomPolicies(s.r, ns, soakBase)
		s.record()
		s.mu.Unlock()
		s.figures.nsCreated.Add(1)
		if err := s.writeManifest(func(m *model) error { return errors.Join(m.writeNamespace(d, ns), m.writePolicies(d, ns)) }); err != nil {
			t.Errorf("write namespace: %v", err)
		}
		s.addPod(ctx, ns)
	case op >= 93 && len(temps) > 0: // delete a namespace with its pods
		ns := temps[s.r.IntN(len(temps))]
		var victims []*modelPod
		for _, p := range s.m.pods {
			if p.namespace == ns {
				victims = append(victims, p)
			}
		}
		for _, p := range victims {
			if s.pinned[p.key()] {
				s.mu.Unlock()
				return // try again later
			}
		}
		for _, p := range victims {
			s.markDeleting(p)
		}
		s.mu.Unlock()
		for _, p := range victims {
			s.delPod(ctx, p)
		}
		s.mu.Lock()
		delete(s.m.namespaces, ns)
		delete(s.m.policies, ns)
		s.record()
		s.mu.Unlock()
		s.figures.nsDeleted.Add(1)
		if err := errors.Join(d.RemoveManifest(nsFile(ns)), d.RemoveManifest(policyFile(ns))); err != nil {
			t.Errorf("remove namespace: %v", err)
		}
	default:
		s.mu.Unlock()
	}
}

// writeManifest runs write against the model under s.mu (the files render
// from the model).
func (s *soak) writeManifest(write func(*model) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return write(s.m)
}

// pickVictim picks a pod to delete that is neither pinned nor already being
// deleted, and marks it; s.mu is held.
func (s *soak) pickVictim(pods []*modelPod) *modelPod {
	s.r.Shuffle(len(pods), func(i, j int) { pods[i], pods[j] = pods[j], pods[i] })
	for _, p := range pods {
		if !s.pinned[p.key()] && !s.deleting[p.key()] {
			s.markDeleting(p)
			return p
		}
	}
	return nil
}

func (s *soak) markDeleting(p *modelPod) {
	if s.deleting == nil {
		s.deleting = map[string]bool{}
	}
	s.deleting[p.key()] = true
}

// addPod writes a new pod's manifest and runs CNI ADD for it. With the
// daemon down, ADD must fail with "try again later" (11); with the daemon up
// throughout, it must succeed.
func (s *soak) addPod(ctx context.Context, ns string) {
	t, d := s.t, s.n.daemon
	s.mu.Lock()
	p := s.newPod(ns)
	s.m.pods[p.key()] = p
	s.record()
	err := s.m.writePod(d, p)
	s.mu.Unlock()
	if err != nil {
		t.Errorf("write pod: %v", err)
		return
	}
	before := s.down.Load()
	bp, err := s.n.bed.AddPod(ctx, p.namespace, p.name, bed.PodOptions{})
	after := s.down.Load()
	if err == nil {
		if serveErr := bp.Serve(bed.ServePort{Protocol: bed.TCP, Port: 80}); serveErr != nil {
			t.Errorf("serve on %s: %v", bp, serveErr)
		}
		s.mu.Lock()
		p.attached = bp
		s.record()
		s.mu.Unlock()
		s.figures.addsOK.Add(1)
		return
	}
	if ctx.Err() != nil {
		return
	}
	if code := cniCode(err); code != types.ErrTryAgainLater {
		t.Errorf("ADD %s failed with CNI code %d, want %d (try again later): %v", p.key(), code, types.ErrTryAgainLater, err)
	}
	if before == after && before%2 == 0 {
		t.Errorf("ADD %s failed although podwalld was up throughout: %v", p.key(), err)
	}
	s.figures.addsRefused.Add(1)
	s.mu.Lock()
	delete(s.m.pods, p.key())
	s.record()
	err = s.m.writePod(d, p)
	s.mu.Unlock()
	if err != nil {
		t.Errorf("remove pod manifest: %v", err)
	}
}

// delPod runs CNI DEL for p (which must succeed, daemon up or not), deletes
// its netns and then its manifest.
func (s *soak) delPod(ctx context.Context, p *modelPod) {
	t, d := s.t, s.n.daemon
	if s.down.Load()%2 == 1 {
		s.figures.delsWhileDown.Add(1)
	}
	if err := s.n.bed.DelPod(ctx, p.attached); err != nil && ctx.Err() == nil {
		t.Errorf("DEL %s: %v", p.key(), err)
	}
	s.figures.dels.Add(1)
	s.mu.Lock()
	delete(s.m.pods, p.key())
	delete(s.deleting, p.key())
	s.record()
	err := s.m.writePod(d, p)
	s.mu.Unlock()
	if err != nil {
		t.Errorf("remove pod manifest: %v", err)
	}
}

// probePair is one pair probed while the daemon is down.
type probePair struct {
	from, to *bed.Pod
	allowed  bool
	// guard pairs are fixed: their verdict never changes.
	guard bool
}

// killAndRestart is one round: the daemon up for a random while (the
// mutator running), SIGKILL, probes in a loop while it is down and while
// it starts again, then the node compared with the model.
func (s *soak) killAndRestart(ctx context.Context) {
	t := s.t
	s.mu.Lock()
	up := time.Duration(s.r.IntN(1500)) * time.Millisecond
	downFor := time.Duration(200+s.r.IntN(800)) * time.Millisecond
	// Pin a few churning pods: they are not deleted until the restart.
	churn := s.churnPods()
	s.r.Shuffle(len(churn), func(i, j int) { churn[i], churn[j] = churn[j], churn[i] })
	s.pinned = map[string]bool{}
	var pinned []string
	for _, p := range churn {
		if len(pinned) == 6 {
			break
		}
		if !s.deleting[p.key()] {
			s.pinned[p.key()] = true
			pinned = append(pinned, p.key())
		}
	}
	s.mu.Unlock()

	time.Sleep(up)
	s.down.Add(1)
	if err := s.n.daemon.Kill(); err != nil {
		t.Fatalf("kill podwalld: %v", err)
	}
	s.kills.Add(1)
	pairs := s.pickPairs(pinned)

	// Pairs between churning pods are judged on the states recorded up to
	// the kill; the restarted daemon applies the files as they are when it
	// starts, so they are probed only until then. The guard's pairs never
	// change and are probed through the restart too.
	stopChurn, stopGuard := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	for _, pp := range pairs {
		stop := stopChurn
		if pp.guard {
			stop = stopGuard
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.probeLoop(ctx, pp, stop)
		}()
	}
	time.Sleep(downFor)
	s.opMu.Lock() // pause the mutator
	defer s.opMu.Unlock()
	close(stopChurn)
	err := s.n.restart(ctx)
	s.down.Add(1)
	close(stopGuard)
	wg.Wait()
	if err != nil {
		t.Fatalf("restart podwalld after kill %d: %v", s.kills.Load(), err)
	}
	s.figures.restarts.Add(1)
	s.mu.Lock()
	s.pinned = nil
	s.mu.Unlock()
	if err := s.waitExact(ctx); err != nil {
		t.Fatalf("after kill %d: %v", s.kills.Load(), err)
	}
	s.mu.Lock()
	s.history = []*model{s.m.clone()}
	s.mu.Unlock()
}

// pickPairs returns the pairs to probe while the daemon is down: the
// guard's (stranger -> vault denied, friend -> vault allowed, two pinned
// pods -> vault denied), and pairs of pinned pods whose verdict is the same
// in every state of the history up to now (which includes every state the
// dead daemon could have applied).
func (s *soak) pickPairs(pinned []string) []probePair {
	s.mu.Lock()
	states := slices.Clone(s.history)
	s.mu.Unlock()
	g := s.guard
	pairs := []probePair{{g.stranger, g.vault, false, true}, {g.friend, g.vault, true, true}}
	attached := func(k string) *bed.Pod {
		for _, st := range states {
			if p := st.pods[k]; p == nil || p.attached == nil {
				return nil
			}
		}
		return states[len(states)-1].pods[k].attached
	}
	var denied, allowed int
	for i, from := range pinned {
		fp := attached(from)
		if fp == nil {
			continue
		}
		if i < 2 {
			pairs = append(pairs, probePair{fp, g.vault, false, true})
		}
		for _, to := range pinned {
			tp := attached(to)
			if to == from || tp == nil || (denied >= 4 && allowed >= 2) {
				continue
			}
			v, err := judgePair(states, s.n.network(), from, to, 80)
			if err != nil {
				s.t.Errorf("judge %s -> %s: %v", from, to, err)
				continue
			}
			switch {
			case v == verdictDenied && denied < 4:
				denied++
				pairs = append(pairs, probePair{fp, tp, false, false})
			case v == verdictAllowed && allowed < 2:
				allowed++
				pairs = append(pairs, probePair{fp, tp, true, false})
			}
		}
	}
	return pairs
}

// probeLoop probes pp until stop is closed, counting the probes and the
// wrong answers.
func (s *soak) probeLoop(ctx context.Context, pp probePair, stop <-chan struct{}) {
	f := &s.figures
	for {
		select {
		case <-stop:
			return
		default:
		}
		timeout := 300 * time.Millisecond
		if pp.allowed {
			timeout = 2 * time.Second
		}
		ok, err := bed.ProbePod(ctx, pp.from, pp.to, bed.IPv4, 80, bed.TCP, timeout)
		if err != nil {
			s.t.Errorf("probe %s -> %s while podwalld is down: %v", pp.from, pp.to, err)
			return
		}
		if pp.allowed {
			f.allowedProbes.Add(1)
			if !ok {
				f.allowedFailed.Add(1)
				s.t.Errorf("kill %d: %s -> %s, allowed by every version of the policies, did not connect while podwalld was down or restarting", s.kills.Load(), pp.from, pp.to)
				s.t.Log(s.debugPair(ctx, pp))
				return
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		f.deniedProbes.Add(1)
		if ok {
			f.deniedConnected.Add(1)
			s.t.Errorf("kill %d: %s -> %s, denied by every version of the policies, CONNECTED while podwalld was down or restarting", s.kills.Load(), pp.from, pp.to)
			s.t.Log(s.debugPair(ctx, pp))
			return
		}
	}
}

// debugPair describes, for a failed probe, the versions of the pair's
// objects the history holds and the rules in force in both pods.
func (s *soak) debugPair(ctx context.Context, pp probePair) string {
	var b strings.Builder
	s.mu.Lock()
	states := slices.Clone(s.history)
	s.mu.Unlock()
	seen := map[string]bool{}
	for i, st := range states {
		fp, tp := st.pods[pp.from.String()], st.pods[pp.to.String()]
		if fp == nil || tp == nil {
			fmt.Fprintf(&b, "state %d: a pod of the pair is missing\n", i)
			continue
		}
		var line strings.Builder
		fmt.Fprintf(&line, "from %v (namespace %v), to %v (namespace %v), policies:", fp.labels, st.namespaces[fp.namespace], tp.labels, st.namespaces[tp.namespace])
		for _, ns := range []string{fp.namespace, tp.namespace} {
			for _, np := range st.policies[ns] {
				fmt.Fprintf(&line, " %s/%s", ns, np.Name)
			}
		}
		if !seen[line.String()] {
			seen[line.String()] = true
			fmt.Fprintf(&b, "from state %d: %s\n", i, line.String())
		}
	}
	for _, p := range []*bed.Pod{pp.from, pp.to} {
		rs, err := s.n.inspect.Inspect(ctx, p.NetnsPath)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p, err)
			continue
		}
		fmt.Fprintf(&b, "%s %v in force:\n%s%v\n", p, p.IPs, rs.V4, rs.Sets)
	}
	return b.String()
}
