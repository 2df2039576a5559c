package reliability

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// driftResync is the --resync-period of TestDrift: the daemon repairs
// drift on every resync.
const driftResync = 2 * time.Second

// TestDrift edits a pod's firewall by hand, one way per case. First the
// daemon must repair it by itself, from its periodic drift check, within
// its resync period (the test waits up to five periods) with nothing else
// happening: a probe shows the breach, the log one repair more, the node
// equals the model again and the probe pair is right. Then the same edit
// again: CNI CHECK (through libcni and the real plugin) must fail with code
// 100 naming the drift, and pass once the daemon has repaired it.
func TestDrift(t *testing.T) {
	t.Parallel()
	m := newModel()
	m.namespaces["rl-x"] = map[string]string{}
	m.policies["rl-x"] = []*networkingv1.NetworkPolicy{
		ingressPolicy("rl-x", "server-from-friends", selector("role", "server"), []networkingv1.NetworkPolicyPeer{podPeer("role", "friend")}, 80),
	}
	for _, p := range []struct{ name, role string }{{"server", "server"}, {"friend", "friend"}, {"stranger", "none"}} {
		m.pods[podKey("rl-x", p.name)] = &modelPod{namespace: "rl-x", name: p.name, labels: labelsOf("role", p.role), ports: []int32{80}}
	}
	n := newNode(t, nodeOptions{name: "rldrift", subnet: 4, resync: driftResync, cluster: m})
	ctx := t.Context()
	names := sortedKeys(m.pods)
	pods, err := n.bed.AddPods(ctx, names, bed.ServePort{Protocol: bed.TCP, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range names {
		m.pods[k].attached = pods[i]
	}
	server, friend, stranger := m.pods["rl-x/server"].attached, m.pods["rl-x/friend"].attached, m.pods["rl-x/stranger"].attached
	waitExact(t, n, m)

	// peerSet is the server's set of allowed peers (pw4-0-g<gen>).
	peerSet := func() string {
		rs, err := n.inspect.Inspect(ctx, server.NetnsPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range rs.Sets {
			if strings.HasPrefix(s.Name, "pw4-0-") {
				return s.Name
			}
		}
		t.Fatalf("the server has no peer set: %v", rs.Sets)
		return ""
	}
	tests := []struct {
		name string
		pod  *bed.Pod
		// edit is run in the pod's netns, one command per line.
		edit func() []string
		// breach is the probe that the edit makes wrong (from -> server),
		// and what it should be.
		from    *bed.Pod
		allowed bool
	}{
		{name: "chain flushed", pod: server, edit: func() []string { return []string{"iptables-nft -F PODWALL-INGRESS"} },
			from: stranger, allowed: false},
		{name: "accept inserted before the jump", pod: server, edit: func() []string { return []string{"iptables-nft -I INPUT 1 -j ACCEPT"} },
			from: stranger, allowed: false},
		{name: "jump and chain deleted", pod: server, edit: func() []string {
			return []string{"iptables-nft -D INPUT -j PODWALL-INGRESS", "iptables-nft -F PODWALL-INGRESS", "iptables-nft -X PODWALL-INGRESS"}
		}, from: stranger, allowed: false},
		{name: "member added to a peer set", pod: server, edit: func() []string {
			return []string{"ipset add " + peerSet() + " " + stranger.IPv4().String()}
		}, from: stranger, allowed: false},
		{name: "peer set flushed", pod: server, edit: func() []string { return []string{"ipset flush " + peerSet()} },
			from: friend, allowed: true},
		{name: "IPv6 chain flushed", pod: server, edit: func() []string { return []string{"ip6tables-nft -F PODWALL-INGRESS"} }},
		{name: "stray chain in an open pod", pod: friend, edit: func() []string {
			return []string{"iptables-nft -N PODWALL-INGRESS", "iptables-nft -A PODWALL-INGRESS -j DROP", "iptables-nft -I INPUT 1 -j PODWALL-INGRESS"}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// First the daemon alone: nothing but its periodic drift check
			// can notice (no cluster change, no CHECK).
			repairs := n.logLines("INFO", "firewall repaired")
			edit(t, tc.pod, tc.edit())
			edited := time.Now()
			if tc.from != nil {
				// The breach is real, unless the daemon was quicker.
				got, _ := bed.ProbePod(ctx, tc.from, server, bed.IPv4, 80, bed.TCP, 300*time.Millisecond)
				if got == tc.allowed && n.logLines("INFO", "firewall repaired") == repairs {
					t.Errorf("the edit did not change %s -> server (connected=%t); the case tests nothing", tc.from, got)
				}
			}
			err := harness.Poll(ctx, 5*driftResync, 100*time.Millisecond, func() error {
				if n.logLines("INFO", "firewall repaired") == repairs {
					return fmt.Errorf("no repair logged")
				}
				return nil
			})
			if err != nil {
				t.Fatalf("the daemon did not repair the drift: %v", err)
			}
			t.Logf("repaired %s after the edit", time.Since(edited).Round(10*time.Millisecond))
			waitExact(t, n, m)
			expectProbe(t, stranger, server, false)
			expectProbe(t, friend, server, true)

			// Then CHECK: the same edit is reported as drift (code 100),
			// and repaired again.
			edit(t, tc.pod, tc.edit())
			err = n.bed.CNI().CheckNetworkList(ctx, n.bed.NetworkList(), tc.pod.RuntimeConf())
			if code := cniCode(err); code != 100 {
				t.Errorf("CHECK after the edit: %v (code %d), want CNI code 100 (firewall drift)", err, code)
			} else if !strings.Contains(err.Error(), "drift") {
				t.Errorf("CHECK's error does not say what drifted: %v", err)
			}
			waitExact(t, n, m)
			if err := n.bed.CNI().CheckNetworkList(ctx, n.bed.NetworkList(), tc.pod.RuntimeConf()); err != nil {
				t.Errorf("CHECK after the repair: %v", err)
			}
			expectProbe(t, stranger, server, false)
			expectProbe(t, friend, server, true)
		})
	}
	if n := n.logLines("ERROR"); n > 0 {
		t.Errorf("%d ERROR lines in the daemon's log", n)
	}
}

// edit runs commands (one per string, split on spaces) in p's netns.
func edit(t *testing.T, p *bed.Pod, cmds []string) {
	t.Helper()
	for _, cmd := range cmds {
		if out, err := netnsExec(p.NetnsName, strings.Fields(cmd)...); err != nil {
			t.Fatalf("%s: %v", cmd, out)
		}
	}
}

// TestGCRemovesEverythingElse: the podwall plugin's CNI GC with a list of
// valid attachments makes the daemon forget every other one before it
// returns: podwallctl, the checkpoint and every pod's peer sets no longer
// have them (a GC'd address may be handed out again), while the valid ones
// are untouched; the GC'd pods' netns keep their rules (their paths may
// have been recycled). A second GC removes nothing. Through libcni, GC
// first DELs the cached attachments that are not valid and then runs each
// plugin's GC: that too leaves exactly the valid ones.
func TestGCRemovesEverythingElse(t *testing.T) {
	t.Parallel()
	m := newModel()
	m.namespaces["rl-g"] = map[string]string{}
	m.policies["rl-g"] = []*networkingv1.NetworkPolicy{
		ingressPolicy("rl-g", "server-from-friends", selector("role", "server"), []networkingv1.NetworkPolicyPeer{podPeer("role", "friend")}, 80),
	}
	m.pods["rl-g/server"] = &modelPod{namespace: "rl-g", name: "server", labels: labelsOf("role", "server"), ports: []int32{80}}
	m.pods["rl-g/stranger"] = &modelPod{namespace: "rl-g", name: "stranger", labels: map[string]string{}, ports: []int32{80}}
	for i := range 6 {
		name := fmt.Sprintf("friend%d", i)
		m.pods["rl-g/"+name] = &modelPod{namespace: "rl-g", name: name, labels: labelsOf("role", "friend"), ports: []int32{80}}
	}
	n := newNode(t, nodeOptions{name: "rlgc", subnet: 5, cluster: m})
	ctx := t.Context()
	names := sortedKeys(m.pods)
	pods, err := n.bed.AddPods(ctx, names, bed.ServePort{Protocol: bed.TCP, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range names {
		m.pods[k].attached = pods[i]
	}
	waitExact(t, n, m)
	server := m.pods["rl-g/server"].attached

	// gc runs GC keeping the pods named and checks what is left.
	gc := func(viaLibcni bool, keep ...string) {
		t.Helper()
		var valid []types.GCAttachment
		var validJSON []map[string]string
		var dropped []*bed.Pod
		for _, k := range sortedKeys(m.pods) {
			mp := m.pods[k]
			if mp.attached == nil {
				continue
			}
			if slices.Contains(keep, k) {
				valid = append(valid, types.GCAttachment{ContainerID: mp.attached.ContainerID, IfName: mp.attached.IfName})
				validJSON = append(validJSON, map[string]string{"containerID": mp.attached.ContainerID, "ifname": mp.attached.IfName})
				continue
			}
			dropped = append(dropped, mp.attached)
			mp.attached = nil // in the bed still, but no longer the daemon's
		}
		before := n.logLines("INFO", "gc: forgot attachment")
		if viaLibcni {
			if err := n.bed.CNI().GCNetworkList(ctx, n.bed.NetworkList(), &libcni.GCArgs{ValidAttachments: valid}); err != nil {
				t.Fatalf("CNI GC through libcni: %v", err)
			}
		} else {
			run, err := n.runPlugin(ctx, pluginCall{verb: "GC", pod: server, extra: map[string]any{"cni.dev/valid-attachments": validJSON}})
			if err != nil || run.code != 0 || run.stdout != "" {
				t.Fatalf("podwall GC: %v, code %d %s, stdout %q", err, run.code, run.msg, run.stdout)
			}
			if got := n.logLines("INFO", "gc: forgot attachment") - before; got != len(dropped) {
				t.Errorf("GC logged %d removals, want %d", got, len(dropped))
			}
		}
		// GC returns after the other pods were synced.
		rs, err := n.inspect.Inspect(ctx, server.NetnsPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range dropped {
			if peerSetsContain(rs, p.IPv4()) {
				t.Errorf("after GC returned, the server still allows %s (%s)", p, p.IPv4())
			}
		}
		waitExact(t, n, m)
	}
	gc(false, "rl-g/server", "rl-g/stranger", "rl-g/friend0", "rl-g/friend1", "rl-g/friend2")
	expectProbe(t, m.pods["rl-g/friend0"].attached, server, true)
	expectProbe(t, m.pods["rl-g/stranger"].attached, server, false)
	// The same list again: nothing to remove.
	before := n.logLines("INFO", "gc: forgot attachment")
	gc(false, "rl-g/server", "rl-g/stranger", "rl-g/friend0", "rl-g/friend1", "rl-g/friend2")
	if got := n.logLines("INFO", "gc: forgot attachment"); got != before {
		t.Errorf("a repeated GC logged %d removals", got-before)
	}
	gc(true, "rl-g/server", "rl-g/stranger", "rl-g/friend0")
	expectProbe(t, m.pods["rl-g/friend0"].attached, server, true)
	expectProbe(t, m.pods["rl-g/stranger"].attached, server, false)
}
