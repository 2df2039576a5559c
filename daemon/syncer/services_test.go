package syncer

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/daemon/policy"
)

// serviceState is shopState plus client's egress restricted to db on 5432,
// a Service db-svc (10.96.0.20:15432 -> 5432) with the given endpoints, and
// the Service CIDR 10.96.0.0/16.
func serviceState(t *testing.T, endpoints ...string) *policy.State {
	st := shopState(t)
	st.Policies = append(st.Policies, parsePolicy(t, `
metadata: {name: client-to-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}], ports: [{port: 5432}]}]`))
	st.Services = []*policy.Service{{Namespace: "shop", Name: "db-svc", ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.20")},
		Ports: []policy.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 15432}}}}
	es := &policy.EndpointSlice{Namespace: "shop", Name: "db-svc-1", Service: "db-svc",
		Ports: []policy.EndpointPort{{Protocol: corev1.ProtocolTCP, Port: 5432}}}
	for _, e := range endpoints {
		es.Endpoints = append(es.Endpoints, policy.Endpoint{Addrs: []netip.Addr{netip.MustParseAddr(e)}, Ready: true, NodeName: testNode})
	}
	st.EndpointSlices = []*policy.EndpointSlice{es}
	st.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	return st
}

func TestServicesFollowEndpoints(t *testing.T) {
	tb := newTestBed(t, serviceState(t, "10.1.0.20"))
	tb.add(t, db, client)
	svcRule := []policy.Rule{{Peer: policy.Peer{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.20/32")}},
		Ports: []policy.Port{{Protocol: corev1.ProtocolTCP, Port: 15432}}}}
	guard := []policy.Rule{{Peer: policy.Peer{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}}}}
	got, _ := tb.data.applied(client.Netns)
	if !reflect.DeepEqual(got.Firewall.Egress.Services, svcRule) || !reflect.DeepEqual(got.Firewall.Egress.ServiceGuard, guard) {
		t.Fatalf("client's egress: %s", describeSpec(got))
	}
	checkVerdict(t, tb.sync, client.Key(), true, 1, 0)

	// The Service gains an endpoint the policy does not allow: the
	// frontend closes (a firewall change, so client is applied again)
	// and the verdict lists both endpoints.
	n := tb.data.count("apply", client.Netns)
	nDB := tb.data.count("apply", db.Netns)
	tb.src.setState(serviceState(t, "10.1.0.20", "10.1.0.99"))
	tb.sync.Trigger()
	tb.sync.SyncAll(t.Context())
	if got := tb.data.count("apply", client.Netns); got != n+1 {
		t.Errorf("an endpoint change caused %d applies of client, want 1", got-n)
	}
	if got := tb.data.count("apply", db.Netns); got != nDB {
		t.Errorf("an endpoint change re-applied db, whose egress is open")
	}
	got, _ = tb.data.applied(client.Netns)
	if len(got.Firewall.Egress.Services) != 0 || !reflect.DeepEqual(got.Firewall.Egress.ServiceGuard, guard) {
		t.Errorf("client's egress with a denied endpoint: %s", describeSpec(got))
	}
	checkVerdict(t, tb.sync, client.Key(), false, 1, 1)

	// Back to the allowed endpoint only.
	tb.src.setState(serviceState(t, "10.1.0.20"))
	tb.sync.Trigger()
	tb.sync.SyncAll(t.Context())
	got, _ = tb.data.applied(client.Netns)
	if !reflect.DeepEqual(got.Firewall.Egress.Services, svcRule) {
		t.Errorf("client's egress after scaling back: %s", describeSpec(got))
	}
	checkVerdict(t, tb.sync, client.Key(), true, 1, 0)

	// A change that leaves every firewall as it is (a new Service without
	// endpoints, inside the Service CIDR the guard already holds) applies
	// nothing, but the verdicts follow.
	n = tb.data.count("apply", client.Netns)
	next := serviceState(t, "10.1.0.20")
	next.Services = append(next.Services, &policy.Service{Namespace: "shop", Name: "idle",
		ClusterIPs: []netip.Addr{netip.MustParseAddr("10.96.0.40")}, Ports: []policy.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}}})
	tb.src.setState(next)
	tb.sync.Trigger()
	tb.sync.SyncAll(t.Context())
	if got := tb.data.count("apply", client.Netns); got != n {
		t.Errorf("a Service without endpoints caused %d applies of client, want 0", got-n)
	}
	for _, v := range tb.sync.Pods() {
		if v.Attachment.Key() == client.Key() && (len(v.Services) != 2 || v.Services[1].Service != "shop/idle" || v.Services[1].Allowed) {
			t.Errorf("client's verdicts after a new Service: %+v", v.Services)
		}
	}
	for _, v := range tb.sync.Pods() {
		if v.Attachment.Key() == db.Key() && v.Services != nil {
			t.Errorf("verdicts for db, whose egress is open: %+v", v.Services)
		}
	}
}

// checkVerdict checks the one Service verdict Pods shows for key.
func checkVerdict(t *testing.T, s *Syncer, key string, allowed bool, nAllowed, nDenied int) {
	t.Helper()
	for _, v := range s.Pods() {
		if v.Attachment.Key() != key {
			continue
		}
		if len(v.Services) != 1 {
			t.Fatalf("%s: verdicts %+v, want one", key, v.Services)
		}
		sv := v.Services[0]
		if sv.Service != "shop/db-svc" || sv.Allowed != allowed || len(sv.AllowedEndpoints) != nAllowed || len(sv.DeniedEndpoints) != nDenied {
			t.Errorf("%s: verdict %+v, want allowed=%v with %d allowed and %d denied endpoints", key, sv, allowed, nAllowed, nDenied)
		}
		return
	}
	t.Fatalf("no attachment %s", key)
}
