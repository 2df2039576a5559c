package kubee2e

// A node of the cluster: a test bed whose CNI chain ends with podwall, the
// podwalld it talks to (--kubeconfig, as podwall's ServiceAccount), a Node
// object, and the kubelet stand-in that runs pods on the bed.
//
//	cp := theSharedCluster(t)
//	n := newNode(t, cp, nodeOptions{Name: "k8nx", PodCIDRv4: netip.MustParsePrefix("10.213.70.0/24")})
//	bp, err := n.Kubelet.RunPod(ctx, pod) // API object → CNI ADD → status → servers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

// noEnforcementEnv names the environment variable that, set to 1, runs the
// upstream suites with podwall left out of the CNI chain and no daemon, to
// show that they fail when nothing is enforced.
const noEnforcementEnv = "PODWALL_E2E_NO_ENFORCEMENT"

// enforcementOff reports whether $PODWALL_E2E_NO_ENFORCEMENT is 1.
func enforcementOff() bool { return os.Getenv(noEnforcementEnv) == "1" }

// nodeOptions configures newNode.
type nodeOptions struct {
	// Name names the bed ("k8n…", unique among the beds running at once);
	// the node is "node-<Name>".
	Name string
	// PodCIDRv4 is the bed's pod range, inside podRangeV4 and used by this
	// node only. Its first address is the Node's InternalIP: ptp puts it on
	// the host side of every pod veth.
	PodCIDRv4 netip.Prefix
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
	Bed      *bed.Bed
	Kubelet  *kubelet.Kubelet
	Daemon   *harness.Daemon // nil with NoEnforcement
}

// newNode creates the Node object, starts podwalld (unless
// opts.NoEnforcement) and the bed, and returns the node with its kubelet.
// When the test ends the kubelet deletes its pods (CNI DEL, API objects),
// then the bed is closed and the daemon stopped; its log is printed if the
// test failed.
func newNode(t testing.TB, cp *controlPlane, opts nodeOptions) *kubeNode {
	t.Helper()
	if !strings.HasPrefix(opts.Name, bedPrefix) {
		t.Fatalf("bed name %q: want the prefix %q", opts.Name, bedPrefix)
	}
	p := opts.PodCIDRv4
	if !p.IsValid() || !podRangeV4.Contains(p.Addr()) || p.Bits() < podRangeV4.Bits() || p.Bits() > 28 {
		t.Fatalf("pod range %s: want a /17../28 inside %s", p, podRangeV4)
	}
	n := &kubeNode{CP: cp, NodeName: "node-" + opts.Name}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cp.CreateNode(ctx, n.NodeName, p.Masked().Addr().Next()); err != nil {
		t.Fatal(err)
	}
	cniDir := bed.CNIBinDirForTest(t)
	bedOpts := bed.Options{Name: opts.Name, CNIBinDir: cniDir, PodCIDRv4: p}
	if !opts.NoEnforcement {
		bins := binaries(t)
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
		d, err := harness.NewKubeDaemon(bins, dir, n.NodeName, kubeconfig)
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
				t.Logf("podwalld log (last %d lines):\n%s", n, lastLines(d.Log(), n))
			}
		})
		if startErr != nil {
			t.Fatalf("start podwalld: %v", startErr)
		}
		n.Daemon = d
		plugin := map[string]any{"type": "podwall", "socket": d.Socket, "timeout": "10s"}
		// The built podwall comes first, so a stale one next to the
		// reference plugins is never run.
		bedOpts.CNIBinDir, bedOpts.CNIPath = bins, []string{cniDir}
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

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ctlPod is one entry of `podwallctl pods -o json`.
type ctlPod struct {
	Namespace       string   `json:"namespace"`
	Name            string   `json:"name"`
	ContainerID     string   `json:"containerID"`
	IfName          string   `json:"ifName"`
	IPs             []string `json:"ips"`
	Policies        []string `json:"policies"`
	IngressIsolated bool     `json:"ingressIsolated"`
	EgressIsolated  bool     `json:"egressIsolated"`
	SyncError       string   `json:"syncError"`
}

// ctlPolicy is one entry of `podwallctl policies -o json`.
type ctlPolicy struct {
	Namespace    string   `json:"namespace"`
	Name         string   `json:"name"`
	PolicyTypes  []string `json:"policyTypes"`
	SelectedPods []string `json:"selectedPods"`
}

// ctl runs podwallctl against the node's daemon.
func (n *kubeNode) ctl(ctx context.Context, args ...string) (string, error) {
	if n.Daemon == nil {
		return "", errors.New("podwallctl: no daemon (enforcement is off)")
	}
	return n.Daemon.Ctl(ctx, args...)
}

// ctlPods returns the attachments the daemon serves.
func (n *kubeNode) ctlPods(ctx context.Context) ([]ctlPod, error) {
	var out struct {
		Pods []ctlPod `json:"pods"`
	}
	if err := n.ctlJSON(ctx, &out, "pods"); err != nil {
		return nil, err
	}
	return out.Pods, nil
}

// ctlPolicies returns the policies the daemon knows.
func (n *kubeNode) ctlPolicies(ctx context.Context) ([]ctlPolicy, error) {
	var out struct {
		Policies []ctlPolicy `json:"policies"`
	}
	if err := n.ctlJSON(ctx, &out, "policies"); err != nil {
		return nil, err
	}
	return out.Policies, nil
}

func (n *kubeNode) ctlJSON(ctx context.Context, v any, args ...string) error {
	out, err := n.ctl(ctx, append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("podwallctl %s -o json: decode: %w", strings.Join(args, " "), err)
	}
	return nil
}

// diagnose returns podwalld's view: its status, the policies with the pods
// they select, every attachment, and the rules and ipsets in force in the
// given pods.
func (n *kubeNode) diagnose(ctx context.Context, pods []string) string {
	if n.Daemon == nil {
		return "no daemon (enforcement is off)"
	}
	var b strings.Builder
	cmds := [][]string{{"status"}, {"policies"}, {"pods"}}
	for _, p := range pods {
		cmds = append(cmds, []string{"pod", p})
	}
	for _, args := range cmds {
		out, err := n.ctl(ctx, args...)
		fmt.Fprintf(&b, "$ podwallctl %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
		}
	}
	return b.String()
}

// poll calls check every interval until it returns nil, and returns its last
// error if that does not happen within timeout.
func poll(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(interval):
		}
	}
}
