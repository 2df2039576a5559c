package server_test

import (
	"net/netip"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/daemon/policy"
	pb "github.com/podwall/podwall/proto/podwall/v1"
)

func TestGetPodShowsServiceVerdicts(t *testing.T) {
	state := shopState(t)
	// client may reach db (any port) and nothing else.
	service := func(name, ip string, port, target int32, endpoints ...string) {
		state.Services = append(state.Services, &policy.Service{Namespace: "shop", Name: name,
			ClusterIPs: []netip.Addr{netip.MustParseAddr(ip)},
			Ports:      []policy.ServicePort{{Name: "main", Protocol: corev1.ProtocolTCP, Port: port}}})
		es := &policy.EndpointSlice{Namespace: "shop", Name: name + "-1", Service: name,
			Ports: []policy.EndpointPort{{Name: "main", Protocol: corev1.ProtocolTCP, Port: target}}}
		for _, e := range endpoints {
			es.Endpoints = append(es.Endpoints, policy.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr(e)}, Ready: true})
		}
		state.EndpointSlices = append(state.EndpointSlices, es)
	}
	service("db", "10.96.0.20", 15432, 5432, "10.1.0.20")
	service("mixed", "10.96.0.30", 80, 8080, "10.1.0.20", "10.1.0.10")
	d := startDaemon(t, "", state)
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
	d.sync.SyncAll(ctx)

	detail, err := d.status.GetPod(ctx, &pb.GetPodRequest{Namespace: "shop", Name: "client"})
	if err != nil {
		t.Fatal(err)
	}
	type verdict struct {
		name, proto     string
		port            int32
		frontends       []string
		allowed         bool
		allowEP, denyEP []string
	}
	var got []verdict
	for _, v := range detail.Services {
		if v.Namespace != "shop" || v.PortName != "main" || v.Reason == "" {
			t.Errorf("verdict %v", v)
		}
		got = append(got, verdict{v.Name, v.Protocol, v.Port, v.Frontends, v.Allowed, v.AllowedEndpoints, v.DeniedEndpoints})
	}
	want := []verdict{
		{"db", "TCP", 15432, []string{"10.96.0.20"}, true, []string{"10.1.0.20:5432"}, nil},
		{"mixed", "TCP", 80, []string{"10.96.0.30"}, false, []string{"10.1.0.20:8080"}, []string{"10.1.0.10:8080"}},
	}
	if !slices.EqualFunc(got, want, func(a, b verdict) bool {
		return a.name == b.name && a.proto == b.proto && a.port == b.port && slices.Equal(a.frontends, b.frontends) &&
			a.allowed == b.allowed && slices.Equal(a.allowEP, b.allowEP) && slices.Equal(a.denyEP, b.denyEP)
	}) {
		t.Errorf("client's service verdicts:\n got %+v\nwant %+v", got, want)
	}
	// web's egress is open: no verdicts.
	detail, err = d.status.GetPod(ctx, &pb.GetPodRequest{Namespace: "shop", Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(detail.Services) != 0 {
		t.Errorf("web's service verdicts: %v", detail.Services)
	}
}
