package core

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/examples"
)

// TestSeedExamples applies the seed's five example policies one after
// another and checks every (client, server, port) against the intent: each
// example has allowed probes and denied ones.
func TestSeedExamples(t *testing.T) {
	e := newEnv(t, envOptions{name: "e2cex", subnet: 1, external: true, cluster: examples.ClusterManifest(nodeName)})
	type target struct {
		ep  examples.Endpoint
		pod *bed.Pod
	}
	var all []target
	for _, p := range examples.Pods {
		all = append(all, target{examples.Endpoint{Namespace: p.Namespace, Name: p.Name}, e.pod(p.Namespace, p.Name, p.Ports...)})
	}
	ext := e.bed.External()
	if err := ext.Serve(bed.ServePort{Protocol: bed.TCP, Port: 80}, bed.ServePort{Protocol: bed.TCP, Port: 5978}); err != nil {
		t.Fatal(err)
	}
	all = append(all, target{examples.Endpoint{Name: examples.External}, ext})
	ports := map[string][]int{examples.External: examples.ExternalPorts}
	for _, p := range examples.Pods {
		ports[p.Key()] = p.Ports
	}

	prev := ""
	for _, ex := range examples.All() {
		t.Run(fmt.Sprintf("example %d", ex.N), func(t *testing.T) {
			if prev != "" {
				if err := e.daemon.RemoveManifest(prev); err != nil {
					t.Fatal(err)
				}
			}
			prev = fmt.Sprintf("example-%d.yaml", ex.N)
			e.manifest(prev, ex.Manifest)
			var allowed, denied atomic.Int32
			var wg sync.WaitGroup
			sem := make(chan struct{}, 16)
			for _, from := range all {
				for _, to := range all {
					if from.ep == to.ep {
						continue
					}
					for _, port := range ports[to.ep.String()] {
						want := ex.Intends(from.ep, to.ep, port)
						if want {
							allowed.Add(1)
						} else {
							denied.Add(1)
						}
						wg.Add(1)
						sem <- struct{}{}
						go func() {
							defer wg.Done()
							defer func() { <-sem }()
							got, err := bed.ProbeUntil(e.ctx, from.pod, to.pod.IPv4(), port, bed.TCP, time.Second, want, 10*time.Second)
							if err != nil || got != want {
								t.Errorf("%s -> %s:%d connected=%v (err %v), policy intends %v", from.ep, to.ep, port, got, err, want)
							}
						}()
					}
				}
			}
			wg.Wait()
			if allowed.Load() == 0 || denied.Load() == 0 {
				t.Fatalf("example %d probes %d allowed and %d denied cells; each needs both", ex.N, allowed.Load(), denied.Load())
			}
		})
	}
}

// TestIPv6 runs dual-stack pods: a pod selector and an IPv6 ipBlock are
// enforced on IPv6, and IPv4 is enforced alongside.
func TestIPv6(t *testing.T) {
	e := newEnv(t, envOptions{name: "e2c6", subnet: 2, dualStack: true, cluster: podManifest("v6", "a", map[string]string{"app": "a"}, 80, 81) +
		podManifest("v6", "b", map[string]string{"app": "b"}) + podManifest("v6", "c", map[string]string{"app": "c"}, 80)})
	a, b, c := e.pod("v6", "a", 80, 81), e.pod("v6", "b"), e.pod("v6", "c", 80)
	e.manifest("policy.yaml", fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b, namespace: v6}
spec:
  podSelector: {matchLabels: {app: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: b}}}]
    ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-egress-to-a-v6, namespace: v6}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: %s/128}}]
  - to: [{ipBlock: {cidr: %s/32}}]
`, a.IPv6(), a.IPv4()))
	for _, f := range []bed.Family{bed.IPv6, bed.IPv4} {
		e.expect(b, a, f, 80, true)  // allowed peer and port
		e.expect(b, a, f, 81, false) // same peer, other port
		e.expect(c, a, f, 80, false) // other peer
		e.expect(b, c, f, 80, false) // b's egress only reaches a
		e.expect(a, c, f, 80, true)  // a's egress is not isolated
	}
}

// TestDelCleanup: DEL removes the pod's rules from its netns (when the netns
// outlives DEL), forgets the attachment, and the pods that allowed it stop
// allowing its address before DEL returns.
func TestDelCleanup(t *testing.T) {
	e := newEnv(t, envOptions{name: "e2cdel", subnet: 3, cluster: podManifest("d", "server", map[string]string{"app": "server"}, 80) +
		podManifest("d", "client", map[string]string{"app": "client"})})
	server, client := e.pod("d", "server", 80), e.pod("d", "client")
	e.manifest("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-client, namespace: d}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {app: client}}}]
`)
	e.expect(client, server, bed.IPv4, 80, true)
	waitFor(t, "client's address in the server's peer set", func() bool {
		return strings.Contains(mustCtl(t, e, "pod", "d/server", "-o", "json"), client.IPv4().String())
	})

	// DEL the client through libcni, keeping its netns (as a runtime does
	// before it destroys the sandbox).
	if err := e.bed.CNI().DelNetworkList(e.ctx, e.bed.NetworkList(), client.RuntimeConf()); err != nil {
		t.Fatalf("CNI DEL: %v", err)
	}
	if out := mustCtl(t, e, "pod", "d/server", "-o", "json"); strings.Contains(out, `"`+client.IPv4().String()) {
		t.Errorf("after DEL returned, the server still allows the deleted client's address:\n%s", out)
	}
	if out := mustCtl(t, e, "pods", "-o", "json"); strings.Contains(out, client.ContainerID) {
		t.Errorf("podwallctl pods still lists the deleted pod:\n%s", out)
	}
	if _, err := e.ctl("pod", "d/client"); err == nil {
		t.Error("podwallctl pod d/client succeeded after DEL; want a non-zero exit")
	}
	cp, err := os.ReadFile(e.daemon.StateDir + "/attachments.json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(cp), client.ContainerID) {
		t.Errorf("checkpoint still holds the deleted attachment:\n%s", cp)
	}
	// The server's own rules are untouched; DEL of the server cleans its netns.
	if out := netnsExec(t, server.NetnsName, "iptables-save"); !strings.Contains(out, "PODWALL-INGRESS") {
		t.Fatalf("server lost its rules:\n%s", out)
	}
	if err := e.bed.CNI().DelNetworkList(e.ctx, e.bed.NetworkList(), server.RuntimeConf()); err != nil {
		t.Fatalf("CNI DEL: %v", err)
	}
	if out := netnsExec(t, server.NetnsName, "iptables-save"); strings.Contains(out, "PODWALL") {
		t.Errorf("rules left in the netns after DEL:\n%s", out)
	}
	if out := netnsExec(t, server.NetnsName, "ipset", "list", "-n"); strings.TrimSpace(out) != "" {
		t.Errorf("ipsets left in the netns after DEL: %s", out)
	}
}

// TestDaemonRestartKeepsEnforcement kills podwalld with SIGKILL while a
// denied probe runs in a loop: the probe never connects while the daemon is
// down or restarting, the allowed twin keeps connecting, and after the
// restart the daemon knows the pods and enforces new changes.
func TestDaemonRestartKeepsEnforcement(t *testing.T) {
	e := newEnv(t, envOptions{name: "e2crst", subnet: 4, cluster: podManifest("r", "server", map[string]string{"app": "server"}, 80) +
		podManifest("r", "friend", map[string]string{"app": "friend"}) + podManifest("r", "stranger", nil)})
	server, friend, stranger := e.pod("r", "server", 80), e.pod("r", "friend"), e.pod("r", "stranger")
	e.manifest("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-friend, namespace: r}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: friend}}}]
`)
	e.expect(friend, server, bed.IPv4, 80, true)
	e.expect(stranger, server, bed.IPv4, 80, false)

	stop := make(chan struct{})
	var leaks, friendFails, probes atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			probes.Add(1)
			if ok, _ := bed.ProbePod(e.ctx, stranger, server, bed.IPv4, 80, bed.TCP, 200*time.Millisecond); ok {
				leaks.Add(1)
			}
			if ok, _ := bed.ProbePod(e.ctx, friend, server, bed.IPv4, 80, bed.TCP, time.Second); !ok {
				friendFails.Add(1)
			}
		}
	}()
	for range 3 {
		if err := e.daemon.Kill(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond) // down
		if err := e.daemon.Start(e.ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if leaks.Load() > 0 {
		t.Errorf("the denied probe connected %d times (of %d) across daemon restarts", leaks.Load(), probes.Load())
	}
	if friendFails.Load() > 0 {
		t.Errorf("the allowed probe failed %d times (of %d) across daemon restarts", friendFails.Load(), probes.Load())
	}
	if out := mustCtl(t, e, "pods"); !strings.Contains(out, "server") || !strings.Contains(out, "stranger") {
		t.Errorf("restarted daemon does not list the pods from its checkpoint:\n%s", out)
	}
	// A change after the restart is enforced: the stranger is now allowed.
	e.manifest("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-friend, namespace: r}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {}}]
`)
	e.expect(stranger, server, bed.IPv4, 80, true)
}

// TestDaemonDown: with podwalld unreachable, CNI ADD fails with "try again
// later" (11) and leaves nothing behind, DEL succeeds, and once the daemon is
// back, CNI GC drops the attachment whose DEL it missed.
func TestDaemonDown(t *testing.T) {
	e := newEnv(t, envOptions{name: "e2cdown", subnet: 5})
	missed, kept := e.pod("n", "missed"), e.pod("n", "kept")
	if err := e.daemon.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err := e.bed.AddPod(e.ctx, "n", "new", bed.PodOptions{})
	if err == nil {
		t.Fatal("CNI ADD succeeded with podwalld down; the pod would run unprotected")
	}
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrTryAgainLater {
		t.Errorf("ADD error = %v, want CNI code %d (try again later)", err, types.ErrTryAgainLater)
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); strings.Contains(string(out), "pw-e2cdown-2") {
		t.Errorf("failed ADD left its netns behind:\n%s", out)
	}
	// DEL while the daemon is down succeeds; the runtime keeps the netns a
	// little longer, so the restarted daemon still finds it.
	if err := e.bed.CNI().DelNetworkList(e.ctx, e.bed.NetworkList(), missed.RuntimeConf()); err != nil {
		t.Fatalf("CNI DEL with podwalld down: %v", err)
	}
	if err := e.daemon.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	if out := mustCtl(t, e, "pods", "-o", "json"); !strings.Contains(out, missed.ContainerID) {
		t.Fatalf("the attachment whose DEL was missed should be known before GC:\n%s", out)
	}
	var valid []types.GCAttachment
	for _, a := range e.bed.Attachments() {
		if a.ContainerID != missed.ContainerID {
			valid = append(valid, a)
		}
	}
	if err := e.bed.CNI().GCNetworkList(e.ctx, e.bed.NetworkList(), &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("CNI GC: %v", err)
	}
	out := mustCtl(t, e, "pods", "-o", "json")
	if strings.Contains(out, missed.ContainerID) {
		t.Errorf("GC did not remove the stale attachment:\n%s", out)
	}
	if !strings.Contains(out, kept.ContainerID) {
		t.Errorf("GC removed a valid attachment:\n%s", out)
	}
}

// TestBrokenManifestKeepsLastGood: a manifest broken in place is reported
// (podwallctl status names the file) and its last good content stays
// enforced; fixing it clears the report.
func TestBrokenManifestKeepsLastGood(t *testing.T) {
	e := newEnv(t, envOptions{name: "e2cbad", subnet: 6, cluster: podManifest("b", "server", map[string]string{"app": "server"}, 80) +
		podManifest("b", "friend", map[string]string{"app": "friend"}) + podManifest("b", "stranger", nil)})
	server, friend, stranger := e.pod("b", "server", 80), e.pod("b", "friend"), e.pod("b", "stranger")
	good := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-from-friend, namespace: b}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: friend}}}]
`
	e.manifest("policy.yaml", good)
	e.expect(stranger, server, bed.IPv4, 80, false)
	e.manifest("policy.yaml", good+"  - from: [{podSelector: {matchLabels: {app: [oops\n")
	waitFor(t, "the broken file in podwallctl status", func() bool {
		out, _ := e.ctl("status")
		return strings.Contains(out, "policy.yaml")
	})
	e.expect(friend, server, bed.IPv4, 80, true)
	e.expect(stranger, server, bed.IPv4, 80, false)
	if !strings.Contains(e.daemon.Log(), "policy.yaml") {
		t.Error("podwalld logged nothing naming the broken file")
	}
	e.manifest("policy.yaml", strings.Replace(good, "app: friend", "app: nobody", 1))
	waitFor(t, "the report to clear", func() bool {
		out, _ := e.ctl("status")
		return !strings.Contains(out, "policy.yaml")
	})
	e.expect(friend, server, bed.IPv4, 80, false)
}

// TestUnknownPod: an ADD for a pod the manifests do not describe is a pod
// with no labels and no ports: a namespace-wide policy selects it, a
// label-selecting one does not.
func TestUnknownPod(t *testing.T) {
	e := newEnv(t, envOptions{name: "e2cunk", subnet: 7})
	e.manifest("policy.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-app-x, namespace: u}
spec:
  podSelector: {matchLabels: {app: x}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: v}
spec:
  podSelector: {}
`)
	time.Sleep(1500 * time.Millisecond) // let the source read it before the pods appear
	inU, inV, client := e.pod("u", "mystery", 80), e.pod("v", "mystery", 80), e.pod("w", "client")
	e.expect(client, inU, bed.IPv4, 80, true)
	e.expect(client, inV, bed.IPv4, 80, false)
}

// TestPodwallctl checks the JSON contract and the exit statuses.
func TestPodwallctl(t *testing.T) {
	e := newEnv(t, envOptions{name: "e2cctl", subnet: 8, cluster: podManifest("c", "p", map[string]string{"app": "p"}, 80)})
	p := e.pod("c", "p", 80)
	e.manifest("policy.yaml", "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: c}\nspec: {podSelector: {}}\n")
	waitFor(t, "the policy to select the pod", func() bool {
		out, _ := e.ctl("pods")
		return strings.Contains(out, "c/deny")
	})
	var pods struct {
		Pods []map[string]any `json:"pods"`
	}
	if err := json.Unmarshal([]byte(mustCtl(t, e, "pods", "-o", "json")), &pods); err != nil {
		t.Fatal(err)
	}
	if len(pods.Pods) != 1 {
		t.Fatalf("pods -o json: %d pods, want 1", len(pods.Pods))
	}
	for _, key := range []string{"namespace", "name", "containerID", "ifName", "ips", "policies"} {
		if _, ok := pods.Pods[0][key]; !ok {
			t.Errorf("pods -o json lacks %q: %v", key, pods.Pods[0])
		}
	}
	if got := pods.Pods[0]["containerID"]; got != p.ContainerID {
		t.Errorf("containerID = %v, want %s", got, p.ContainerID)
	}
	if got := fmt.Sprint(pods.Pods[0]["policies"]); got != "[c/deny]" {
		t.Errorf("policies = %s, want [c/deny]", got)
	}
	for _, args := range [][]string{{"status", "-o", "json"}, {"policies", "-o", "json"}, {"pod", "c/p", "-o", "json"}} {
		out := mustCtl(t, e, args...)
		if !json.Valid([]byte(out)) {
			t.Errorf("podwallctl %v: not JSON:\n%s", args, out)
		}
	}
	if _, err := e.ctl("pod", "c/nope"); err == nil {
		t.Error("podwallctl pod c/nope exited 0; want non-zero for a pod that is not attached")
	}
	if _, err := e.daemon.Ctl(e.ctx, "--socket", e.daemon.Dir+"/nothing.sock", "status"); err == nil {
		t.Error("podwallctl status against a missing socket exited 0; want non-zero")
	}
}

func mustCtl(t *testing.T, e *env, args ...string) string {
	t.Helper()
	out, err := e.ctl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func netnsExec(t *testing.T, netns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", netns}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s %v: %v\n%s", netns, args, err, out)
	}
	return string(out)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
