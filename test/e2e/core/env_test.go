// Package core holds podwall's end-to-end tests of the node itself, without a
// Kubernetes API: the real podwalld on a manifests directory, pods on network
// namespaces through the real CNI chain (ptp + host-local + podwall via
// libcni), real connections. It covers the seed's five examples, IPv6, DEL
// cleanup, GC, daemon restarts and outages, broken manifests and podwallctl.
// The upstream suites run in test/e2e.
//
// Address ranges: pods 10.211.0.0/16 and fd00:211::/64 (a /24 and a /80 per
// test bed), external host 203.0.113.0/24 only in TestSeedExamples. Bed names
// start with "e2c".
package core

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

const nodeName = "e2e-node"

// bins are podwall, podwalld and podwallctl: $PODWALL_BIN (make test sets
// it) or a build, removed by TestMain.
var bins = &harness.Bins{TempPrefix: "podwall-e2e-bin-"}

// TestMain runs the tests and removes the binaries bins built.
func TestMain(m *testing.M) {
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// env is one test's node: podwalld on its own manifests directory and a bed
// whose chain ends with podwall pointing at that daemon.
type env struct {
	t      *testing.T
	ctx    context.Context
	daemon *harness.Daemon
	bed    *bed.Bed
}

type envOptions struct {
	name      string // bed name, "e2c…"
	subnet    int    // third octet of the /24 (and the v6 /80) of this bed
	dualStack bool
	external  bool
	cluster   string // manifests written before the daemon starts
	podwall   map[string]any
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	bed.RequireRoot(t)
	binDir := bins.Dir(t)
	ctx := t.Context()
	d, err := harness.NewDaemon(binDir, t.TempDir(), nodeName)
	if err != nil {
		t.Fatal(err)
	}
	if o.cluster != "" {
		if err := d.WriteManifest("00-cluster.yaml", o.cluster); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop podwalld: %v", err)
		}
		if t.Failed() {
			t.Logf("podwalld log:\n%s", d.Log())
		}
	})
	pw := map[string]any{"type": "podwall", "socket": d.Socket, "timeout": "10s"}
	for k, v := range o.podwall {
		pw[k] = v
	}
	opts := bed.Options{
		Name:      o.name,
		CNIBinDir: bed.CNIBinDirForTest(t),
		CNIPath:   []string{binDir},
		PodCIDRv4: netip.MustParsePrefix(fmt.Sprintf("10.211.%d.0/24", o.subnet)),
		Extra:     []map[string]any{pw},
	}
	if o.dualStack {
		opts.PodCIDRv6 = netip.MustParsePrefix(fmt.Sprintf("fd00:211::%x:0:0/96", o.subnet))
	}
	if o.external {
		opts.ExternalCIDRv4 = netip.MustParsePrefix("203.0.113.0/24")
	}
	return &env{t: t, ctx: ctx, daemon: d, bed: bed.NewForTest(t, opts)}
}

// pod adds a pod through the CNI chain and starts TCP servers on ports.
func (e *env) pod(namespace, name string, ports ...int) *bed.Pod {
	e.t.Helper()
	var sp []bed.ServePort
	for _, p := range ports {
		sp = append(sp, bed.ServePort{Protocol: bed.TCP, Port: p})
	}
	return e.bed.AddPodForTest(e.t, namespace, name, sp...)
}

// manifest writes a manifest file into the daemon's directory.
func (e *env) manifest(name, content string) {
	e.t.Helper()
	if err := e.daemon.WriteManifest(name, content); err != nil {
		e.t.Fatal(err)
	}
}

// expect probes from → to:port (TCP, family f) until it shows want or the
// enforcement deadline passes, and fails the test otherwise.
func (e *env) expect(from, to *bed.Pod, f bed.Family, port int, want bool) {
	e.t.Helper()
	got, err := bed.ProbePodUntil(e.ctx, from, to, f, port, bed.TCP, time.Second, want, 10*time.Second)
	if err != nil {
		e.t.Fatalf("probe %s -> %s:%d (%s): %v", from, to, port, f, err)
	}
	if got != want {
		e.t.Errorf("probe %s -> %s:%d (%s): connected=%v, want %v", from, to, port, f, got, want)
	}
}

// ctl runs podwallctl against the env's daemon.
func (e *env) ctl(args ...string) (string, error) {
	return e.daemon.Ctl(e.ctx, args...)
}

// podManifest is a Pod manifest on this node.
func podManifest(namespace, name string, labels map[string]string, ports ...int) string {
	out := fmt.Sprintf("---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\n  namespace: %s\n", name, namespace)
	if len(labels) > 0 {
		out += "  labels:\n"
		for k, v := range labels {
			out += fmt.Sprintf("    %s: %q\n", k, v)
		}
	}
	out += fmt.Sprintf("spec:\n  nodeName: %s\n  containers:\n  - name: c\n    image: i\n", nodeName)
	if len(ports) > 0 {
		out += "    ports:\n"
		for _, p := range ports {
			out += fmt.Sprintf("    - {name: serve-%d, containerPort: %d}\n", p, p)
		}
	}
	return out
}
