package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// TestDaemonSurface checks what podwalld exposes on a node:
//   - its socket directory and state directory, created beforehand too
//     open (0755, 0777, a 0644 checkpoint), are made 0700, the socket 0600,
//     the checkpoint 0600;
//   - it listens on nothing but its unix socket: no TCP listener, no UDP
//     socket (/proc/<pid>/net/{tcp,tcp6,udp,udp6} by the inodes of its
//     descriptors); with --metrics-address 127.0.0.1:<port>, exactly that one
//     TCP listener, on loopback;
//   - it refuses to start, saying why, only when it cannot have those
//     directories (a regular file in their place);
//   - the plugin refuses a CNI_NETNS that is not a network namespace (a
//     file, a directory, a mount namespace, a missing path) with CNI code 8,
//     and the daemon records nothing.
func TestDaemonSurface(t *testing.T) {
	t.Parallel()
	m := newModel()
	m.namespaces["rl-s"] = map[string]string{}
	m.pods["rl-s/p"] = &modelPod{namespace: "rl-s", name: "p", labels: map[string]string{}}
	n := newNode(t, nodeOptions{name: "rlsec", subnet: 9, cluster: m, beforeStart: func(d *harness.Daemon) {
		must(t, os.MkdirAll(filepath.Dir(d.Socket), 0o755))
		must(t, os.Chmod(filepath.Dir(d.Socket), 0o755))
		must(t, os.MkdirAll(d.StateDir, 0o777))
		must(t, os.Chmod(d.StateDir, 0o777))
		must(t, os.WriteFile(filepath.Join(d.StateDir, "attachments.json"), []byte(`{"version": 1, "attachments": []}`), 0o644))
	}})
	ctx := t.Context()
	p, err := n.bed.AddPod(ctx, "rl-s", "p", bed.PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.pods["rl-s/p"].attached = p
	waitExact(t, n, m)
	for _, f := range []struct {
		path string
		mode fs.FileMode
	}{
		{filepath.Dir(n.daemon.Socket), fs.ModeDir | 0o700},
		{n.daemon.Socket, fs.ModeSocket | 0o600},
		{n.daemon.StateDir, fs.ModeDir | 0o700},
		{filepath.Join(n.daemon.StateDir, "attachments.json"), 0o600},
	} {
		fi, err := os.Lstat(f.path)
		if err != nil {
			t.Error(err)
			continue
		}
		if got := fi.Mode() & (fs.ModeType | fs.ModePerm); got != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, got, f.mode)
		}
	}

	// Listening sockets: the unix socket only.
	snap, err := harness.SnapshotProcess(n.daemon.PID())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.TCPListeners) > 0 || len(snap.UDPSockets) > 0 {
		t.Errorf("without --metrics-address podwalld listens on TCP %v, UDP %v; want nothing", snap.TCPListeners, snap.UDPSockets)
	}
	if !slices.Equal(snap.UnixListeners, []string{n.daemon.Socket}) {
		t.Errorf("podwalld's listening unix sockets are %q, want only %s", snap.UnixListeners, n.daemon.Socket)
	}
	t.Logf("without --metrics-address: TCP listeners %v, UDP sockets %v, unix listeners %q", snap.TCPListeners, snap.UDPSockets, snap.UnixListeners)

	// With --metrics-address on loopback: that listener and no other.
	metrics, err := harness.FreeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	must(t, n.daemon.Stop())
	n.args = append(n.args, "--metrics-address", metrics)
	must(t, n.restart(ctx))
	snap, err = harness.SnapshotProcess(n.daemon.PID())
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.AddrPort{netip.MustParseAddrPort(metrics)}; !slices.Equal(snap.TCPListeners, want) || len(snap.UDPSockets) > 0 {
		t.Errorf("with --metrics-address %s podwalld listens on TCP %v, UDP %v; want TCP %v only", metrics, snap.TCPListeners, snap.UDPSockets, want)
	}
	if err := readyz(ctx, metrics); err != nil {
		t.Error(err)
	}
	t.Logf("with --metrics-address %s: TCP listeners %v, UDP sockets %v", metrics, snap.TCPListeners, snap.UDPSockets)

	// Refuse to start only when the directories cannot be had.
	file := filepath.Join(t.TempDir(), "a-file")
	must(t, os.WriteFile(file, nil, 0o600))
	for _, tc := range []struct {
		name string
		args []string
		says string
	}{
		{"state dir is a file", []string{"--state-dir", file, "--socket", filepath.Join(t.TempDir(), "s.sock")}, "state dir"},
		{"socket dir is a file", []string{"--state-dir", t.TempDir(), "--socket", filepath.Join(file, "s.sock")}, "socket"},
	} {
		code, out := runDaemonOnce(t, n, tc.args...)
		if code == 0 || !strings.Contains(out, tc.says) {
			t.Errorf("%s: podwalld exited %d, output:\n%s\nwant a failure mentioning %q", tc.name, code, out, tc.says)
		}
	}

	// The plugin validates CNI_NETNS.
	dir := t.TempDir()
	for _, netns := range []string{file, dir, "/proc/self/ns/mnt", filepath.Join(dir, "missing")} {
		run, err := n.runPlugin(ctx, pluginCall{verb: "ADD", pod: p, containerID: "bad-netns", netns: netns})
		if err != nil || run.code != types.ErrInvalidNetNS {
			t.Errorf("ADD with CNI_NETNS=%s: %v, code %d %s; want %d", netns, err, run.code, run.msg, types.ErrInvalidNetNS)
		}
	}
	if pods, err := n.daemon.Pods(ctx); err != nil || len(pods) != 1 {
		t.Errorf("after ADDs with bad netns paths the daemon has %d attachments (%v), want 1", len(pods), err)
	}
}

// runDaemonOnce runs podwalld with the node's manifests and args until it
// exits (at most 20 s) and returns its exit code and output.
func runDaemonOnce(t *testing.T, n *node, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(n.binDir, "podwalld"),
		append([]string{"--manifests", n.daemon.ManifestsDir, "--node-name", "rl-refuse"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode(), out.String()
	}
	if err != nil {
		return -1, fmt.Sprintf("%v\n%s", err, out.String())
	}
	return 0, out.String()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRBACReadOnly: install/rbac.yaml grants podwalld reading only: every
// rule's verbs are get, list or watch, no wildcard, no Secrets, no
// non-resource URLs, and it is bound to podwall's ServiceAccount only.
func TestRBACReadOnly(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "install", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	readOnly := []string{"get", "list", "watch"}
	roles, bindings := 0, 0
	for i, doc := range strings.Split(string(data), "\n---") {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("document %d: %v", i+1, err)
		}
		switch meta.Kind {
		case "ClusterRole", "Role":
			roles++
			var role rbacv1.ClusterRole
			if err := yaml.UnmarshalStrict([]byte(doc), &role); err != nil {
				t.Fatalf("document %d: %v", i+1, err)
			}
			for _, r := range role.Rules {
				for _, v := range r.Verbs {
					if !slices.Contains(readOnly, v) {
						t.Errorf("%s %s: verb %q on %v", meta.Kind, role.Name, v, r.Resources)
					}
				}
				for _, list := range [][]string{r.APIGroups, r.Resources, r.ResourceNames} {
					if slices.Contains(list, "*") {
						t.Errorf("%s %s: wildcard in %v", meta.Kind, role.Name, r)
					}
				}
				if slices.Contains(r.Resources, "secrets") {
					t.Errorf("%s %s reads secrets", meta.Kind, role.Name)
				}
				if len(r.NonResourceURLs) > 0 {
					t.Errorf("%s %s: non-resource URLs %v", meta.Kind, role.Name, r.NonResourceURLs)
				}
			}
		case "ClusterRoleBinding", "RoleBinding":
			bindings++
			var b rbacv1.ClusterRoleBinding
			if err := yaml.UnmarshalStrict([]byte(doc), &b); err != nil {
				t.Fatalf("document %d: %v", i+1, err)
			}
			for _, s := range b.Subjects {
				if s.Kind != rbacv1.ServiceAccountKind || s.Name != "podwall" {
					t.Errorf("%s %s binds %s %s", meta.Kind, b.Name, s.Kind, s.Name)
				}
			}
		}
	}
	if roles == 0 || bindings == 0 {
		t.Errorf("install/rbac.yaml has %d roles and %d bindings; want both", roles, bindings)
	}
}
