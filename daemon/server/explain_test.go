package server_test

import (
	"testing"

	"google.golang.org/grpc/codes"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// TestExplainAPI calls Explain over the unix socket: the verdict of each
// direction with the rules that decide it, and the gRPC codes of bad
// requests (InvalidArgument) and unknown pods (NotFound).
func TestExplainAPI(t *testing.T) {
	d := startDaemon(t, "", shopState(t))
	ctx := rpcContext(t)
	for _, req := range []*pb.AddRequest{
		addRequest("web", "10.1.0.10", "/run/netns/pw-server-web"),
		addRequest("db", "10.1.0.20", "/run/netns/pw-server-db"),
		addRequest("client", "10.1.0.30", "/run/netns/pw-server-client"),
	} {
		if err := d.sync.Add(ctx, record(req)); err != nil {
			t.Fatal(err)
		}
	}

	x, err := d.status.Explain(ctx, &pb.ExplainRequest{Source: "shop/web", Destination: "shop/db", Port: 5432})
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != "allowed" || x.Protocol != "TCP" || x.Port != 5432 || x.NodeName != testNode || len(x.Flows) != 1 {
		t.Fatalf("Explain = %v", x)
	}
	f := x.Flows[0]
	if f.Source != "10.1.0.10" || f.Destination != "10.1.0.20" || f.Verdict != "allowed" {
		t.Errorf("flow = %v", f)
	}
	if e := f.Egress; e.Pod != "shop/web" || !e.Enforced || e.Isolated || e.Verdict != "allowed" {
		t.Errorf("egress = %v", e)
	}
	in := f.Ingress
	if in.Pod != "shop/db" || !in.Enforced || !in.Isolated || in.Verdict != "allowed" || len(in.AllowedBy) != 1 {
		t.Fatalf("ingress = %v", in)
	}
	if r := in.AllowedBy[0]; r.Policy != "shop/db-from-web" || r.Direction != "ingress" || r.Index != 0 || len(r.Ports) != 1 || r.Ports[0] != "TCP/5432" {
		t.Errorf("ingress allowed by %v", r)
	}
	if src := x.Source; src.Kind != "pod" || src.Pod != "shop/web" || !src.Local || len(src.Addresses) != 1 || src.Addresses[0] != "10.1.0.10" {
		t.Errorf("source = %v", src)
	}

	// client's egress reaches only db, on every port: web is denied.
	x, err = d.status.Explain(ctx, &pb.ExplainRequest{Source: "shop/client", Destination: "10.1.0.10"})
	if err != nil {
		t.Fatal(err)
	}
	if x.Verdict != "denied" || x.Flows[0].Egress.Verdict != "denied" || x.Destination.Pod != "shop/web" || x.Destination.Kind != "address" {
		t.Errorf("client -> web: %v", x)
	}

	for _, tt := range []struct {
		req  *pb.ExplainRequest
		code codes.Code
	}{
		{&pb.ExplainRequest{Source: "shop/nope", Destination: "shop/db"}, codes.NotFound},
		{&pb.ExplainRequest{Source: "shop/web", Destination: "shop/db", PortName: "pg"}, codes.NotFound},
		{&pb.ExplainRequest{Source: "what?", Destination: "shop/db"}, codes.InvalidArgument},
		{&pb.ExplainRequest{Source: "shop/web", Destination: "shop/db", Port: 80, Protocol: "ICMP"}, codes.InvalidArgument},
	} {
		_, err := d.status.Explain(ctx, tt.req)
		wantCode(t, "explain "+tt.req.String(), err, tt.code)
	}
}
