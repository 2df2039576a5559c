package e2e

// The shared harness of this package: a node made of a test bed (pods on
// network namespaces through ptp + host-local + podwall) and the real
// podwalld reading a manifests directory, plus helpers that write that
// directory's Namespace, Pod and NetworkPolicy manifests.
//
//	env := newEnv(t, envOptions{Name: "e2n1", PodCIDRv4: netip.MustParsePrefix("10.210.200.0/24")})
//	env.writeNamespace("ns", map[string]string{"team": "a"})
//	env.writePod("ns", "web", map[string]string{"app": "web"}, []corev1.ContainerPort{{Name: "http", ContainerPort: 80}})
//	web := env.Bed.AddPodForTest(t, "ns", "web", bed.ServePort{Protocol: bed.TCP, Port: 80})
//	env.writePolicy(np)
//
// Manifest files are named namespace-<name>.yaml, pod-<namespace>-<name>.yaml
// and policy-<namespace>-<name>.yaml and written atomically (temp file +
// rename). Pods are on the daemon's node, so podwalld treats those attached
// through the bed as local and takes their addresses from CNI ADD.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// bedPrefix starts the name of every bed of this package.
const bedPrefix = "e2n"

// podRangeV4 holds every pod range of this package's beds.
var podRangeV4 = netip.MustParsePrefix("10.210.0.0/16")

// requireE2E skips the test unless it runs as root.
func requireE2E(t testing.TB) {
	t.Helper()
	bed.RequireRoot(t)
}

// envOptions configures newEnv.
type envOptions struct {
	// Name names the bed ("e2n…", 1–10 of [a-z0-9], unique among the beds
	// running at once) and the node, "node-<Name>".
	Name string
	// PodCIDRv4, PodCIDRv6 and ExternalCIDRv4 are the bed's ranges (see
	// bed.Options); each must be used by this env only.
	PodCIDRv4, PodCIDRv6, ExternalCIDRv4 netip.Prefix
	// NoEnforcement leaves podwall out of the chain and runs no daemon.
	// Manifests are still written, to a directory nothing reads.
	NoEnforcement bool
	// Plugin holds extra keys of podwall's plugin configuration (failOpen,
	// timeout); newEnv sets type and socket.
	Plugin map[string]any
	// DaemonArgs are extra podwalld flags.
	DaemonArgs []string
}

// testEnv is one node: a bed whose chain ends with podwall, and the podwalld
// it talks to, reading ManifestsDir.
type testEnv struct {
	Bed          *bed.Bed
	Daemon       *harness.Daemon // nil with NoEnforcement
	NodeName     string
	ManifestsDir string

	mu      sync.Mutex
	barrier int // generation of the last barrier written by waitRead
}

// newEnv starts podwalld (unless opts.NoEnforcement) and a bed chaining
// podwall to it. Both are stopped when the test ends: the bed first (CNI DEL
// of every pod still there, its netns, routes), then the daemon, whose log is
// printed if the test failed.
func newEnv(t testing.TB, opts envOptions) *testEnv {
	t.Helper()
	requireE2E(t)
	if !strings.HasPrefix(opts.Name, bedPrefix) {
		t.Fatalf("bed name %q: want the prefix %q", opts.Name, bedPrefix)
	}
	cniDir := bed.CNIBinDirForTest(t)
	// A short directory: the daemon's socket path must fit in sun_path.
	dir, err := os.MkdirTemp("", "pw-"+opts.Name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &testEnv{NodeName: "node-" + opts.Name}

	bedOpts := bed.Options{
		Name:           opts.Name,
		CNIBinDir:      cniDir,
		PodCIDRv4:      opts.PodCIDRv4,
		PodCIDRv6:      opts.PodCIDRv6,
		ExternalCIDRv4: opts.ExternalCIDRv4,
	}
	if opts.NoEnforcement {
		e.ManifestsDir = filepath.Join(dir, "manifests")
		if err := os.Mkdir(e.ManifestsDir, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		binDir := bins.Dir(t)
		d, err := harness.NewDaemon(binDir, dir, e.NodeName)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Start(ctx, opts.DaemonArgs...); err != nil {
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
		e.Daemon, e.ManifestsDir = d, d.ManifestsDir
		plugin := map[string]any{"timeout": "10s"}
		for k, v := range opts.Plugin {
			plugin[k] = v
		}
		plugin["type"], plugin["socket"] = "podwall", d.Socket
		// The built podwall comes first, so a stale one next to the
		// reference plugins is never run.
		bedOpts.CNIBinDir, bedOpts.CNIPath = binDir, []string{cniDir}
		bedOpts.Extra = []map[string]any{plugin}
	}
	e.Bed = bed.NewForTest(t, bedOpts)
	return e
}

// namespaceFile, podFile and policyFile name the manifest files of objects.
func namespaceFile(name string) string { return "namespace-" + name + ".yaml" }

func podFile(namespace, name string) string { return "pod-" + namespace + "-" + name + ".yaml" }

func policyFile(namespace, name string) string {
	return "policy-" + namespace + "-" + name + ".yaml"
}

// renderNamespace renders a Namespace manifest. The daemon adds the
// kubernetes.io/metadata.name label itself.
func renderNamespace(name string, labels map[string]string) ([]byte, error) {
	ns := &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}
	return yaml.Marshal(ns)
}

// renderPod renders a Pod manifest on node with one container serving ports.
func renderPod(namespace, name, node string, labels map[string]string, ports []corev1.ContainerPort) ([]byte, error) {
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:   node,
			Containers: []corev1.Container{{Name: "server", Image: "server", Ports: ports}},
		},
	}
	return yaml.Marshal(pod)
}

// renderPolicy renders a NetworkPolicy manifest (a copy of np with apiVersion
// and kind set).
func renderPolicy(np *networkingv1.NetworkPolicy) ([]byte, error) {
	if np == nil {
		return nil, errors.New("render networkpolicy: nil")
	}
	np = np.DeepCopy()
	np.TypeMeta = metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"}
	return yaml.Marshal(np)
}

// writeNamespace writes namespace-<name>.yaml.
func (e *testEnv) writeNamespace(name string, labels map[string]string) error {
	b, err := renderNamespace(name, labels)
	if err != nil {
		return fmt.Errorf("render namespace %s: %w", name, err)
	}
	return e.writeManifest(namespaceFile(name), b)
}

// writePod writes pod-<namespace>-<name>.yaml, a pod on the env's node.
func (e *testEnv) writePod(namespace, name string, labels map[string]string, ports []corev1.ContainerPort) error {
	b, err := renderPod(namespace, name, e.NodeName, labels, ports)
	if err != nil {
		return fmt.Errorf("render pod %s/%s: %w", namespace, name, err)
	}
	return e.writeManifest(podFile(namespace, name), b)
}

// writePolicy writes policy-<namespace>-<name>.yaml.
func (e *testEnv) writePolicy(np *networkingv1.NetworkPolicy) error {
	b, err := renderPolicy(np)
	if err != nil {
		return fmt.Errorf("render networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
	}
	return e.writeManifest(policyFile(np.Namespace, np.Name), b)
}

// writeManifest writes file in the manifests directory atomically: a
// dotfile (which the daemon ignores) renamed into place.
func (e *testEnv) writeManifest(file string, content []byte) error {
	if file == "" || strings.ContainsRune(file, '/') || strings.HasPrefix(file, ".") {
		return fmt.Errorf("write manifest: invalid file name %q", file)
	}
	tmp, err := os.CreateTemp(e.ManifestsDir, "."+file+".tmp-")
	if err != nil {
		return fmt.Errorf("write manifest %s: %w", file, err)
	}
	_, err = tmp.Write(content)
	err = errors.Join(err, tmp.Chmod(0o644), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(e.ManifestsDir, file))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write manifest %s: %w", file, err)
	}
	return nil
}

// removeManifest removes file from the manifests directory; a missing file
// is not an error.
func (e *testEnv) removeManifest(file string) error {
	if file == "" || strings.ContainsRune(file, '/') {
		return fmt.Errorf("remove manifest: invalid file name %q", file)
	}
	if err := os.Remove(filepath.Join(e.ManifestsDir, file)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove manifest %s: %w", file, err)
	}
	return nil
}

// barrierFile holds the barrier policy of waitRead; it sorts after every
// other manifest file.
const (
	barrierFile      = "zz-e2n-barrier.yaml"
	barrierNamespace = "e2n-barrier"
)

// waitRead returns once podwalld has read every manifest written before the
// call: it writes a barrier NetworkPolicy (in a namespace without pods, so it
// selects nothing) and waits until `podwallctl policies` lists it. The daemon
// reads the directory in one pass and the barrier file is written last, so
// whatever was written before is read by then; enforcing it may take one
// more sync. Without a daemon it returns at once.
func (e *testEnv) waitRead(ctx context.Context) error {
	if e.Daemon == nil {
		return nil
	}
	e.mu.Lock()
	e.barrier++
	name := fmt.Sprintf("barrier-%d", e.barrier)
	e.mu.Unlock()
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: barrierNamespace, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		},
	}
	b, err := renderPolicy(np)
	if err != nil {
		return fmt.Errorf("render barrier: %w", err)
	}
	if err := e.writeManifest(barrierFile, b); err != nil {
		return err
	}
	return harness.Poll(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		policies, err := e.Daemon.Policies(ctx)
		if err != nil {
			return err
		}
		for _, p := range policies {
			if p.Namespace == barrierNamespace && p.Name == name {
				return nil
			}
		}
		return fmt.Errorf("podwalld has not read barrier %s/%s", barrierNamespace, name)
	})
}
