package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeDaemon answers the status API with canned state.
type fakeDaemon struct {
	pb.UnimplementedStatusServer
}

var (
	started  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	lastSync = started.Add(90 * time.Second)
	webPod   = &pb.PodSummary{
		Namespace: "shop", Name: "web", ContainerId: "0123456789abcdef0123", IfName: "eth0",
		Ips: []string{"10.1.0.10", "fd00:1::10"}, Policies: []string{"shop/web-from-lb"},
		IngressIsolated: true, IngressRules: 2, Netns: "/var/run/netns/cni-1234", Network: "podnet",
	}
	dbPod = &pb.PodSummary{
		Namespace: "shop", Name: "db", ContainerId: "fedcba9876543210fedc", IfName: "eth0",
		Ips: []string{"10.1.0.20"}, Policies: []string{}, Netns: "/var/run/netns/cni-5678", Network: "podnet",
		SyncError: "iptables-nft-restore: exit status 4",
	}
)

func (fakeDaemon) GetStatus(context.Context, *pb.GetStatusRequest) (*pb.DaemonStatus, error) {
	return &pb.DaemonStatus{
		Version: "v1.2.3", NodeName: "node-a", Source: "kubernetes", Ready: true, Pods: 2, Policies: 1,
		Started: timestamppb.New(started), LastSync: timestamppb.New(lastSync), Syncs: 7, SyncErrors: 1,
		LastSyncError: "apply firewall for shop/db: iptables-nft-restore: exit status 4",
		SourceErrors:  []*pb.SourceError{{Object: "compiler", Error: "networkpolicy shop/x: spec.ingress[0].from[0].ipBlock: cidr: bad"}},
	}, nil
}

func (fakeDaemon) ListPods(context.Context, *pb.ListPodsRequest) (*pb.ListPodsResponse, error) {
	return &pb.ListPodsResponse{Pods: []*pb.PodSummary{dbPod, webPod}}, nil
}

func (fakeDaemon) GetPod(_ context.Context, req *pb.GetPodRequest) (*pb.PodDetail, error) {
	if req.GetNamespace() != "shop" || req.GetName() != "web" {
		return nil, status.Errorf(codes.NotFound, "pod %s/%s is not attached on this node", req.GetNamespace(), req.GetName())
	}
	return &pb.PodDetail{
		Pod:     webPod,
		RulesV4: "*filter\n:PODWALL-INGRESS - [0:0]\n-I INPUT 1 -j PODWALL-INGRESS\n-A PODWALL-INGRESS -i lo -j ACCEPT\nCOMMIT\n",
		Ipsets:  []*pb.IPSet{{Name: "pw4-0-g1", Family: "inet", Members: []string{"10.1.0.5/32"}}},
	}, nil
}

func (fakeDaemon) ListPolicies(context.Context, *pb.ListPoliciesRequest) (*pb.ListPoliciesResponse, error) {
	return &pb.ListPoliciesResponse{Policies: []*pb.PolicySummary{
		{Namespace: "shop", Name: "web-from-lb", PolicyTypes: []string{"Ingress"}, SelectedPods: []string{"shop/web"}},
		{Namespace: "shop", Name: "unused", PolicyTypes: []string{"Ingress", "Egress"}, SelectedPods: []string{}},
	}}, nil
}

func (fakeDaemon) Explain(_ context.Context, req *pb.ExplainRequest) (*pb.ExplainResponse, error) {
	switch req.GetSource() {
	case "shop/missing":
		return nil, status.Error(codes.NotFound, "source: pod shop/missing: not found")
	case "10.9.9.9/8":
		return nil, status.Error(codes.InvalidArgument, "source: invalid explain query: \"10.9.9.9/8\" has host bits set")
	case "shop/boom":
		return nil, status.Error(codes.Internal, "explain: boom")
	}
	return &pb.ExplainResponse{
		Source:      &pb.ExplainEndpoint{Input: req.GetSource(), Kind: "pod", Pod: "shop/lb", Local: true, Addresses: []string{"10.1.0.5"}},
		Destination: &pb.ExplainEndpoint{Input: req.GetDestination(), Kind: "pod", Pod: "other/api", Addresses: []string{"10.2.0.7"}, Note: "runs on node node-b: its firewall is enforced there, not on this node"},
		Protocol:    req.GetProtocol(), Port: req.GetPort(), PortName: req.GetPortName(),
		Verdict:  "denied",
		NodeName: "node-a",
		Flows: []*pb.ExplainFlow{{
			Source: "10.1.0.5", Destination: "10.2.0.7", Verdict: "denied",
			Egress: &pb.ExplainDirection{Direction: "egress", Pod: "shop/lb", Enforced: true, Isolated: true,
				Policies: []string{"shop/lb-egress"}, Verdict: "allowed", Reason: "allowed by shop/lb-egress egress[1]",
				AllowedBy: []*pb.ExplainRule{{Policy: "shop/lb-egress", Direction: "egress", Index: 1, Ports: []string{"TCP/8080"}}}},
			Ingress: &pb.ExplainDirection{Direction: "ingress", Pod: "other/api", Isolated: true,
				Policies: []string{"other/deny"}, Verdict: "denied", Reason: "isolated by other/deny; no rule allows 10.1.0.5 on TCP/8080",
				Pending: "the firewall in force still says allowed: the next sync applies the current policies"},
		}},
	}, nil
}

// serve runs the fake daemon on a unix socket until the test ends.
func serve(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pwctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	socket := filepath.Join(dir, "podwall.sock")
	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterStatusServer(g, fakeDaemon{})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return socket
}

// ctl runs podwallctl with args and returns its exit status and output.
func ctl(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestOutputs runs every command in every output format against the fake
// daemon and compares with testdata/<name>.golden (go test -update
// rewrites them). JSON must parse and YAML must be the same document.
func TestOutputs(t *testing.T) {
	socket := serve(t)
	commands := []struct {
		name string
		args []string
	}{
		{"status", []string{"status"}},
		{"pods", []string{"pods"}},
		{"pod", []string{"pod", "shop/web"}},
		{"policies", []string{"policies"}},
		{"explain", []string{"explain", "shop/lb", "other/api", "8080/tcp"}},
	}
	for _, c := range commands {
		var jsonOut string
		for _, output := range outputs {
			t.Run(c.name+"-"+output, func(t *testing.T) {
				// -o after the command, --socket before it.
				code, out, errOut := ctl(append(append([]string{"--socket", socket}, c.args...), "-o", output)...)
				if code != exitOK || errOut != "" {
					t.Fatalf("exit %d, stderr %q", code, errOut)
				}
				golden(t, filepath.Join("testdata", c.name+"-"+output+".golden"), out)
				switch output {
				case "json":
					if !json.Valid([]byte(out)) {
						t.Errorf("not JSON:\n%s", out)
					}
					jsonOut = out
				case "yaml":
					j, err := yaml.YAMLToJSON([]byte(out))
					if err != nil {
						t.Fatalf("not YAML: %v\n%s", err, out)
					}
					if !jsonEqual(t, j, []byte(jsonOut)) {
						t.Errorf("yaml is not the json document:\n%s\nvs\n%s", j, jsonOut)
					}
				}
			})
		}
	}
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	xs, _ := json.Marshal(x)
	ys, _ := json.Marshal(y)
	return bytes.Equal(xs, ys)
}

func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestExitStatus: 0 on success, 2 for every kind of bad usage (before
// anything is sent, or when the daemon rejects an argument as malformed), 1
// when the daemon answers with an error or cannot be reached.
func TestExitStatus(t *testing.T) {
	socket := serve(t)
	tests := []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"status"}, exitOK, ""},
		{[]string{"explain", "shop/lb", "other/api"}, exitOK, ""},
		{[]string{"explain", "shop/lb", "10.0.0.0/8", "http"}, exitOK, ""},
		{[]string{}, exitUsage, "no command given"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"status", "--bogus"}, exitUsage, "unknown flag --bogus"},
		{[]string{"status", "-o", "xml"}, exitUsage, `-o "xml": want one of table, wide, json, yaml`},
		{[]string{"status", "-o"}, exitUsage, "flag -o needs a value"},
		{[]string{"--timeout", "soon", "status"}, exitUsage, "--timeout"},
		{[]string{"status", "extra"}, exitUsage, "unexpected arguments"},
		{[]string{"pods", "shop"}, exitUsage, "unexpected arguments"},
		{[]string{"pod"}, exitUsage, "pod takes one NAMESPACE/NAME"},
		{[]string{"pod", "web"}, exitUsage, `"web" is not NAMESPACE/NAME`},
		{[]string{"explain", "shop/lb"}, exitUsage, "explain takes SRC DST [PORT[/PROTO]]"},
		{[]string{"explain", "shop/lb", "nonsense"}, exitUsage, `"nonsense" is not NAMESPACE/NAME, an IP address or a CIDR`},
		{[]string{"explain", "shop/lb", "shop/db", "70000"}, exitUsage, "port 70000 is out of range"},
		{[]string{"explain", "shop/lb", "shop/db", "80/icmp"}, exitUsage, `protocol "icmp"`},
		{[]string{"explain", "shop/lb", "shop/db", "/tcp"}, exitUsage, "no port before the protocol"},
		{[]string{"explain", "shop/lb", "shop/db", "not_a_name!"}, exitUsage, "neither a number nor a container port name"},
		{[]string{"explain", "10.9.9.9/8", "shop/db"}, exitUsage, "has host bits set"},
		{[]string{"pod", "shop/nope"}, exitFailed, "NotFound (podwalld at " + socket + "): pod shop/nope is not attached on this node"},
		{[]string{"explain", "shop/missing", "shop/db"}, exitFailed, "pod shop/missing: not found"},
		{[]string{"explain", "shop/boom", "shop/db"}, exitFailed, "Internal (podwalld at " + socket + "): explain: boom"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, errOut := ctl(append([]string{"--socket", socket}, tt.args...)...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, errOut, tt.code, tt.stderr)
			}
			if tt.code == exitUsage && !strings.Contains(errOut, "usage: podwallctl") {
				t.Errorf("a usage error without the usage line:\n%s", errOut)
			}
		})
	}
}

// TestUnreachable: when the daemon cannot be reached, podwallctl names the
// socket it tried, why it failed, and what to check, and exits 1.
func TestUnreachable(t *testing.T) {
	dir, err := os.MkdirTemp("", "pwctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	missing := filepath.Join(dir, "missing.sock")
	// A socket nobody listens on any more (a daemon that died).
	stale := filepath.Join(dir, "stale.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	notSocket := filepath.Join(dir, "file")
	if err := os.WriteFile(notSocket, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		socket, cause string
	}{
		{missing, "the socket does not exist (podwalld is not running, or it uses another --socket)"},
		{stale, "connection refused: nothing listens there (a stale socket: podwalld has stopped)"},
		{notSocket, "the path exists but is not a socket"},
	}
	for _, tt := range tests {
		for _, cmd := range [][]string{{"status"}, {"pods", "-o", "json"}, {"explain", "a/b", "c/d"}} {
			t.Run(filepath.Base(tt.socket)+" "+cmd[0], func(t *testing.T) {
				code, out, errOut := ctl(append([]string{"--socket", tt.socket, "--timeout", "5s"}, cmd...)...)
				if code != exitFailed || out != "" {
					t.Errorf("exit %d, stdout %q; want 1 and nothing", code, out)
				}
				for _, want := range []string{"cannot reach podwalld at " + tt.socket + ": " + tt.cause,
					"is podwalld running", "--socket", "root-only"} {
					if !strings.Contains(errOut, want) {
						t.Errorf("stderr lacks %q:\n%s", want, errOut)
					}
				}
			})
		}
	}
}

// TestHelp: every command has a help with its usage and examples, reached
// as `help CMD`, `CMD --help` and `CMD -h`, printed on stdout with exit 0;
// the top help lists every command and documents the exit statuses.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		code, out, _ := ctl(args...)
		if code != exitOK {
			t.Errorf("%v: exit %d", args, code)
		}
		for _, want := range append(commandNames(), "exit status:", "0  success", "1  podwalld unreachable", "2  bad usage", "examples:") {
			if !strings.Contains(out, want) {
				t.Errorf("%v lacks %q:\n%s", args, want, out)
			}
		}
	}
	for _, name := range commandNames() {
		for _, args := range [][]string{{"help", name}, {name, "--help"}, {name, "-h"}} {
			code, out, errOut := ctl(args...)
			if code != exitOK || errOut != "" {
				t.Errorf("%v: exit %d, stderr %q", args, code, errOut)
			}
			h := helps[name]
			if !strings.Contains(out, "usage: "+h.usage) || !strings.Contains(out, "examples:\n  podwallctl "+name) ||
				!strings.Contains(out, "exit status:") || !strings.Contains(out, "-o, --output") {
				t.Errorf("%v:\n%s", args, out)
			}
		}
	}
	if code, _, _ := ctl("help", "frobnicate"); code != exitUsage {
		t.Errorf("help for an unknown command: exit %d, want 2", code)
	}
}
