package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podwall/podwall/daemon/policy"
)

// Unit tests of the Service side against the fake clientset; the real API
// server is in apiserver_test.go.

func newService(namespace, name string, clusterIPs ...string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIPs: clusterIPs,
			Selector:   map[string]string{"app": name},
			Ports:      []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	if len(clusterIPs) > 0 {
		svc.Spec.ClusterIP = clusterIPs[0]
	}
	return svc
}

func newSlice(namespace, name, service string, port int32, ready map[string]bool) *discoveryv1.EndpointSlice {
	portName, proto := "http", corev1.ProtocolTCP
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
	for _, ip := range slices.Sorted(func(yield func(string) bool) {
		for ip := range ready {
			if !yield(ip) {
				return
			}
		}
	}) {
		r := ready[ip]
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &r}})
	}
	return s
}

func newServiceCIDR(name string, cidrs ...string) *networkingv1.ServiceCIDR {
	return &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: cidrs}}
}

func newNode(name string, addrs ...corev1.NodeAddress) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: addrs}}
}

// summarizeServices renders the Service part of a state as one line per
// object.
func summarizeServices(st *policy.State) []string {
	var out []string
	for _, s := range st.Services {
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s/%d/%d", p.Name, p.Protocol, p.Port, p.NodePort))
		}
		out = append(out, fmt.Sprintf("service %s clusterIPs=%s external=%s ports=%s local=%v",
			s.Key(), addrList(s.ClusterIPs), addrList(s.ExternalIPs), strings.Join(ports, ","), s.InternalTrafficLocal))
	}
	for _, e := range st.EndpointSlices {
		var ports, eps []string
		for _, p := range e.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s/%d", p.Name, p.Protocol, p.Port))
		}
		for _, ep := range e.Endpoints {
			eps = append(eps, fmt.Sprintf("%s:%v:%s", addrList(ep.Addrs), ep.Ready, ep.NodeName))
		}
		out = append(out, fmt.Sprintf("slice %s/%s service=%s ports=%s endpoints=%s",
			e.Namespace, e.Name, e.Service, strings.Join(ports, ","), strings.Join(eps, ",")))
	}
	var cidrs []string
	for _, p := range st.ServiceCIDRs {
		cidrs = append(cidrs, p.String())
	}
	return append(out, "cidrs "+strings.Join(cidrs, ","))
}

func addrList(as []netip.Addr) string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return strings.Join(out, "+")
}

// waitState polls summarize(src.State()) until it equals want or 15 s
// pass.
func waitState(t *testing.T, src *Source, what string, summarize func(*policy.State) []string, want []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := summarize(src.State())
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func equalAny(a, b any) bool { return reflect.DeepEqual(a, b) }

func TestServiceStateFollowsEvents(t *testing.T) {
	rs := startSource(t, nil,
		newService("nsa", "web", "10.96.0.10"),
		newSlice("nsa", "web-1", "web", 8080, map[string]bool{"10.1.0.5": true}),
		newServiceCIDR("kubernetes", "10.96.0.0/16"),
	)
	rs.SetServiceCIDRs([]netip.Prefix{netip.MustParsePrefix("fd00:96::/108")})
	rs.waitSynced(t)
	ctx := context.Background()
	core, disc, nw := rs.client.CoreV1(), rs.client.DiscoveryV1(), rs.client.NetworkingV1()
	steps := []struct {
		name   string
		change func() error
		want   []string
	}{
		{"initial list", func() error { return nil }, []string{
			"service nsa/web clusterIPs=10.96.0.10 external= ports=http/TCP/80/0 local=false",
			"slice nsa/web-1 service=web ports=http/TCP/8080 endpoints=10.1.0.5:true:",
			"cidrs 10.96.0.0/16,fd00:96::/108",
		}},
		{"add", func() error {
			_, err1 := core.Services("nsb").Create(ctx, newService("nsb", "db", "10.96.0.20"), metav1.CreateOptions{})
			_, err2 := disc.EndpointSlices("nsb").Create(ctx, newSlice("nsb", "db-1", "db", 5432, map[string]bool{"10.1.1.7": false}), metav1.CreateOptions{})
			_, err3 := nw.ServiceCIDRs().Create(ctx, newServiceCIDR("extra", "10.100.0.0/16"), metav1.CreateOptions{})
			return errors.Join(err1, err2, err3)
		}, []string{
			"service nsa/web clusterIPs=10.96.0.10 external= ports=http/TCP/80/0 local=false",
			"service nsb/db clusterIPs=10.96.0.20 external= ports=http/TCP/80/0 local=false",
			"slice nsa/web-1 service=web ports=http/TCP/8080 endpoints=10.1.0.5:true:",
			"slice nsb/db-1 service=db ports=http/TCP/5432 endpoints=10.1.1.7:false:",
			"cidrs 10.96.0.0/16,10.100.0.0/16,fd00:96::/108",
		}},
		{"update", func() error {
			svc := newService("nsa", "web", "10.96.0.10")
			svc.Spec.ExternalIPs = []string{"203.0.113.5"}
			_, err1 := core.Services("nsa").Update(ctx, svc, metav1.UpdateOptions{})
			_, err2 := disc.EndpointSlices("nsb").Update(ctx, newSlice("nsb", "db-1", "db", 5432, map[string]bool{"10.1.1.7": true, "10.1.1.8": true}), metav1.UpdateOptions{})
			_, err3 := nw.ServiceCIDRs().Update(ctx, newServiceCIDR("extra", "10.101.0.0/16"), metav1.UpdateOptions{})
			return errors.Join(err1, err2, err3)
		}, []string{
			"service nsa/web clusterIPs=10.96.0.10 external=203.0.113.5 ports=http/TCP/80/0 local=false",
			"service nsb/db clusterIPs=10.96.0.20 external= ports=http/TCP/80/0 local=false",
			"slice nsa/web-1 service=web ports=http/TCP/8080 endpoints=10.1.0.5:true:",
			"slice nsb/db-1 service=db ports=http/TCP/5432 endpoints=10.1.1.7:true:,10.1.1.8:true:",
			"cidrs 10.96.0.0/16,10.101.0.0/16,fd00:96::/108",
		}},
		{"delete", func() error {
			err1 := core.Services("nsa").Delete(ctx, "web", metav1.DeleteOptions{})
			err2 := disc.EndpointSlices("nsa").Delete(ctx, "web-1", metav1.DeleteOptions{})
			err3 := nw.ServiceCIDRs().Delete(ctx, "kubernetes", metav1.DeleteOptions{})
			return errors.Join(err1, err2, err3)
		}, []string{
			"service nsb/db clusterIPs=10.96.0.20 external= ports=http/TCP/80/0 local=false",
			"slice nsb/db-1 service=db ports=http/TCP/5432 endpoints=10.1.1.7:true:,10.1.1.8:true:",
			"cidrs 10.101.0.0/16,fd00:96::/108",
		}},
	}
	for _, step := range steps {
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		waitState(t, rs.Source, step.name, summarizeServices, step.want)
	}
}

func TestServiceUpdatesTheCompilerCannotSeeDoNotNotify(t *testing.T) {
	svc := newService("nsa", "web", "10.96.0.10")
	slice := newSlice("nsa", "web-1", "web", 8080, map[string]bool{"10.1.0.5": true})
	rs := startSource(t, nil, svc, slice, newServiceCIDR("kubernetes", "10.96.0.0/16"))
	rs.waitSynced(t)
	waitFor(t, "the first changed call", func() bool { return rs.changed.Load() == 1 })
	ctx := context.Background()
	yes := true
	cases := []struct {
		name   string
		change func() error
		notify bool
	}{
		{"service selector, labels and annotations", func() error {
			s := svc.DeepCopy()
			s.Spec.Selector = map[string]string{"app": "other"}
			s.Labels = map[string]string{"x": "y"}
			s.Annotations = map[string]string{"touched": "yes"}
			_, err := rs.client.CoreV1().Services("nsa").Update(ctx, s, metav1.UpdateOptions{})
			return err
		}, false},
		{"endpoint serving/terminating, targetRef, zone", func() error {
			s := slice.DeepCopy()
			zone := "a"
			s.Endpoints[0].Conditions.Serving, s.Endpoints[0].Conditions.Terminating = &yes, &yes
			s.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Name: "web-0"}
			s.Endpoints[0].Zone = &zone
			_, err := rs.client.DiscoveryV1().EndpointSlices("nsa").Update(ctx, s, metav1.UpdateOptions{})
			return err
		}, false},
		{"a second ServiceCIDR with the same range", func() error {
			_, err := rs.client.NetworkingV1().ServiceCIDRs().Create(ctx, newServiceCIDR("dup", "10.96.0.0/16"), metav1.CreateOptions{})
			return err
		}, false},
		// The twins.
		{"service port", func() error {
			s := svc.DeepCopy()
			s.Spec.Ports[0].Port = 8080
			_, err := rs.client.CoreV1().Services("nsa").Update(ctx, s, metav1.UpdateOptions{})
			return err
		}, true},
		{"endpoint readiness", func() error {
			_, err := rs.client.DiscoveryV1().EndpointSlices("nsa").Update(ctx, newSlice("nsa", "web-1", "web", 8080, map[string]bool{"10.1.0.5": false}), metav1.UpdateOptions{})
			return err
		}, true},
		{"a new range", func() error {
			_, err := rs.client.NetworkingV1().ServiceCIDRs().Create(ctx, newServiceCIDR("new", "10.97.0.0/16"), metav1.CreateOptions{})
			return err
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls, processed := rs.changed.Load(), rs.processed.Load()
			if err := c.change(); err != nil {
				t.Fatal(err)
			}
			rs.waitQuiet(t, processed)
			got := rs.changed.Load() - calls
			if c.notify && got != 1 {
				t.Errorf("changed() called %d times, want 1", got)
			}
			if !c.notify && got != 0 {
				t.Errorf("changed() called %d times for an update the compiler cannot see", got)
			}
			if err := stateSharesCachedValues(rs); err != nil {
				t.Error(err)
			}
		})
	}
}

// stateSharesCachedValues checks that the state's Service nsa/web and
// EndpointSlice nsa/web-1 are the values the informers' caches hold, so
// that each is held once.
func stateSharesCachedValues(rs *runningSource) error {
	svc, _, _ := rs.services.GetIndexer().GetByKey("nsa/web")
	slice, _, _ := rs.endpointSlices.GetIndexer().GetByKey("nsa/web-1")
	rs.mu.Lock()
	defer rs.mu.Unlock()
	stateSvc, _ := rs.serviceSet.get("nsa/web")
	stateSlice, _ := rs.sliceSet.get("nsa/web-1")
	if c, ok := svc.(*cachedService); !ok || c.value != stateSvc {
		return fmt.Errorf("the state's Service is not the cached one (cache holds %T)", svc)
	}
	if c, ok := slice.(*cachedEndpointSlice); !ok || c.value != stateSlice {
		return fmt.Errorf("the state's EndpointSlice is not the cached one (cache holds %T)", slice)
	}
	return nil
}

// A ServiceCIDR list that is forbidden, or a resource the API server does
// not serve, leaves the source ready, with the SetServiceCIDRs ranges.
func TestServiceCIDRsUnavailable(t *testing.T) {
	gr := schema.GroupResource{Group: "networking.k8s.io", Resource: "servicecidrs"}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"forbidden", apierrors.NewForbidden(gr, "", errors.New("RBAC: not granted"))},
		{"not served", apierrors.NewNotFound(gr, "")},
	} {
		t.Run(c.name, func(t *testing.T) {
			var lists sync.Map
			rs := startSource(t, func(client *fake.Clientset) {
				client.PrependReactor("list", "servicecidrs", func(k8stesting.Action) (bool, runtime.Object, error) {
					n, _ := lists.LoadOrStore("n", new(int))
					*n.(*int)++
					return true, nil, c.err
				})
			}, newService("nsa", "web", "10.96.0.10"), newServiceCIDR("kubernetes", "10.96.0.0/16"))
			rs.SetServiceCIDRs([]netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")})
			rs.waitSynced(t)
			if err := rs.Ready(); err != nil {
				t.Errorf("Ready() = %v", err)
			}
			want := []string{"service nsa/web clusterIPs=10.96.0.10 external= ports=http/TCP/80/0 local=false", "cidrs 10.96.0.0/12"}
			if got := summarizeServices(rs.State()); !slices.Equal(got, want) {
				t.Errorf("state %q, want %q", got, want)
			}
			if n, _ := lists.Load("n"); n == nil || *n.(*int) != 1 {
				t.Errorf("servicecidrs listed %v times, want once (no informer retrying)", n)
			}
		})
	}
}

func TestNodeAddrsNotify(t *testing.T) {
	internal := func(ip string) corev1.NodeAddress {
		return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
	}
	var mu sync.Mutex
	var got [][]netip.Addr
	client := fake.NewClientset(
		newNode(testNode, internal("192.168.10.5"), corev1.NodeAddress{Type: corev1.NodeHostName, Address: testNode}),
		newNode("node-b", internal("192.168.10.6")),
	)
	src := New(clientOf(client), testNode, testLogger(t))
	src.NotifyNodeAddrs(func(a []netip.Addr) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, a)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, func() {})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	calls := func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprint(got)
	}
	waitFor(t, "the first call", func() bool { return calls() == "[[192.168.10.5]]" })
	if a := src.NodeAddrs(); !slices.Equal(a, []netip.Addr{netip.MustParseAddr("192.168.10.5")}) {
		t.Errorf("NodeAddrs() = %v, want only %s's InternalIP", a, testNode)
	}
	nodes := client.CoreV1().Nodes()
	if _, err := nodes.UpdateStatus(context.Background(), newNode(testNode, internal("192.168.10.5"),
		corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "198.51.100.5"}), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the call for the new address", func() bool { return calls() == "[[192.168.10.5] [192.168.10.5 198.51.100.5]]" })
	if _, err := nodes.Create(context.Background(), newNode("node-c", internal("192.168.10.7")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := nodes.Delete(context.Background(), testNode, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the call for the deleted node", func() bool {
		return calls() == "[[192.168.10.5] [192.168.10.5 198.51.100.5] []]"
	})
	if len(src.State().Services) != 0 {
		t.Error("node events changed the policy state")
	}
}

func TestTransformStripsServiceObjects(t *testing.T) {
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{}`)}}}
	local, vip := corev1.ServiceInternalTrafficPolicyLocal, corev1.LoadBalancerIPModeVIP
	svc := newService("nsa", "web", "10.96.0.10", "fd00:96::a")
	svc.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 4096)}
	svc.Labels = map[string]string{"app": "web"}
	svc.ManagedFields = managed
	svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	svc.Spec.ExternalIPs = []string{"203.0.113.5"}
	svc.Spec.InternalTrafficPolicy = &local
	svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	svc.Spec.Ports[0].TargetPort.StrVal, svc.Spec.Ports[0].NodePort = "http", 30080
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.1", IPMode: &vip,
		Ports: []corev1.PortStatus{{Port: 80}}}, {Hostname: "lb.example.com"}}

	slice := newSlice("nsa", "web-1", "web", 8080, map[string]bool{"10.1.0.5": true})
	slice.Labels["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io"
	slice.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "now"}
	slice.ManagedFields = managed
	node, zone, yes := "node-a", "zone-a", true
	slice.Endpoints[0].NodeName, slice.Endpoints[0].Zone = &node, &zone
	slice.Endpoints[0].Conditions.Serving = &yes
	slice.Endpoints[0].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "nsa", Name: "web-0", UID: "u"}
	slice.Endpoints[0].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "zone-a"}}}

	cidr := newServiceCIDR("kubernetes", "10.96.0.0/16")
	cidr.ManagedFields = managed
	cidr.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue}}

	n := newNode(testNode, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.168.10.5"},
		corev1.NodeAddress{Type: corev1.NodeHostName, Address: testNode})
	n.Labels = map[string]string{"kubernetes.io/hostname": testNode}
	n.Status.Images = []corev1.ContainerImage{{Names: []string{strings.Repeat("i", 1000)}}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}

	rs := startSource(t, nil, svc, slice, cidr, n)
	rs.waitSynced(t)
	for _, c := range []struct {
		name  string
		store interface {
			GetByKey(string) (any, bool, error)
		}
		key  string
		want runtime.Object
	}{
		// Services and EndpointSlices are held as what the compiler reads
		// of them, converted once as they are stored.
		{"service", rs.services.GetStore(), "nsa/web", newCachedObject(&metav1.ObjectMeta{Namespace: "nsa", Name: "web"}, &policy.Service{
			Namespace: "nsa", Name: "web",
			ClusterIPs:           []netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:96::a")},
			ExternalIPs:          []netip.Addr{netip.MustParseAddr("203.0.113.5"), netip.MustParseAddr("198.51.100.1")},
			Ports:                []policy.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}},
			InternalTrafficLocal: true,
		})},
		{"endpointslice", rs.endpointSlices.GetStore(), "nsa/web-1", newCachedObject(&metav1.ObjectMeta{Namespace: "nsa", Name: "web-1"}, &policy.EndpointSlice{
			Namespace: "nsa", Name: "web-1", Service: "web",
			Ports:     []policy.EndpointPort{{Name: *slice.Ports[0].Name, Protocol: corev1.ProtocolTCP, Port: 8080}},
			Endpoints: []policy.Endpoint{{Addrs: []netip.Addr{netip.MustParseAddr("10.1.0.5")}, Ready: true, NodeName: node}},
		})},
		{"servicecidr", rs.serviceCIDRs.GetStore(), "kubernetes", &networkingv1.ServiceCIDR{
			ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.96.0.0/16"}},
		}},
		{"node", rs.node.GetStore(), testNode, newNode(testNode, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.168.10.5"})},
	} {
		t.Run(c.name, func(t *testing.T) {
			obj, ok, err := c.store.GetByKey(c.key)
			if err != nil || !ok {
				t.Fatalf("GetByKey(%s) = %v, %v", c.key, ok, err)
			}
			got := obj.(runtime.Object).DeepCopyObject()
			got.(metav1.Object).SetResourceVersion("")
			if !equalObjects(got, c.want) {
				t.Errorf("cache holds\n%s\nwant\n%s", dump(got), dump(c.want))
			}
		})
	}

	for _, obj := range []runtime.Object{svc, slice, cidr, n} {
		once, err := transform(obj)
		if err != nil {
			t.Fatal(err)
		}
		twice, err := transform(once)
		if err != nil {
			t.Fatal(err)
		}
		if !equalObjects(once.(runtime.Object), twice.(runtime.Object)) {
			t.Errorf("%T: transform is not idempotent:\n%#v\n%#v", obj, once, twice)
		}
	}
}

// dump shows a cached object with the value it points at.
func dump(o runtime.Object) string {
	switch c := o.(type) {
	case *cachedService:
		return fmt.Sprintf("%+v %+v", *c, *c.value)
	case *cachedEndpointSlice:
		return fmt.Sprintf("%+v %+v", *c, *c.value)
	}
	return fmt.Sprintf("%#v", o)
}
