package operations

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/podwall/podwall/proto/podwall/v1"
	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// TestMetricsHealthAndLogs runs the real podwalld with --metrics-address
// on a loopback port and --log-format json, scrapes /healthz, /readyz and
// /metrics over HTTP, and checks that the values move as pods are added
// (through the real CNI chain), a bad ADD is answered and pods are deleted;
// then reads the daemon's log: JSON lines only, one info line per sync
// with the pods it touched and its duration, no per-pod lines at info.
func TestMetricsHealthAndLogs(t *testing.T) {
	n := newNode(t, "pwxmet", netip.MustParsePrefix("10.207.2.0/24"),
		"--metrics-address", "127.0.0.1:0", "--log-format", "json", "--log-level", "info")
	ctx := t.Context()
	base := "http://" + metricsAddress(t, n)
	httpClient := &http.Client{Timeout: 5 * time.Second}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := httpClient.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := get(path); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
			t.Errorf("GET %s = %d %q, want 200 ok", path, code, body)
		}
	}
	scrape := func() map[string]float64 {
		t.Helper()
		code, body := get("/metrics")
		if code != http.StatusOK {
			t.Fatalf("GET /metrics = %d", code)
		}
		return parseMetrics(t, body)
	}

	before := scrape()
	for name, want := range map[string]float64{
		"podwall_pods":                                     0,
		"podwall_dataplane_usable":                         1,
		"podwall_pod_rules_count":                          0,
		`podwall_cni_requests_total{code="OK",verb="ADD"}`: 0,
	} {
		if got, ok := before[name]; !ok || got != want {
			t.Errorf("before any ADD: %s = %v (present %v), want %v", name, got, ok, want)
		}
	}
	if !hasPrefix(before, "podwall_build_info{") || !hasPrefix(before, "process_resident_memory_bytes") {
		t.Error("build info or process metrics missing")
	}

	// Three pods: web accepts only client on 80.
	n.write("00-cluster.yaml", namespaceYAML("shop", nil)+
		podYAML("shop", "web", n.name, map[string]string{"app": "web"}, []bed.ServePort{{Protocol: bed.TCP, Port: 80}})+
		podYAML("shop", "client", n.name, map[string]string{"app": "client"}, nil)+
		podYAML("shop", "other", n.name, map[string]string{"app": "other"}, nil)+`---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-client, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 80}]}]
`)
	if err := n.waitPolicies(ctx, []string{"shop/web-from-client"}); err != nil {
		t.Fatal(err)
	}
	web := n.bed.AddPodForTest(t, "shop", "web", bed.ServePort{Protocol: bed.TCP, Port: 80})
	client := n.bed.AddPodForTest(t, "shop", "client")
	other := n.bed.AddPodForTest(t, "shop", "other")
	if err := n.waitPods(ctx, 3); err != nil {
		t.Fatal(err)
	}
	// The policy is enforced, allowed and denied: the numbers below
	// describe a working firewall.
	for _, c := range []struct {
		from *bed.Pod
		want bool
	}{{client, true}, {other, false}} {
		if ok, err := bed.ProbeUntil(ctx, c.from, web.IPv4(), 80, bed.TCP, time.Second, c.want, 10*time.Second); err != nil || ok != c.want {
			t.Fatalf("%s -> web:80 connected=%v (%v), want %v", c.from, ok, err, c.want)
		}
	}

	// A bad ADD straight over the socket: the plugin would return CNI 7.
	_, err := n.cni.Add(ctx, &pb.AddRequest{
		Attachment: &pb.Attachment{Network: "pw-pwxmet", ContainerId: "bad", IfName: "eth0"},
		Pod:        &pb.PodIdentity{Namespace: "shop", Name: "bad"},
		Netns:      web.NetnsPath,
		Ips:        []string{"not-an-ip"},
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad ADD: %v, want InvalidArgument", err)
	}

	var after map[string]float64
	err = harness.Poll(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		after = scrape()
		for name, want := range map[string]float64{
			"podwall_pods": 3,
			`podwall_pods_isolated{direction="ingress"}`:                    1,
			`podwall_cni_requests_total{code="OK",verb="ADD"}`:              3,
			`podwall_cni_requests_total{code="InvalidArgument",verb="ADD"}`: 1,
			`podwall_cni_errors_total{cni_code="7",verb="ADD"}`:             1,
			`podwall_cni_request_duration_seconds_count{verb="ADD"}`:        4,
			"podwall_pod_rules_count":                                       3,
			"podwall_pod_rules_sum":                                         1,
			"podwall_rules":                                                 1,
			"podwall_set_members":                                           1, // client's address
			"podwall_policies":                                              1,
		} {
			if after[name] != want {
				return fmt.Errorf("%s = %v, want %v", name, after[name], want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after three ADDs: %v", err)
	}
	for _, name := range []string{"podwall_syncs_total", `podwall_pod_applies_total{result="ok"}`, "podwall_sync_duration_seconds_count",
		"podwall_pod_apply_duration_seconds_count", "podwall_last_sync_timestamp_seconds"} {
		if after[name] <= before[name] {
			t.Errorf("%s did not move: %v -> %v", name, before[name], after[name])
		}
	}
	if last := after["podwall_last_sync_timestamp_seconds"]; time.Since(time.Unix(int64(last), 0)) > 5*time.Minute {
		t.Errorf("last sync at %v", time.Unix(int64(last), 0))
	}

	if err := n.bed.DelPod(ctx, client); err != nil {
		t.Fatal(err)
	}
	err = harness.Poll(ctx, 10*time.Second, 100*time.Millisecond, func() error {
		m := scrape()
		if m["podwall_pods"] != 2 || m[`podwall_cni_requests_total{code="OK",verb="DEL"}`] != 1 || m["podwall_set_members"] != 0 {
			return fmt.Errorf("pods %v, DEL %v, set members %v", m["podwall_pods"], m[`podwall_cni_requests_total{code="OK",verb="DEL"}`], m["podwall_set_members"])
		}
		return nil
	})
	if err != nil {
		t.Errorf("after DEL: %v", err)
	}

	checkLog(t, n.daemon.Log())
}

// metricsAddress reads the listener's address from the daemon's JSON log.
func metricsAddress(t *testing.T, n *node) string {
	t.Helper()
	var addr string
	err := harness.Poll(t.Context(), 10*time.Second, 50*time.Millisecond, func() error {
		for line := range strings.Lines(n.daemon.Log()) {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "serving /metrics, /healthz and /readyz" {
				addr, _ = rec["address"].(string)
				return nil
			}
		}
		return fmt.Errorf("no metrics listener in the log yet")
	})
	if err != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("metrics address %q: %v\n%s", addr, err, n.daemon.Log())
	}
	return addr
}

// parseMetrics reads the text exposition into "name{labels}" -> value,
// histograms as _count and _sum.
func parseMetrics(t *testing.T, body string) map[string]float64 {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("exposition does not parse: %v", err)
	}
	out := map[string]float64{}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			suffix := ""
			if len(labels) > 0 {
				suffix = "{" + strings.Join(labels, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[name+suffix] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[name+suffix] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[name+"_count"+suffix] = float64(m.GetHistogram().GetSampleCount())
				out[name+"_sum"+suffix] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

func hasPrefix(m map[string]float64, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// checkLog checks the daemon's log: every line is one JSON object with a
// level and a message; sync lines are at info with the pods touched and the
// duration; what was applied to each pod is not logged at info.
func checkLog(t *testing.T, log string) {
	t.Helper()
	var syncs, touched int
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", sc.Text())
			continue
		}
		if rec["level"] == nil || rec["msg"] == nil || rec["time"] == nil {
			t.Errorf("log line without level, msg or time: %v", rec)
		}
		switch rec["msg"] {
		case "sync":
			syncs++
			if rec["level"] != "INFO" || rec["duration"] == nil || rec["pods"] == nil || rec["applied"] == nil {
				t.Errorf("sync line %v", rec)
			}
			if s, _ := rec["touched"].(string); strings.Contains(s, "shop/") {
				touched++
			}
		case "applied":
			t.Errorf("a per-pod line at info: %v", rec)
		}
	}
	if syncs == 0 || touched == 0 {
		t.Errorf("%d sync lines, %d naming the pods they touched; want both > 0", syncs, touched)
	}
}
