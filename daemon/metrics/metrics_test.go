package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/metrics"
	"github.com/podwall/podwall/daemon/server"
	"github.com/podwall/podwall/daemon/source"
	"github.com/podwall/podwall/daemon/syncer"
	pb "github.com/podwall/podwall/proto/podwall/v1"
)

const (
	testNode    = "node-a"
	testNetwork = "podnet"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// newSyncer returns a syncer over data and src that reports to reg.
func newSyncer(t testing.TB, reg *metrics.Registry, data *fakeDataplane, src *fakeSource) *syncer.Syncer {
	t.Helper()
	store, err := checkpoint.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return syncer.New(syncer.Options{
		NodeName: testNode,
		Source:   src,
		Data:     data,
		Store:    store,
		Log:      discard,
		Observer: reg,
	})
}

// attachment is the CNI attachment of pod name in namespace shop.
func attachment(name, ip string) checkpoint.Attachment {
	return checkpoint.Attachment{
		Network: testNetwork, ContainerID: "c-" + name, IfName: "eth0",
		Namespace: "shop", Name: name, UID: "uid-" + name,
		Netns: "/run/netns/fake-" + name, IPs: []string{ip + "/24"}, Added: time.Now().UTC(),
	}
}

var stateMetrics = []string{
	"podwall_pods", "podwall_pods_isolated", "podwall_rules", "podwall_set_members",
	"podwall_policies", "podwall_source_errors", "podwall_pod_rules", "podwall_pod_set_members",
}

// TestStateGauges follows a syncer through attachments coming and going:
// the gauges are what the syncer and the source say at each scrape.
func TestStateGauges(t *testing.T) {
	reg := metrics.New("test")
	data := newFakeDataplane()
	src := &fakeSource{state: shopState(t), errs: []source.Error{{Object: "broken.yaml", Err: errors.New("yaml: line 3: mapping values are not allowed")}}}
	s := newSyncer(t, reg, data, src)
	if err := reg.CollectState(s, src); err != nil {
		t.Fatal(err)
	}
	if err := reg.CollectState(s, src); err == nil {
		t.Error("CollectState twice: no error")
	}
	ctx := context.Background()
	web, client, db := attachment("web", "10.88.0.10"), attachment("client", "10.88.0.11"), attachment("db", "10.88.0.12")

	steps := []struct {
		name string
		do   func(t *testing.T)
		want map[string]float64
	}{
		{
			name: "nothing attached",
			want: map[string]float64{
				"podwall_pods": 0, "podwall_pods_isolated{direction=ingress}": 0, "podwall_pods_isolated{direction=egress}": 0,
				"podwall_rules": 0, "podwall_set_members": 0, "podwall_policies": 2, "podwall_source_errors": 1,
				"podwall_pod_rules_count": 0, "podwall_pod_rules_sum": 0, "podwall_pod_set_members_count": 0, "podwall_pod_set_members_sum": 0,
			},
		},
		{
			// web: ingress isolated, 2 rules; the client set holds the
			// remote client (10.88.1.5, fd10::5), 0.0.0.0/0 is two /1.
			name: "web attached",
			do: func(t *testing.T) {
				if err := s.Add(ctx, web); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]float64{
				"podwall_pods": 1, "podwall_pods_isolated{direction=ingress}": 1, "podwall_pods_isolated{direction=egress}": 0,
				"podwall_rules": 2, "podwall_set_members": 4, "podwall_policies": 2, "podwall_source_errors": 1,
				"podwall_pod_rules_count": 1, "podwall_pod_rules_sum": 2, "podwall_pod_set_members_count": 1, "podwall_pod_set_members_sum": 4,
			},
		},
		{
			// client: egress isolated, no rule; web's client set gains
			// 10.88.0.11 once the sync after the ADD ran.
			name: "client attached",
			do: func(t *testing.T) {
				if err := s.Add(ctx, client); err != nil {
					t.Fatal(err)
				}
				s.SyncAll(ctx)
			},
			want: map[string]float64{
				"podwall_pods": 2, "podwall_pods_isolated{direction=ingress}": 1, "podwall_pods_isolated{direction=egress}": 1,
				"podwall_rules": 2, "podwall_set_members": 5, "podwall_policies": 2, "podwall_source_errors": 1,
				"podwall_pod_rules_count": 2, "podwall_pod_rules_sum": 2, "podwall_pod_set_members_count": 2, "podwall_pod_set_members_sum": 5,
			},
		},
		{
			name: "db attached, its apply failed: a pod with nothing in force",
			do: func(t *testing.T) {
				data.failApply(db.Netns, errors.New("iptables-restore: exit status 1"))
				if err := s.Add(ctx, db); err == nil {
					t.Fatal("ADD db: no error")
				}
			},
			want: map[string]float64{
				"podwall_pods": 3, "podwall_pods_isolated{direction=ingress}": 1, "podwall_pods_isolated{direction=egress}": 1,
				"podwall_rules": 2, "podwall_set_members": 5, "podwall_policies": 2, "podwall_source_errors": 1,
				"podwall_pod_rules_count": 2, "podwall_pod_rules_sum": 2, "podwall_pod_set_members_count": 2, "podwall_pod_set_members_sum": 5,
			},
		},
		{
			name: "client deleted: web's set drops its address",
			do: func(t *testing.T) {
				if err := s.Del(ctx, client.Key(), client.Netns); err != nil {
					t.Fatal(err)
				}
			},
			want: map[string]float64{
				"podwall_pods": 2, "podwall_pods_isolated{direction=ingress}": 1, "podwall_pods_isolated{direction=egress}": 0,
				"podwall_rules": 2, "podwall_set_members": 4, "podwall_policies": 2, "podwall_source_errors": 1,
				"podwall_pod_rules_count": 1, "podwall_pod_rules_sum": 2, "podwall_pod_set_members_count": 1, "podwall_pod_set_members_sum": 4,
			},
		},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			if step.do != nil {
				step.do(t)
			}
			got := samples(t, reg.Gatherer(), stateMetrics...)
			if !maps.Equal(got, step.want) {
				t.Errorf("state gauges:\n got %v\nwant %v", got, step.want)
			}
		})
	}
}

// TestSyncMetrics: syncs, sync errors, applies by result and their
// histograms move with what the syncer does, and the last-sync timestamp
// only with a sync that applied everything.
func TestSyncMetrics(t *testing.T) {
	reg := metrics.New("test")
	data := newFakeDataplane()
	src := &fakeSource{state: shopState(t)}
	s := newSyncer(t, reg, data, src)
	ctx := context.Background()
	names := []string{
		"podwall_syncs_total", "podwall_sync_errors_total", "podwall_sync_duration_seconds",
		"podwall_pod_applies_total", "podwall_pod_apply_duration_seconds",
	}
	lastSync := func(t *testing.T) float64 {
		t.Helper()
		return samples(t, reg.Gatherer(), "podwall_last_sync_timestamp_seconds")["podwall_last_sync_timestamp_seconds"]
	}
	want := func(syncs, syncErrors, applyOK, applyErr float64) map[string]float64 {
		return map[string]float64{
			"podwall_syncs_total": syncs, "podwall_sync_errors_total": syncErrors,
			"podwall_pod_applies_total{result=ok}": applyOK, "podwall_pod_applies_total{result=error}": applyErr,
			"podwall_sync_duration_seconds_count":      syncs,
			"podwall_pod_apply_duration_seconds_count": applyOK + applyErr,
		}
	}
	check := func(t *testing.T, want map[string]float64) {
		t.Helper()
		got := samples(t, reg.Gatherer(), names...)
		for _, sum := range []string{"podwall_sync_duration_seconds_sum", "podwall_pod_apply_duration_seconds_sum"} {
			if got[sum] < 0 {
				t.Errorf("%s = %v", sum, got[sum])
			}
			delete(got, sum)
		}
		if !maps.Equal(got, want) {
			t.Errorf("sync metrics:\n got %v\nwant %v", got, want)
		}
	}

	check(t, want(0, 0, 0, 0))
	if got := lastSync(t); got != 0 {
		t.Errorf("last sync before any sync = %v, want 0", got)
	}

	web, db := attachment("web", "10.88.0.10"), attachment("db", "10.88.0.12")
	if err := s.Add(ctx, web); err != nil {
		t.Fatal(err)
	}
	check(t, want(0, 0, 1, 0))

	data.failApply(db.Netns, errors.New("iptables-restore: exit status 1"))
	if err := s.Add(ctx, db); err == nil {
		t.Fatal("ADD db: no error")
	}
	check(t, want(0, 0, 1, 1))

	// db is retried and fails again; web is unchanged and not re-applied.
	s.SyncAll(ctx)
	check(t, want(1, 1, 1, 2))
	if got := lastSync(t); got != 0 {
		t.Errorf("last sync after a failed sync = %v, want 0", got)
	}

	data.failApply(db.Netns, nil)
	before := float64(time.Now().Unix())
	s.SyncAll(ctx)
	after := float64(time.Now().Unix()) + 1
	check(t, want(2, 1, 2, 2))
	if got := lastSync(t); got < before || got > after {
		t.Errorf("last sync = %v, want between %v and %v", got, before, after)
	}
}

// TestCNIInterceptor: each CNI method is counted under its verb and the
// code of the answer, its duration observed; other services pass uncounted.
// The handler's answer goes back unchanged.
func TestCNIInterceptor(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		err       error
		wantCount string // the podwall_cni_requests_total series that moves; "" none
		wantVerb  string // the histogram series that observes; "" none
	}{
		{"ADD ok", pb.CNI_Add_FullMethodName, nil, "{code=OK,verb=ADD}", "ADD"},
		{"ADD unavailable", pb.CNI_Add_FullMethodName, status.Error(codes.Unavailable, "podwalld not ready"), "{code=Unavailable,verb=ADD}", "ADD"},
		{"DEL ok", pb.CNI_Del_FullMethodName, nil, "{code=OK,verb=DEL}", "DEL"},
		{"CHECK drift", pb.CNI_Check_FullMethodName, status.Error(codes.FailedPrecondition, "drift"), "{code=FailedPrecondition,verb=CHECK}", "CHECK"},
		{"STATUS ok", pb.CNI_Status_FullMethodName, nil, "{code=OK,verb=STATUS}", "STATUS"},
		{"GC invalid", pb.CNI_GC_FullMethodName, status.Error(codes.InvalidArgument, "no network"), "{code=InvalidArgument,verb=GC}", "GC"},
		{"error without status", pb.CNI_Add_FullMethodName, errors.New("boom"), "{code=Unknown,verb=ADD}", "ADD"},
		{"status service", pb.Status_GetStatus_FullMethodName, nil, "", ""},
		{"health service", "/grpc.health.v1.Health/Check", nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := metrics.New("test")
			before := samples(t, reg.Gatherer(), "podwall_cni_requests_total", "podwall_cni_request_duration_seconds")
			icpt := reg.CNIInterceptor()
			called := false
			resp, err := icpt(context.Background(), "request", &grpc.UnaryServerInfo{FullMethod: tt.method},
				func(_ context.Context, req any) (any, error) {
					called = true
					if req != "request" {
						t.Errorf("handler got %v", req)
					}
					return "response", tt.err
				})
			if !called || resp != "response" || err != tt.err {
				t.Fatalf("interceptor: called %v, got (%v, %v), want (response, %v)", called, resp, err, tt.err)
			}
			after := samples(t, reg.Gatherer(), "podwall_cni_requests_total", "podwall_cni_request_duration_seconds")
			moved := map[string]float64{}
			for k, v := range after {
				if v != before[k] && !strings.Contains(k, "_sum{") {
					moved[k] = v - before[k]
				}
			}
			want := map[string]float64{}
			if tt.wantCount != "" {
				want["podwall_cni_requests_total"+tt.wantCount] = 1
				want["podwall_cni_request_duration_seconds_count{verb="+tt.wantVerb+"}"] = 1
			}
			if !maps.Equal(moved, want) {
				t.Errorf("moved series:\n got %v\nwant %v", moved, want)
			}
		})
	}
}

// TestCNIRequestsOverGRPC runs the daemon's gRPC server with the
// interceptor over a real syncer on a unix socket: an ADD before the daemon
// is ready answers Unavailable, an ADD after it OK, and both are counted;
// status calls are not.
func TestCNIRequestsOverGRPC(t *testing.T) {
	reg := metrics.New("test")
	data := newFakeDataplane()
	src := &fakeSource{state: shopState(t)}
	s := newSyncer(t, reg, data, src)
	if err := reg.CollectState(s, src); err != nil {
		t.Fatal(err)
	}
	var ready atomic.Bool
	socket := filepath.Join(t.TempDir(), "podwall.sock")
	srv, err := server.Listen(server.Options{
		Socket:   socket,
		NodeName: testNode,
		Version:  "test",
		Sync:     s,
		Source:   src,
		Ready: func() error {
			if !ready.Load() {
				return errors.New("source not synced")
			}
			return nil
		},
		CNIInterceptor: reg.CNIInterceptor(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cni, statusAPI := pb.NewCNIClient(conn), pb.NewStatusClient(conn)

	// The server checks the netns is one: this process's own will do, the
	// fake dataplane applies nothing in it.
	web := &pb.Attachment{Network: testNetwork, ContainerId: "c-web", IfName: "eth0"}
	add := &pb.AddRequest{
		Attachment: web,
		Pod:        &pb.PodIdentity{Namespace: "shop", Name: "web", Uid: "uid-web"},
		Netns:      "/proc/self/ns/net",
		Ips:        []string{"10.88.0.10/24"},
	}
	rpcCtx, rpcCancel := context.WithTimeout(ctx, 10*time.Second)
	defer rpcCancel()
	if _, err := cni.Add(rpcCtx, add); status.Code(err) != codes.Unavailable {
		t.Fatalf("ADD before ready: %v, want Unavailable", err)
	}
	ready.Store(true)
	if _, err := cni.Add(rpcCtx, add); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if _, err := statusAPI.GetStatus(rpcCtx, &pb.GetStatusRequest{}); err != nil {
		t.Fatalf("GetStatus: %v", err)
	}
	got := samples(t, reg.Gatherer(), "podwall_cni_requests_total", "podwall_pods", "podwall_pod_applies_total")
	want := map[string]float64{
		"podwall_cni_requests_total{code=OK,verb=ADD}":          1,
		"podwall_cni_requests_total{code=Unavailable,verb=ADD}": 1,
		"podwall_cni_requests_total{code=OK,verb=DEL}":          0,
		"podwall_cni_requests_total{code=OK,verb=CHECK}":        0,
		"podwall_cni_requests_total{code=OK,verb=STATUS}":       0,
		"podwall_cni_requests_total{code=OK,verb=GC}":           0,
		"podwall_pods":                            1,
		"podwall_pod_applies_total{result=ok}":    1,
		"podwall_pod_applies_total{result=error}": 0,
	}
	if !maps.Equal(got, want) {
		t.Errorf("after two ADDs:\n got %v\nwant %v", got, want)
	}

	if _, err := cni.Del(rpcCtx, &pb.DelRequest{Attachment: web, Netns: add.Netns}); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	got = samples(t, reg.Gatherer(), "podwall_cni_request_duration_seconds", "podwall_pods")
	for _, k := range []string{"ADD", "DEL", "CHECK", "STATUS", "GC"} {
		delete(got, "podwall_cni_request_duration_seconds_sum{verb="+k+"}")
	}
	want = map[string]float64{
		"podwall_cni_request_duration_seconds_count{verb=ADD}":    2,
		"podwall_cni_request_duration_seconds_count{verb=DEL}":    1,
		"podwall_cni_request_duration_seconds_count{verb=CHECK}":  0,
		"podwall_cni_request_duration_seconds_count{verb=STATUS}": 0,
		"podwall_cni_request_duration_seconds_count{verb=GC}":     0,
		"podwall_pods": 0,
	}
	if !maps.Equal(got, want) {
		t.Errorf("after DEL:\n got %v\nwant %v", got, want)
	}
}

// TestExposition: every podwall metric is exposed with its type, and the
// names pass the Prometheus linter.
func TestExposition(t *testing.T) {
	reg := metrics.New("v1.2.3")
	src := &fakeSource{state: shopState(t)}
	if err := reg.CollectState(newSyncer(t, reg, newFakeDataplane(), src), src); err != nil {
		t.Fatal(err)
	}
	wantTypes := map[string]dto.MetricType{
		"podwall_syncs_total":                  dto.MetricType_COUNTER,
		"podwall_sync_errors_total":            dto.MetricType_COUNTER,
		"podwall_sync_duration_seconds":        dto.MetricType_HISTOGRAM,
		"podwall_last_sync_timestamp_seconds":  dto.MetricType_GAUGE,
		"podwall_pod_applies_total":            dto.MetricType_COUNTER,
		"podwall_pod_apply_duration_seconds":   dto.MetricType_HISTOGRAM,
		"podwall_cni_requests_total":           dto.MetricType_COUNTER,
		"podwall_cni_request_duration_seconds": dto.MetricType_HISTOGRAM,
		"podwall_pods":                         dto.MetricType_GAUGE,
		"podwall_pods_isolated":                dto.MetricType_GAUGE,
		"podwall_rules":                        dto.MetricType_GAUGE,
		"podwall_set_members":                  dto.MetricType_GAUGE,
		"podwall_policies":                     dto.MetricType_GAUGE,
		"podwall_source_errors":                dto.MetricType_GAUGE,
		"podwall_build_info":                   dto.MetricType_GAUGE,
		"podwall_pod_rules":                    dto.MetricType_HISTOGRAM,
		"podwall_pod_set_members":              dto.MetricType_HISTOGRAM,
		"podwall_dataplane_usable":             dto.MetricType_GAUGE,
	}
	families, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	gotTypes := map[string]dto.MetricType{}
	for _, mf := range families {
		if strings.HasPrefix(mf.GetName(), "podwall_") {
			gotTypes[mf.GetName()] = mf.GetType()
		}
	}
	if !maps.Equal(gotTypes, wantTypes) {
		t.Errorf("podwall metrics:\n got %v\nwant %v", gotTypes, wantTypes)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if !slices.ContainsFunc(families, func(mf *dto.MetricFamily) bool { return mf.GetName() == name }) {
			t.Errorf("%s missing", name)
		}
	}

	info := samples(t, reg.Gatherer(), "podwall_build_info")
	if len(info) != 1 {
		t.Fatalf("podwall_build_info: %v", info)
	}
	for k, v := range info {
		if !strings.HasPrefix(k, "podwall_build_info{goversion=go") || !strings.HasSuffix(k, ",version=v1.2.3}") || v != 1 {
			t.Errorf("build info: %s = %v", k, v)
		}
	}

	problems, err := testutil.GatherAndLint(reg.Gatherer())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}
