package operations

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/podwall/podwall/proto/podwall/v1"
	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// The model of TestExplainAgreesWithProbes: the upstream truth-table
// layout, namespaces x, y and z (here ns-x, ns-y, ns-z, labelled ns=x, ...)
// with pods a, b and c (labelled pod=a, ...), each serving 80 and 81 on TCP,
// UDP and SCTP on container ports serve-<port>-<protocol>.
var (
	modelNamespaces = []string{"x", "y", "z"}
	modelPods       = []string{"a", "b", "c"}
	modelPorts      = []bed.ServePort{
		{Protocol: bed.TCP, Port: 80}, {Protocol: bed.TCP, Port: 81},
		{Protocol: bed.UDP, Port: 80}, {Protocol: bed.UDP, Port: 81},
		{Protocol: bed.SCTP, Port: 80}, {Protocol: bed.SCTP, Port: 81},
	}
)

// explainScenario is one set of policies applied at once.
type explainScenario struct {
	name string
	// policies returns the manifest, given the model's pods.
	policies func(pods map[string]*bed.Pod) string
	// names are the "namespace/name" of its policies.
	names []string
}

func host(p *bed.Pod) string { return p.IPv4().String() + "/32" }

// The policy shapes: default deny (ingress and egress), podSelector,
// namespaceSelector, both together, ipBlock with except, named ports
// (ingress and egress), a port range, egress rules, UDP and SCTP.
var (
	defaultDenyAndPodSelector = `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: ns-x}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-b-80, namespace: ns-x}
spec:
  podSelector: {matchLabels: {pod: "a"}}
  ingress: [{from: [{podSelector: {matchLabels: {pod: "b"}}}], ports: [{port: 80, protocol: TCP}]}]
`
	namespaceSelectorsAndNamedPorts = `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-ns-x, namespace: ns-y}
spec:
  podSelector: {matchLabels: {pod: "a"}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "x"}}}], ports: [{port: serve-81-tcp}, {port: serve-80-udp, protocol: UDP}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-z-c, namespace: ns-y}
spec:
  podSelector: {matchLabels: {pod: "b"}}
  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: "z"}}, podSelector: {matchLabels: {pod: "c"}}}]}]
`
	ipBlockAndRange = func(pods map[string]*bed.Pod) string {
		return fmt.Sprintf(`---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-from-block, namespace: ns-z}
spec:
  podSelector: {matchLabels: {pod: "a"}}
  ingress:
  - from: [{ipBlock: {cidr: %s, except: [%s]}}]
    ports: [{port: 80, endPort: 81, protocol: TCP}]
  - from: [{ipBlock: {cidr: %s}}]
    ports: [{protocol: SCTP}]
`, netip.PrefixFrom(pods["x/a"].IPv4(), 24).Masked(), host(pods["x/b"]), host(pods["y/c"]))
	}
	egressRules = func(pods map[string]*bed.Pod) string {
		return fmt.Sprintf(`---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-egress, namespace: ns-x}
spec:
  podSelector: {matchLabels: {pod: "c"}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: 80, protocol: UDP}]
  - to: [{ipBlock: {cidr: %s}}]
    ports: [{port: 81}]
  - to: [{podSelector: {}}]
    ports: [{port: serve-81-sctp, protocol: SCTP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: c-deny-egress, namespace: ns-y}
spec: {podSelector: {matchLabels: {pod: "c"}}, policyTypes: [Egress]}
`, host(pods["z/a"]))
	}
)

var explainScenarios = []explainScenario{
	{
		name:     "default deny and podSelector",
		policies: func(map[string]*bed.Pod) string { return defaultDenyAndPodSelector },
		names:    []string{"ns-x/deny-ingress", "ns-x/a-from-b-80"},
	},
	{
		name:     "namespaceSelector, both selectors, named ports",
		policies: func(map[string]*bed.Pod) string { return namespaceSelectorsAndNamedPorts },
		names:    []string{"ns-y/a-from-ns-x", "ns-y/b-from-z-c"},
	},
	{
		name:     "ipBlock with except, port range, SCTP",
		policies: ipBlockAndRange,
		names:    []string{"ns-z/a-from-block"},
	},
	{
		name:     "egress: UDP, ipBlock, named SCTP port, default deny",
		policies: egressRules,
		names:    []string{"ns-x/c-egress", "ns-y/c-deny-egress"},
	},
	{
		name: "all of them at once",
		policies: func(pods map[string]*bed.Pod) string {
			return defaultDenyAndPodSelector + namespaceSelectorsAndNamedPorts + ipBlockAndRange(pods) + egressRules(pods)
		},
		names: []string{"ns-x/deny-ingress", "ns-x/a-from-b-80", "ns-y/a-from-ns-x", "ns-y/b-from-z-c",
			"ns-z/a-from-block", "ns-x/c-egress", "ns-y/c-deny-egress"},
	},
}

// cellResult is one (source, destination, port) of a scenario's matrix.
type cellResult struct {
	from, to string
	port     bed.ServePort
	explain  string // the verdict
	probe    bool
	err      error
}

// TestExplainAgreesWithProbes applies upstream-style policy sets one after
// another to the 9-pod model and, for every pod pair (a pod to itself
// included) and every port and protocol, compares `explain`'s verdict, read
// from the daemon over its status API, with a real connection from the
// source pod's netns. Every scenario has allowed and denied cells, on every
// protocol; each cell also checks that the rules explain names fit its
// verdict (an allowed isolated direction names a rule, a denied one none).
func TestExplainAgreesWithProbes(t *testing.T) {
	n := newNode(t, "pwxexpl", netip.MustParsePrefix("10.207.1.0/24"), "--log-level", "info")
	ctx := t.Context()

	var cluster strings.Builder
	for _, ns := range modelNamespaces {
		cluster.WriteString(namespaceYAML("ns-"+ns, map[string]string{"ns": ns}))
		for _, p := range modelPods {
			cluster.WriteString(podYAML("ns-"+ns, p, n.name, map[string]string{"pod": p}, modelPorts))
		}
	}
	// A pod on another node: explain evaluates it, this node does not
	// enforce it.
	remoteIP := netip.MustParseAddr("10.207.1.250")
	cluster.WriteString(podYAML("ns-y", "remote", "other-node", map[string]string{"pod": "remote"}, modelPorts[:1], remoteIP))
	n.write("00-cluster.yaml", cluster.String())
	// Read once explain knows the remote pod.
	if err := harness.Poll(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		_, err := n.status.Explain(ctx, &pb.ExplainRequest{Source: "ns-y/remote", Destination: "ns-y/remote"})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	pods := map[string]*bed.Pod{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, ns := range modelNamespaces {
		for _, name := range modelPods {
			wg.Go(func() {
				p, err := n.bed.AddPod(ctx, "ns-"+ns, name, bed.PodOptions{})
				if err == nil {
					err = p.Serve(modelPorts...)
				}
				if err != nil {
					t.Errorf("pod %s/%s: %v", ns, name, err)
					return
				}
				mu.Lock()
				pods[ns+"/"+name] = p
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if err := n.waitPods(ctx, len(pods)); err != nil {
		t.Fatal(err)
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range pods {
			if !yield(k) {
				return
			}
		}
	})

	total := 0
	for i, sc := range explainScenarios {
		t.Run(sc.name, func(t *testing.T) {
			file := fmt.Sprintf("policies-%d.yaml", i)
			n.write(file, sc.policies(pods))
			defer n.remove(file)
			if err := n.waitPolicies(ctx, sc.names); err != nil {
				t.Fatal(err)
			}
			results := n.compareMatrix(ctx, t, pods, keys, sc.names)
			allowed, denied := map[string]int{}, map[string]int{}
			for _, r := range results {
				switch {
				case r.err != nil:
					t.Errorf("%s -> %s %s: %v", r.from, r.to, r.port, r.err)
				case (r.explain == "allowed") != r.probe:
					t.Errorf("%s -> %s %s: explain says %s, the probe connected=%v", r.from, r.to, r.port, r.explain, r.probe)
				}
				if r.probe {
					allowed[r.port.Protocol]++
				} else {
					denied[r.port.Protocol]++
				}
			}
			for _, proto := range []string{bed.TCP, bed.UDP, bed.SCTP} {
				if allowed[proto] == 0 || denied[proto] == 0 {
					t.Errorf("%s: %d allowed and %d denied cells; every protocol needs both", proto, allowed[proto], denied[proto])
				}
			}
			t.Logf("%d cells compared: TCP %d allowed / %d denied, UDP %d / %d, SCTP %d / %d", len(results),
				allowed[bed.TCP], denied[bed.TCP], allowed[bed.UDP], denied[bed.UDP], allowed[bed.SCTP], denied[bed.SCTP])
			total += len(results)
			if t.Failed() {
				out, _ := n.daemon.Ctl(context.WithoutCancel(ctx), "pods")
				t.Logf("podwallctl pods:\n%s", out)
			}
		})
	}
	t.Logf("explain compared with real probes on %d cells (%d scenarios x %d pod pairs x %d ports)",
		total, len(explainScenarios), len(pods)*len(pods), len(modelPorts))

	t.Run("podwallctl explain", func(t *testing.T) {
		n.write("policies-cli.yaml", defaultDenyAndPodSelector)
		if err := n.waitPolicies(ctx, explainScenarios[0].names); err != nil {
			t.Fatal(err)
		}
		ctl := func(args ...string) (string, int) {
			cmd := exec.CommandContext(ctx, filepath.Join(n.daemon.BinDir, "podwallctl"), append([]string{"--socket", n.daemon.Socket}, args...)...)
			out, err := cmd.Output()
			code := 0
			if exitErr, ok := err.(*exec.ExitError); ok {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			return string(out), code
		}
		for _, c := range []struct {
			args    []string
			verdict string
			rule    string
		}{
			{[]string{"ns-x/b", "ns-x/a", "80"}, "allowed", "ns-x/a-from-b-80"},
			{[]string{"ns-x/b", "ns-x/a", "serve-80-tcp"}, "allowed", "ns-x/a-from-b-80"},
			{[]string{"ns-x/b", "ns-x/a", "81/tcp"}, "denied", ""},
			{[]string{"ns-y/b", pods["x/a"].IPv4().String(), "80"}, "denied", ""},
		} {
			out, code := ctl(append([]string{"explain"}, append(c.args, "-o", "json")...)...)
			var x struct {
				Verdict string `json:"verdict"`
				Flows   []struct {
					Ingress struct {
						AllowedBy []struct {
							Policy string `json:"policy"`
						} `json:"allowedBy"`
					} `json:"ingress"`
				} `json:"flows"`
			}
			if err := json.Unmarshal([]byte(out), &x); err != nil || code != 0 {
				t.Fatalf("explain %v: exit %d, %v\n%s", c.args, code, err, out)
			}
			if x.Verdict != c.verdict || (c.rule != "" && (len(x.Flows) != 1 || len(x.Flows[0].Ingress.AllowedBy) != 1 || x.Flows[0].Ingress.AllowedBy[0].Policy != c.rule)) {
				t.Errorf("explain %v: %s", c.args, out)
			}
		}
		out, code := ctl("explain", "ns-x/b", "ns-x/a", "81/tcp")
		if code != 0 || !strings.Contains(out, "DENIED") || !strings.Contains(out, "isolated by ns-x/a-from-b-80, ns-x/deny-ingress") {
			t.Errorf("explain table: exit %d\n%s", code, out)
		}
		if _, code := ctl("explain", "ns-x/b", "ns-x/nope"); code != 1 {
			t.Errorf("explain of an unknown pod: exit %d, want 1", code)
		}
		if _, code := ctl("explain", "ns-x/b"); code != 2 {
			t.Errorf("explain with one argument: exit %d, want 2", code)
		}

		// The remote pod: evaluated, not enforced here, and said so.
		x, err := n.status.Explain(ctx, &pb.ExplainRequest{Source: "ns-x/b", Destination: "ns-y/remote", Port: 80})
		if err != nil {
			t.Fatal(err)
		}
		in := x.GetFlows()[0].GetIngress()
		if x.GetDestination().GetLocal() || in.GetEnforced() || !strings.Contains(x.GetDestination().GetNote(), "runs on node other-node") ||
			!x.GetFlows()[0].GetEgress().GetEnforced() {
			t.Errorf("remote destination: %v", x)
		}
	})
}

// compareMatrix explains and probes every (from, to, port) cell, with a
// pool of workers. It waits for explain to see the firewalls in force (no
// direction pending) and then probes until the kernel agrees with it or 10
// s pass (the daemon enforces a change within 2 s).
func (n *node) compareMatrix(ctx context.Context, t *testing.T, pods map[string]*bed.Pod, keys []string, policies []string) []cellResult {
	var jobs []cellResult
	for _, from := range keys {
		for _, to := range keys {
			for _, port := range modelPorts {
				jobs = append(jobs, cellResult{from: from, to: to, port: port})
			}
		}
	}
	var wg sync.WaitGroup
	work := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range work {
				j := &jobs[i]
				j.explain, j.err = n.explainCell(ctx, pods[j.from], pods[j.to], j.port, policies)
				if j.err != nil {
					continue
				}
				j.probe, j.err = bed.ProbeUntil(ctx, pods[j.from], pods[j.to].IPv4(), j.port.Port, j.port.Protocol,
					time.Second, j.explain == "allowed", 10*time.Second)
			}
		})
	}
	for i := range jobs {
		work <- i
	}
	close(work)
	wg.Wait()
	return jobs
}

// explainCell asks the daemon about one cell, by pod name and port number,
// and checks the explanation's own consistency.
func (n *node) explainCell(ctx context.Context, from, to *bed.Pod, port bed.ServePort, policies []string) (string, error) {
	req := &pb.ExplainRequest{Source: from.String(), Destination: to.String(), Port: int32(port.Port), Protocol: port.Protocol}
	deadline := time.Now().Add(10 * time.Second)
	for {
		x, err := n.status.Explain(ctx, req)
		if err != nil {
			return "", err
		}
		if len(x.GetFlows()) != 1 {
			return "", fmt.Errorf("%d flows, want 1: %v", len(x.GetFlows()), x)
		}
		f := x.GetFlows()[0]
		pending := f.GetEgress().GetPending() + f.GetIngress().GetPending()
		if pending != "" && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for _, d := range []*pb.ExplainDirection{f.GetEgress(), f.GetIngress()} {
			if !d.GetEnforced() {
				return "", fmt.Errorf("%s of local pod %s not enforced here: %v", d.GetDirection(), d.GetPod(), x)
			}
			if d.GetPending() != "" {
				return "", fmt.Errorf("%s still pending after 10s: %s", d.GetDirection(), d.GetPending())
			}
			for _, r := range d.GetAllowedBy() {
				if !slices.Contains(policies, r.GetPolicy()) || r.GetDirection() != d.GetDirection() {
					return "", fmt.Errorf("%s names rule %v of a policy not applied", d.GetDirection(), r)
				}
			}
			loopback := strings.HasPrefix(d.GetReason(), "loopback")
			if d.GetIsolated() && !loopback && (d.GetVerdict() == "allowed") != (len(d.GetAllowedBy()) > 0) {
				return "", fmt.Errorf("%s: verdict %s but allowed by %v (%s)", d.GetDirection(), d.GetVerdict(), d.GetAllowedBy(), d.GetReason())
			}
		}
		if x.GetVerdict() != f.GetVerdict() {
			return "", fmt.Errorf("verdict %s but its only flow says %s", x.GetVerdict(), f.GetVerdict())
		}
		return x.GetVerdict(), nil
	}
}
