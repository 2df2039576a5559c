package kubee2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
)

// bins are podwall, podwalld and podwallctl: $PODWALL_BIN or a build,
// removed by TestMain.
var bins = &harness.Bins{TempPrefix: "podwall-k8n-bin-"}

// The address ranges of this package, all inside 10.213.0.0/16 and
// fd00:213::/48. Pod ranges lie in podRangeV4 and podRangeV6 (one /80 per
// IPv6 bed), Service ranges in serviceRange and serviceRangeV6.
var (
	podRangeV4     = netip.MustParsePrefix("10.213.0.0/17")
	serviceRange   = netip.MustParsePrefix("10.213.128.0/17")
	podRangeV6     = netip.MustParsePrefix("fd00:213::/64")
	serviceRangeV6 = netip.MustParsePrefix("fd00:213:0:8000::/64")
	// sharedServiceCIDR and sharedServiceCIDRv6 are the Service ranges of
	// the dual-stack cluster the suites share (IPv4 primary); tests with a
	// cluster of their own take other ones.
	sharedServiceCIDR   = netip.MustParsePrefix("10.213.128.0/20")
	sharedServiceCIDRv6 = netip.MustParsePrefix("fd00:213:0:8000::/112")
	// proxyNodeIPs are the InternalIPs of kube-proxy's Node (addresses of
	// no interface: kube-proxy needs a Node, the tests no NodePorts).
	proxyNodeIPs = []netip.Addr{netip.MustParseAddr("10.213.127.254"), netip.MustParseAddr("fd00:213::ffff:ffff:ffff:fffe")}
)

// bedPrefix starts the name of every IPv4 bed of this package;
// bedPrefixIPv6 and bedPrefixDual those of its IPv6-only and dual-stack
// beds.
const (
	bedPrefix     = "k8n"
	bedPrefixIPv6 = "k8s6"
	bedPrefixDual = "k8d"
)

// ownedNetnsGlobs match the netns of this package's beds (pw-<bed>-<n>).
var ownedNetnsGlobs = []string{"pw-" + bedPrefix + "*", "pw-" + bedPrefixIPv6 + "*", "pw-" + bedPrefixDual + "*"}

// proxyNodeName names kube-proxy's Node.
const proxyNodeName = "k8n-kube-proxy"

// TestMain runs the tests, stops the shared cluster (and its kube-proxy,
// removing its rules), removes binaries it built, and then fails the run if
// any test left a netns of one of the package's beds or a route inside the
// package's ranges behind. Without root every test skips.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := stopSharedCluster(); err != nil {
		fmt.Fprintf(os.Stderr, "stop the shared cluster: %v\n", err)
		code = 1
	}
	bins.Remove()
	if os.Geteuid() == 0 {
		var left []string
		for i, glob := range ownedNetnsGlobs {
			if i == 0 {
				left = append(left, harness.Leftovers(glob, podRangeV4, serviceRange, podRangeV6, serviceRangeV6)...)
			} else {
				left = append(left, harness.Leftovers(glob)...)
			}
		}
		if len(left) > 0 {
			fmt.Fprintf(os.Stderr, "kube e2e tests left behind:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

// requireKube skips the test unless it runs as root and the Kubernetes
// binaries are there (with $PODWALL_KUBE_REQUIRED=1 missing binaries fail
// it instead).
func requireKube(t testing.TB) {
	t.Helper()
	cluster.RequireBinaries(t, cluster.Options{})
}

// controlPlane is a running cluster with install/rbac.yaml applied.
type controlPlane struct {
	*cluster.Cluster
	// DaemonKubeconfig authenticates as podwalld's ServiceAccount of
	// install/rbac.yaml (made once per cluster: the file is shared by every
	// node's daemon).
	DaemonKubeconfig string
}

var (
	sharedMu      sync.Mutex
	sharedCluster *controlPlane
	sharedErr     error
)

// theSharedCluster returns the control plane the suites share, starting it
// on first use (about 5 s); TestMain stops it. Tests that stop the API
// server start a cluster of their own (startCluster).
func theSharedCluster(t testing.TB) *controlPlane {
	t.Helper()
	requireKube(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedCluster == nil && sharedErr == nil {
		sharedCluster, sharedErr = startControlPlane(sharedServiceCIDR, sharedServiceCIDRv6)
	}
	if sharedErr != nil {
		t.Fatalf("shared cluster: %v", sharedErr)
	}
	return sharedCluster
}

var (
	proxyMu    sync.Mutex
	proxyErr   error
	proxyUsers int
)

// theSharedProxy returns the kube-proxy of the shared cluster, starting it
// on first use: it needs the host-wide kube-proxy lock, which another test
// process may hold for minutes, so only the tests that go through Services
// start it, and the last of them to end stops it (removing its rules and
// releasing the lock; TestMain's Stop of the cluster would too). It
// programs the Services of every node's pods (--cluster-cidr podRangeV4 and
// podRangeV6: no masquerading between pods).
func theSharedProxy(t testing.TB) *cluster.Proxy {
	t.Helper()
	cp := theSharedCluster(t)
	proxyMu.Lock()
	defer proxyMu.Unlock()
	if proxyErr != nil {
		t.Fatalf("kube-proxy: %v", proxyErr)
	}
	p := cp.Proxy()
	if p == nil {
		start := time.Now()
		p, proxyErr = cp.StartProxy(context.Background(), cluster.ProxyOptions{
			NodeName:     proxyNodeName,
			NodeIPs:      proxyNodeIPs,
			ClusterCIDRs: []netip.Prefix{podRangeV4, podRangeV6},
		})
		if proxyErr != nil {
			t.Fatalf("kube-proxy: %v", proxyErr)
		}
		t.Logf("kube-proxy started (host-wide lock taken) in %s", time.Since(start).Round(time.Millisecond))
	}
	proxyUsers++
	t.Cleanup(func() {
		proxyMu.Lock()
		defer proxyMu.Unlock()
		proxyUsers--
		if proxyUsers > 0 {
			return
		}
		if t.Failed() {
			t.Logf("kube-proxy log ends:\n%s", cp.LogTail("kube-proxy", 40))
		}
		if err := cp.StopProxy(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return p
}

func stopSharedCluster() error {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedCluster == nil {
		return nil
	}
	err := sharedCluster.Stop()
	sharedCluster = nil
	return err
}

// startCluster starts a control plane of the test's own on serviceCIDR
// (IPv4 only) and stops it when the test ends, logging the components' logs
// if it failed.
func startCluster(t testing.TB, serviceCIDR netip.Prefix) *controlPlane {
	t.Helper()
	requireKube(t)
	c, err := startControlPlane(serviceCIDR, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, component := range []string{"kube-apiserver", "kube-controller-manager"} {
				t.Logf("%s log ends:\n%s", component, c.LogTail(component, 30))
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return c
}

// startControlPlane starts a cluster on serviceCIDR (inside the package's
// Service range) and, when valid, serviceCIDRv6 (dual-stack, inside
// serviceRangeV6), applies install/rbac.yaml to it and makes the daemon's
// kubeconfig.
func startControlPlane(serviceCIDR, serviceCIDRv6 netip.Prefix) (*controlPlane, error) {
	if !serviceRange.Contains(serviceCIDR.Addr()) || serviceCIDR.Bits() < serviceRange.Bits() {
		return nil, fmt.Errorf("service range %s is not inside %s", serviceCIDR, serviceRange)
	}
	if serviceCIDRv6.IsValid() && (!serviceRangeV6.Contains(serviceCIDRv6.Addr()) || serviceCIDRv6.Bits() < serviceRangeV6.Bits()) {
		return nil, fmt.Errorf("service range %s is not inside %s", serviceCIDRv6, serviceRangeV6)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{ServiceCIDR: serviceCIDR, SecondaryServiceCIDR: serviceCIDRv6})
	if err != nil {
		return nil, err
	}
	if err := applyRBAC(ctx, c.Client(), rbacFile); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	kubeconfig, err := daemonKubeconfig(ctx, c)
	if err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return &controlPlane{Cluster: c, DaemonKubeconfig: kubeconfig}, nil
}
