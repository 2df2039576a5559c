package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/bench/ipsets"
)

// Change is one measured change and how long it took to be enforced.
type Change struct {
	// Kind is policy-one, policy-all, peer or namespace.
	Kind string `json:"kind"`
	// Op is create, update-open, update-close, delete (policies); appear,
	// relabel-out, relabel-in, disappear (peers); relabel-out, relabel-in
	// (namespaces).
	Op string `json:"op"`
	// Affected is the number of local pods whose firewall the change
	// changes.
	Affected int `json:"affected"`
	// Method is how ObservedMs was observed: "probe" (new TCP connections
	// from the prober) or "ipset" (set membership read over netlink).
	Method string `json:"method"`
	// ObservedMs is the time from just before the API write until every
	// affected pod showed the change; -1 if one did not within the timeout.
	ObservedMs float64 `json:"observedMs"`
	// DaemonMs is the time from just before the API write until podwalld's
	// log had an apply of every affected pod; -1 if one had none.
	DaemonMs float64 `json:"daemonMs"`
	// QueueMs is the time from just before the API write until the start of
	// the daemon's first sync after it that applied something (watch,
	// work queue, coalescing); -1 if none.
	QueueMs float64 `json:"queueMs"`
	// ApplyMs is the mean time podwalld took to apply one affected pod's
	// firewall (its log); -1 if unknown.
	ApplyMs float64 `json:"applyMs"`
	// PerPodMs is ObservedMs per affected pod.
	PerPodMs []float64 `json:"perPodMs,omitempty"`
}

// measurer makes changes through the API and observes them.
type measurer struct {
	client  kubernetes.Interface
	log     *daemonLog
	prober  *bed.Pod
	targets []*bed.Pod // t000 …
	watches []*netnsWatch
	logf    func(string, ...any)
	// settle is the pause after each observed change, so the daemon's
	// sync of it ends before the next one.
	settle  time.Duration
	timeout time.Duration

	changes []Change
}

// attemptTimeout bounds one probe connection: a dropped SYN costs this.
const attemptTimeout = 30 * time.Millisecond

// probeUntil probes from the prober to each target on probePort until the
// target shows want, and returns per target the time from t0 to the start
// of the attempt that showed it: the first connection that succeeds, or the
// first of three in a row that fail (a slow answer is not taken for a
// drop). -1 marks a target that did not show it within timeout.
func (m *measurer) probeUntil(ctx context.Context, targets []*bed.Pod, want bool, t0 time.Time) []float64 {
	out := make([]float64, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			out[i] = -1
			fails := 0
			var firstFail time.Time
			for time.Since(t0) < m.timeout && ctx.Err() == nil {
				start := time.Now()
				ok, err := bed.Probe(ctx, m.prober, t.IPv4(), probePort, bed.TCP, attemptTimeout)
				if err != nil {
					m.logf("probe %s -> %s: %v", m.prober, t, err)
					return
				}
				switch {
				case want && ok:
					out[i] = ms(start.Sub(t0))
					return
				case !want && !ok:
					if fails == 0 {
						firstFail = start
					}
					fails++
					if fails == 3 {
						out[i] = ms(firstFail.Sub(t0))
						return
					}
				case !want && ok:
					fails = 0
				}
				if d := time.Since(start); d < 5*time.Millisecond {
					time.Sleep(5*time.Millisecond - d)
				}
			}
		})
	}
	wg.Wait()
	return out
}

// netnsWatch reads one local pod's ipsets.
type netnsWatch struct {
	pod  *bed.Pod
	r    *ipsets.Reader
	sets map[netip.Addr]string // the set holding a marker address
}

func newWatches(pods []*bed.Pod) ([]*netnsWatch, error) {
	var out []*netnsWatch
	for _, p := range pods {
		r, err := ipsets.Open(p.NetnsPath)
		if err != nil {
			closeWatches(out)
			return nil, err
		}
		out = append(out, &netnsWatch{pod: p, r: r, sets: map[netip.Addr]string{}})
	}
	return out, nil
}

func closeWatches(ws []*netnsWatch) {
	for _, w := range ws {
		w.r.Close()
	}
}

// contains reports whether the set that holds marker (a peer that stays)
// holds ip; the set's name is looked up again after a generation change.
func (w *netnsWatch) contains(marker, ip netip.Addr) (bool, error) {
	name, ok := w.sets[marker]
	if !ok {
		var err error
		if name, err = w.r.SetHolding("pw4-", marker); err != nil {
			return false, err
		}
		w.sets[marker] = name
	}
	in, err := w.r.Contains(name, ip)
	if err != nil {
		delete(w.sets, marker) // renamed (a new generation): find it again
		return false, err
	}
	return in, nil
}

// prime looks up, in each watch, the set holding marker, so that the first
// timed change does not pay for it: the lookup lists every set with its
// members (thousands), about 10 ms per pod, and made the first change of
// each churn group look a second slower than the daemon was.
func prime(watches []*netnsWatch, marker netip.Addr) error {
	for _, w := range watches {
		if _, err := w.contains(marker, marker); err != nil {
			return fmt.Errorf("find the set holding %s in %s: %w", marker, w.pod, err)
		}
	}
	return nil
}

// waitMembership polls the watches until ip is (want) or is not in the set
// holding marker in each, and returns per watch the time from t0 to when it
// did; -1 if it did not within timeout.
func (m *measurer) waitMembership(ctx context.Context, watches []*netnsWatch, marker, ip netip.Addr, want bool, t0 time.Time) []float64 {
	out := make([]float64, len(watches))
	pending := make([]int, len(watches))
	for i := range watches {
		out[i] = -1
		pending[i] = i
	}
	for len(pending) > 0 && time.Since(t0) < m.timeout && ctx.Err() == nil {
		var still []int
		for _, i := range pending {
			in, err := watches[i].contains(marker, ip)
			if err == nil && in == want {
				out[i] = msSince(t0)
				continue
			}
			still = append(still, i)
		}
		pending = still
		if len(pending) > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return out
}

// record completes a change with the daemon's view of the affected pods and
// keeps it.
func (m *measurer) record(c Change, t0 time.Time, affected []*bed.Pod, perPod []float64) {
	c.Affected = len(affected)
	c.PerPodMs = perPod
	c.ObservedMs = maxOrMissing(perPod)
	keys := make([]string, len(affected))
	for i, p := range affected {
		keys[i] = p.String()
	}
	// The daemon logs an apply after it took effect, and its sync line
	// after the last apply: wait a little for both.
	var applied map[string]appliedEvent
	for deadline := time.Now().Add(3 * time.Second); ; {
		if err := m.log.refresh(); err != nil {
			m.logf("%v", err)
		}
		applied = m.log.firstApplied(t0, keys)
		_, synced := m.log.firstSyncStart(t0)
		if (len(applied) == len(keys) && synced) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The log has millisecond resolution; t0 is truncated the same way.
	t0ms := t0.Truncate(time.Millisecond)
	c.DaemonMs, c.ApplyMs, c.QueueMs = -1, -1, -1
	if len(applied) == len(keys) {
		var last time.Time
		var sum time.Duration
		for _, e := range applied {
			if e.At.After(last) {
				last = e.At
			}
			sum += e.Duration
		}
		c.DaemonMs = ms(last.Sub(t0ms))
		c.ApplyMs = ms(sum) / float64(len(applied))
	}
	if at, ok := m.log.firstSyncStart(t0); ok {
		c.QueueMs = max(ms(at.Sub(t0ms)), 0)
	}
	m.changes = append(m.changes, c)
	m.logf("%s %s (%d pods): observed %.0f ms (%s), daemon log %.0f ms (queue %.0f ms, %.1f ms per pod apply)",
		c.Kind, c.Op, c.Affected, c.ObservedMs, c.Method, c.DaemonMs, c.QueueMs, c.ApplyMs)
}

// maxOrMissing is the largest value, or -1 if any is -1 (or none).
func maxOrMissing(xs []float64) float64 {
	if len(xs) == 0 || slices.Contains(xs, -1) {
		return -1
	}
	return slices.Max(xs)
}

// pause waits settle, and then until podwalld has logged no sync for
// settle (at most 10 s more): the next change starts on a quiet daemon.
func (m *measurer) pause(ctx context.Context) {
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	if !sleep(m.settle) {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := m.log.refresh(); err != nil {
			return
		}
		end, ok := m.log.lastSyncEnd()
		if !ok || time.Since(end) >= m.settle {
			return
		}
		if !sleep(m.settle - time.Since(end)) {
			return
		}
	}
}

// policyChanges measures rounds of create (opens), update to closedPort
// (closes), update back (opens) and delete (closes) of a policy admitting
// the prober into the pods podSelector selects (affected), probing each.
func (m *measurer) policyChanges(ctx context.Context, kind, name string, podSelector *metav1.LabelSelector, affected []*bed.Pod, rounds int) error {
	policies := m.client.NetworkingV1().NetworkPolicies(localNamespace)
	patchPort := func(port int) error {
		body, err := json.Marshal(map[string]any{"spec": map[string]any{"ingress": probePolicy(name, podSelector, port).Spec.Ingress}})
		if err != nil {
			return err
		}
		_, err = policies.Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{})
		return err
	}
	ops := []struct {
		op   string
		open bool
		do   func() error
	}{
		{"create", true, func() error {
			_, err := policies.Create(ctx, probePolicy(name, podSelector, probePort), metav1.CreateOptions{})
			return err
		}},
		{"update-close", false, func() error { return patchPort(closedPort) }},
		{"update-open", true, func() error { return patchPort(probePort) }},
		{"delete", false, func() error { return policies.Delete(ctx, name, metav1.DeleteOptions{}) }},
	}
	m.pause(ctx)
	for r := range rounds {
		for _, o := range ops {
			// The denied (or allowed) twin: the state before the change is
			// the opposite of what it brings, for the first affected pod.
			before := m.probeUntil(ctx, affected[:1], !o.open, time.Now())
			if before[0] < 0 {
				return fmt.Errorf("%s %s round %d: before the change %s was not %s", kind, o.op, r, affected[0], map[bool]string{true: "open", false: "closed"}[!o.open])
			}
			t0 := time.Now()
			if err := o.do(); err != nil {
				return fmt.Errorf("%s %s: %w", kind, o.op, err)
			}
			perPod := m.probeUntil(ctx, affected, o.open, t0)
			m.record(Change{Kind: kind, Op: o.op, Method: "probe"}, t0, affected, perPod)
			m.pause(ctx)
		}
	}
	return nil
}

// peerChanges measures, for a churn group of k affected pods, rounds of a
// new remote peer appearing (its status gets an address), being relabelled
// out of and back into the group, and disappearing (deleted), each observed
// in the ipsets of the k pods.
func (m *measurer) peerChanges(ctx context.Context, k int, marker netip.Addr, next func() (netip.Addr, error), hostIP netip.Addr, rounds int) error {
	watches := m.watches[:k]
	affected := m.targets[:k]
	pods := m.client.CoreV1().Pods(namespaceName(1))
	label := churnLabel(k)
	if err := prime(watches, marker); err != nil {
		return err
	}
	relabel := func(name, value string) error {
		body := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, label, value)
		_, err := pods.Patch(ctx, name, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	for r := range rounds {
		ip, err := next()
		if err != nil {
			return err
		}
		rp := remotePod{Namespace: namespaceName(1), Name: fmt.Sprintf("churn-g%d-%d", k, r), Node: remoteNodeName(0),
			Labels: map[string]string{label: "y", "tier": "backend", "app": "churn"}, IP: ip}
		created, err := createRemotePod(ctx, m.client, rp, hostIP, true)
		if err != nil {
			return err
		}
		m.pause(ctx) // the create (no address yet) changes no set
		ops := []struct {
			op string
			in bool
			do func() error
		}{
			{"appear", true, func() error { _, err := setRunning(ctx, m.client, created, ip, hostIP); return err }},
			{"relabel-out", false, func() error { return relabel(rp.Name, "n") }},
			{"relabel-in", true, func() error { return relabel(rp.Name, "y") }},
			{"disappear", false, func() error {
				zero := int64(0)
				return pods.Delete(ctx, rp.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			}},
		}
		for _, o := range ops {
			t0 := time.Now()
			if err := o.do(); err != nil {
				return fmt.Errorf("peer %s %s: %w", rp.Name, o.op, err)
			}
			perPod := m.waitMembership(ctx, watches, marker, ip, o.in, t0)
			m.record(Change{Kind: "peer", Op: o.op, Method: "ipset"}, t0, affected, perPod)
			m.pause(ctx)
		}
	}
	return nil
}

// namespaceChanges measures rounds of nsPeerNamespace relabelled out of
// (nspeer=n) and back into (nspeer=y) the peers of bench-nsrelabel, which
// selects every target; member is one of its pods, marker the pod of the
// namespace that keeps the label.
func (m *measurer) namespaceChanges(ctx context.Context, marker, member netip.Addr, rounds int) error {
	namespaces := m.client.CoreV1().Namespaces()
	if err := prime(m.watches, marker); err != nil {
		return err
	}
	relabel := func(value string) error {
		body := fmt.Sprintf(`{"metadata":{"labels":{"nspeer":%q}}}`, value)
		_, err := namespaces.Patch(ctx, nsPeerNamespace, types.MergePatchType, []byte(body), metav1.PatchOptions{})
		return err
	}
	for range rounds {
		for _, o := range []struct {
			op    string
			value string
			in    bool
		}{{"relabel-out", "n", false}, {"relabel-in", "y", true}} {
			t0 := time.Now()
			if err := relabel(o.value); err != nil {
				return fmt.Errorf("namespace %s: %w", o.op, err)
			}
			perPod := m.waitMembership(ctx, m.watches, marker, member, o.in, t0)
			m.record(Change{Kind: "namespace", Op: o.op, Method: "ipset"}, t0, m.targets, perPod)
			m.pause(ctx)
		}
	}
	return nil
}

// localPodObject is a local pod's object for the kubelet stand-in.
func localPodObject(ns, name string, labels map[string]string, port int) *corev1.Pod {
	c := corev1.Container{Name: "main", Image: "podwall-bench"}
	if port > 0 {
		c.Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: int32(port), Protocol: corev1.ProtocolTCP}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{c}},
	}
}

// targetLabels are the labels of target i: every target is bench=target
// with its own bench-id, and g<K>=y for the churn groups it is in.
func targetLabels(i int) map[string]string {
	l := map[string]string{"bench": "target", "bench-id": targetName(i)}
	for _, k := range groups {
		if i < k {
			l[groupLabel(k)] = "y"
		}
	}
	return l
}
