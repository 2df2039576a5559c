package kubee2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// probeTimeout bounds one probe of these tests.
const probeTimeout = time.Second

// serverPod is a pod labelled app=<name> (plus extra labels) serving TCP 80
// on the container port "http".
func serverPod(namespace, name string, labels map[string]string) *corev1.Pod {
	all := map[string]string{"app": name}
	for k, v := range labels {
		all[k] = v
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: all},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "main",
			Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
		}}},
	}
}

// ingressFrom is a policy on the pods labelled app=<target> that admits
// only peers matching from.
func ingressFrom(namespace, name, target string, from networkingv1.NetworkPolicyPeer) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": target}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{from}}},
		},
	}
}

// expectProbe waits until from reaches to on TCP 80 (want true) or not
// (want false), for at most within, and fails the test otherwise.
func expectProbe(t *testing.T, ctx context.Context, from, to *bed.Pod, want bool, within time.Duration) {
	t.Helper()
	got, err := bed.ProbePodUntil(ctx, from, to, bed.IPv4, 80, "TCP", probeTimeout, want, within)
	if err != nil {
		t.Fatalf("probe %s -> %s: %v", from, to, err)
	}
	if got != want {
		t.Fatalf("%s -> %s:80 connected=%t, want %t (waited %s)", from, to, got, want, within)
	}
}

// routesIn lists the host routes inside p, except blackhole routes.
func routesIn(p netip.Prefix) ([]string, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	var out []string
	for _, r := range routes {
		if r.Dst == nil || r.Type == unix.RTN_BLACKHOLE {
			continue
		}
		dst, err := netip.ParsePrefix(r.Dst.String())
		if err == nil && p.Overlaps(dst) && dst.Bits() >= p.Bits() {
			out = append(out, r.String())
		}
	}
	return out, nil
}

// TestKubeAddUnknownPodTryAgainLater: a CNI ADD for a pod the API server
// does not have fails with CNI code 11 ("try again later": podwall builds no
// firewall without the pod's labels) and leaves nothing behind: no netns, no
// host route (so no veth), no attachment in podwalld. Once the Pod object
// exists, the same pod is attached.
func TestKubeAddUnknownPodTryAgainLater(t *testing.T) {
	cp := theSharedCluster(t)
	t.Parallel()
	podRange := netip.MustParsePrefix("10.213.64.0/24")
	n := newNode(t, cp, nodeOptions{Name: "k8na", PodCIDRv4: podRange})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const ns = "k8n-unknown"
	if _, err := cp.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	_, err := n.Bed.AddPod(ctx, ns, "ghost", bed.PodOptions{})
	if err == nil {
		t.Fatal("CNI ADD of a pod the API server does not have succeeded; its firewall was built without its labels")
	}
	t.Logf("ADD failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
		t.Errorf("ADD error = %v, want CNI code %d (try again later)", err, types.ErrTryAgainLater)
	}
	if left, _ := filepath.Glob("/run/netns/pw-k8na-*"); len(left) > 0 {
		t.Errorf("failed ADD left netns behind: %v", left)
	}
	if left, err := routesIn(podRange); err != nil || len(left) > 0 {
		t.Errorf("failed ADD left host routes (a veth) behind: %v %v", left, err)
	}
	pods, err := n.Daemon.Pods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if p.Namespace == ns {
			t.Errorf("podwalld keeps an attachment of the failed ADD: %+v", p)
		}
	}

	// The twin: once the Pod object exists, the same ADD succeeds.
	bp, err := n.Kubelet.RunPod(ctx, serverPod(ns, "ghost", nil))
	if err != nil {
		t.Fatalf("ADD once the Pod object exists: %v", err)
	}
	pods, err = n.Daemon.Pods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(pods, func(p harness.CtlPod) bool {
		return p.Namespace == ns && p.Name == "ghost" && p.ContainerID == bp.ContainerID
	}) {
		t.Errorf("podwalld does not list %s/ghost (container %s) after a successful ADD: %+v", ns, bp.ContainerID, pods)
	}
}

// TestKubeRBACIsEnough: podwalld authenticated as the ServiceAccount of
// install/rbac.yaml, with only the rights that file grants, becomes ready,
// logs no Forbidden error, and enforces a policy that depends on all three
// kinds it watches (a pod selector, a namespace selector, the policy). Its
// twins: the same daemon with no binding, or with a role that lacks one of
// the file's resources, never becomes ready and logs the Forbidden error;
// only without an optional resource (servicecidrs) does it become ready, and
// it still logs the Forbidden error.
func TestKubeRBACIsEnough(t *testing.T) {
	cp := theSharedCluster(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	objs, err := readRBAC(rbacFile)
	if err != nil {
		t.Fatal(err)
	}
	var role *rbacv1.ClusterRole
	for _, obj := range objs {
		if r, ok := obj.(*rbacv1.ClusterRole); ok {
			role = r
		}
	}
	if role == nil {
		t.Fatalf("%s has no ClusterRole", rbacFile)
	}

	t.Run("the file's rights are enough", func(t *testing.T) {
		metrics := freeAddr(t)
		n := newNode(t, cp, nodeOptions{Name: "k8nr", PodCIDRv4: netip.MustParsePrefix("10.213.65.0/24"),
			DaemonArgs: []string{"--metrics-address", metrics}})
		if err := harness.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() error { return readyz(ctx, metrics) }); err != nil {
			t.Fatalf("podwalld /readyz: %v", err)
		}
		const nsServer, nsClient = "k8n-rbac-server", "k8n-rbac-client"
		for _, ns := range []string{nsServer, nsClient} {
			if _, err := cp.CreateNamespace(ctx, ns, nil); err != nil {
				t.Fatal(err)
			}
		}
		server, err := n.Kubelet.RunPod(ctx, serverPod(nsServer, "server", nil))
		if err != nil {
			t.Fatal(err)
		}
		client, err := n.Kubelet.RunPod(ctx, serverPod(nsClient, "client", nil))
		if err != nil {
			t.Fatal(err)
		}
		expectProbe(t, ctx, client, server, true, 10*time.Second)
		np := ingressFrom(nsServer, "from-team-blue", "server", networkingv1.NetworkPolicyPeer{
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "blue"}},
			PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
		})
		if _, err := cp.Client().NetworkingV1().NetworkPolicies(nsServer).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		expectProbe(t, ctx, client, server, false, 10*time.Second)
		nsObj, err := cp.Client().CoreV1().Namespaces().Get(ctx, nsClient, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		nsObj.Labels["team"] = "blue"
		if _, err := cp.Client().CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		expectProbe(t, ctx, client, server, true, 10*time.Second)
		if lines := forbiddenLines(n.Daemon.Log()); len(lines) > 0 {
			t.Errorf("podwalld logged Forbidden errors with the rights of %s:\n%s", rbacFile, strings.Join(lines, "\n"))
		}
		if out, err := n.Daemon.Ctl(ctx, "status"); err != nil || !strings.Contains(out, "kubernetes") {
			t.Errorf("podwallctl status: %v\n%s", err, out)
		}
	})

	// The twins: one account without any binding, and one per resource of
	// the file's role with a role that lacks it.
	type twin struct {
		name     string
		rules    []rbacv1.PolicyRule // nil: no binding at all
		optional bool                // podwalld does without the resource
	}
	// Without ServiceCIDRs podwalld logs the forbidden list once and takes
	// the ClusterIP ranges from --service-cidr.
	optional := map[string]bool{"servicecidrs": true}
	twins := []twin{{name: "no binding"}}
	for i, rule := range role.Rules {
		for _, res := range rule.Resources {
			rules := slices.Clone(role.Rules)
			rules[i].Resources = slices.DeleteFunc(slices.Clone(rule.Resources), func(r string) bool { return r == res })
			if len(rules[i].Resources) == 0 {
				rules = slices.Delete(rules, i, i+1)
			}
			twins = append(twins, twin{name: "without " + res, rules: rules, optional: optional[res]})
		}
	}
	var wg sync.WaitGroup
	for i, tw := range twins {
		account := fmt.Sprintf("podwall-twin-%d", i)
		wg.Go(func() {
			t.Run(tw.name, func(t *testing.T) {
				log, ready := runUnprivilegedDaemon(t, ctx, cp, account, tw.rules)
				switch {
				case ready && !tw.optional:
					t.Errorf("podwalld became ready %s; the check cannot tell missing rights", tw.name)
				case !ready && tw.optional:
					t.Errorf("podwalld did not become ready %s, which it can do without; log:\n%s", tw.name, harness.LastLines(log, 30))
				}
				if len(forbiddenLines(log)) == 0 {
					t.Errorf("podwalld %s logged no Forbidden error; log:\n%s", tw.name, harness.LastLines(log, 30))
				}
			})
		})
	}
	wg.Wait()
}

// runUnprivilegedDaemon starts podwalld as ServiceAccount kube-system/account
// bound to a ClusterRole with rules (no binding when rules is nil), gives
// it 10 s to serve its socket, stops it, and returns its log and whether it
// served.
func runUnprivilegedDaemon(t *testing.T, ctx context.Context, cp *controlPlane, account string, rules []rbacv1.PolicyRule) (string, bool) {
	t.Helper()
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, "kube-system", account)
	if err != nil {
		t.Fatal(err)
	}
	if rules != nil {
		rbac := cp.Client().RbacV1()
		if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: account}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: account},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: account},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: account}},
		}
		if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "pw-k8nt-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	d, err := harness.NewKubeDaemon(bins.Dir(t), dir, "node-"+account, kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	startErr := d.Start(startCtx)
	if err := d.Stop(); err != nil {
		t.Errorf("stop podwalld: %v", err)
	}
	return d.Log(), startErr == nil
}

// forbiddenRE matches an API server's Forbidden error in a log line.
var forbiddenRE = regexp.MustCompile(`(?i)forbidden`)

// forbiddenLines returns the lines of log that report a Forbidden error.
func forbiddenLines(log string) []string {
	var out []string
	for line := range strings.Lines(log) {
		if forbiddenRE.MatchString(line) {
			out = append(out, strings.TrimRight(line, "\n"))
		}
	}
	return out
}

// freeAddr returns a free 127.0.0.1 TCP address.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
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

// TestKubeAPIOutage: while the API server is down for 20 s, enforcement
// stays exactly as it was (a denied probe stays denied, an allowed one
// allowed, probed every half second) and podwalld stays ready; a policy
// change made right after the API server is back is enforced within a few
// seconds, by the same podwalld process.
func TestKubeAPIOutage(t *testing.T) {
	cp := startCluster(t, netip.MustParsePrefix("10.213.144.0/20"))
	t.Parallel()
	metrics := freeAddr(t)
	n := newNode(t, cp, nodeOptions{Name: "k8no", PodCIDRv4: netip.MustParsePrefix("10.213.66.0/24"),
		DaemonArgs: []string{"--metrics-address", metrics}})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const ns = "k8n-outage"
	if _, err := cp.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	server, err := n.Kubelet.RunPod(ctx, serverPod(ns, "server", nil))
	if err != nil {
		t.Fatal(err)
	}
	friend, err := n.Kubelet.RunPod(ctx, serverPod(ns, "friend", nil))
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := n.Kubelet.RunPod(ctx, serverPod(ns, "stranger", nil))
	if err != nil {
		t.Fatal(err)
	}
	from := func(app string) networkingv1.NetworkPolicyPeer {
		return networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}
	}
	policies := cp.Client().NetworkingV1().NetworkPolicies(ns)
	if _, err := policies.Create(ctx, ingressFrom(ns, "server-ingress", "server", from("friend")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	expectProbe(t, ctx, stranger, server, false, 10*time.Second)
	expectProbe(t, ctx, friend, server, true, 10*time.Second)

	const outage = 20 * time.Second
	if err := cp.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	var probes int
	for time.Since(down) < outage {
		for _, c := range []struct {
			from *bed.Pod
			want bool
		}{{friend, true}, {stranger, false}} {
			got, err := bed.ProbePod(ctx, c.from, server, bed.IPv4, 80, "TCP", probeTimeout)
			if err != nil || got != c.want {
				t.Errorf("%s into the outage: %s -> %s connected=%t (err %v), want %t",
					time.Since(down).Round(100*time.Millisecond), c.from, server, got, err, c.want)
			}
			probes++
		}
		if err := readyz(ctx, metrics); err != nil {
			t.Errorf("%s into the outage: podwalld not ready: %v", time.Since(down).Round(100*time.Millisecond), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("API server down for %s: %d probes, all as before", time.Since(down).Round(100*time.Millisecond), probes)
	if !n.Daemon.Running() {
		t.Fatal("podwalld exited during the API server outage")
	}
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server back after %s", time.Since(down).Round(100*time.Millisecond))

	// Right after it is back: the policy now admits the stranger, not the
	// friend.
	changed := time.Now()
	np, err := policies.Get(ctx, "server-ingress", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	np.Spec.Ingress[0].From = []networkingv1.NetworkPolicyPeer{from("stranger")}
	if _, err := policies.Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Waiting longer than required tells how late a late change came.
	const enforcedWithin, waitAtMost = 10 * time.Second, 90 * time.Second
	expectProbe(t, ctx, stranger, server, true, waitAtMost)
	expectProbe(t, ctx, friend, server, false, waitAtMost)
	took := time.Since(changed)
	t.Logf("policy change after the outage enforced %s after the update", took.Round(100*time.Millisecond))
	if took > enforcedWithin {
		t.Errorf("a policy change right after the API server came back took %s to be enforced, want at most %s",
			took.Round(100*time.Millisecond), enforcedWithin)
	}

	if !n.Daemon.Running() {
		t.Error("podwalld is not running")
	}
	if starts := strings.Count(n.Daemon.Log(), "podwalld serving"); starts != 1 {
		t.Errorf("podwalld started serving %d times, want once (not restarted)", starts)
	}
}
