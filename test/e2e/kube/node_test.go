package kubee2e

// A node of the cluster: a test bed whose CNI chain ends with podwall, the
// podwalld it talks to (--kubeconfig, as podwall's ServiceAccount), a Node
// object, and the kubelet stand-in that runs pods on the bed.
//
//	cp := theSharedCluster(t)
//	n := newNode(t, cp, nodeOptions{Name: "k8nx", PodCIDRv4: netip.MustParsePrefix("10.213.70.0/24")})
//	n6 := newNode(t, cp, nodeOptions{Name: "k8s6x", PodCIDRv6: netip.MustParsePrefix("fd00:213::70:0:0:0/80")})
//	bp, err := n.Kubelet.RunPod(ctx, pod) // API object → CNI ADD → status → servers

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/kubelet"
)

// nodeOptions configures newNode.
type nodeOptions struct {
	// Name names the bed ("k8n…" for IPv4, "k8s6…" for IPv6-only, "k8d…"
	// for dual-stack pods; unique among the beds running at once); the
	// node is "node-<Name>".
	Name string
	// PodCIDRv4 and PodCIDRv6 are the bed's pod ranges, inside podRangeV4
	// and podRangeV6 and used by this node only; at least one is set, both
	// for dual-stack pods. The first address of each is one of the Node's
	// InternalIPs (IPv4 first): ptp puts it on the host side of every pod
	// veth.
	PodCIDRv4, PodCIDRv6 netip.Prefix
	// NoEnforcement leaves podwall out of the chain and runs no daemon.
	NoEnforcement bool
	// Kubeconfig is the daemon's; default the control plane's
	// DaemonKubeconfig (podwall's ServiceAccount).
	Kubeconfig string
	// DaemonArgs are extra podwalld flags.
	DaemonArgs []string
}

// kubeNode is one node of a control plane.
type kubeNode struct {
	CP       *controlPlane
	NodeName string
	// PodCIDRv4 and PodCIDRv6 are the bed's pod ranges (invalid when
	// unused).
	PodCIDRv4, PodCIDRv6 netip.Prefix
	Bed                  *bed.Bed
	Kubelet              *kubelet.Kubelet
	Daemon               *harness.Daemon // nil with NoEnforcement
}

// newNode creates the Node object, starts podwalld (unless
// opts.NoEnforcement) and the bed, and returns the node with its kubelet.
// When the test ends the kubelet deletes its pods (CNI DEL, API objects),
// then the bed is closed and the daemon stopped; its log is printed if the
// test failed.
func newNode(t testing.TB, cp *controlPlane, opts nodeOptions) *kubeNode {
	t.Helper()
	v4, v6 := opts.PodCIDRv4, opts.PodCIDRv6
	prefix := bedPrefix
	switch {
	case v4.IsValid() && v6.IsValid():
		prefix = bedPrefixDual
	case v6.IsValid():
		prefix = bedPrefixIPv6
	}
	if !strings.HasPrefix(opts.Name, prefix) {
		t.Fatalf("bed name %q: want the prefix %q", opts.Name, prefix)
	}
	var nodeIPs []netip.Addr
	if v4.IsValid() {
		if !podRangeV4.Contains(v4.Addr()) || v4.Bits() < podRangeV4.Bits() || v4.Bits() > 28 {
			t.Fatalf("pod range %s: want a /17../28 inside %s", v4, podRangeV4)
		}
		nodeIPs = append(nodeIPs, v4.Masked().Addr().Next())
	}
	if v6.IsValid() {
		if !podRangeV6.Contains(v6.Addr()) || v6.Bits() < 80 || v6.Bits() > 120 {
			t.Fatalf("pod range %s: want a /80../120 inside %s", v6, podRangeV6)
		}
		nodeIPs = append(nodeIPs, v6.Masked().Addr().Next())
	}
	if len(nodeIPs) == 0 {
		t.Fatal("node without a pod range")
	}
	n := &kubeNode{CP: cp, NodeName: "node-" + opts.Name, PodCIDRv4: v4, PodCIDRv6: v6}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cp.CreateNodeWithIPs(ctx, n.NodeName, nodeIPs...); err != nil {
		t.Fatal(err)
	}
	cniDir := bed.CNIBinDirForTest(t)
	bedOpts := bed.Options{Name: opts.Name, CNIBinDir: cniDir, PodCIDRv4: v4, PodCIDRv6: v6}
	if !opts.NoEnforcement {
		binDir := bins.Dir(t)
		// A short directory: the daemon's socket path must fit in sun_path.
		dir, err := os.MkdirTemp("", "pw-"+opts.Name+"-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		kubeconfig := opts.Kubeconfig
		if kubeconfig == "" {
			kubeconfig = cp.DaemonKubeconfig
		}
		d, err := harness.NewKubeDaemon(binDir, dir, n.NodeName, kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		startErr := d.Start(ctx, opts.DaemonArgs...)
		t.Cleanup(func() {
			if err := d.Stop(); err != nil {
				t.Errorf("stop podwalld: %v", err)
			}
			if t.Failed() {
				n := logLines()
				t.Logf("podwalld log (last %d lines):\n%s", n, harness.LastLines(d.Log(), n))
			}
		})
		if startErr != nil {
			t.Fatalf("start podwalld: %v", startErr)
		}
		n.Daemon = d
		plugin := map[string]any{"type": "podwall", "socket": d.Socket, "timeout": "10s"}
		// The built podwall comes first, so a stale one next to the
		// reference plugins is never run.
		bedOpts.CNIBinDir, bedOpts.CNIPath = binDir, []string{cniDir}
		bedOpts.Extra = []map[string]any{plugin}
	}
	n.Bed = bed.NewForTest(t, bedOpts)
	n.Kubelet = kubelet.New(cp.Client(), n.Bed, n.NodeName)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := n.Kubelet.Close(ctx); err != nil {
			t.Errorf("kubelet: %v", err)
		}
	})
	return n
}

// logLinesEnv names the environment variable setting how many lines of
// podwalld's log a failed test prints (default 150).
const logLinesEnv = "PODWALL_KUBE_E2E_LOG_LINES"

func logLines() int {
	if n, err := strconv.Atoi(os.Getenv(logLinesEnv)); err == nil && n > 0 {
		return n
	}
	return 150
}
