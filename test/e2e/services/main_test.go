package servicese2e

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
	"github.com/podwall/podwall/test/kube/kubelet"
)

// The package's address ranges (see the package doc).
var (
	podRangeV4 = netip.MustParsePrefix("10.217.0.0/17")
	podRangeV6 = netip.MustParsePrefix("fd00:217::/64")
	// serviceCIDR and serviceCIDRv6 are the cluster's Service ranges
	// (dual-stack, IPv4 primary).
	serviceCIDR   = netip.MustParsePrefix("10.217.128.0/20")
	serviceCIDRv6 = netip.MustParsePrefix("fd00:217:8000::/112")
	// bedCIDRv4 and bedCIDRv6 are the node's pod ranges, inside the pod
	// ranges; their first addresses are the Node's InternalIPs (ptp puts
	// them on the host side of every pod's veth).
	bedCIDRv4 = netip.MustParsePrefix("10.217.0.0/20")
	bedCIDRv6 = netip.MustParsePrefix("fd00:217::/80")
	// externalCIDR is the bed's external host's range (the host holds
	// .209, the external host .218).
	externalCIDR = netip.MustParsePrefix("203.0.113.208/28")
	// addedHostRange holds the address TestNodeProbe adds to the host; it
	// is blackholed while the test runs.
	addedHostRange = netip.MustParsePrefix("10.217.255.0/24")
	// proxyNodeIPs are the InternalIPs of kube-proxy's own Node: addresses
	// of no interface (kube-proxy needs a Node; these tests use no
	// NodePorts).
	proxyNodeIPs = []netip.Addr{netip.MustParseAddr("10.217.127.254"), netip.MustParseAddr("fd00:217::ffff:ffff:ffff:fffe")}
)

const (
	// bedName names the node's bed: netns pw-sv1-<n> and pw-sv1-ext.
	bedName = "sv1"
	// nodeName is the node podwalld and the kubelet stand-in play.
	nodeName = "sv-node"
	// proxyNodeName is kube-proxy's --hostname-override.
	proxyNodeName = "sv-kube-proxy"
	// dummyLink is the host link TestNodeProbe adds an address on.
	dummyLink = "sv-dummy0"
)

// servicesOffEnv names the environment variable that, set to 1, starts
// podwalld behind a harness.ServiceHider: it sees no Service, EndpointSlice
// or ServiceCIDR, so podwall's Service handling is off and the tests about
// Services must fail.
const servicesOffEnv = "PODWALL_SV_SERVICES_OFF"

func servicesOff() bool { return os.Getenv(servicesOffEnv) == "1" }

// defaultParallel is how many tests run at once unless -test.parallel is
// given: they mostly wait (probes timing out, kube-proxy and podwalld
// converging), and they share one node.
const defaultParallel = 10

// bins are podwall, podwalld and podwallctl: $PODWALL_BIN or a build,
// removed by TestMain.
var bins = &harness.Bins{TempPrefix: "podwall-sv-bin-"}

// TestMain runs the tests (defaultParallel at once), tears the shared node
// and cluster down (kube-proxy's rules removed), and fails the run if a
// netns of the bed, the dummy link or a route in the package's ranges is
// left behind. Without root every test skips.
func TestMain(m *testing.M) {
	flag.Parse()
	parallelGiven := false
	flag.Visit(func(f *flag.Flag) { parallelGiven = parallelGiven || f.Name == "test.parallel" })
	if !parallelGiven {
		flag.Set("test.parallel", fmt.Sprint(defaultParallel))
	}
	code := m.Run()
	if err := stopShared(); err != nil {
		fmt.Fprintf(os.Stderr, "stop the shared node and cluster: %v\n", err)
		code = 1
	}
	bins.Remove()
	if os.Geteuid() == 0 {
		left := harness.Leftovers("pw-"+bedName+"*", podRangeV4, podRangeV6, serviceCIDR, serviceCIDRv6, addedHostRange, externalCIDR)
		if _, err := netlink.LinkByName(dummyLink); err == nil {
			left = append(left, "link "+dummyLink)
		}
		if len(left) > 0 {
			fmt.Fprintf(os.Stderr, "service e2e tests left behind:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

// requireKube skips the test unless it runs as root and the Kubernetes
// binaries, kube-proxy included, are there; with $PODWALL_KUBE_REQUIRED=1
// a missing binary fails it instead.
func requireKube(t testing.TB) {
	t.Helper()
	cluster.RequireBinaries(t, cluster.Options{})
	b, _ := cluster.FindBinaries(cluster.Options{})
	if fi, err := os.Stat(b.Proxy); err != nil || fi.Mode()&0o111 == 0 {
		msg := fmt.Sprintf("kube-proxy not built: %s (make kube-bins)", b.Proxy)
		if os.Getenv(cluster.RequiredEnv) == "1" {
			t.Fatalf("%s (and %s=1)", msg, cluster.RequiredEnv)
		}
		t.Skip(msg)
	}
}

// node is the one node every test of the package shares: the cluster with
// its kube-proxy, podwalld, the bed and the kubelet stand-in.
type node struct {
	CP      *cluster.Cluster
	Proxy   *cluster.Proxy
	Daemon  *harness.Daemon
	Bed     *bed.Bed
	Kubelet *kubelet.Kubelet
	// hider is the API proxy between podwalld and the API server with
	// $PODWALL_SV_SERVICES_OFF=1, else nil.
	hider *harness.ServiceHider
	dir   string
}

var (
	sharedMu   sync.Mutex
	sharedNode *node
	sharedErr  error
	// sharedStarted is how long the shared node took to start.
	sharedStarted time.Duration
)

// theNode returns the shared node, starting it on first use: the cluster
// (about 5 s), kube-proxy (it waits for the host-wide kube-proxy lock,
// which another test process may hold for minutes), podwalld and the bed.
// TestMain tears it down.
func theNode(t testing.TB) *node {
	t.Helper()
	requireKube(t)
	cniDir := bed.CNIBinDirForTest(t)
	binDir := bins.Dir(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedNode == nil && sharedErr == nil {
		start := time.Now()
		sharedNode, sharedErr = startNode(cniDir, binDir)
		sharedStarted = time.Since(start)
		if sharedErr == nil {
			t.Logf("shared node started in %s (kube-proxy lock wait included)", sharedStarted.Round(time.Millisecond))
		}
	}
	if sharedErr != nil {
		t.Fatalf("shared node: %v", sharedErr)
	}
	return sharedNode
}

// startNode starts everything theNode returns; on failure it stops what it
// started.
func startNode(cniDir, binDir string) (n *node, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), cluster.DefaultProxyLockTimeout+5*time.Minute)
	defer cancel()
	n = &node{}
	defer func() {
		if err != nil {
			err = errors.Join(err, n.stop())
			n = nil
		}
	}()
	n.CP, err = cluster.Start(ctx, cluster.Options{
		ServiceCIDR:          serviceCIDR,
		SecondaryServiceCIDR: serviceCIDRv6,
		Proxy: &cluster.ProxyOptions{
			NodeName:     proxyNodeName,
			NodeIPs:      proxyNodeIPs,
			ClusterCIDRs: []netip.Prefix{podRangeV4, podRangeV6},
		},
	})
	if err != nil {
		return n, err
	}
	n.Proxy = n.CP.Proxy()
	if err := n.CP.CreateNodeWithIPs(ctx, nodeName, bedCIDRv4.Addr().Next(), bedCIDRv6.Addr().Next()); err != nil {
		return n, err
	}
	// A short directory: the daemon's socket path must fit in sun_path.
	if n.dir, err = os.MkdirTemp("", "pw-sv-"); err != nil {
		return n, err
	}
	kubeconfig := n.CP.Kubeconfig()
	if servicesOff() {
		if n.hider, err = harness.StartServiceHider(n.CP.RestConfig()); err != nil {
			return n, err
		}
		kubeconfig = filepath.Join(n.dir, "hider.kubeconfig")
		if err := n.hider.WriteKubeconfig(kubeconfig); err != nil {
			return n, err
		}
	}
	if n.Daemon, err = harness.NewKubeDaemon(binDir, n.dir, nodeName, kubeconfig); err != nil {
		return n, err
	}
	if err := n.Daemon.Start(ctx); err != nil {
		return n, fmt.Errorf("start podwalld: %w", err)
	}
	plugin := map[string]any{"type": "podwall", "socket": n.Daemon.Socket, "timeout": "10s"}
	n.Bed, err = bed.New(bed.Options{
		Name: bedName,
		// The built podwall comes first, so a stale one next to the
		// reference plugins is never run.
		CNIBinDir:      binDir,
		CNIPath:        []string{cniDir},
		PodCIDRv4:      bedCIDRv4,
		PodCIDRv6:      bedCIDRv6,
		ExternalCIDRv4: externalCIDR,
		Extra:          []map[string]any{plugin},
	})
	if err != nil {
		return n, err
	}
	n.Kubelet = kubelet.New(n.CP.Client(), n.Bed, nodeName)
	return n, nil
}

// stop deletes the kubelet's pods, closes the bed, stops podwalld, the
// hider and the cluster (kube-proxy's rules removed), going on past
// failures.
func (n *node) stop() error {
	var errs []error
	if n.Kubelet != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		errs = append(errs, n.Kubelet.Close(ctx))
		cancel()
	}
	if n.Bed != nil {
		errs = append(errs, n.Bed.Close())
	}
	if n.Daemon != nil {
		errs = append(errs, n.Daemon.Stop())
	}
	if n.hider != nil {
		errs = append(errs, n.hider.Close())
	}
	if n.CP != nil {
		errs = append(errs, n.CP.Stop())
	}
	if n.dir != "" {
		errs = append(errs, os.RemoveAll(n.dir))
	}
	return errors.Join(errs...)
}

func stopShared() error {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedNode == nil {
		return nil
	}
	err := sharedNode.stop()
	sharedNode = nil
	return err
}
