package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/server"
	"github.com/podwall/podwall/daemon/source"
	"github.com/podwall/podwall/daemon/syncer"
	pb "github.com/podwall/podwall/proto/podwall/v1"
)

const (
	testNode    = "node-a"
	testVersion = "v0.0.0-test"
	testNetwork = "podnet"
)

// readyState is what the daemon's Ready func returns; tests flip it.
type readyState struct {
	mu  sync.Mutex
	err error
}

func (r *readyState) ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

func (r *readyState) set(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

// daemon is a running server over a syncer over the fakes, and clients
// connected to it over its unix socket.
type daemon struct {
	socket string
	srv    *server.Server
	sync   *syncer.Syncer
	data   *fakeDataplane
	src    *fakeSource
	store  *checkpoint.Store
	ready  *readyState
	conn   *grpc.ClientConn
	cni    pb.CNIClient
	status pb.StatusClient
	cancel context.CancelFunc
	served chan error

	stopOnce sync.Once
}

// socketPath returns a socket path in a fresh test directory.
func socketPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "run", "podwall.sock")
	if len(p) > 100 { // sun_path is 108 bytes
		dir, err := os.MkdirTemp("", "pw")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		p = filepath.Join(dir, "run", "podwall.sock")
	}
	return p
}

func dial(t *testing.T, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// startDaemon listens on socket (a fresh one when empty) and serves until
// the test ends.
func startDaemon(t *testing.T, socket string, state *policy.State) *daemon {
	t.Helper()
	if socket == "" {
		socket = socketPath(t)
	}
	store, err := checkpoint.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{
		socket: socket,
		data:   newFakeDataplane(),
		src:    &fakeSource{state: state},
		store:  store,
		ready:  &readyState{},
		served: make(chan error, 1),
	}
	d.sync = syncer.New(syncer.Options{
		NodeName:  testNode,
		Source:    d.src,
		Data:      d.data,
		Store:     store,
		Log:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		NodeAddrs: func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("10.250.0.1")}, nil },
	})
	if err := d.sync.Restore(t.Context()); err != nil {
		t.Fatal(err)
	}
	d.srv, err = server.Listen(server.Options{
		Socket: socket, NodeName: testNode, Version: testVersion,
		Sync: d.sync, Source: d.src, Ready: d.ready.ready,
	})
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	d.srv.SetServing(true)
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.served <- d.srv.Serve(ctx) }()
	t.Cleanup(func() { d.stop(t) })
	d.conn = dial(t, socket)
	d.cni = pb.NewCNIClient(d.conn)
	d.status = pb.NewStatusClient(d.conn)
	return d
}

// stop ends Serve and waits for it (idempotent).
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.stopOnce.Do(func() {
		d.cancel()
		select {
		case err := <-d.served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
}

func rpcContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newNetns returns the path of a new network namespace, removed when the
// test ends. It needs root.
func newNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace")
	}
	n, err := testutils.NewNS()
	if err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() {
		n.Close()
		if err := testutils.UnmountNS(n); err != nil {
			t.Errorf("remove netns: %v", err)
		}
	})
	return n.Path()
}

func parsePolicy(t *testing.T, doc string) *networkingv1.NetworkPolicy {
	t.Helper()
	np := &networkingv1.NetworkPolicy{}
	if err := yaml.UnmarshalStrict([]byte(doc), np); err != nil {
		t.Fatalf("parse policy: %v", err)
	}
	policy.ApplyDefaults(np)
	return np
}

// shopState: db accepts 5432/TCP from app=web; web has no policy.
func shopState(t *testing.T) *policy.State {
	pod := func(name, app string) *policy.Pod {
		return &policy.Pod{Namespace: "shop", Name: name, Labels: map[string]string{"app": app}, NodeName: testNode, Phase: corev1.PodRunning}
	}
	return &policy.State{
		Namespaces: []*policy.Namespace{{Name: "shop"}},
		Pods:       []*policy.Pod{pod("web", "web"), pod("db", "db"), pod("client", "client")},
		Policies: []*networkingv1.NetworkPolicy{
			parsePolicy(t, `
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]`),
			parsePolicy(t, `
metadata: {name: client-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]`),
		},
	}
}

func addRequest(name, ip, netns string) *pb.AddRequest {
	return &pb.AddRequest{
		Attachment: &pb.Attachment{Network: testNetwork, ContainerId: "ctr-" + name, IfName: "eth0"},
		Pod:        &pb.PodIdentity{Namespace: "shop", Name: name, Uid: "uid-" + name},
		Netns:      netns,
		Ips:        []string{ip + "/32"},
		Gateways:   []string{"10.1.0.1"},
		CniVersion: "1.1.0",
	}
}

func key(req *pb.AddRequest) string {
	a := req.GetAttachment()
	return checkpoint.Attachment{Network: a.GetNetwork(), ContainerID: a.GetContainerId(), IfName: a.GetIfName()}.Key()
}

// record is the checkpoint record of an ADD, as the syncer gets it (tests
// that need no real netns add through the syncer directly).
func record(req *pb.AddRequest) checkpoint.Attachment {
	return checkpoint.Attachment{
		Network: req.Attachment.Network, ContainerID: req.Attachment.ContainerId, IfName: req.Attachment.IfName,
		Namespace: req.Pod.Namespace, Name: req.Pod.Name, UID: req.Pod.Uid,
		Netns: req.Netns, IPs: req.Ips, Gateways: req.Gateways,
	}
}

func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Errorf("%s: code %v (%v), want %v", what, got, err, code)
	}
}

func TestCNIHappyPath(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	ctx := rpcContext(t)
	webReq := addRequest("web", "10.1.0.10", newNetns(t))
	dbReq := addRequest("db", "10.1.0.20", newNetns(t))
	clientReq := addRequest("client", "10.1.0.30", newNetns(t))
	for _, req := range []*pb.AddRequest{webReq, dbReq, clientReq} {
		if _, err := d.cni.Add(ctx, req); err != nil {
			t.Fatalf("Add %s: %v", req.Pod.Name, err)
		}
	}
	// The firewall is in force when ADD returns.
	spec, ok := d.data.spec(dbReq.Netns)
	if !ok || !spec.Firewall.Ingress.Isolated || spec.Pod != "shop/db" {
		t.Fatalf("db after ADD: %+v, %v", spec, ok)
	}
	if want := []netip.Addr{netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("10.250.0.1")}; !slices.Equal(spec.NodeAddrs, want) {
		t.Errorf("NodeAddrs = %v, want %v", spec.NodeAddrs, want)
	}
	recs, err := d.store.Load()
	if err != nil || len(recs) != 3 {
		t.Fatalf("checkpoint after ADD: %v, %v", recs, err)
	}
	if recs[1].Name != "db" || recs[1].Netns != dbReq.Netns || recs[1].UID != "uid-db" || recs[1].Added.IsZero() {
		t.Errorf("checkpoint record = %+v", recs[1])
	}

	if _, err := d.cni.Check(ctx, &pb.CheckRequest{Attachment: dbReq.Attachment, Pod: dbReq.Pod, Netns: dbReq.Netns, Ips: dbReq.Ips}); err != nil {
		t.Errorf("Check: %v", err)
	}
	if !d.data.called("check " + dbReq.Netns) {
		t.Error("Check did not reach the dataplane")
	}
	if _, err := d.cni.Status(ctx, &pb.StatusRequest{}); err != nil {
		t.Errorf("Status: %v", err)
	}

	if _, err := d.cni.Del(ctx, &pb.DelRequest{Attachment: webReq.Attachment, Pod: webReq.Pod, Netns: webReq.Netns}); err != nil {
		t.Fatalf("Del: %v", err)
	}
	if !d.data.called("remove " + webReq.Netns) {
		t.Error("Del did not remove the rules in the pod's netns")
	}
	// DEL again (the runtime retries): still fine.
	if _, err := d.cni.Del(ctx, &pb.DelRequest{Attachment: webReq.Attachment, Pod: webReq.Pod}); err != nil {
		t.Errorf("second Del: %v", err)
	}

	resp, err := d.cni.GC(ctx, &pb.GCRequest{Network: testNetwork, ValidAttachments: []*pb.Attachment{dbReq.Attachment}})
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	if len(resp.Removed) != 1 || resp.Removed[0].ContainerId != "ctr-client" || resp.Removed[0].Network != testNetwork || resp.Removed[0].IfName != "eth0" {
		t.Errorf("GC removed %v, want client's attachment", resp.Removed)
	}
	if d.data.called("remove " + clientReq.Netns) {
		t.Error("GC removed rules in a netns")
	}
	views := d.sync.Pods()
	if len(views) != 1 || views[0].Attachment.Name != "db" {
		t.Errorf("after DEL and GC the daemon serves %v, want db only", views)
	}
}

func TestInvalidArgument(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	ctx := rpcContext(t)
	regular := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	valid := func() *pb.AddRequest { return addRequest("db", "10.1.0.20", regular) }
	tests := []struct {
		name   string
		mutate func(*pb.AddRequest)
	}{
		{"no attachment", func(r *pb.AddRequest) { r.Attachment = nil }},
		{"no network", func(r *pb.AddRequest) { r.Attachment.Network = "" }},
		{"no container ID", func(r *pb.AddRequest) { r.Attachment.ContainerId = "" }},
		{"no interface", func(r *pb.AddRequest) { r.Attachment.IfName = "" }},
		{"no pod", func(r *pb.AddRequest) { r.Pod = nil }},
		{"no pod name", func(r *pb.AddRequest) { r.Pod.Name = "" }},
		{"no pod namespace", func(r *pb.AddRequest) { r.Pod.Namespace = "" }},
		{"no IPs", func(r *pb.AddRequest) { r.Ips = nil }},
		{"IP without prefix length", func(r *pb.AddRequest) { r.Ips = []string{"10.1.0.20"} }},
		{"IP not an address", func(r *pb.AddRequest) { r.Ips = []string{"db/32"} }},
		{"gateway with prefix length", func(r *pb.AddRequest) { r.Gateways = []string{"10.1.0.1/24"} }},
		{"gateway not an address", func(r *pb.AddRequest) { r.Gateways = []string{"gateway"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := valid()
			tt.mutate(req)
			_, err := d.cni.Add(ctx, req)
			wantCode(t, "Add", err, codes.InvalidArgument)
		})
	}
	att := &pb.Attachment{Network: testNetwork, ContainerId: "ctr-db"}
	_, err := d.cni.Del(ctx, &pb.DelRequest{Attachment: att})
	wantCode(t, "Del without interface", err, codes.InvalidArgument)
	_, err = d.cni.Del(ctx, &pb.DelRequest{})
	wantCode(t, "Del without attachment", err, codes.InvalidArgument)
	_, err = d.cni.Check(ctx, &pb.CheckRequest{Attachment: att, Netns: regular})
	wantCode(t, "Check without interface", err, codes.InvalidArgument)
	_, err = d.cni.GC(ctx, &pb.GCRequest{})
	wantCode(t, "GC without network", err, codes.InvalidArgument)
	if n := d.data.count("apply"); n != 0 {
		t.Errorf("%d applies for invalid requests", n)
	}
	if len(d.sync.Pods()) != 0 {
		t.Errorf("invalid requests left attachments: %v", d.sync.Pods())
	}
}

func TestNetnsNotFound(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	ctx := rpcContext(t)
	regular := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{regular, filepath.Join(t.TempDir(), "missing"), "/proc/self/ns/uts", ""} {
		_, err := d.cni.Add(ctx, addRequest("db", "10.1.0.20", path))
		wantCode(t, "Add with netns "+path, err, codes.NotFound)
		req := addRequest("db", "10.1.0.20", path)
		_, err = d.cni.Check(ctx, &pb.CheckRequest{Attachment: req.Attachment, Pod: req.Pod, Netns: path})
		wantCode(t, "Check with netns "+path, err, codes.NotFound)
	}
	if n := d.data.count("apply"); n != 0 {
		t.Errorf("%d applies without a network namespace", n)
	}
	if len(d.sync.Pods()) != 0 {
		t.Errorf("attachments recorded without a network namespace: %v", d.sync.Pods())
	}
}

func TestNotReady(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	ctx := rpcContext(t)
	d.ready.set(errors.New("policy source not synced"))
	req := addRequest("db", "10.1.0.20", "/proc/self/ns/net")
	_, err := d.cni.Add(ctx, req)
	wantCode(t, "Add", err, codes.Unavailable)
	_, err = d.cni.Check(ctx, &pb.CheckRequest{Attachment: req.Attachment, Pod: req.Pod, Netns: req.Netns})
	wantCode(t, "Check", err, codes.Unavailable)
	_, err = d.cni.Status(ctx, &pb.StatusRequest{})
	wantCode(t, "Status", err, codes.Unavailable)
	// DEL always works.
	_, err = d.cni.Del(ctx, &pb.DelRequest{Attachment: req.Attachment, Netns: req.Netns})
	wantCode(t, "Del", err, codes.OK)
	st, err := d.status.GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil || st.Ready {
		t.Errorf("GetStatus while not ready = %v, %v; want ready false", st, err)
	}
	if n := d.data.count("apply"); n != 0 {
		t.Errorf("%d applies while not ready", n)
	}

	d.ready.set(nil)
	_, err = d.cni.Status(ctx, &pb.StatusRequest{})
	wantCode(t, "Status once ready", err, codes.OK)
}

func TestAddErrors(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	ctx := rpcContext(t)
	netns := newNetns(t)

	d.src.setLookupErr(errors.New("apiserver unreachable"))
	_, err := d.cni.Add(ctx, addRequest("db", "10.1.0.20", netns))
	wantCode(t, "Add while the source cannot look up the pod", err, codes.Unavailable)
	d.src.setLookupErr(nil)

	d.data.setApplyErr(errors.New("iptables-nft-restore: exit status 1"))
	_, err = d.cni.Add(ctx, addRequest("db", "10.1.0.20", netns))
	wantCode(t, "Add when apply fails", err, codes.Internal)

	d.data.setApplyErr(fmt.Errorf("enter netns: %w", dataplane.ErrNetnsGone))
	_, err = d.cni.Add(ctx, addRequest("db", "10.1.0.20", netns))
	wantCode(t, "Add when the netns vanished", err, codes.NotFound)
}

func TestCheckErrors(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	ctx := rpcContext(t)
	req := addRequest("db", "10.1.0.20", newNetns(t))
	if _, err := d.cni.Add(ctx, req); err != nil {
		t.Fatal(err)
	}
	d.data.setCheckErr(&dataplane.DriftError{Pod: "shop/db", Netns: req.Netns, Differences: []string{"set pw4-0-g1: unexpected member 10.9.9.9/32"}})
	_, err := d.cni.Check(ctx, &pb.CheckRequest{Attachment: req.Attachment, Pod: req.Pod, Netns: req.Netns})
	wantCode(t, "Check with drift", err, codes.FailedPrecondition)

	d.data.setCheckErr(nil)
	other := &pb.Attachment{Network: testNetwork, ContainerId: "ctr-unknown", IfName: "eth0"}
	_, err = d.cni.Check(ctx, &pb.CheckRequest{Attachment: other, Pod: req.Pod, Netns: req.Netns})
	wantCode(t, "Check of an unknown attachment", err, codes.NotFound)
}

func TestSocketPermissions(t *testing.T) {
	tests := []struct {
		name     string
		prepare  func(dir string) error
		wantPerm os.FileMode
	}{
		{"directory created", func(string) error { return nil }, 0o700},
		{"directory existed 0755", func(dir string) error {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			return os.Chmod(dir, 0o755)
		}, 0o700},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			socket := socketPath(t)
			if err := tt.prepare(filepath.Dir(socket)); err != nil {
				t.Fatal(err)
			}
			d := startDaemon(t, socket, shopState(t))
			fi, err := os.Lstat(socket)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
				t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
			}
			di, err := os.Stat(filepath.Dir(socket))
			if err != nil {
				t.Fatal(err)
			}
			if di.Mode().Perm() != tt.wantPerm {
				t.Errorf("socket directory mode %v, want %v", di.Mode().Perm(), tt.wantPerm)
			}
			if _, err := d.status.GetStatus(rpcContext(t), &pb.GetStatusRequest{}); err != nil {
				t.Errorf("GetStatus: %v", err)
			}
		})
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	socket := socketPath(t)
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		t.Fatal(err)
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	lis.SetUnlinkOnClose(false)
	lis.Close() // a daemon that died: the socket file stays
	if _, err := os.Lstat(socket); err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	d := startDaemon(t, socket, shopState(t))
	st, err := d.status.GetStatus(rpcContext(t), &pb.GetStatusRequest{})
	if err != nil || st.Version != testVersion {
		t.Fatalf("GetStatus over the replaced socket = %v, %v", st, err)
	}
}

func TestLiveSocketIsNotReplaced(t *testing.T) {
	first := startDaemon(t, "", shopState(t))
	_, err := server.Listen(server.Options{Socket: first.socket, Sync: first.sync, Source: first.src})
	if err == nil {
		t.Fatal("Listen succeeded on a socket another daemon serves")
	}
	// The first daemon keeps its socket and keeps answering.
	if _, err := first.status.GetStatus(rpcContext(t), &pb.GetStatusRequest{}); err != nil {
		t.Errorf("first daemon after the second Listen: %v", err)
	}
}

func TestNonSocketIsNotReplaced(t *testing.T) {
	socket := socketPath(t)
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(socket, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Listen(server.Options{Socket: socket}); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(socket); err != nil || string(b) != "keep me" {
		t.Errorf("regular file after Listen: %q, %v", b, err)
	}
}

func TestHealthAndShutdown(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	ctx := rpcContext(t)
	health := healthpb.NewHealthClient(d.conn)
	for _, svc := range []string{"", pb.CNI_ServiceDesc.ServiceName} {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q = %v, %v; want SERVING", svc, resp, err)
		}
	}

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := health.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: pb.CNI_ServiceDesc.ServiceName})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch = %v, %v; want SERVING", resp, err)
	}
	d.cancel()
	if resp, err := watch.Recv(); err != nil || resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch after shutdown = %v, %v; want NOT_SERVING", resp, err)
	}
	stopWatch()
	d.stop(t)
	if _, err := os.Lstat(d.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after Serve returned: %v; want it removed", err)
	}
}

func TestReflection(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	stream, err := reflectionpb.NewServerReflectionClient(d.conn).ServerReflectionInfo(rpcContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		got = append(got, s.Name)
	}
	for _, want := range []string{"podwall.v1.CNI", "podwall.v1.Status", "grpc.health.v1.Health"} {
		if !slices.Contains(got, want) {
			t.Errorf("reflection lists %v, missing %s", got, want)
		}
	}
	stream.CloseSend()
}

func TestStatusAPI(t *testing.T) {
	state := shopState(t)
	state.Policies = append(state.Policies, parsePolicy(t, `
metadata: {name: broken, namespace: other}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: not-a-cidr}}]}]`))
	d := startDaemon(t, "", state)
	d.src.errs = []source.Error{{Object: "pods.yaml: Pod shop/x", Err: errors.New("yaml: line 3: bad indentation")}}
	ctx := rpcContext(t)
	// The status API reads what the syncer holds; add through the syncer
	// (no netns needed: the dataplane is a fake).
	webReq := addRequest("web", "10.1.0.10", "/run/netns/pw-server-web")
	dbReq := addRequest("db", "10.1.0.20", "/run/netns/pw-server-db")
	clientReq := addRequest("client", "10.1.0.30", "/run/netns/pw-server-client")
	for _, req := range []*pb.AddRequest{webReq, dbReq, clientReq} {
		if err := d.sync.Add(ctx, record(req)); err != nil {
			t.Fatal(err)
		}
	}
	d.sync.SyncAll(ctx)

	st, err := d.status.GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != testVersion || st.NodeName != testNode || st.Source != "manifests:/fake" || !st.Ready ||
		st.Pods != 3 || st.Policies != 3 || st.Syncs < 1 || st.LastSync == nil || st.Started == nil || st.LastSyncError != "" {
		t.Errorf("GetStatus = %v", st)
	}
	var objects []string
	for _, e := range st.SourceErrors {
		objects = append(objects, e.Object)
	}
	if !slices.Contains(objects, "pods.yaml: Pod shop/x") || !slices.Contains(objects, "compiler") {
		t.Errorf("source errors = %v, want the source's error and the compiler's problem", st.SourceErrors)
	}

	pods, err := d.status.ListPods(ctx, &pb.ListPodsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Pods {
		names = append(names, p.Name)
	}
	if want := []string{"client", "db", "web"}; !slices.Equal(names, want) {
		t.Fatalf("ListPods names = %v, want %v", names, want)
	}
	dbSum := pods.Pods[1]
	if dbSum.Namespace != "shop" || dbSum.ContainerId != "ctr-db" || dbSum.IfName != "eth0" || dbSum.Network != testNetwork ||
		dbSum.Netns != dbReq.Netns || !slices.Equal(dbSum.Ips, []string{"10.1.0.20"}) ||
		!slices.Equal(dbSum.Policies, []string{"shop/db-from-web"}) || !dbSum.IngressIsolated || dbSum.EgressIsolated ||
		dbSum.IngressRules != 1 || dbSum.SyncError != "" {
		t.Errorf("db summary = %v", dbSum)
	}
	// client-egress has egress rules and no policyTypes: Ingress and Egress.
	if c := pods.Pods[0]; !c.EgressIsolated || !c.IngressIsolated || c.EgressRules != 1 || !slices.Equal(c.Policies, []string{"shop/client-egress"}) {
		t.Errorf("client summary = %v", c)
	}
	if w := pods.Pods[2]; w.IngressIsolated || w.EgressIsolated || len(w.Policies) != 0 {
		t.Errorf("web summary = %v", w)
	}

	detail, err := d.status.GetPod(ctx, &pb.GetPodRequest{Namespace: "shop", Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := d.data.spec(dbReq.Netns)
	want := dataplane.Render(spec, 1)
	if detail.Pod.Name != "db" || detail.RulesV4 != want.V4 || detail.RulesV4 == "" || len(detail.Ipsets) != len(want.Sets) {
		t.Errorf("GetPod = %v, want the rules in force %q", detail, want.V4)
	}
	_, err = d.status.GetPod(ctx, &pb.GetPodRequest{Namespace: "shop", Name: "nope"})
	wantCode(t, "GetPod of a pod not attached here", err, codes.NotFound)

	policies, err := d.status.ListPolicies(ctx, &pb.ListPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	type summary struct {
		key      string
		types    []string
		selected []string
	}
	var gotPolicies []summary
	for _, p := range policies.Policies {
		gotPolicies = append(gotPolicies, summary{p.Namespace + "/" + p.Name, p.PolicyTypes, p.SelectedPods})
	}
	wantPolicies := []summary{
		{"other/broken", []string{"Ingress"}, []string{}},
		{"shop/client-egress", []string{"Ingress", "Egress"}, []string{"shop/client"}},
		{"shop/db-from-web", []string{"Ingress"}, []string{"shop/db"}},
	}
	if len(gotPolicies) != len(wantPolicies) {
		t.Fatalf("ListPolicies = %v, want %v", gotPolicies, wantPolicies)
	}
	for i := range wantPolicies {
		g, w := gotPolicies[i], wantPolicies[i]
		if g.key != w.key || !slices.Equal(g.types, w.types) || !slices.Equal(g.selected, w.selected) {
			t.Errorf("policy %d = %+v, want %+v", i, g, w)
		}
	}

	// A failed apply shows on the pod.
	d.data.setApplyErr(errors.New("iptables-nft-restore: exit status 2"))
	d.src.mu.Lock()
	d.src.state = shopState(t)                                   // drops the broken policy: no firewall changes, so...
	d.src.state.Pods[2].Labels = map[string]string{"app": "web"} // ...relabel client: db's firewall changes
	d.src.mu.Unlock()
	d.sync.SyncAll(ctx)
	pods, err = d.status.ListPods(ctx, &pb.ListPodsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if e := pods.Pods[1].SyncError; e == "" {
		t.Errorf("db's sync error not shown: %v", pods.Pods[1])
	}
	st, err = d.status.GetStatus(ctx, &pb.GetStatusRequest{})
	if err != nil || st.SyncErrors != 1 || st.LastSyncError == "" {
		t.Errorf("GetStatus after a failed sync = %v, %v", st, err)
	}
}

func TestBusySocketIsNotReplaced(t *testing.T) {
	// A live daemon whose accept backlog is full refuses connections with
	// EAGAIN, not ECONNREFUSED: its socket must survive a second Listen.
	socket := socketPath(t)
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: socket}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	full := false
	for range 16 {
		c, err := net.DialTimeout("unix", socket, time.Second)
		if err != nil {
			if !errors.Is(err, syscall.EAGAIN) {
				t.Fatalf("filling the backlog: %v", err)
			}
			full = true
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	if !full {
		t.Skip("could not fill the listen backlog")
	}
	if _, err := server.Listen(server.Options{Socket: socket}); err == nil {
		t.Fatal("Listen replaced the socket of a busy live daemon")
	}
	if fi, err := os.Lstat(socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("busy daemon's socket after Listen: %v, %v", fi, err)
	}
}
