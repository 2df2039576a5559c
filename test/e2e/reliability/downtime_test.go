package reliability

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// TestDaemonDownAtCNIVerbs: with podwalld killed, STATUS reports 50 (plugin
// not available) and ADD 11 (try again later), leaving nothing behind; with
// failOpen, ADD prints the prevResult unchanged on stdout and says on stderr
// (or in its logFile) that the pod starts without its firewall, and STATUS
// succeeds with a warning; DEL succeeds. Enforcement holds meanwhile (an
// allowed/denied probe pair). When the daemon is back, the pod whose DEL it
// missed (its netns gone) is forgotten before the socket opens: no pod
// allows its address, the checkpoint and podwallctl no longer list it, the
// node equals the model, STATUS and ADD work again.
func TestDaemonDownAtCNIVerbs(t *testing.T) {
	t.Parallel()
	m := newModel()
	m.namespaces["rl-d"] = map[string]string{}
	m.policies["rl-d"] = []*networkingv1.NetworkPolicy{
		ingressPolicy("rl-d", "server-from-friends", selector("role", "server"), []networkingv1.NetworkPolicyPeer{podPeer("role", "friend")}, 80),
	}
	for _, p := range []struct{ name, role string }{{"server", "server"}, {"friend", "friend"}, {"stranger", "none"}, {"gone", "friend"}} {
		m.pods[podKey("rl-d", p.name)] = &modelPod{namespace: "rl-d", name: p.name, labels: labelsOf("role", p.role), ports: []int32{80}}
	}
	n := newNode(t, nodeOptions{name: "rldown", subnet: 3, cluster: m})
	ctx := t.Context()
	names := sortedKeys(m.pods)
	pods, err := n.bed.AddPods(ctx, names, bed.ServePort{Protocol: bed.TCP, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range names {
		m.pods[k].attached = pods[i]
	}
	server, friend, stranger, gone := m.pods["rl-d/server"].attached, m.pods["rl-d/friend"].attached, m.pods["rl-d/stranger"].attached, m.pods["rl-d/gone"].attached
	waitExact(t, n, m)

	if err := n.daemon.Kill(); err != nil {
		t.Fatal(err)
	}
	// STATUS: plugin not available.
	err = n.bed.CNI().GetStatusNetworkList(ctx, n.bed.NetworkList())
	if code := cniCode(err); code != types.ErrPluginNotAvailable {
		t.Errorf("STATUS with podwalld down: %v (code %d), want CNI code %d", err, code, types.ErrPluginNotAvailable)
	}
	// ADD: try again later, nothing left.
	before, _ := filepath.Glob("/run/netns/pw-rldown-*")
	if _, err := n.bed.AddPod(ctx, "rl-d", "late", bed.PodOptions{}); cniCode(err) != types.ErrTryAgainLater {
		t.Errorf("ADD with podwalld down: %v, want CNI code %d", err, types.ErrTryAgainLater)
	}
	if after, _ := filepath.Glob("/run/netns/pw-rldown-*"); len(after) != len(before) {
		t.Errorf("a failed ADD left a netns behind: before %v, after %v", before, after)
	}
	// failOpen: ADD prints exactly the prevResult and warns on stderr, or in
	// the log file when one is configured.
	prev, err := json.Marshal(stranger.Result)
	if err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(t.TempDir(), "podwall-plugin.log")
	for _, tc := range []struct {
		name  string
		extra map[string]any
	}{
		{"stderr", map[string]any{"failOpen": true}},
		{"logFile", map[string]any{"failOpen": true, "logFile": logFile}},
	} {
		call := pluginCall{verb: "ADD", pod: stranger, containerID: "failopen-" + tc.name, extra: tc.extra}
		run, err := n.runPlugin(ctx, call)
		if err != nil || run.code != 0 {
			t.Errorf("failOpen ADD (%s) with podwalld down: %v, code %d %s", tc.name, err, run.code, run.msg)
			continue
		}
		if !sameJSON(t, run.stdout, string(prev)) {
			t.Errorf("failOpen ADD (%s) printed\n%s\nwant the prevResult unchanged\n%s", tc.name, run.stdout, prev)
		}
		warning := run.stderr
		if tc.name == "logFile" {
			b, _ := os.ReadFile(logFile)
			warning = string(b)
			if strings.Contains(run.stderr, "failOpen") {
				t.Errorf("failOpen ADD with a logFile warned on stderr too: %q", run.stderr)
			}
		}
		if !strings.Contains(warning, "failOpen") || !strings.Contains(warning, "WITHOUT") {
			t.Errorf("failOpen ADD (%s): no warning that the pod starts without its firewall: %q", tc.name, warning)
		}
		call.verb = "STATUS"
		statusRun, err := n.runPlugin(ctx, call)
		if err != nil || statusRun.code != 0 || statusRun.stdout != "" {
			t.Errorf("failOpen STATUS (%s) with podwalld down: %v, code %d, stdout %q; want success and nothing on stdout", tc.name, err, statusRun.code, statusRun.stdout)
		}
	}
	if n := strings.Count(mustRead(t, logFile), "failOpen"); n != 2 {
		t.Errorf("the plugin's log file has %d failOpen warnings, want 2 (ADD and STATUS)", n)
	}
	// Enforcement holds while the daemon is down.
	for range 3 {
		expectProbe(t, stranger, server, false)
		expectProbe(t, friend, server, true)
	}
	// DEL: succeeds; the runtime then removes the netns.
	if err := n.bed.DelPod(ctx, gone); err != nil {
		t.Errorf("DEL with podwalld down: %v", err)
	}
	delete(m.pods, "rl-d/gone")
	if err := n.daemon.RemoveManifest(podFile(&modelPod{namespace: "rl-d", name: "gone"})); err != nil {
		t.Fatal(err)
	}
	// While down, the server still allows the gone pod's address.
	if rs, err := n.inspect.Inspect(ctx, server.NetnsPath); err != nil || !peerSetsContain(rs, gone.IPv4()) {
		t.Errorf("while podwalld was down the server's sets changed (%v): %v", err, rs)
	}

	if err := n.restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Right after the socket answers, nobody allows the gone pod's address.
	if rs, err := n.inspect.Inspect(ctx, server.NetnsPath); err != nil || peerSetsContain(rs, gone.IPv4()) {
		t.Errorf("when podwalld serves again, the server still allows the address of the pod whose DEL it missed (%v): %v", err, rs)
	}
	waitExact(t, n, m)
	if got := n.logLines("WARN", "netns gone, forgetting attachment", gone.ContainerID); got != 1 {
		t.Errorf("%d log lines about forgetting the gone pod, want 1", got)
	}
	if err := n.bed.CNI().GetStatusNetworkList(ctx, n.bed.NetworkList()); err != nil {
		t.Errorf("STATUS after the restart: %v", err)
	}
	late, err := n.bed.AddPod(ctx, "rl-d", "late", bed.PodOptions{})
	if err != nil {
		t.Fatalf("ADD after the restart: %v", err)
	}
	m.pods["rl-d/late"] = &modelPod{namespace: "rl-d", name: "late", labels: map[string]string{}, attached: late}
	waitExact(t, n, m)
	expectProbe(t, stranger, server, false)
	expectProbe(t, friend, server, true)
}

// waitExact fails the test unless the node equals the model within 30 s.
func waitExact(t *testing.T, n *node, m *model) {
	t.Helper()
	err := harness.Poll(t.Context(), 30*time.Second, 300*time.Millisecond, func() error {
		return n.checkExact(t.Context(), m).err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// expectProbe fails the test unless from -> to:80/TCP connects exactly when
// allowed (one probe, no retry).
func expectProbe(t *testing.T, from, to *bed.Pod, allowed bool) {
	t.Helper()
	timeout := 300 * time.Millisecond
	if allowed {
		timeout = 2 * time.Second
	}
	got, err := bed.ProbePod(t.Context(), from, to, bed.IPv4, 80, bed.TCP, timeout)
	if err != nil || got != allowed {
		t.Errorf("%s -> %s:80 connected=%t (err %v), want %t", from, to, got, err, allowed)
	}
}

// peerSetsContain reports whether a peer set a rule in rs matches (not a
// node-address set) holds addr.
func peerSetsContain(rs *dataplane.Ruleset, addr netip.Addr) bool {
	for _, s := range rs.Sets {
		// Only a set a rule matches allows anything: after a rules change
		// the old generation's sets are destroyed a moment later, once the
		// kernel has released them.
		inUse := strings.Contains(rs.V4+rs.V6, "--match-set "+s.Name+" ")
		if strings.Contains(s.Name, "-node-") || !inUse {
			continue
		}
		for _, m := range s.Members {
			if m.Contains(addr) {
				return true
			}
		}
	}
	return false
}

// sameJSON reports whether two JSON texts hold the same value.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if json.Unmarshal([]byte(a), &x) != nil || json.Unmarshal([]byte(b), &y) != nil {
		return false
	}
	ca, _ := json.Marshal(x)
	cb, _ := json.Marshal(y)
	return bytes.Equal(ca, cb)
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
