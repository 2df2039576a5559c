package cluster

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// testServiceCIDR is this package's Service range: not the default, so that
// it never shares a blackhole route with the kubelet package's tests, which
// run at the same time.
var testServiceCIDR = netip.MustParsePrefix("10.212.144.0/20")

func TestValidateOptions(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		name          string
		in, secondary netip.Prefix
		proxy         *ProxyOptions
		want          []netip.Prefix
		wantErr       string
	}{
		{name: "default", want: []netip.Prefix{DefaultServiceCIDR}},
		{name: "masked", in: pfx("10.212.150.7/20"), want: []netip.Prefix{pfx("10.212.144.0/20")}},
		{name: "too small", in: pfx("10.212.144.0/29"), wantErr: "between /12 and /28"},
		{name: "too large", in: pfx("10.0.0.0/8"), wantErr: "between /12 and /28"},
		{name: "ipv6", in: pfx("fd00:213:0:9000::7/112"), want: []netip.Prefix{pfx("fd00:213:0:9000::/112")}},
		{name: "ipv6 too large", in: pfx("fd00:213::/64"), wantErr: "between /108 and /124"},
		{name: "ipv4-mapped", in: pfx("::ffff:10.212.0.0/116"), wantErr: "IPv4-mapped"},
		{name: "dual-stack", in: pfx("10.212.144.0/20"), secondary: pfx("fd00:213:0:9000::/112"),
			want: []netip.Prefix{pfx("10.212.144.0/20"), pfx("fd00:213:0:9000::/112")}},
		{name: "dual-stack ipv6 primary", in: pfx("fd00:213:0:9000::/112"), secondary: pfx("10.212.144.0/20"),
			want: []netip.Prefix{pfx("fd00:213:0:9000::/112"), pfx("10.212.144.0/20")}},
		{name: "two ipv4 ranges", in: pfx("10.212.144.0/20"), secondary: pfx("10.212.160.0/20"), wantErr: "one IPv4 and one IPv6"},
		{name: "bad secondary", in: pfx("10.212.144.0/20"), secondary: pfx("fd00:213::/64"), wantErr: "secondary service range"},
		{name: "proxy without node", proxy: &ProxyOptions{}, wantErr: "no node name"},
		{name: "proxy with two ipv4 pod ranges", proxy: &ProxyOptions{NodeName: "n",
			ClusterCIDRs: []netip.Prefix{pfx("10.212.2.0/24"), pfx("10.212.3.0/24")}}, wantErr: "one per family"},
		{name: "proxy", proxy: &ProxyOptions{NodeName: "n", ClusterCIDRs: []netip.Prefix{pfx("10.212.2.0/24"), pfx("fd00:213:0:100::/80")}},
			want: []netip.Prefix{DefaultServiceCIDR}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{ServiceCIDR: tt.in, SecondaryServiceCIDR: tt.secondary, Proxy: tt.proxy}
			err := validateOptions(&o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if got := o.serviceCIDRs(); err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestMissingBinaryNamesBuildScript(t *testing.T) {
	_, err := FindBinaries(Options{BinDir: t.TempDir(), EtcdPath: "/nonexistent/etcd"})
	if !errors.Is(err, ErrBinaryMissing) {
		t.Fatalf("err = %v, want ErrBinaryMissing", err)
	}
	for _, want := range []string{"kube-apiserver", "kube-controller-manager", "build-bins.sh", "/nonexistent/etcd"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	_, err = Start(context.Background(), Options{BinDir: t.TempDir()})
	if !errors.Is(err, ErrBinaryMissing) {
		t.Fatalf("Start: err = %v, want ErrBinaryMissing", err)
	}
}

func TestCluster(t *testing.T) {
	c := StartForTest(t, Options{ServiceCIDR: testServiceCIDR})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := c.Client()

	t.Run("admin kubeconfig works", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
		if err != nil {
			t.Fatal(err)
		}
		cs := kubernetes.NewForConfigOrDie(cfg)
		v, err := cs.Discovery().ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != KubeVersion {
			t.Errorf("server version %s, want %s", v.GitVersion, KubeVersion)
		}
	})

	t.Run("default ServiceAccount exists", func(t *testing.T) {
		if _, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("namespaces get kubernetes.io/metadata.name", func(t *testing.T) {
		ns, err := c.CreateNamespace(ctx, "pw-labels", map[string]string{"team": "a"})
		if err != nil {
			t.Fatal(err)
		}
		if got := ns.Labels["kubernetes.io/metadata.name"]; got != "pw-labels" {
			t.Errorf("labels %v: kubernetes.io/metadata.name = %q, want pw-labels", ns.Labels, got)
		}
		if ns.Labels["team"] != "a" {
			t.Errorf("labels %v lost team=a", ns.Labels)
		}
	})

	t.Run("node is created Ready", func(t *testing.T) {
		ip := netip.MustParseAddr("10.212.144.250")
		if err := c.CreateNode(ctx, "pw-node-a", ip); err != nil {
			t.Fatal(err)
		}
		n, err := client.CoreV1().Nodes().Get(ctx, "pw-node-a", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ready := false
		for _, cond := range n.Status.Conditions {
			ready = ready || cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue
		}
		if !ready {
			t.Errorf("node conditions %v: not Ready", n.Status.Conditions)
		}
		if len(n.Status.Addresses) == 0 || n.Status.Addresses[0] != (corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip.String()}) {
			t.Errorf("node addresses %v, want InternalIP %s first", n.Status.Addresses, ip)
		}
		if err := c.CreateNode(ctx, "pw-node-b", netip.Addr{}); err == nil {
			t.Errorf("CreateNode without an IP: no error")
		}
	})

	t.Run("services get ClusterIPs in the blackholed range", func(t *testing.T) {
		svc, err := client.CoreV1().Services("default").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "pw-svc"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "none"},
				Ports:    []corev1.ServicePort{{Port: 80}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !testServiceCIDR.Contains(ip) {
			t.Errorf("ClusterIP %q not in %s", svc.Spec.ClusterIP, testServiceCIDR)
		}
		if !hasBlackhole(t, testServiceCIDR) {
			t.Errorf("no host blackhole route for %s", testServiceCIDR)
		}
	})

	t.Run("service account is limited to what RBAC grants", func(t *testing.T) {
		path, err := c.ServiceAccountKubeconfig(ctx, "default", "pw-reader")
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatal(err)
		}
		sa := kubernetes.NewForConfigOrDie(cfg)
		listPods := func() error { _, err := sa.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err }
		listServices := func() error { _, err := sa.CoreV1().Services("").List(ctx, metav1.ListOptions{}); return err }
		if err := listPods(); !apierrors.IsForbidden(err) {
			t.Fatalf("list pods without grants: err = %v, want Forbidden", err)
		}

		if _, err := client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "pw-pod-reader"},
			Rules: []rbacv1.PolicyRule{{
				APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"},
			}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "pw-pod-reader"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "pw-pod-reader"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "default", Name: "pw-reader"}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The authorizer learns of the binding through its informer.
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			return listPods() == nil, nil
		})
		if err != nil {
			t.Fatalf("list pods after the binding: %v", listPods())
		}
		if err := listServices(); !apierrors.IsForbidden(err) {
			t.Errorf("list services (not granted): err = %v, want Forbidden", err)
		}
	})

	t.Run("API outage keeps the data", func(t *testing.T) {
		if _, err := c.CreateNamespace(ctx, "pw-before-outage", nil); err != nil {
			t.Fatal(err)
		}
		url := c.URL()
		if err := c.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		_, err := client.CoreV1().Namespaces().Get(ctx, "pw-before-outage", metav1.GetOptions{})
		if err == nil {
			t.Fatal("request while the API server is stopped: no error")
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Logf("request while stopped failed with %v (not ECONNREFUSED)", err)
		}
		if err := c.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		if c.URL() != url {
			t.Errorf("URL changed from %s to %s", url, c.URL())
		}
		if _, err := client.CoreV1().Namespaces().Get(ctx, "pw-before-outage", metav1.GetOptions{}); err != nil {
			t.Errorf("namespace created before the outage: %v", err)
		}
		if _, err := client.CoreV1().Nodes().Get(ctx, "pw-node-a", metav1.GetOptions{}); err != nil {
			t.Errorf("node created before the outage: %v", err)
		}
		// The controller manager reconnects: a new namespace gets its
		// default ServiceAccount.
		if _, err := c.CreateNamespace(ctx, "pw-after-outage", nil); err != nil {
			t.Error(err)
		}
	})

	t.Run("Stop leaves nothing behind", func(t *testing.T) {
		var pids []int
		for _, p := range c.processes() {
			pid := p.pid()
			if pid == 0 {
				t.Errorf("%s is not running before Stop", p.name)
			}
			pids = append(pids, pid)
		}
		dir := c.Dir()
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("process %d still exists after Stop (kill 0: %v)", pid, err)
			}
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("dir %s still exists after Stop (%v)", dir, err)
		}
		if hasBlackhole(t, testServiceCIDR) {
			t.Errorf("blackhole route %s still there after Stop", testServiceCIDR)
		}
		if err := c.StartAPIServer(ctx); err == nil {
			t.Errorf("StartAPIServer after Stop: no error")
		}
	})
}

// TestStartFailureCleansUp makes kube-apiserver fail to start (an etcd that
// is not etcd) and checks the error carries its log and nothing is left.
func TestStartFailureCleansUp(t *testing.T) {
	RequireBinaries(t, Options{})
	fakeEtcd := filepath.Join(t.TempDir(), "etcd")
	if err := os.WriteFile(fakeEtcd, []byte("#!/bin/sh\necho fake etcd refuses to start >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where Start makes its directory
	_, err := Start(context.Background(), Options{EtcdPath: fakeEtcd, ServiceCIDR: testServiceCIDR})
	if err == nil {
		t.Fatal("Start with a broken etcd: no error")
	}
	if !strings.Contains(err.Error(), "fake etcd refuses to start") {
		t.Errorf("error does not carry etcd's log: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
	if hasBlackhole(t, testServiceCIDR) {
		t.Errorf("blackhole route %s left behind", testServiceCIDR)
	}
}

func hasBlackhole(t *testing.T, p netip.Prefix) bool {
	t.Helper()
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteListFiltered(family, blackholeRoute(p), netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Type == unix.RTN_BLACKHOLE && r.Priority == blackholeMetric {
			return true
		}
	}
	return false
}
