package nodeaddr_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/nodeaddr"
	"github.com/podwall/podwall/daemon/source/manifests"
	"github.com/podwall/podwall/daemon/syncer"
)

// This test wires the tracker to the real syncer, dataplane and manifests
// source the way podwalld does, with two "pods" (netns pwn-<id>-a and
// pwn-<id>-b, each linked to the host by a veth like the ptp plugin does) in
// 10.205.0.0/16, and a host link pwn-dummy0 that gets a new address while
// the daemon runs.
const (
	refreshLink     = "pwn-dummy0"
	refreshLinkPeer = "pwn-dummy0p"
	podRange        = "10.205.0.0/16"
	nodeAddr        = "10.205.255.1"
	podAIP, podAGW  = "10.205.1.2", "10.205.1.1"
	podBIP, podBGW  = "10.205.2.2", "10.205.2.1"
	serverPort      = "8080"
	// resyncPeriod is far beyond the test: only the tracker's trigger can
	// make the syncer re-read the node's addresses.
	resyncPeriod = time.Hour
)

func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// cleanup runs args when the test ends, reporting failures other than
// "already gone".
func cleanup(t testing.TB, args ...string) {
	t.Cleanup(func() {
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil && !strings.Contains(string(out), "Cannot find") && !strings.Contains(string(out), "No such") &&
			!strings.Contains(string(out), "does not exist") {
			t.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	})
}

// addPodNetns creates netns name linked to the host by a veth (host side
// hostIf holding gw/32, pod side eth0 holding ip/32), with the routes ptp
// sets up, and returns its path.
func addPodNetns(t *testing.T, name, hostIf, ip, gw string) string {
	t.Helper()
	run(t, "ip", "netns", "add", name)
	cleanup(t, "ip", "netns", "del", name)
	run(t, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", name)
	cleanup(t, "ip", "link", "del", hostIf)
	run(t, "ip", "addr", "add", gw+"/32", "dev", hostIf)
	run(t, "ip", "link", "set", hostIf, "up")
	run(t, "ip", "route", "add", ip+"/32", "dev", hostIf, "src", gw)
	run(t, "ip", "-n", name, "addr", "add", ip+"/32", "dev", "eth0")
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	run(t, "ip", "-n", name, "link", "set", "eth0", "up")
	run(t, "ip", "-n", name, "route", "add", gw+"/32", "dev", "eth0", "scope", "link")
	run(t, "ip", "-n", name, "route", "add", "default", "via", gw, "dev", "eth0")
	return "/run/netns/" + name
}

// serveTCP answers every connection to port in the netns at path with "ok".
func serveTCP(t *testing.T, path, port string) {
	t.Helper()
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		l, err := net.Listen("tcp", ":"+port)
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
				c.Write([]byte("ok"))
				c.Close()
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatalf("serve in %s: %v", path, err)
	}
}

// probe reports whether a TCP connection from the netns at path (the host's
// when path is empty), bound to from, to dst gets the server's answer.
func probe(path, from, dst string) (bool, error) {
	ok := false
	dial := func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 500 * time.Millisecond}
		c, err := d.Dial("tcp", dst)
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) && op.Timeout() {
				return nil // dropped
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		ok = err == nil && string(b) == "ok"
		return nil
	}
	if path == "" {
		return ok, dial()
	}
	return ok, ns.WithNetNSPath(path, func(ns.NetNS) error { return dial() })
}

// eventually polls probe until it reports want or 15 s pass.
func eventually(t *testing.T, what, path, from, dst string, want bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := probe(path, from, dst)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: allowed=%v, want %v", what, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nodeSet returns the members of the pod's node-address set as the kernel
// holds them.
func nodeSet(t *testing.T, data *dataplane.Manager, path string) []netip.Prefix {
	t.Helper()
	rs, err := data.Inspect(context.Background(), path)
	if err != nil {
		t.Fatalf("inspect %s: %v", path, err)
	}
	for _, s := range rs.Sets {
		if strings.HasPrefix(s.Name, "pw4-node-") {
			return s.Members
		}
	}
	t.Fatalf("no pw4-node-* set in %s: %+v", path, rs.Sets)
	return nil
}

const manifestPods = `
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: nsa, labels: {app: a}}
status: {podIP: ` + podAIP + `}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: nsa, labels: {app: b}}
status: {podIP: ` + podBIP + `}
`

const manifestDenyA = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-a, namespace: nsa}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress]
`

// TestNodeAddressRefresh: an address added to a host interface while the
// daemon's pieces run is allowed into a default-deny pod within seconds,
// with the periodic resync out of reach; a probe from another pod stays
// denied; the address removed leaves the pod's node set.
func TestNodeAddressRefresh(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, host links and routes")
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b[:])
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))

	// Host side: a blackhole for the range, forwarding, the link that gets
	// the new address.
	if out, err := exec.Command("ip", "route", "add", "blackhole", podRange, "metric", "4205").CombinedOutput(); err == nil {
		cleanup(t, "ip", "route", "del", "blackhole", podRange, "metric", "4205")
	} else if !strings.Contains(string(out), "File exists") {
		t.Fatalf("blackhole %s: %v: %s", podRange, err, out)
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	exec.Command("ip", "link", "del", refreshLink).Run() // a leftover
	run(t, "ip", "link", "add", refreshLink, "type", "veth", "peer", "name", refreshLinkPeer)
	cleanup(t, "ip", "link", "del", refreshLink)
	run(t, "ip", "link", "set", refreshLink, "up")

	podA := addPodNetns(t, "pwn-"+id+"-a", "pwn"+id+"a", podAIP, podAGW)
	podB := addPodNetns(t, "pwn-"+id+"-b", "pwn"+id+"b", podBIP, podBGW)
	serveTCP(t, podA, serverPort)
	target := net.JoinHostPort(podAIP, serverPort)

	// The daemon's pieces, wired as in podwalld's main.
	dir := t.TempDir()
	manifestDir := filepath.Join(dir, "manifests")
	if err := os.Mkdir(manifestDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(manifestDir, "pods.yaml"), []byte(manifestPods), 0o600); err != nil {
		t.Fatal(err)
	}
	src := manifests.New(manifestDir, log)
	if err := src.Load(); err != nil {
		t.Fatal(err)
	}
	data, err := dataplane.NewManager()
	if err != nil {
		t.Fatal(err)
	}
	store, err := checkpoint.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	tracker := nodeaddr.New(log)
	sync := syncer.New(syncer.Options{NodeName: "node-pwn", Source: src, Data: data, Store: store, Log: log, NodeAddrs: tracker.Addrs})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { src.Run(ctx, sync.Trigger); done <- struct{}{} }()
	go func() { tracker.Run(ctx, sync.Trigger); done <- struct{}{} }()
	go func() { sync.Run(ctx, resyncPeriod); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			<-done
		}
	})
	rec := checkpoint.Attachment{Network: "pwn", ContainerID: "pwn-" + id + "-a", IfName: "eth0", Namespace: "nsa", Name: "a",
		Netns: podA, IPs: []string{podAIP + "/32"}, Gateways: []string{podAGW}, Added: time.Now()}
	if err := sync.Add(ctx, rec); err != nil {
		t.Fatalf("add pod a: %v", err)
	}

	// Connectivity first, then enforcement: pod b reaches pod a until the
	// default-deny policy is in force.
	eventually(t, "pod b -> pod a without a policy", podB, podBIP, target, true)
	if err := os.WriteFile(filepath.Join(manifestDir, "deny.yaml"), []byte(manifestDenyA), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod b -> pod a under default-deny", podB, podBIP, target, false)
	eventually(t, "node (pod a's gateway) -> pod a under default-deny", "", podAGW, target, true)
	if members := nodeSet(t, data, podA); slices.Contains(members, netip.MustParsePrefix(nodeAddr+"/32")) {
		t.Fatalf("node set holds %s before the host has it: %v", nodeAddr, members)
	}

	// The new host address: allowed in within seconds, with no resync due.
	added := time.Now()
	run(t, "ip", "addr", "add", nodeAddr+"/32", "dev", refreshLink)
	eventually(t, "node (new address) -> pod a", "", nodeAddr, target, true)
	t.Logf("a probe from the new host address %s got in %v after it was added", nodeAddr, time.Since(added).Round(time.Millisecond))
	if members := nodeSet(t, data, podA); !slices.Contains(members, netip.MustParsePrefix(nodeAddr+"/32")) {
		t.Errorf("node set lacks %s after the probe from it got in: %v", nodeAddr, members)
	}
	eventually(t, "pod b -> pod a, still denied", podB, podBIP, target, false)

	// Removed from the host: gone from the pod's node set.
	run(t, "ip", "addr", "del", nodeAddr+"/32", "dev", refreshLink)
	deadline := time.Now().Add(15 * time.Second)
	for slices.Contains(nodeSet(t, data, podA), netip.MustParsePrefix(nodeAddr+"/32")) {
		if time.Now().After(deadline) {
			t.Fatalf("node set still holds %s 15 s after the host dropped it", nodeAddr)
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := sync.Del(ctx, rec.Key(), rec.Netns); err != nil {
		t.Errorf("delete pod a: %v", err)
	}
}
