package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
	"github.com/podwall/podwall/test/kube/kubelet"
)

// TestAPIServerOutage stops kube-apiserver (etcd and the controller manager
// keep running) for the outage setting (15 s in CI, 60 s in `make soak`)
// while podwalld runs with --kubeconfig:
//   - enforcement stays exactly as it was: allowed/denied probe pairs every
//     half second, and the podwall rules and peer sets in every pod's netns
//     byte for byte as before (the node-address sets follow the host);
//   - a pod scheduled before the outage whose CNI ADD comes during it is
//     admitted from the daemon's cache and protected from the start;
//   - the daemon still repairs drift on its own during the outage;
//   - the daemon is never restarted (same PID, one "podwalld serving") and
//     stays ready;
//   - a policy change made right after the API server is back is enforced;
//     the time it took is logged (not asserted).
//
// The daemon runs as the API's admin here; that install/rbac.yaml is
// enough is test/e2e/kube's TestKubeRBACIsEnough.
func TestAPIServerOutage(t *testing.T) {
	t.Parallel()
	cfg := currentSettings(t)
	c := cluster.StartForTest(t, cluster.Options{ServiceCIDR: serviceCIDR})
	ctx, cancel := context.WithTimeout(t.Context(), cfg.outage+4*time.Minute)
	defer cancel()
	podCIDR := netip.MustParsePrefix("10.214.200.0/24")
	nodeName := "node-rlout"
	if err := c.CreateNode(ctx, nodeName, podCIDR.Addr().Next()); err != nil {
		t.Fatal(err)
	}
	binDir := bins.Dir(t)
	d, err := harness.NewKubeDaemon(binDir, t.TempDir(), nodeName, c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := harness.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "--metrics-address", metrics, "--resync-period", driftResync.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop podwalld: %v", err)
		}
		if t.Failed() {
			t.Logf("podwalld log (last 200 lines):\n%s", harness.LastLines(d.Log(), 200))
		}
	})
	b := bed.NewForTest(t, bed.Options{
		Name: "rlout", CNIBinDir: binDir, CNIPath: []string{bed.CNIBinDirForTest(t)}, PodCIDRv4: podCIDR,
		Extra: []map[string]any{{"type": "podwall", "socket": d.Socket, "timeout": "10s"}},
	})
	kl := kubelet.New(c.Client(), b, nodeName)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := kl.Close(ctx); err != nil {
			t.Errorf("kubelet: %v", err)
		}
	})
	inspect, err := dataplane.NewManager()
	if err != nil {
		t.Fatal(err)
	}

	const ns = "rl-outage"
	if _, err := c.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	run := func(name string) *bed.Pod {
		t.Helper()
		p, err := kl.RunPod(ctx, apiPod(ns, name))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	server, friend, stranger := run("server"), run("friend"), run("stranger")
	policies := c.Client().NetworkingV1().NetworkPolicies(ns)
	for _, np := range []*networkingv1.NetworkPolicy{
		ingressPolicy(ns, "server-from-friend", selector("app", "server"), []networkingv1.NetworkPolicyPeer{podPeer("app", "friend")}, 80),
		ingressPolicy(ns, "late-closed", selector("app", "late"), nil),
	} {
		if _, err := policies.Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A pod scheduled before the outage; its CNI ADD comes during it.
	late, err := c.Client().CoreV1().Pods(ns).Create(ctx, func() *corev1.Pod {
		p := apiPod(ns, "late")
		p.Spec.NodeName = nodeName
		return p
	}(), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pairs := []probePair{{friend, server, true, true}, {stranger, server, false, true}}
	for _, pp := range pairs {
		if got, err := bed.ProbePodUntil(ctx, pp.from, pp.to, bed.IPv4, 80, bed.TCP, time.Second, pp.allowed, 20*time.Second); err != nil || got != pp.allowed {
			t.Fatalf("before the outage: %s -> %s connected=%t (%v), want %t", pp.from, pp.to, got, err, pp.allowed)
		}
	}
	// Wait until the pods' rules are steady, then remember them.
	pods := []*bed.Pod{server, friend, stranger}
	var before map[string]string
	err = harness.Poll(ctx, 20*time.Second, 500*time.Millisecond, func() error {
		first, err := enforcedRules(ctx, inspect, pods)
		if err != nil {
			return err
		}
		time.Sleep(time.Second)
		second, err := enforcedRules(ctx, inspect, pods)
		if err != nil {
			return err
		}
		if diff := rulesDiff(first, second); diff != "" {
			return fmt.Errorf("still changing: %s", diff)
		}
		before = second
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pid := d.PID()

	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	var probes, checks, comparisons int
	addedLate := false
	var latePod *bed.Pod
	for time.Since(down) < cfg.outage {
		for _, pp := range pairs {
			got, err := bed.ProbePod(ctx, pp.from, pp.to, bed.IPv4, 80, bed.TCP, 500*time.Millisecond)
			probes++
			if err != nil || got != pp.allowed {
				t.Errorf("%s into the outage: %s -> %s connected=%t (%v), want %t", time.Since(down).Round(100*time.Millisecond), pp.from, pp.to, got, err, pp.allowed)
			}
		}
		if checks%4 == 0 {
			comparisons++
			now, err := enforcedRules(ctx, inspect, pods)
			if err != nil {
				t.Errorf("inspect during the outage: %v", err)
			} else if diff := rulesDiff(before, now); diff != "" {
				t.Errorf("%s into the outage the rules changed: %s", time.Since(down).Round(100*time.Millisecond), diff)
			}
			if err := readyz(ctx, metrics); err != nil {
				t.Errorf("%s into the outage: %v", time.Since(down).Round(100*time.Millisecond), err)
			}
		}
		checks++
		if !addedLate && time.Since(down) > cfg.outage/3 {
			addedLate = true
			latePod, err = b.AddPod(ctx, ns, "late", bed.PodOptions{UID: string(late.UID)})
			if err != nil {
				t.Errorf("ADD of a pod the daemon's cache has, during the outage: %v", err)
			} else {
				if err := latePod.Serve(bed.ServePort{Protocol: bed.TCP, Port: 80}); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { b.DelPod(context.Background(), latePod) })
				pairs = append(pairs, probePair{friend, latePod, false, true}, probePair{latePod, friend, true, true})
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Drift during the outage: repaired without the API.
	if out, err := netnsExec(server.NetnsName, "iptables-nft", "-F", "PODWALL-INGRESS"); err != nil {
		t.Fatalf("flush: %v: %s", err, out)
	}
	err = harness.Poll(ctx, 5*driftResync, 200*time.Millisecond, func() error {
		now, err := enforcedRules(ctx, inspect, pods)
		if err != nil {
			return err
		}
		if diff := rulesDiff(before, now); diff != "" {
			return fmt.Errorf("%s", diff)
		}
		return nil
	})
	if err != nil {
		t.Errorf("drift made during the outage was not repaired: %v", err)
	}
	outage := time.Since(down)
	t.Logf("API server down for %s: %d probes (allowed and denied pairs), %d rule comparisons, all as before", outage.Round(100*time.Millisecond), probes, comparisons)
	if got := d.PID(); got != pid {
		t.Fatalf("podwalld's PID changed from %d to %d during the outage", pid, got)
	}
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}

	// Right after it is back: the policy now admits the stranger, not the
	// friend.
	changed := time.Now()
	np, err := policies.Get(ctx, "server-from-friend", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np.Spec.Ingress[0].From = []networkingv1.NetworkPolicyPeer{podPeer("app", "stranger")}
	if _, err := policies.Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, pp := range []probePair{{stranger, server, true, false}, {friend, server, false, false}} {
		got, err := bed.ProbePodUntil(ctx, pp.from, pp.to, bed.IPv4, 80, bed.TCP, time.Second, pp.allowed, 60*time.Second)
		if err != nil || got != pp.allowed {
			t.Errorf("after the outage: %s -> %s connected=%t (%v), want %t", pp.from, pp.to, got, err, pp.allowed)
		}
	}
	t.Logf("the policy change made right after the outage was enforced %s after the update", time.Since(changed).Round(100*time.Millisecond))
	if got := d.PID(); got != pid {
		t.Errorf("podwalld's PID changed from %d to %d", pid, got)
	}
	if starts := strings.Count(d.Log(), "podwalld serving"); starts != 1 {
		t.Errorf("podwalld started serving %d times, want once", starts)
	}
	if latePod != nil {
		if err := c.Client().CoreV1().Pods(ns).Delete(ctx, "late", metav1.DeleteOptions{}); err != nil {
			t.Errorf("delete the late pod's object: %v", err)
		}
	}
}

// apiPod is a pod labelled app=<name> serving TCP 80.
func apiPod(namespace, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "main", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
		}}},
	}
}

// generationSuffix is the generation in podwall set names (pw4-0-g3).
var generationSuffix = regexp.MustCompile(`-g[0-9]+\b`)

// enforcedRules returns, per pod, its podwall rules and peer sets as
// Inspect finds them, without generation numbers (a repair moves to a new
// one) and without the node-address sets' members (they follow the
// host's addresses).
func enforcedRules(ctx context.Context, inspect *dataplane.Manager, pods []*bed.Pod) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range pods {
		rs, err := inspect.Inspect(ctx, p.NetnsPath)
		if err != nil {
			return nil, err
		}
		var b strings.Builder
		b.WriteString(rs.V4 + rs.V6)
		for _, s := range rs.Sets {
			fmt.Fprintf(&b, "set %s", s.Name)
			if !strings.Contains(s.Name, "-node-") {
				fmt.Fprintf(&b, " %v", s.Members)
			}
			b.WriteString("\n")
		}
		out[p.String()] = generationSuffix.ReplaceAllString(b.String(), "-gN")
	}
	return out, nil
}

func rulesDiff(a, b map[string]string) string {
	var diffs []string
	for _, k := range sortedKeys(a) {
		if a[k] != b[k] {
			diffs = append(diffs, fmt.Sprintf("%s:\nwas:\n%s\nnow:\n%s", k, a[k], b[k]))
		}
	}
	return strings.Join(diffs, "\n")
}

// readyz returns nil when podwalld's /readyz at addr answers 200.
func readyz(ctx context.Context, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
