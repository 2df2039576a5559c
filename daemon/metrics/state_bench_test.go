package metrics_test

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/daemon/metrics"
	"github.com/podwall/podwall/daemon/policy"
)

// BenchmarkScrapeState gathers the state gauges of 110 local web pods whose
// client sets each hold 1000 remote clients in 10.208.0.0/16 (odd addresses,
// so that no two merge into a wider prefix).
func BenchmarkScrapeState(b *testing.B) {
	state := shopState(b)
	for i := range 1000 {
		state.Pods = append(state.Pods, &policy.Pod{Namespace: "shop", Name: fmt.Sprintf("client-%d", i),
			UID: fmt.Sprintf("uid-client-%d", i), NodeName: "node-b", Labels: map[string]string{"app": "client"},
			Phase: corev1.PodRunning, IPs: []netip.Addr{netip.MustParseAddr(fmt.Sprintf("10.208.%d.%d", i/125, 2*(i%125)+1))}})
	}
	for i := range 110 {
		state.Pods = append(state.Pods, &policy.Pod{Namespace: "shop", Name: fmt.Sprintf("web-%d", i),
			UID: fmt.Sprintf("uid-web-%d", i), NodeName: testNode, Labels: map[string]string{"app": "web"},
			Phase: corev1.PodRunning})
	}
	reg := metrics.New("bench")
	src := &fakeSource{state: state}
	s := newSyncer(b, reg, newFakeDataplane(), src)
	if err := reg.CollectState(s, src); err != nil {
		b.Fatal(err)
	}
	for i := range 110 {
		if err := s.Add(b.Context(), attachment(fmt.Sprintf("web-%d", i), fmt.Sprintf("10.208.100.%d", i+1))); err != nil {
			b.Fatal(err)
		}
	}
	s.SyncAll(b.Context())
	if got := samples(b, reg.Gatherer(), "podwall_set_members")["podwall_set_members"]; got < 110*1000 {
		b.Fatalf("podwall_set_members = %v, want at least %d", got, 110*1000)
	}
	for b.Loop() {
		samples(b, reg.Gatherer(), stateMetrics...)
	}
}
