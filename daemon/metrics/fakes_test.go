package metrics_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

// fakeDataplane applies nothing; Apply fails in the netns it is told to.
type fakeDataplane struct {
	mu       sync.Mutex
	applyErr map[string]error // netns -> error Apply returns
}

func newFakeDataplane() *fakeDataplane {
	return &fakeDataplane{applyErr: map[string]error{}}
}

func (d *fakeDataplane) Apply(_ context.Context, netns string, spec dataplane.Spec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.applyErr[netns]; err != nil {
		return fmt.Errorf("apply firewall for %s in %s: %w", spec.Pod, netns, err)
	}
	return nil
}

func (d *fakeDataplane) Remove(context.Context, string) error { return nil }

func (d *fakeDataplane) Check(context.Context, string, dataplane.Spec) error { return nil }

func (d *fakeDataplane) Inspect(context.Context, string) (*dataplane.Ruleset, error) {
	return &dataplane.Ruleset{}, nil
}

func (d *fakeDataplane) Forget(string) {}

// failApply makes Apply in netns return err (nil: succeed again).
func (d *fakeDataplane) failApply(netns string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.applyErr, netns)
		return
	}
	d.applyErr[netns] = err
}

// fakeSource is a fixed policy source with a list of errors.
type fakeSource struct {
	state *policy.State
	errs  []source.Error
}

func (s *fakeSource) Name() string           { return "fake" }
func (s *fakeSource) State() *policy.State   { return s.state }
func (s *fakeSource) Errors() []source.Error { return slices.Clone(s.errs) }

func (s *fakeSource) Pod(_ context.Context, namespace, name string) (*policy.Pod, error) {
	for _, p := range s.state.Pods {
		if p.Namespace == namespace && p.Name == name {
			return p, nil
		}
	}
	return nil, nil
}

// shopState is namespace "shop" with two local pods, web and client (their
// addresses come from their CNI results), a dual-stack client pod on another
// node, and two policies:
//   - web-ingress: web takes TCP 80 from every client and TCP 443 from
//     anywhere (ingress isolated, 2 rules; the client set holds 10.88.0.11,
//     10.88.1.5 and fd10::5, 0.0.0.0/0 is two /1 halves);
//   - client-no-egress: clients send nothing (egress isolated, 0 rules).
func shopState(t testing.TB) *policy.State {
	t.Helper()
	ns := &policy.Namespace{Name: "shop", Labels: map[string]string{source.NamespaceNameLabel: "shop"}}
	pod := func(name, app, node string, ips ...string) *policy.Pod {
		p := &policy.Pod{Namespace: "shop", Name: name, UID: "uid-" + name, NodeName: node,
			Labels: map[string]string{"app": app}, Phase: corev1.PodRunning}
		for _, ip := range ips {
			p.IPs = append(p.IPs, netip.MustParseAddr(ip))
		}
		return p
	}
	tcp := corev1.ProtocolTCP
	port := func(n int) []networkingv1.NetworkPolicyPort {
		p := intstr.FromInt32(int32(n))
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}}
	}
	webIngress := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-ingress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}}}},
					Ports: port(80),
				},
				{
					From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0"}}},
					Ports: port(443),
				},
			},
		},
	}
	clientNoEgress := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "client-no-egress"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		},
	}
	var policies []*networkingv1.NetworkPolicy
	for _, np := range []*networkingv1.NetworkPolicy{webIngress, clientNoEgress} {
		p, err := source.PolicyFromAPI(np)
		if err != nil {
			t.Fatalf("policy %s: %v", np.Name, err)
		}
		policies = append(policies, p)
	}
	return &policy.State{
		Namespaces: []*policy.Namespace{ns},
		Pods: []*policy.Pod{
			pod("web", "web", testNode),
			pod("client", "client", testNode),
			pod("remote-client", "client", "node-b", "10.88.1.5", "fd10::5"),
		},
		Policies: policies,
	}
}

// samples gathers g and returns the samples of the named metric families,
// keyed "name{label=value,...}" (labels sorted by name); a
// histogram gives name_count and name_sum.
func samples(t testing.TB, g prometheus.Gatherer, names ...string) map[string]float64 {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range families {
		if !slices.Contains(names, mf.GetName()) {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := ""
			for i, l := range m.GetLabel() {
				if i > 0 {
					labels += ","
				}
				labels += l.GetName() + "=" + l.GetValue()
			}
			if labels != "" {
				labels = "{" + labels + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[mf.GetName()+labels] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[mf.GetName()+labels] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[mf.GetName()+"_count"+labels] = float64(m.GetHistogram().GetSampleCount())
				out[mf.GetName()+"_sum"+labels] = m.GetHistogram().GetSampleSum()
			default:
				t.Fatalf("%s: unexpected type %v", mf.GetName(), mf.GetType())
			}
		}
	}
	return out
}
