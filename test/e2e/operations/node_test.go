package operations

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/podwall/podwall/proto/podwall/v1"
	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// node is one test's node: the real podwalld on its own manifests
// directory, a bed whose chain ends with podwall pointing at it, and
// clients of the daemon's gRPC services.
type node struct {
	t      *testing.T
	name   string
	daemon *harness.Daemon
	bed    *bed.Bed
	status pb.StatusClient
	cni    pb.CNIClient
}

// newNode starts podwalld (with daemonArgs) and a bed named bedName
// ("pwx…") on podCIDR, a /24 inside podRange. Both stop when the test ends:
// the bed first (CNI DEL of every pod), then the daemon, whose log is
// printed if the test failed.
func newNode(t *testing.T, bedName string, podCIDR netip.Prefix, daemonArgs ...string) *node {
	t.Helper()
	bed.RequireRoot(t)
	if !strings.HasPrefix(bedName, "pwx") || !podRange.Contains(podCIDR.Addr()) {
		t.Fatalf("bed %s on %s: want a pwx name and a range inside %s", bedName, podCIDR, podRange)
	}
	binDir := bins.Dir(t)
	cniDir := bed.CNIBinDirForTest(t)
	// A short directory: the socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "pw-"+bedName+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := &node{t: t, name: "node-" + bedName}
	d, err := harness.NewDaemon(binDir, dir, n.name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := d.Start(ctx, daemonArgs...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop podwalld: %v", err)
		}
		if t.Failed() {
			t.Logf("podwalld log (last 100 lines):\n%s", harness.LastLines(d.Log(), 100))
		}
	})
	n.daemon = d
	conn, err := grpc.NewClient("unix://"+d.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.status, n.cni = pb.NewStatusClient(conn), pb.NewCNIClient(conn)
	plugin := map[string]any{"type": "podwall", "socket": d.Socket, "timeout": "10s"}
	n.bed = bed.NewForTest(t, bed.Options{
		Name:      bedName,
		CNIBinDir: binDir, // the built podwall first
		CNIPath:   []string{cniDir},
		PodCIDRv4: podCIDR,
		Extra:     []map[string]any{plugin},
	})
	return n
}

// write writes a manifest file atomically (a dotfile renamed in).
func (n *node) write(name, content string) {
	n.t.Helper()
	if err := n.daemon.WriteManifest(name, content); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) remove(name string) {
	n.t.Helper()
	if err := n.daemon.RemoveManifest(name); err != nil {
		n.t.Fatal(err)
	}
}

// manifestsIn lists the manifest files written so far.
func (n *node) manifestsIn() []string {
	entries, _ := os.ReadDir(n.daemon.ManifestsDir)
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, filepath.Base(e.Name()))
		}
	}
	return out
}

// waitPolicies waits until the daemon has read exactly the policies want
// ("namespace/name").
func (n *node) waitPolicies(ctx context.Context, want []string) error {
	want = slices.Sorted(slices.Values(want))
	return harness.Poll(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		resp, err := n.status.ListPolicies(ctx, &pb.ListPoliciesRequest{})
		if err != nil {
			return err
		}
		var got []string
		for _, p := range resp.GetPolicies() {
			got = append(got, p.GetNamespace()+"/"+p.GetName())
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("podwalld has policies %v, want %v", got, want)
		}
		return nil
	})
}

// waitPods waits until every attachment the daemon serves applied its
// firewall without error and it serves want of them.
func (n *node) waitPods(ctx context.Context, want int) error {
	return harness.Poll(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		resp, err := n.status.ListPods(ctx, &pb.ListPodsRequest{})
		if err != nil {
			return err
		}
		if len(resp.GetPods()) != want {
			return fmt.Errorf("%d attachments, want %d", len(resp.GetPods()), want)
		}
		var errs []error
		for _, p := range resp.GetPods() {
			if p.GetSyncError() != "" {
				errs = append(errs, fmt.Errorf("%s/%s: %s", p.GetNamespace(), p.GetName(), p.GetSyncError()))
			}
		}
		return errors.Join(errs...)
	})
}

// namespaceYAML, podYAML: manifests of this node's objects. Label values
// are always quoted (YAML 1.1 reads a bare y as true).
func namespaceYAML(name string, labels map[string]string) string {
	return fmt.Sprintf("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n%s", name, labelsYAML("  ", labels))
}

// podYAML is a Running pod on nodeName; ips set status.podIPs (for pods on
// other nodes; local pods get theirs from CNI ADD).
func podYAML(namespace, name, nodeName string, labels map[string]string, ports []bed.ServePort, ips ...netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n%s", name, namespace, labelsYAML("  ", labels))
	fmt.Fprintf(&b, "spec:\n  nodeName: %s\n  containers:\n  - name: server\n    image: server\n", nodeName)
	if len(ports) > 0 {
		b.WriteString("    ports:\n")
		for _, p := range ports {
			fmt.Fprintf(&b, "    - {name: %s, containerPort: %d, protocol: %s}\n", portName(p), p.Port, p.Protocol)
		}
	}
	if len(ips) > 0 {
		b.WriteString("status:\n  phase: Running\n  podIPs:\n")
		for _, ip := range ips {
			fmt.Fprintf(&b, "  - ip: %s\n", ip)
		}
	}
	return b.String()
}

// portName is the upstream truth-table naming: serve-80-tcp.
func portName(p bed.ServePort) string {
	return fmt.Sprintf("serve-%d-%s", p.Port, strings.ToLower(p.Protocol))
}

func labelsYAML(indent string, labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(indent + "labels:\n")
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range labels {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "%s  %s: %q\n", indent, k, labels[k])
	}
	return b.String()
}
