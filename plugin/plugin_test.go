package main

// Integration tests: the plugin binary is built once and run exactly as a
// container runtime runs it (CNI_* environment, config on stdin), against a
// hand-written fake podwalld served by gRPC on a real unix socket.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/testutils"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	podwallv1 "github.com/podwall/podwall/proto/podwall/v1"
)

// pluginBinary is the podwall binary TestMain builds.
var pluginBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "podwall-plugin-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginBinary = filepath.Join(dir, "podwall")
	build := exec.Command("go", "build", "-tags", "grpcnotrace", "-o", pluginBinary, ".") // as the Makefile builds it
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the plugin:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeDaemon is a podwalld stand-in: it records every request and answers
// with answerErr, after blocking until the caller's deadline when hang is set.
type fakeDaemon struct {
	podwallv1.UnimplementedCNIServer

	mu        sync.Mutex
	answerErr error
	hang      bool
	record    fakeRecord
}

// fakeRecord is every request a fakeDaemon received.
type fakeRecord struct {
	adds     []*podwallv1.AddRequest
	dels     []*podwallv1.DelRequest
	checks   []*podwallv1.CheckRequest
	statuses int
	gcs      []*podwallv1.GCRequest
}

func (f *fakeDaemon) answer(ctx context.Context) error {
	f.mu.Lock()
	hang, err := f.hang, f.answerErr
	f.mu.Unlock()
	if hang {
		select {
		case <-ctx.Done():
			// The server sees the deadline a little before the client
			// does; answering OK then would race the client's own timer.
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(30 * time.Second):
		}
	}
	return err
}

func (f *fakeDaemon) Add(ctx context.Context, req *podwallv1.AddRequest) (*podwallv1.AddResponse, error) {
	f.mu.Lock()
	f.record.adds = append(f.record.adds, req)
	f.mu.Unlock()
	return &podwallv1.AddResponse{}, f.answer(ctx)
}

func (f *fakeDaemon) Del(ctx context.Context, req *podwallv1.DelRequest) (*podwallv1.DelResponse, error) {
	f.mu.Lock()
	f.record.dels = append(f.record.dels, req)
	f.mu.Unlock()
	return &podwallv1.DelResponse{}, f.answer(ctx)
}

func (f *fakeDaemon) Check(ctx context.Context, req *podwallv1.CheckRequest) (*podwallv1.CheckResponse, error) {
	f.mu.Lock()
	f.record.checks = append(f.record.checks, req)
	f.mu.Unlock()
	return &podwallv1.CheckResponse{}, f.answer(ctx)
}

func (f *fakeDaemon) Status(ctx context.Context, _ *podwallv1.StatusRequest) (*podwallv1.StatusResponse, error) {
	f.mu.Lock()
	f.record.statuses++
	f.mu.Unlock()
	return &podwallv1.StatusResponse{}, f.answer(ctx)
}

func (f *fakeDaemon) GC(ctx context.Context, req *podwallv1.GCRequest) (*podwallv1.GCResponse, error) {
	f.mu.Lock()
	f.record.gcs = append(f.record.gcs, req)
	f.mu.Unlock()
	return &podwallv1.GCResponse{Removed: []*podwallv1.Attachment{{Network: req.Network, ContainerId: "gone", IfName: "eth0"}}}, f.answer(ctx)
}

// recorded returns a copy of the fake's records, taken under its lock.
func (f *fakeDaemon) recorded() fakeRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.record
}

// calls is the number of requests of any kind the fake received.
func (f *fakeDaemon) calls() int {
	r := f.recorded()
	return len(r.adds) + len(r.dels) + len(r.checks) + r.statuses + len(r.gcs)
}

// shortTempDir is a temp dir with a path short enough for a unix socket
// (t.TempDir() embeds the test name and can pass the 108-byte limit).
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startFakeDaemon serves a fakeDaemon on a unix socket and returns both.
func startFakeDaemon(t *testing.T) (*fakeDaemon, string) {
	t.Helper()
	socket := filepath.Join(shortTempDir(t), "podwall.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeDaemon{}
	server := grpc.NewServer()
	podwallv1.RegisterCNIServer(server, fake)
	go server.Serve(listener)
	t.Cleanup(server.Stop)
	return fake, socket
}

// absentSocket is a socket path nobody listens on: no file at all.
func absentSocket(t *testing.T) string {
	return filepath.Join(shortTempDir(t), "podwall.sock")
}

// staleSocket is a socket file left by a dead daemon: connect is refused.
func staleSocket(t *testing.T) string {
	t.Helper()
	socket := filepath.Join(shortTempDir(t), "podwall.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	listener.(*net.UnixListener).SetUnlinkOnClose(false)
	listener.Close()
	return socket
}

// newNetNS is a real network namespace for CNI_NETNS; it needs root.
func newNetNS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	netns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		netns.Close()
		if err := testutils.UnmountNS(netns); err != nil {
			t.Error(err)
		}
	})
	return netns.Path()
}

// invocation is one run of the plugin: the runtime's environment and stdin.
type invocation struct {
	command     string
	containerID string
	netns       string
	ifName      string
	cniArgs     string
	config      string
}

// outcome is what the runtime sees: stdout, stderr and the CNI error code
// (0 on success). A failing run's stdout must be exactly one CNI error.
type outcome struct {
	stdout string
	stderr string
	code   uint
	msg    string
}

func run(t *testing.T, in invocation) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, pluginBinary)
	// Exactly the variables libcni sets (it sets all of them, empty or not).
	cmd.Env = []string{
		"CNI_COMMAND=" + in.command,
		"CNI_CONTAINERID=" + in.containerID,
		"CNI_NETNS=" + in.netns,
		"CNI_IFNAME=" + in.ifName,
		"CNI_ARGS=" + in.cniArgs,
		"CNI_PATH=/opt/cni/bin",
	}
	cmd.Stdin = strings.NewReader(in.config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := outcome{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return out
	case !errors.As(err, &exitErr):
		t.Fatalf("run the plugin: %v", err)
	}
	var cniErr types.Error
	decoder := json.NewDecoder(strings.NewReader(out.stdout))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&cniErr); err != nil || decoder.More() {
		t.Fatalf("exit %d with stdout that is not exactly one CNI error (%v):\n%s\nstderr:\n%s",
			exitErr.ExitCode(), err, out.stdout, out.stderr)
	}
	if cniErr.Code == 0 {
		t.Fatalf("exit %d with CNI error code 0: %s", exitErr.ExitCode(), out.stdout)
	}
	out.code, out.msg = cniErr.Code, cniErr.Msg
	return out
}

func (o outcome) wantCode(t *testing.T, code uint) {
	t.Helper()
	if o.code != code {
		t.Fatalf("CNI code %d (%s), want %d\nstdout:\n%s\nstderr:\n%s", o.code, o.msg, code, o.stdout, o.stderr)
	}
}

const (
	networkName = "podnet"
	containerID = "0123456789abcdef"
	podCNIArgs  = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;" +
		"K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=5b1c7a7e-uid;SOMETHING_ELSE=x"
)

// prevResultJSON is what a routed ENI plugin (ptp-like) hands on: a host veth
// without sandbox, the pod's eth0 with two addresses, an address that names
// no interface and one on the host side, which is not the pod's.
func prevResultJSON(cniVersion, netns string) string {
	family := func(v string) string {
		if cniVersion == "0.4.0" || cniVersion == "0.3.1" {
			return `"version":"` + v + `",`
		}
		return ""
	}
	mtu := ""
	if cniVersion != "0.4.0" && cniVersion != "0.3.1" {
		mtu = `"mtu":9001,`
	}
	return `{
	"cniVersion": "` + cniVersion + `",
	"interfaces": [
		{"name": "veth1a2b3c4d", "mac": "aa:bb:cc:00:00:01"},
		{"name": "eth0", "mac": "aa:bb:cc:00:00:02", ` + mtu + `"sandbox": "` + netns + `"}
	],
	"ips": [
		{` + family("4") + `"interface": 1, "address": "10.244.7.5/24", "gateway": "10.244.7.1"},
		{` + family("6") + `"interface": 1, "address": "fd10:244:7::5/64", "gateway": "fd10:244:7::1"},
		{` + family("4") + `"interface": 0, "address": "10.244.7.1/32"},
		{` + family("4") + `"address": "10.244.8.9/32", "gateway": "10.244.7.1"}
	],
	"routes": [
		{"dst": "0.0.0.0/0", "gw": "10.244.7.1"},
		{"dst": "::/0"}
	],
	"dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local", "search": ["shop.svc.cluster.local"], "options": ["ndots:5"]}
}`
}

// netConf is a podwall conflist entry; prevResult may be empty.
func netConf(t *testing.T, cniVersion, socket string, extra map[string]any, prevResult string) string {
	t.Helper()
	conf := map[string]any{"cniVersion": cniVersion, "name": networkName, "type": "podwall", "socket": socket}
	for k, v := range extra {
		conf[k] = v
	}
	if prevResult != "" {
		conf["prevResult"] = json.RawMessage(prevResult)
	}
	data, err := json.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// canonicalJSON re-encodes JSON with sorted keys and no spacing.
func canonicalJSON(t *testing.T, text string) string {
	t.Helper()
	var value any
	if err := json.Unmarshal([]byte(text), &value); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, text)
	}
	data, err := json.Marshal(value)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func addInvocation(netns, config string) invocation {
	return invocation{command: "ADD", containerID: containerID, netns: netns, ifName: "eth0", cniArgs: podCNIArgs, config: config}
}

func TestAddPrintsPrevResultAndSendsThePod(t *testing.T) {
	for _, cniVersion := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(cniVersion, func(t *testing.T) {
			fake, socket := startFakeDaemon(t)
			netns := newNetNS(t)
			prevResult := prevResultJSON(cniVersion, netns)

			out := run(t, addInvocation(netns, netConf(t, cniVersion, socket, nil, prevResult)))
			out.wantCode(t, 0)

			if got, want := canonicalJSON(t, out.stdout), canonicalJSON(t, prevResult); got != want {
				t.Errorf("ADD printed\n%s\nwant the prevResult unchanged\n%s", got, want)
			}
			if out.stderr != "" {
				t.Errorf("ADD logged on success: %s", out.stderr)
			}
			want := &podwallv1.AddRequest{
				Attachment: &podwallv1.Attachment{Network: networkName, ContainerId: containerID, IfName: "eth0"},
				Pod:        &podwallv1.PodIdentity{Namespace: "shop", Name: "web-0", Uid: "5b1c7a7e-uid", InfraContainerId: containerID},
				Netns:      netns,
				Ips:        []string{"10.244.7.5/24", "fd10:244:7::5/64", "10.244.8.9/32"},
				Gateways:   []string{"10.244.7.1", "fd10:244:7::1"},
				CniVersion: cniVersion,
			}
			if len(fake.recorded().adds) != 1 || !proto.Equal(fake.recorded().adds[0], want) {
				t.Errorf("daemon received %v\nwant %v", fake.recorded().adds, want)
			}
		})
	}
}

func TestAddWithoutPrevResult(t *testing.T) {
	fake, socket := startFakeDaemon(t)
	out := run(t, addInvocation("/proc/1/ns/net", netConf(t, "1.0.0", socket, nil, "")))
	out.wantCode(t, types.ErrInvalidNetworkConfig)
	if !strings.Contains(out.msg, "must follow an IP-assigning plugin") {
		t.Errorf("message %q does not say podwall must be chained", out.msg)
	}
	if fake.calls() != 0 {
		t.Errorf("the daemon was called %d times", fake.calls())
	}
}

func TestAddWithoutPodIdentity(t *testing.T) {
	fake, socket := startFakeDaemon(t)
	for _, tt := range []struct{ cniArgs, missing string }{
		{"IgnoreUnknown=1;K8S_POD_NAMESPACE=shop", "K8S_POD_NAME"},
		{"K8S_POD_NAME=web-0", "K8S_POD_NAMESPACE"},
		{"", "K8S_POD_NAMESPACE and K8S_POD_NAME"},
	} {
		in := addInvocation("/proc/1/ns/net", netConf(t, "1.0.0", socket, nil, prevResultJSON("1.0.0", "/proc/1/ns/net")))
		in.cniArgs = tt.cniArgs
		out := run(t, in)
		out.wantCode(t, types.ErrInvalidEnvironmentVariables)
		if !strings.Contains(out.msg, tt.missing) {
			t.Errorf("CNI_ARGS %q: message %q does not name %s", tt.cniArgs, out.msg, tt.missing)
		}
	}
	if fake.calls() != 0 {
		t.Errorf("the daemon was called %d times", fake.calls())
	}
}

func TestAddRejectsPathsThatAreNotANetworkNamespace(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "netns-file")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "netns-fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, netns string }{
		{"regular file", regular},
		{"fifo", fifo},
		{"directory", dir},
		{"missing", filepath.Join(dir, "gone")},
		{"empty", ""},
		{"mount namespace", "/proc/self/ns/mnt"},
		{"the plugin's own netns", "/proc/self/ns/net"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, socket := startFakeDaemon(t)
			out := run(t, addInvocation(tt.netns, netConf(t, "1.0.0", socket, nil, prevResultJSON("1.0.0", tt.netns))))
			if tt.netns == "" {
				out.wantCode(t, types.ErrInvalidEnvironmentVariables) // skel: CNI_NETNS is required for ADD
			} else {
				out.wantCode(t, types.ErrInvalidNetNS)
			}
			if fake.calls() != 0 {
				t.Errorf("the daemon was called %d times", fake.calls())
			}
		})
	}
}

func TestAddDaemonDown(t *testing.T) {
	netns := newNetNS(t)
	for name, socket := range map[string]string{"no socket": absentSocket(t), "stale socket": staleSocket(t)} {
		t.Run(name, func(t *testing.T) {
			out := run(t, addInvocation(netns, netConf(t, "1.0.0", socket, nil, prevResultJSON("1.0.0", netns))))
			out.wantCode(t, types.ErrTryAgainLater)
			if !strings.Contains(out.msg, "unreachable") {
				t.Errorf("message %q does not say the daemon is unreachable", out.msg)
			}
		})
	}
}

func TestAddFailOpen(t *testing.T) {
	netns := newNetNS(t)
	failOpen := map[string]any{"failOpen": true}
	prevResult := prevResultJSON("1.1.0", netns)

	// The daemon is down: the pod starts, and stderr says it is unprotected.
	out := run(t, addInvocation(netns, netConf(t, "1.1.0", absentSocket(t), failOpen, prevResult)))
	out.wantCode(t, 0)
	if got, want := canonicalJSON(t, out.stdout), canonicalJSON(t, prevResult); got != want {
		t.Errorf("failOpen ADD printed\n%s\nwant\n%s", got, want)
	}
	if !strings.Contains(out.stderr, "failOpen") || !strings.Contains(out.stderr, "WITHOUT") {
		t.Errorf("failOpen ADD did not warn on stderr: %q", out.stderr)
	}

	// The daemon is there and fails: failOpen does not apply, the pod stays closed.
	fake, socket := startFakeDaemon(t)
	fake.answerErr = status.Error(codes.Internal, "iptables-restore failed")
	out = run(t, addInvocation(netns, netConf(t, "1.1.0", socket, failOpen, prevResult)))
	out.wantCode(t, errCodeDaemonFailed)
}

func TestAddDaemonErrors(t *testing.T) {
	netns := newNetNS(t)
	tests := []struct {
		err  error
		want uint
	}{
		{status.Error(codes.Unavailable, "not ready"), types.ErrTryAgainLater},
		{status.Error(codes.ResourceExhausted, "too many"), types.ErrTryAgainLater},
		{status.Error(codes.Aborted, "raced"), types.ErrTryAgainLater},
		{status.Error(codes.InvalidArgument, "no ips"), types.ErrInvalidNetworkConfig},
		{status.Error(codes.NotFound, "netns vanished"), types.ErrInvalidNetNS},
		{status.Error(codes.Internal, "iptables-restore: line 3 failed"), errCodeDaemonFailed},
		{status.Error(codes.Unknown, "panic recovered"), errCodeDaemonFailed},
	}
	for _, tt := range tests {
		t.Run(status.Code(tt.err).String(), func(t *testing.T) {
			fake, socket := startFakeDaemon(t)
			fake.answerErr = tt.err
			out := run(t, addInvocation(netns, netConf(t, "1.0.0", socket, nil, prevResultJSON("1.0.0", netns))))
			out.wantCode(t, tt.want)
			if msg := status.Convert(tt.err).Message(); !strings.Contains(out.msg, msg) {
				t.Errorf("message %q lacks the daemon's %q", out.msg, msg)
			}
			if len(fake.recorded().adds) != 1 {
				t.Errorf("daemon got %d ADDs, want 1", len(fake.recorded().adds))
			}
		})
	}
}

func TestAddDeadline(t *testing.T) {
	netns := newNetNS(t)
	fake, socket := startFakeDaemon(t)
	fake.hang = true
	out := run(t, addInvocation(netns, netConf(t, "1.0.0", socket, map[string]any{"timeout": "300ms"}, prevResultJSON("1.0.0", netns))))
	out.wantCode(t, types.ErrTryAgainLater)
	if len(fake.recorded().adds) != 1 {
		t.Errorf("daemon got %d ADDs, want 1", len(fake.recorded().adds))
	}
	// failOpen does not cover a daemon that is there but slow.
	out = run(t, addInvocation(netns, netConf(t, "1.0.0", socket, map[string]any{"timeout": "300ms", "failOpen": true}, prevResultJSON("1.0.0", netns))))
	out.wantCode(t, types.ErrTryAgainLater)
}

func TestAddBadConfig(t *testing.T) {
	for name, extra := range map[string]map[string]any{
		"bad timeout":  {"timeout": "soon"},
		"zero timeout": {"timeout": "0s"},
		"empty socket": {"socket": ""},
	} {
		t.Run(name, func(t *testing.T) {
			fake, socket := startFakeDaemon(t)
			out := run(t, addInvocation("/proc/1/ns/net", netConf(t, "1.0.0", socket, extra, prevResultJSON("1.0.0", "/proc/1/ns/net"))))
			out.wantCode(t, types.ErrInvalidNetworkConfig)
			if fake.calls() != 0 {
				t.Errorf("the daemon was called %d times", fake.calls())
			}
		})
	}
}

func TestMalformedStdin(t *testing.T) {
	_, socket := startFakeDaemon(t)
	for _, command := range []string{"ADD", "DEL", "CHECK", "STATUS", "GC"} {
		for _, config := range []string{`{"cniVersion":"1.1.0","name":`, `not json`, netConf(t, "1.1.0", socket, nil, "")[:20]} {
			in := addInvocation("/proc/1/ns/net", config)
			in.command = command
			run(t, in).wantCode(t, types.ErrDecodingFailure)
		}
	}
}

func delInvocation(netns, config string) invocation {
	return invocation{command: "DEL", containerID: containerID, netns: netns, ifName: "eth0", config: config}
}

func TestDelAlwaysSucceeds(t *testing.T) {
	netns := newNetNS(t)
	gone := filepath.Join(t.TempDir(), "deleted-netns")
	hanging := map[string]any{"timeout": "300ms"}
	tests := []struct {
		name      string
		netns     string
		answerErr error
		hang      bool
		extra     map[string]any
		down      bool
		wantNetns string // what the daemon must receive
	}{
		{name: "daemon up", netns: netns, wantNetns: netns},
		{name: "netns gone", netns: gone, wantNetns: ""},
		{name: "no netns given", netns: "", wantNetns: ""},
		{name: "daemon down", netns: netns, down: true},
		{name: "daemon down and netns gone", netns: gone, down: true},
		{name: "daemon fails", netns: netns, answerErr: status.Error(codes.Internal, "boom"), wantNetns: netns},
		{name: "daemon not ready", netns: netns, answerErr: status.Error(codes.Unavailable, "starting"), wantNetns: netns},
		{name: "daemon hangs", netns: netns, hang: true, extra: hanging, wantNetns: netns},
		{name: "bad timeout in config", netns: netns, extra: map[string]any{"timeout": "soon"}, wantNetns: netns},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, socket := startFakeDaemon(t)
			fake.answerErr, fake.hang = tt.answerErr, tt.hang
			if tt.down {
				socket = staleSocket(t)
			}
			// A DEL needs neither prevResult nor K8S_* args.
			out := run(t, delInvocation(tt.netns, netConf(t, "1.0.0", socket, tt.extra, "")))
			out.wantCode(t, 0)
			if out.stdout != "" {
				t.Errorf("DEL printed %q", out.stdout)
			}
			if tt.down {
				if !strings.Contains(out.stderr, "unreachable") {
					t.Errorf("DEL with the daemon down did not log it: %q", out.stderr)
				}
				return
			}
			want := &podwallv1.DelRequest{
				Attachment: &podwallv1.Attachment{Network: networkName, ContainerId: containerID, IfName: "eth0"},
				Pod:        &podwallv1.PodIdentity{},
				Netns:      tt.wantNetns,
			}
			if len(fake.recorded().dels) != 1 || !proto.Equal(fake.recorded().dels[0], want) {
				t.Errorf("daemon received %v\nwant %v", fake.recorded().dels, want)
			}
			if (tt.answerErr != nil || tt.hang) && out.stderr == "" {
				t.Errorf("DEL did not log the daemon's failure on stderr (daemon got %d DELs, stdout %q)", len(fake.recorded().dels), out.stdout)
			}
			// A daemon that is slow finishes on its own: the log must not
			// claim it failed.
			if tt.hang && !strings.Contains(out.stderr, "did not answer in time") {
				t.Errorf("DEL past its deadline logged %q, want it to say the daemon did not answer in time", out.stderr)
			}
			if tt.answerErr != nil && !strings.Contains(out.stderr, "did not remove") {
				t.Errorf("DEL refused by the daemon logged %q, want it to say the daemon did not remove the attachment", out.stderr)
			}
		})
	}
}

func TestDelSendsPodIdentityWhenGiven(t *testing.T) {
	fake, socket := startFakeDaemon(t)
	in := delInvocation("", netConf(t, "0.4.0", socket, nil, prevResultJSON("0.4.0", "")))
	in.cniArgs = podCNIArgs
	run(t, in).wantCode(t, 0)
	if len(fake.recorded().dels) != 1 || fake.recorded().dels[0].GetPod().GetName() != "web-0" || fake.recorded().dels[0].GetPod().GetNamespace() != "shop" {
		t.Errorf("daemon received %v", fake.recorded().dels)
	}
}

func checkInvocation(netns, config string) invocation {
	in := addInvocation(netns, config)
	in.command = "CHECK"
	return in
}

func TestCheck(t *testing.T) {
	netns := newNetNS(t)
	prevResult := prevResultJSON("1.0.0", netns)

	t.Run("in order", func(t *testing.T) {
		fake, socket := startFakeDaemon(t)
		out := run(t, checkInvocation(netns, netConf(t, "1.0.0", socket, nil, prevResult)))
		out.wantCode(t, 0)
		if out.stdout != "" {
			t.Errorf("CHECK printed %q", out.stdout)
		}
		want := &podwallv1.CheckRequest{
			Attachment: &podwallv1.Attachment{Network: networkName, ContainerId: containerID, IfName: "eth0"},
			Pod:        &podwallv1.PodIdentity{Namespace: "shop", Name: "web-0", Uid: "5b1c7a7e-uid", InfraContainerId: containerID},
			Netns:      netns,
			Ips:        []string{"10.244.7.5/24", "fd10:244:7::5/64", "10.244.8.9/32"},
		}
		if len(fake.recorded().checks) != 1 || !proto.Equal(fake.recorded().checks[0], want) {
			t.Errorf("daemon received %v\nwant %v", fake.recorded().checks, want)
		}
	})
	t.Run("drift", func(t *testing.T) {
		fake, socket := startFakeDaemon(t)
		fake.answerErr = status.Error(codes.FailedPrecondition, "chain PODWALL-IN differs")
		out := run(t, checkInvocation(netns, netConf(t, "1.0.0", socket, nil, prevResult)))
		out.wantCode(t, errCodeFirewallDrift)
		if !strings.Contains(out.msg, "chain PODWALL-IN differs") {
			t.Errorf("message %q lacks the daemon's", out.msg)
		}
	})
	t.Run("no prevResult", func(t *testing.T) {
		fake, socket := startFakeDaemon(t)
		run(t, checkInvocation(netns, netConf(t, "1.0.0", socket, nil, ""))).wantCode(t, types.ErrInvalidNetworkConfig)
		if fake.calls() != 0 {
			t.Errorf("the daemon was called %d times", fake.calls())
		}
	})
	t.Run("daemon down", func(t *testing.T) {
		run(t, checkInvocation(netns, netConf(t, "1.0.0", absentSocket(t), nil, prevResult))).wantCode(t, types.ErrTryAgainLater)
	})
}

func statusInvocation(config string) invocation {
	return invocation{command: "STATUS", config: config}
}

func TestStatus(t *testing.T) {
	fake, socket := startFakeDaemon(t)
	out := run(t, statusInvocation(netConf(t, "1.1.0", socket, nil, "")))
	out.wantCode(t, 0)
	if fake.recorded().statuses != 1 || out.stdout != "" {
		t.Errorf("STATUS: daemon asked %d times, stdout %q", fake.recorded().statuses, out.stdout)
	}

	run(t, statusInvocation(netConf(t, "1.1.0", absentSocket(t), nil, ""))).wantCode(t, types.ErrPluginNotAvailable)
	run(t, statusInvocation(netConf(t, "1.1.0", staleSocket(t), nil, ""))).wantCode(t, types.ErrPluginNotAvailable)

	notServing, socket := startFakeDaemon(t)
	notServing.answerErr = status.Error(codes.Unavailable, "policy source not synced")
	out = run(t, statusInvocation(netConf(t, "1.1.0", socket, nil, "")))
	out.wantCode(t, types.ErrPluginNotAvailable)
	if !strings.Contains(out.stdout, "policy source not synced") {
		t.Errorf("STATUS error lacks the daemon's reason: %s", out.stdout)
	}

	// failOpen keeps STATUS green when the daemon is unreachable (so the
	// node is not marked NotReady), and says so on stderr; a daemon that
	// answers "not serving" still fails STATUS.
	failOpen := map[string]any{"failOpen": true}
	out = run(t, statusInvocation(netConf(t, "1.1.0", absentSocket(t), failOpen, "")))
	out.wantCode(t, 0)
	if out.stdout != "" || !strings.Contains(out.stderr, "failOpen") {
		t.Errorf("failOpen STATUS: stdout %q, stderr %q; want a warning on stderr only", out.stdout, out.stderr)
	}
	run(t, statusInvocation(netConf(t, "1.1.0", socket, failOpen, ""))).wantCode(t, types.ErrPluginNotAvailable)

	// STATUS is a 1.1.0 verb.
	run(t, statusInvocation(netConf(t, "1.0.0", socket, nil, ""))).wantCode(t, types.ErrIncompatibleCNIVersion)
}

func TestGC(t *testing.T) {
	fake, socket := startFakeDaemon(t)
	valid := []map[string]string{{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}}
	config := netConf(t, "1.1.0", socket, map[string]any{"cni.dev/valid-attachments": valid}, "")
	out := run(t, invocation{command: "GC", config: config})
	out.wantCode(t, 0)
	want := &podwallv1.GCRequest{
		Network: networkName,
		ValidAttachments: []*podwallv1.Attachment{
			{Network: networkName, ContainerId: "c1", IfName: "eth0"},
			{Network: networkName, ContainerId: "c2", IfName: "net1"},
		},
	}
	if len(fake.recorded().gcs) != 1 || !proto.Equal(fake.recorded().gcs[0], want) {
		t.Errorf("daemon received %v\nwant %v", fake.recorded().gcs, want)
	}
	if out.stdout != "" || !strings.Contains(out.stderr, "gone") {
		t.Errorf("GC stdout %q, stderr %q: want nothing on stdout, the removed attachment on stderr", out.stdout, out.stderr)
	}

	// No valid attachments: the daemon is told so (everything of the network goes).
	empty, socket := startFakeDaemon(t)
	run(t, invocation{command: "GC", config: netConf(t, "1.1.0", socket, nil, "")}).wantCode(t, 0)
	if len(empty.recorded().gcs) != 1 || len(empty.recorded().gcs[0].ValidAttachments) != 0 || empty.recorded().gcs[0].Network != networkName {
		t.Errorf("daemon received %v", empty.recorded().gcs)
	}

	run(t, invocation{command: "GC", config: netConf(t, "1.1.0", absentSocket(t), nil, "")}).wantCode(t, types.ErrTryAgainLater)
}

func TestVersion(t *testing.T) {
	out := run(t, invocation{command: "VERSION"})
	out.wantCode(t, 0)
	var info struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal([]byte(out.stdout), &info); err != nil {
		t.Fatalf("VERSION printed %q: %v", out.stdout, err)
	}
	if got := strings.Join(info.SupportedVersions, ","); got != "0.3.0,0.3.1,0.4.0,1.0.0,1.1.0" {
		t.Errorf("supportedVersions = %s, want 0.3.0,0.3.1,0.4.0,1.0.0,1.1.0", got)
	}
}
