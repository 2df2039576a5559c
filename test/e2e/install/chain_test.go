package installe2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

const (
	nodeName     = "pwi-node"
	podNamespace = "pwi"
	// allowedPort is what the test policy allows into the server;
	// deniedPort, its twin, is what it does not.
	allowedPort = 8080
	deniedPort  = 8081
	// enforceWithin bounds the wait for a policy to be enforced (the
	// manifests source promises 2 s; the machine is shared).
	enforceWithin = 20 * time.Second
)

// realWorld holds the real-world configuration directories.
var realWorld = filepath.Join(repoRoot, "conflist", "testdata")

// TestPatchedChainEnforces runs `podwalld install-cni` on each real-world
// configuration that podwall patches, loads the result through libcni as a
// runtime does (the ENI plugin replaced by ptp + host-local, helpers
// without a binary here left out), adds two pods through it with the real
// podwalld serving the entry's socket, and checks that a NetworkPolicy
// allowing port 8080 into the server blocks the probe to 8081 while the
// probe to 8080 passes; before the policy both pass. podwalld runs with no
// more capabilities than the DaemonSet gives it.
func TestPatchedChainEnforces(t *testing.T) {
	bed.RequireRoot(t)
	binDir := bins.Dir(t)
	cniDir := bed.CNIBinDirForTest(t)
	d, err := harness.NewDaemon(confinedBinDir(t, binDir), t.TempDir(), nodeName)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WriteManifest("00-namespace.yaml", fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", podNamespace)); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop podwalld: %v", err)
		}
		if t.Failed() {
			t.Logf("podwalld log:\n%s", harness.LastLines(d.Log(), 60))
		}
	})
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string // conflist/testdata/<name>
		subnet int    // the pods' range is 10.206.<subnet>.0/24
		// dropped are the chained helpers left out: no binary here.
		dropped []string
	}{
		{name: "tke", subnet: 11},
		{name: "aws", subnet: 12, dropped: []string{"egress-cni", "portmap"}},
		{name: "bridge", subnet: 13, dropped: []string{"portmap"}},
		{name: "conf", subnet: 14},
		{name: "tke-0.3.1", subnet: 15},
		{name: "flannel", subnet: 16, dropped: []string{"portmap"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			confDir := copyDir(t, filepath.Join(realWorld, tt.name))
			pluginDir := t.TempDir()
			runPodwalld(t, binDir, "install-cni", "--cni-conf-dir", confDir, "--cni-bin-dir", pluginDir,
				"--plugin", filepath.Join(binDir, "podwall"), "--socket", d.Socket)
			patched := readLoadedConfig(t, confDir)
			podCIDR := netip.MustParsePrefix(fmt.Sprintf("10.206.%d.0/24", tt.subnet))
			list, dropped := standIn(t, patched, podCIDR, t.TempDir(), d.Socket)
			if !slices.Equal(dropped, tt.dropped) {
				t.Errorf("left out %v, want %v", dropped, tt.dropped)
			}
			addBlackhole(t, podCIDR)
			chain := newChain(t, list, []string{pluginDir, cniDir})

			server, client := tt.name+"-server", tt.name+"-client"
			for _, name := range []string{server, client} {
				if err := d.WriteManifest("pod-"+name+".yaml", podManifest(name)); err != nil {
					t.Fatal(err)
				}
			}
			srv := chain.addPod(t, server)
			cli := chain.addPod(t, client)
			srv.serve(t, allowedPort, deniedPort)

			expect(t, cli, srv, allowedPort, true)
			expect(t, cli, srv, deniedPort, true)
			if err := d.WriteManifest("policy-"+tt.name+".yaml", policyManifest(server)); err != nil {
				t.Fatal(err)
			}
			expect(t, cli, srv, deniedPort, false)
			expect(t, cli, srv, allowedPort, true)

			pods, err := d.Pods(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(pods, func(p harness.CtlPod) bool { return p.Name == server })
			if i < 0 || !slices.Contains(pods[i].Policies, podNamespace+"/"+server+"-"+fmt.Sprint(allowedPort)) {
				t.Errorf("podwallctl pods does not show %s under its policy: %+v", server, pods)
			}
			if t.Failed() {
				t.Logf("conflist run through libcni:\n%s\n%s", list, d.Diagnose(t.Context(), podNamespace+"/"+server))
			}
		})
	}
}

// containerdDefaultCaps are the capabilities containerd gives a container
// that asks for none (its OCI defaults).
var containerdDefaultCaps = []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
	"SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

// confinedBinDir returns a directory whose podwalld runs the real one with
// only the capabilities the DaemonSet gives the podwalld container
// (containerd's defaults plus its securityContext's add list), through
// setpriv's bounding set; podwall and podwallctl are the real ones.
func confinedBinDir(t *testing.T, binDir string) string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to run podwalld with the DaemonSet's capabilities: %v", err)
	}
	ds := readDaemonSet(t, filepath.Join(installDir, "daemonset.yaml"))
	sc := container(t, ds.Spec.Template.Spec.Containers, "podwalld").SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the podwalld container adds no capabilities")
	}
	caps := slices.Clone(containerdDefaultCaps)
	for _, c := range sc.Capabilities.Add {
		caps = append(caps, string(c))
	}
	bounding := "-all"
	for _, c := range caps {
		bounding += ",+" + strings.ToLower(c)
	}
	dir := t.TempDir()
	wrapper := fmt.Sprintf("#!/bin/sh\nexec %s --bounding-set %s -- %s \"$@\"\n", setpriv, bounding, filepath.Join(binDir, "podwalld"))
	if err := os.WriteFile(filepath.Join(dir, "podwalld"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"podwall", "podwallctl"} {
		if err := os.Symlink(filepath.Join(binDir, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("podwalld runs with the capabilities %v", caps)
	return dir
}

// runPodwalld runs the real podwalld with args and fails the test unless it
// exits 0.
func runPodwalld(t *testing.T, binDir string, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "podwalld"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podwalld %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// copyDir copies the files of src into a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// readLoadedConfig returns the configuration a runtime loads from dir (the
// lexically first *.conf, *.conflist or *.json) and checks it is a
// .conflist.
func readLoadedConfig(t *testing.T, dir string) []byte {
	t.Helper()
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) == 0 {
		t.Fatalf("no configuration in %s: %v", dir, err)
	}
	slices.Sort(files)
	if filepath.Ext(files[0]) != ".conflist" {
		t.Fatalf("the runtime would load %s, not a .conflist", files[0])
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// standIn returns the patched conflist as the test bed can run it: the
// first plugin (the ENI plugin) becomes ptp with host-local IPAM on
// podCIDR, plugins whose binary the bed lacks are left out (returned), the
// rest is kept. It checks that podwall's entry is the second plugin and
// names the daemon's socket.
func standIn(t *testing.T, patched []byte, podCIDR netip.Prefix, ipamDir, socket string) ([]byte, []string) {
	t.Helper()
	var list map[string]json.RawMessage
	if err := json.Unmarshal(patched, &list); err != nil {
		t.Fatal(err)
	}
	var plugins []map[string]any
	if err := json.Unmarshal(list["plugins"], &plugins); err != nil {
		t.Fatal(err)
	}
	if len(plugins) < 2 || plugins[1]["type"] != "podwall" || plugins[1]["socket"] != socket {
		t.Fatalf("podwall is not the second plugin with socket %s:\n%s", socket, patched)
	}
	var kept []map[string]any
	var dropped []string
	for i, p := range plugins {
		switch typ, _ := p["type"].(string); {
		case i == 0:
			kept = append(kept, map[string]any{
				"type": "ptp",
				"ipam": map[string]any{
					"type":    "host-local",
					"dataDir": ipamDir,
					"ranges":  [][]map[string]string{{{"subnet": podCIDR.String()}}},
					"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			})
		case typ == "podwall":
			kept = append(kept, p)
		default:
			dropped = append(dropped, typ)
		}
	}
	raw, err := json.Marshal(kept)
	if err != nil {
		t.Fatal(err)
	}
	list["plugins"] = raw
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return out, dropped
}

// addBlackhole routes prefix to a blackhole on the host (a probe to a gone
// pod dies here) until the test ends.
func addBlackhole(t *testing.T, prefix netip.Prefix) {
	t.Helper()
	route := &netlink.Route{
		Dst:      &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), 32)},
		Type:     unix.RTN_BLACKHOLE,
		Priority: 4242,
		Table:    unix.RT_TABLE_MAIN,
	}
	if err := netlink.RouteReplace(route); err != nil {
		t.Fatalf("blackhole %s: %v", prefix, err)
	}
	t.Cleanup(func() {
		if err := netlink.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
			t.Errorf("delete blackhole %s: %v", prefix, err)
		}
	})
}

// chain is a conflist loaded with libcni, as a runtime loads it.
type chain struct {
	list *libcni.NetworkConfigList
	cni  *libcni.CNIConfig
}

func newChain(t *testing.T, conflist []byte, path []string) *chain {
	t.Helper()
	list, err := libcni.NetworkConfFromBytes(conflist)
	if err != nil {
		t.Fatalf("libcni: %v\n%s", err, conflist)
	}
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &chain{list: list, cni: libcni.NewCNIConfigWithCacheDir(path, t.TempDir(), exec)}
}

// pod is a network namespace attached through a chain.
type pod struct {
	name  string
	netns string // path
	ip    netip.Addr
}

// addPod creates the netns pwi-<name> and runs CNI ADD on it with the
// CNI_ARGS kubelet sends; CNI DEL and the netns' removal run when the test
// ends.
func (c *chain) addPod(t *testing.T, name string) *pod {
	t.Helper()
	path := createNetns(t, "pwi-"+name)
	id := fmt.Sprintf("pwi%x", name)
	rt := &libcni.RuntimeConf{
		ContainerID: id,
		NetNS:       path,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", podNamespace},
			{"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", id},
		},
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.cni.DelNetworkList(ctx, c.list, rt); err != nil {
			t.Errorf("cni del %s: %v", name, err)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	res, err := c.cni.AddNetworkList(ctx, c.list, rt)
	if err != nil {
		t.Fatalf("cni add %s: %v", name, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil || len(r.IPs) == 0 {
		t.Fatalf("cni add %s: result %v, %v", name, res, err)
	}
	ip, _ := netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	return &pod{name: name, netns: path, ip: ip}
}

// createNetns creates the named network namespace (as `ip netns add`) with
// lo up, removed when the test ends.
func createNetns(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join("/run/netns", name)
	errc := make(chan error, 1)
	go func() {
		// The thread never leaves the new netns: it ends with the goroutine.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			t.Errorf("unmount %s: %v", path, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("remove %s: %v", path, err)
		}
	})
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatalf("lo up in %s: %v", name, err)
	}
	return path
}

// serve accepts TCP connections on ports inside the pod's netns and writes
// one line to each, until the test ends.
func (p *pod) serve(t *testing.T, ports ...int) {
	t.Helper()
	err := ns.WithNetNSPath(p.netns, func(ns.NetNS) error {
		for _, port := range ports {
			l, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			t.Cleanup(func() { l.Close() })
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					fmt.Fprintf(c, "%s\n", p.name)
					c.Close()
				}
			}()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", p.name, err)
	}
}

// probe connects from inside from's netns to to:port and reads the line:
// true if that worked within timeout.
func probe(from, to *pod, port int, timeout time.Duration) (bool, error) {
	var conn net.Conn
	err := ns.WithNetNSPath(from.netns, func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp4", netip.AddrPortFrom(to.ip, uint16(port)).String(), timeout)
		if err != nil {
			conn = nil
		}
		return nil
	})
	if err != nil || conn == nil {
		return false, err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == to.name, nil
}

// expect probes until the outcome is want (at most enforceWithin) and fails
// the test otherwise.
func expect(t *testing.T, from, to *pod, port int, want bool) {
	t.Helper()
	deadline := time.Now().Add(enforceWithin)
	for {
		got, err := probe(from, to, port, 2*time.Second)
		if err != nil {
			t.Fatalf("probe %s -> %s:%d: %v", from.name, to.name, port, err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("probe %s -> %s:%d: connected=%v, want %v", from.name, to.name, port, got, want)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// podManifest is a Pod on this node, labelled app=<name>.
func podManifest(name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  labels:
    app: %s
spec:
  nodeName: %s
  containers:
  - name: c
    image: i
`, name, podNamespace, name, nodeName)
}

// policyManifest isolates the server's ingress and allows TCP allowedPort
// from every pod of its namespace.
func policyManifest(server string) string {
	return fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: %s-%d
  namespace: %s
spec:
  podSelector:
    matchLabels:
      app: %s
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {}
    ports:
    - protocol: TCP
      port: %d
`, server, allowedPort, podNamespace, server, allowedPort)
}
