package servicese2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	pb "github.com/podwall/podwall/proto/podwall/v1"
	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// The tests' timings. Nothing asserts how fast things happen: allowed
// probes retry until they connect, denied ones until they are blocked, for
// up to convergeWithin (podwalld and kube-proxy catch up with the API on a
// busy shared machine); then a denial is confirmed by confirmProbes more
// blocked probes (kube-proxy picks an endpoint at random per connection).
const (
	probeTimeout   = time.Second
	convergeWithin = 30 * time.Second
	confirmProbes  = 3
	// testTimeout bounds one test's body.
	testTimeout = 5 * time.Minute
)

// scenario is one test's view of the shared node: its namespaces, pods and
// objects, deleted when the test ends (after podwalld's view is logged, if
// it failed).
type scenario struct {
	t   *testing.T
	n   *node
	ctx context.Context

	mu         sync.Mutex
	pods       [][2]string // namespace, name
	namespaces []string
	// services are Services created in namespaces the scenario did not
	// create (kube-system), deleted at the end.
	services [][2]string
}

// newScenario marks the test parallel and returns its scenario on the
// shared node.
func newScenario(t *testing.T) *scenario {
	t.Helper()
	n := theNode(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	s := &scenario{t: t, n: n, ctx: ctx}
	t.Cleanup(func() {
		cancel()
		s.cleanUp()
	})
	return s
}

func (s *scenario) cleanUp() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s.mu.Lock()
	pods, services, namespaces := s.pods, s.services, s.namespaces
	s.mu.Unlock()
	if s.t.Failed() {
		var keys []string
		for _, p := range pods {
			keys = append(keys, p[0]+"/"+p[1])
		}
		s.t.Logf("podwalld's view:\n%s", s.n.Daemon.Diagnose(ctx, keys...))
		s.t.Logf("podwalld log (last 80 lines):\n%s", harness.LastLines(s.n.Daemon.Log(), 80))
	}
	var wg sync.WaitGroup
	for _, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.n.Kubelet.DeletePod(ctx, p[0], p[1]); err != nil {
				s.t.Errorf("%v", err)
			}
		}()
	}
	wg.Wait()
	client := s.n.CP.Client()
	for _, svc := range services {
		if err := client.CoreV1().Services(svc[0]).Delete(ctx, svc[1], metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			s.t.Errorf("delete service %s/%s: %v", svc[0], svc[1], err)
		}
	}
	for _, ns := range namespaces {
		// The namespace controller deletes what is left in it (policies,
		// Services); nothing waits for that.
		if err := client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			s.t.Errorf("delete namespace %s: %v", ns, err)
		}
	}
}

// namespace creates namespace name with labels, deleted when the test
// ends.
func (s *scenario) namespace(name string, labels map[string]string) {
	s.t.Helper()
	if _, err := s.n.CP.CreateNamespace(s.ctx, name, labels); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.namespaces = append(s.namespaces, name)
	s.mu.Unlock()
}

// run runs pods on the node at once (a dual-stack CNI ADD takes a while)
// and returns their bed pods in the same order; each is deleted when the
// test ends.
func (s *scenario) run(pods ...*corev1.Pod) []*bed.Pod {
	s.t.Helper()
	out := make([]*bed.Pod, len(pods))
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], errs[i] = s.n.Kubelet.RunPod(s.ctx, p)
			if errs[i] == nil {
				s.mu.Lock()
				s.pods = append(s.pods, [2]string{p.Namespace, p.Name})
				s.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// deletePod deletes a pod run by run (CNI DEL, then the object).
func (s *scenario) deletePod(p *bed.Pod) {
	s.t.Helper()
	s.mu.Lock()
	s.pods = slices.DeleteFunc(s.pods, func(k [2]string) bool { return k == [2]string{p.Namespace, p.Name} })
	s.mu.Unlock()
	if err := s.n.Kubelet.DeletePod(s.ctx, p.Namespace, p.Name); err != nil {
		s.t.Fatal(err)
	}
}

// setPodLabels replaces a pod's labels through the API.
func (s *scenario) setPodLabels(p *bed.Pod, labels map[string]string) {
	s.t.Helper()
	pods := s.n.CP.Client().CoreV1().Pods(p.Namespace)
	obj, err := pods.Get(s.ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		s.t.Fatal(err)
	}
	obj.Labels = labels
	if _, err := pods.Update(s.ctx, obj, metav1.UpdateOptions{}); err != nil {
		s.t.Fatal(err)
	}
}

// service creates svc and returns it as the API server made it
// (ClusterIPs set). Services outside the scenario's namespaces are deleted
// when the test ends.
func (s *scenario) service(svc *corev1.Service) *corev1.Service {
	s.t.Helper()
	created, err := s.n.CP.Client().CoreV1().Services(svc.Namespace).Create(s.ctx, svc, metav1.CreateOptions{})
	if err != nil {
		s.t.Fatalf("create service %s/%s: %v", svc.Namespace, svc.Name, err)
	}
	s.mu.Lock()
	if !slices.Contains(s.namespaces, svc.Namespace) {
		s.services = append(s.services, [2]string{svc.Namespace, svc.Name})
	}
	s.mu.Unlock()
	return created
}

// waitProgrammed waits until kube-proxy sends svc's ClusterIPs to exactly
// the addresses of backends (of each ClusterIP's family).
func (s *scenario) waitProgrammed(svc *corev1.Service, backends ...*bed.Pod) {
	s.t.Helper()
	var addrs []netip.Addr
	for _, b := range backends {
		addrs = append(addrs, b.IPs...)
	}
	ctx, cancel := context.WithTimeout(s.ctx, 2*convergeWithin)
	defer cancel()
	if err := s.n.Proxy.WaitService(ctx, svc, addrs...); err != nil {
		s.t.Fatal(err)
	}
}

// policy creates np.
func (s *scenario) policy(np *networkingv1.NetworkPolicy) {
	s.t.Helper()
	if _, err := s.n.CP.Client().NetworkingV1().NetworkPolicies(np.Namespace).Create(s.ctx, np, metav1.CreateOptions{}); err != nil {
		s.t.Fatalf("create policy %s/%s: %v", np.Namespace, np.Name, err)
	}
}

// expectOpen probes from → to:port over proto until it connects, failing
// the test if it never does.
func (s *scenario) expectOpen(what string, from *bed.Pod, to netip.Addr, port int, proto string) {
	s.t.Helper()
	ok, err := bed.ProbeUntil(s.ctx, from, to, port, proto, probeTimeout, true, convergeWithin)
	switch {
	case err != nil:
		s.t.Errorf("%s: %v", what, err)
	case !ok:
		s.t.Errorf("%s: %s -> %s:%d/%s is blocked, want it open", what, from, to, port, proto)
	}
}

// expectClosed probes from → to:port over proto until it is blocked, then
// confirmProbes times more, failing the test if any of those connects.
func (s *scenario) expectClosed(what string, from *bed.Pod, to netip.Addr, port int, proto string) {
	s.t.Helper()
	ok, err := bed.ProbeUntil(s.ctx, from, to, port, proto, probeTimeout, false, convergeWithin)
	for i := 0; err == nil && !ok && i < confirmProbes; i++ {
		ok, err = bed.Probe(s.ctx, from, to, port, proto, probeTimeout)
	}
	switch {
	case err != nil:
		s.t.Errorf("%s: %v", what, err)
	case ok:
		s.t.Errorf("%s: %s -> %s:%d/%s connects, want it blocked", what, from, to, port, proto)
	}
}

// clusterIP returns svc's ClusterIP of family f; it fails the test if
// there is none.
func (s *scenario) clusterIP(svc *corev1.Service, f bed.Family) netip.Addr {
	s.t.Helper()
	for _, ip := range svc.Spec.ClusterIPs {
		a, err := netip.ParseAddr(ip)
		if err == nil && (a.Is4() == (f == bed.IPv4)) {
			return a
		}
	}
	s.t.Fatalf("service %s/%s has no %s ClusterIP (%v)", svc.Namespace, svc.Name, f, svc.Spec.ClusterIPs)
	return netip.Addr{}
}

// podIP returns p's address of family f.
func (s *scenario) podIP(p *bed.Pod, f bed.Family) netip.Addr {
	s.t.Helper()
	a, ok := p.IP(f)
	if !ok {
		s.t.Fatalf("pod %s has no %s address", p, f)
	}
	return a
}

// verdict finds the verdict on svc's port for frontend among verdicts.
func verdict(verdicts []*pb.ServiceVerdict, svc *corev1.Service, port int32, frontend netip.Addr) *pb.ServiceVerdict {
	for _, v := range verdicts {
		if v.GetNamespace() == svc.Namespace && v.GetName() == svc.Name && v.GetPort() == port && slices.Contains(v.GetFrontends(), frontend.String()) {
			return v
		}
	}
	return nil
}

// expectVerdict polls `podwallctl pod` for client until the verdict on
// svc's port (the frontend of family f) says allowed with exactly the
// allowed and denied endpoints given ("address:targetPort"), failing the
// test if it never does.
func (s *scenario) expectVerdict(client *bed.Pod, svc *corev1.Service, port int32, f bed.Family, allowed bool, allowedEndpoints, deniedEndpoints []string) {
	s.t.Helper()
	frontend := s.clusterIP(svc, f)
	slices.Sort(allowedEndpoints)
	slices.Sort(deniedEndpoints)
	err := harness.Poll(s.ctx, convergeWithin, 500*time.Millisecond, func() error {
		d, err := s.n.Daemon.PodDetail(s.ctx, client.Namespace, client.Name)
		if err != nil {
			return err
		}
		v := verdict(d.GetServices(), svc, port, frontend)
		if v == nil {
			return fmt.Errorf("no verdict on %s/%s %s port %d among %d", svc.Namespace, svc.Name, frontend, port, len(d.GetServices()))
		}
		gotAllowed, gotDenied := slices.Sorted(slices.Values(v.GetAllowedEndpoints())), slices.Sorted(slices.Values(v.GetDeniedEndpoints()))
		if v.GetAllowed() != allowed || !slices.Equal(gotAllowed, allowedEndpoints) || !slices.Equal(gotDenied, deniedEndpoints) {
			return fmt.Errorf("verdict allowed=%v, allowed endpoints %v, denied %v (%q); want allowed=%v, %v, %v",
				v.GetAllowed(), gotAllowed, gotDenied, v.GetReason(), allowed, allowedEndpoints, deniedEndpoints)
		}
		return nil
	})
	if err != nil {
		s.t.Errorf("%s: verdict on %s/%s:%d (%s): %v", client, svc.Namespace, svc.Name, port, f, err)
	}
}

// endpoint spells an endpoint as the verdicts do: "address:port",
// "[address]:port" for IPv6.
func endpoint(a netip.Addr, port int) string { return netip.AddrPortFrom(a, uint16(port)).String() }

// podObject is a pod with labels whose one container declares ports (the
// kubelet stand-in serves each: TCP answers one line, the pod's
// namespace/name; UDP echoes).
func podObject(namespace, name string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "main",
			Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
			Ports: ports,
		}}},
	}
}

// tcpPort is a TCP container port, named when name is not empty.
func tcpPort(name string, port int32) corev1.ContainerPort {
	return corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: corev1.ProtocolTCP}
}

// serviceObject is a Service selecting selector with one TCP port (named
// "web") port → target, of the given IP family policy (nil: the cluster's
// default, IPv4 single-stack).
func serviceObject(namespace, name string, selector map[string]string, port int32, target intstr.IntOrString, families *corev1.IPFamilyPolicy) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{
			Selector:       selector,
			IPFamilyPolicy: families,
			Ports:          []corev1.ServicePort{{Name: "web", Port: port, TargetPort: target, Protocol: corev1.ProtocolTCP}},
		},
	}
}

// dualStack is the family policy of the tests' dual-stack Services.
func dualStack() *corev1.IPFamilyPolicy {
	p := corev1.IPFamilyPolicyRequireDualStack
	return &p
}

// podsPeer is a peer of the pods with labels, in the policy's namespace.
func podsPeer(labels map[string]string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: labels}}
}

// policyPorts are ports of one protocol, numbers or names.
func policyPorts(proto corev1.Protocol, ports ...intstr.IntOrString) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, p := range ports {
		out = append(out, networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &p})
	}
	return out
}

// egressPolicy isolates the egress of the pods with labels (all pods of
// the namespace when labels is nil) and allows rules.
func egressPolicy(namespace, name string, labels map[string]string, rules ...networkingv1.NetworkPolicyEgressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: labels},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
			Egress:      rules,
		},
	}
}

// ingressPolicy isolates the ingress of the pods with labels (all pods of
// the namespace when labels is nil) and allows rules.
func ingressPolicy(namespace, name string, labels map[string]string, rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: labels},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     rules,
		},
	}
}

// served is the line the kubelet stand-in's TCP servers answer with.
func served(p *bed.Pod) string { return p.Namespace + "/" + p.Name }

// dialLine connects from → to:port and returns the server's line, retrying
// until one comes back within convergeWithin; "" and a test error if none
// does.
func (s *scenario) dialLine(what string, from *bed.Pod, to netip.Addr, port int) string {
	s.t.Helper()
	var line string
	err := harness.Poll(s.ctx, convergeWithin, 500*time.Millisecond, func() error {
		var err error
		line, err = bed.DialLine(s.ctx, from, netip.AddrPortFrom(to, uint16(port)), probeTimeout)
		return err
	})
	if err != nil {
		s.t.Errorf("%s: %v", what, err)
		return ""
	}
	return strings.TrimSpace(line)
}
