package kube

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/test/kube/cluster"
)

// These tests run the source against the test bed's real kube-apiserver
// (and kube-controller-manager, which writes EndpointSlices). They need root
// and the binaries of `make kube-bins`, and skip without them (fail with
// PODWALL_KUBE_REQUIRED=1). One cluster is shared by the package's tests and
// stopped by TestMain. Its Service range lies in 10.205.0.0/16, the range of
// these tests; nothing is routed there but the cluster's blackhole.

var apiServiceCIDR = netip.MustParsePrefix("10.205.128.0/20")

var (
	sharedOnce    sync.Once
	sharedCluster *cluster.Cluster
	sharedErr     error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if sharedCluster != nil {
		if err := sharedCluster.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop the test cluster: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// apiServer returns the shared cluster, starting it on first use, or skips
// the test when the binaries are missing.
func apiServer(t *testing.T) *cluster.Cluster {
	t.Helper()
	opts := cluster.Options{ServiceCIDR: apiServiceCIDR}
	cluster.RequireBinaries(t, opts)
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		sharedCluster, sharedErr = cluster.Start(ctx, opts)
	})
	if sharedErr != nil {
		t.Fatalf("start the test cluster: %v", sharedErr)
	}
	return sharedCluster
}

// logBuffer is a slog destination that tests read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runAgainst runs a source for node on the API server cfg names, through
// NewClient as podwalld does, until the test ends and waits for its first
// sync. logs, when not nil, gets the source's log too.
func runAgainst(t *testing.T, cfg *rest.Config, node string, static []netip.Prefix, onNodeAddrs func([]netip.Addr), logs *logBuffer) *Source {
	t.Helper()
	log := testLogger(t)
	if logs != nil {
		log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	client, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := New(client, node, log)
	src.SetServiceCIDRs(static)
	if onNodeAddrs != nil {
		src.NotifyNodeAddrs(onNodeAddrs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, func() {})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	if err := src.WaitForSync(wctx); err != nil {
		t.Fatalf("WaitForSync: %v", err)
	}
	return src
}

// onlyNamespace keeps the lines of summarizeServices about namespace ns and
// the cidrs line.
func onlyNamespace(ns string) func(st *policy.State) []string {
	return func(st *policy.State) []string {
		var out []string
		for _, l := range summarizeServices(st) {
			if strings.Contains(l, " "+ns+"/") || strings.HasPrefix(l, "cidrs ") {
				out = append(out, l)
			}
		}
		return out
	}
}

func createNamespace(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	if _, err := c.CreateNamespace(context.Background(), name, nil); err != nil {
		t.Fatal(err)
	}
}

// TestAPIServerServices: Services, EndpointSlices (written by hand and by
// the real EndpointSlice controller) and the cluster's ServiceCIDR reach
// the state, and updates and deletes follow; headless, ExternalName and
// LoadBalancer Services are converted as kube-proxy sees them.
func TestAPIServerServices(t *testing.T) {
	c := apiServer(t)
	ctx := context.Background()
	const ns = "pwn-svc"
	createNamespace(t, c, ns)
	client := c.Client()
	static := []netip.Prefix{netip.MustParsePrefix("fd00:205::/108")}
	src := runAgainst(t, c.RestConfig(), "pwn-node-a", static, nil, nil)

	proxy := corev1.LoadBalancerIPModeProxy
	services := client.CoreV1().Services(ns)
	create := func(svc *corev1.Service) *corev1.Service {
		t.Helper()
		svc.Namespace = ns
		out, err := services.Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service %s: %v", svc.Name, err)
		}
		return out
	}
	web := create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)},
		},
	}})
	create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "headless"}, Spec: corev1.ServiceSpec{
		ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 80}},
	}})
	create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com",
	}})
	lb := create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "lb"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, ExternalIPs: []string{"10.205.64.7"},
		Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(8443)}},
	}})
	lb.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.205.64.8"}, {IP: "10.205.64.9", IPMode: &proxy}}
	if _, err := services.UpdateStatus(ctx, lb, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("load balancer status: %v", err)
	}
	// A slice written by hand (like a controller of one's own would).
	readyFalse := false
	sliceAPI := client.DiscoveryV1().EndpointSlices(ns)
	manual := newSlice(ns, "web-manual", "web", 8080, map[string]bool{"10.205.1.5": true, "10.205.1.6": false})
	manual.Labels[discoveryv1.LabelManagedBy] = "pwn-test"
	manual.Endpoints = append(manual.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.205.1.7"},
		Conditions: discoveryv1.EndpointConditions{Ready: &readyFalse}})
	if _, err := sliceAPI.Create(ctx, manual, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	webIP := web.Spec.ClusterIP
	lbIP, lbNodePort := lb.Spec.ClusterIP, lb.Spec.Ports[0].NodePort
	want := []string{
		"service pwn-svc/ext clusterIPs= external= ports= local=false",
		"service pwn-svc/headless clusterIPs= external= ports=/TCP/80/0 local=false",
		fmt.Sprintf("service pwn-svc/lb clusterIPs=%s external=10.205.64.7+10.205.64.8 ports=/TCP/443/%d local=false", lbIP, lbNodePort),
		fmt.Sprintf("service pwn-svc/web clusterIPs=%s external= ports=http/TCP/80/0,dns/UDP/53/0 local=false", webIP),
		"slice pwn-svc/web-manual service=web ports=http/TCP/8080 endpoints=10.205.1.5:true:,10.205.1.6:false:,10.205.1.7:false:",
		"cidrs " + apiServiceCIDR.String() + ",fd00:205::/108",
	}
	waitState(t, src, "created", withoutControllerSlices(onlyNamespace(ns)), want)

	// Updates and deletes.
	web.Spec.Ports[0].Port = 8000
	local := corev1.ServiceInternalTrafficPolicyLocal
	web.Spec.InternalTrafficPolicy = &local
	if _, err := services.Update(ctx, web, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	manual = newSlice(ns, "web-manual", "web", 8080, map[string]bool{"10.205.1.5": true, "10.205.1.6": true})
	manual.Labels[discoveryv1.LabelManagedBy] = "pwn-test"
	if _, err := sliceAPI.Update(ctx, manual, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := services.Delete(ctx, "lb", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := services.Delete(ctx, "ext", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	want = []string{
		"service pwn-svc/headless clusterIPs= external= ports=/TCP/80/0 local=false",
		fmt.Sprintf("service pwn-svc/web clusterIPs=%s external= ports=http/TCP/8000/0,dns/UDP/53/0 local=true", webIP),
		"slice pwn-svc/web-manual service=web ports=http/TCP/8080 endpoints=10.205.1.5:true:,10.205.1.6:true:",
		"cidrs " + apiServiceCIDR.String() + ",fd00:205::/108",
	}
	waitState(t, src, "updated", withoutControllerSlices(onlyNamespace(ns)), want)
	if err := sliceAPI.Delete(ctx, "web-manual", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, src, "slice deleted", withoutControllerSlices(onlyNamespace(ns)), slicesDelete(want, 2))
}

// TestAPIServerControllerSlices: the real EndpointSlice controller's slice
// for a Service with a named targetPort reaches the state with the port
// resolved and the endpoint's readiness and node, and follows the pod's
// readiness.
func TestAPIServerControllerSlices(t *testing.T) {
	c := apiServer(t)
	ctx := context.Background()
	const ns, node = "pwn-ctl", "pwn-node-ctl"
	createNamespace(t, c, ns)
	if err := c.CreateNode(ctx, node, netip.MustParseAddr("10.205.0.20")); err != nil {
		t.Fatal(err)
	}
	client := c.Client()
	src := runAgainst(t, c.RestConfig(), node, nil, nil, nil)
	if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("web-http")}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "web", Image: "none",
			Ports: []corev1.ContainerPort{{Name: "web-http", ContainerPort: 8081}}}}},
	}
	// The namespace's default ServiceAccount appears shortly after the
	// namespace: until then pods are rejected.
	var created *corev1.Pod
	deadline := time.Now().Add(time.Minute)
	for {
		var err error
		created, err = client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("create pod: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	setReady := func(ready bool) {
		t.Helper()
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		p, err := client.CoreV1().Pods(ns).Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.205.2.5", PodIPs: []corev1.PodIP{{IP: "10.205.2.5"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}}
		if _, err := client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setReady(true)
	controllerSlice := func(st *policy.State) []string {
		for _, e := range st.EndpointSlices {
			if e.Namespace == ns && e.Service == "web" && len(e.Endpoints) > 0 {
				return []string{fmt.Sprintf("ports=%v endpoints=%v", e.Ports, e.Endpoints)}
			}
		}
		return nil
	}
	want := func(ready bool) []string {
		return []string{fmt.Sprintf("ports=[{http TCP 8081}] endpoints=[{[10.205.2.5] %v %s}]", ready, node)}
	}
	waitState(t, src, "ready endpoint", controllerSlice, want(true))
	setReady(false)
	waitState(t, src, "endpoint not ready", controllerSlice, want(false))
}

// TestAPIServerServiceCIDRsForbidden: with RBAC rights that lack
// servicecidrs, the source becomes ready, uses the --service-cidr ranges
// and logs the forbidden list once. Its twin with the right reads the
// cluster's ServiceCIDR.
func TestAPIServerServiceCIDRsForbidden(t *testing.T) {
	c := apiServer(t)
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "namespaces", "services", "nodes"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
	}
	withCIDRs := append(slices.Clone(rules), rbacv1.PolicyRule{APIGroups: []string{"networking.k8s.io"},
		Resources: []string{"servicecidrs"}, Verbs: []string{"get", "list", "watch"}})
	static := []netip.Prefix{netip.MustParsePrefix("10.205.192.0/20")}
	for _, tc := range []struct {
		name      string
		account   string
		rules     []rbacv1.PolicyRule
		wantCIDRs []netip.Prefix
		forbidden bool
	}{
		{"without servicecidrs", "pwn-no-cidrs", rules, static, true},
		{"with servicecidrs", "pwn-cidrs", withCIDRs, []netip.Prefix{apiServiceCIDR, static[0]}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := accountConfig(t, c, tc.account, tc.rules)
			var logs logBuffer
			src := runAgainst(t, cfg, "pwn-node-rbac", static, nil, &logs)
			if err := src.Ready(); err != nil {
				t.Fatalf("Ready() = %v", err)
			}
			// The cluster's ServiceCIDR object may take a moment to appear.
			waitState(t, src, "service CIDRs", func(st *policy.State) []string { return []string{fmt.Sprint(st.ServiceCIDRs)} },
				[]string{fmt.Sprint(tc.wantCIDRs)})
			n := strings.Count(logs.String(), "cannot list servicecidrs")
			switch {
			case tc.forbidden && (n != 1 || !strings.Contains(logs.String(), "forbidden")):
				t.Errorf("want one warning naming the forbidden list, got %d; log:\n%s", n, logs.String())
			case !tc.forbidden && n != 0:
				t.Errorf("warned about servicecidrs with the right granted; log:\n%s", logs.String())
			}
		})
	}
}

// TestAPIServerNodeAddrs: only this node's Node object is watched (a field
// selector: the cache never holds another node), and its InternalIP and
// ExternalIP addresses reach NotifyNodeAddrs as they change.
func TestAPIServerNodeAddrs(t *testing.T) {
	c := apiServer(t)
	ctx := context.Background()
	const node, other = "pwn-node-addr", "pwn-node-other"
	for name, ip := range map[string]string{node: "10.205.0.30", other: "10.205.0.31"} {
		if err := c.CreateNode(ctx, name, netip.MustParseAddr(ip)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var calls []string
	src := runAgainst(t, c.RestConfig(), node, nil, func(a []netip.Addr) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, fmt.Sprint(a))
	}, nil)
	last := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(calls) == 0 {
			return ""
		}
		return calls[len(calls)-1]
	}
	waitFor(t, "the node's address", func() bool { return last() == "[10.205.0.30]" })

	setAddrs := func(name string, addrs ...corev1.NodeAddress) {
		t.Helper()
		n, err := c.Client().CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Status.Addresses = addrs
		if _, err := c.Client().CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setAddrs(other, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.205.0.32"})
	setAddrs(node, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.205.0.30"},
		corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "10.205.0.33"},
		corev1.NodeAddress{Type: corev1.NodeHostName, Address: node})
	waitFor(t, "the new external address", func() bool { return last() == "[10.205.0.30 10.205.0.33]" })
	if keys := src.node.GetStore().ListKeys(); !slices.Equal(keys, []string{node}) {
		t.Errorf("node cache holds %v, want only %s", keys, node)
	}
	mu.Lock()
	for _, call := range calls {
		if strings.Contains(call, "10.205.0.31") || strings.Contains(call, "10.205.0.32") {
			t.Errorf("NotifyNodeAddrs got the other node's addresses: %v", calls)
		}
	}
	mu.Unlock()
	if err := c.Client().CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "no addresses after the node is deleted", func() bool { return last() == "[]" })
}

// accountConfig returns a client config authenticated as ServiceAccount
// kube-system/account, bound to a ClusterRole with rules only.
func accountConfig(t *testing.T, c *cluster.Cluster, account string, rules []rbacv1.PolicyRule) *rest.Config {
	t.Helper()
	ctx := context.Background()
	rbac := c.Client().RbacV1()
	if _, err := rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: account}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: account},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: account},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "kube-system", Name: account}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	path, err := c.ServiceAccountKubeconfig(ctx, "kube-system", account)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// withoutControllerSlices drops the EndpointSlice controller's slices
// (named <service>-<random>) from a summary.
func withoutControllerSlices(summarize func(*policy.State) []string) func(*policy.State) []string {
	return func(st *policy.State) []string {
		return slices.DeleteFunc(summarize(st), func(l string) bool {
			return strings.HasPrefix(l, "slice ") && !strings.Contains(l, "-manual ")
		})
	}
}

func slicesDelete(lines []string, i int) []string {
	return slices.Delete(slices.Clone(lines), i, i+1)
}
