package source

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/daemon/policy"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestServiceFromAPI(t *testing.T) {
	local := corev1.ServiceInternalTrafficPolicyLocal
	cluster := corev1.ServiceInternalTrafficPolicyCluster
	vip, proxy := corev1.LoadBalancerIPModeVIP, corev1.LoadBalancerIPModeProxy
	meta := metav1.ObjectMeta{Namespace: "nsa", Name: "web", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"a": "b"}}
	tests := []struct {
		name string
		svc  corev1.Service
		want policy.Service
	}{
		{
			name: "ClusterIP, named target port, protocol default TCP",
			svc: corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
				Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{
					{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
					{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)},
					{Name: "sctp", Protocol: corev1.ProtocolSCTP, Port: 9000},
				},
				InternalTrafficPolicy: &cluster,
			}},
			want: policy.Service{Namespace: "nsa", Name: "web", ClusterIPs: addrs("10.96.0.10"), Ports: []policy.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80},
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
				{Name: "sctp", Protocol: corev1.ProtocolSCTP, Port: 9000},
			}},
		},
		{
			name: "dual-stack, internalTrafficPolicy Local",
			svc: corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
				ClusterIP: "fd00:96::a", ClusterIPs: []string{"fd00:96::a", "10.96.0.10"},
				Ports:                 []corev1.ServicePort{{Port: 443, Protocol: corev1.ProtocolTCP}},
				InternalTrafficPolicy: &local,
			}},
			want: policy.Service{Namespace: "nsa", Name: "web", ClusterIPs: addrs("fd00:96::a", "10.96.0.10"),
				Ports: []policy.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 443}}, InternalTrafficLocal: true},
		},
		{
			name: "clusterIP only (old object without clusterIPs)",
			svc:  corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.11"}},
			want: policy.Service{Namespace: "nsa", Name: "web", ClusterIPs: addrs("10.96.0.11")},
		},
		{
			name: "headless: no frontends, not even externalIPs",
			svc: corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
				ClusterIP: "None", ClusterIPs: []string{"None"}, ExternalIPs: []string{"203.0.113.7"},
				Ports: []corev1.ServicePort{{Port: 80}},
			}},
			want: policy.Service{Namespace: "nsa", Name: "web", Ports: []policy.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 80}}},
		},
		{
			name: "ExternalName: no frontends",
			svc: corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com", ClusterIP: "10.96.0.12",
				ExternalIPs: []string{"203.0.113.8"}, Ports: []corev1.ServicePort{{Port: 5432}},
			}},
			want: policy.Service{Namespace: "nsa", Name: "web", Ports: []policy.ServicePort{{Protocol: corev1.ProtocolTCP, Port: 5432}}},
		},
		{
			name: "LoadBalancer: externalIPs and VIP ingress IPs, node ports kept",
			svc: corev1.Service{ObjectMeta: meta,
				Spec: corev1.ServiceSpec{
					Type: corev1.ServiceTypeLoadBalancer, ClusterIPs: []string{"10.96.0.13"},
					ExternalIPs: []string{"203.0.113.9", "203.0.113.10"},
					Ports:       []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080}},
				},
				Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
					{IP: "198.51.100.1"},
					{IP: "198.51.100.2", IPMode: &vip},
					{IP: "198.51.100.3", IPMode: &proxy}, // the LB proxies: kube-proxy does not rewrite it
					{Hostname: "lb.example.com"},
					{IP: "203.0.113.9"}, // duplicate of an externalIP
				}}},
			},
			want: policy.Service{Namespace: "nsa", Name: "web", ClusterIPs: addrs("10.96.0.13"),
				ExternalIPs: addrs("203.0.113.9", "203.0.113.10", "198.51.100.1", "198.51.100.2"),
				Ports:       []policy.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, NodePort: 30080}}},
		},
		{
			name: "external IPs of a family without a ClusterIP are dropped",
			svc: corev1.Service{ObjectMeta: meta,
				Spec: corev1.ServiceSpec{ClusterIPs: []string{"10.96.0.14"}, ExternalIPs: []string{"2001:db8::1", "203.0.113.11"}},
				Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
					{IP: "2001:db8::2"},
				}}},
			},
			want: policy.Service{Namespace: "nsa", Name: "web", ClusterIPs: addrs("10.96.0.14"), ExternalIPs: addrs("203.0.113.11")},
		},
		{
			name: "unparsable addresses skipped, 4in6 unmapped",
			svc: corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
				ClusterIPs: []string{"10.96.0.300", "::ffff:10.96.0.15", "fe80::1%eth0"}, ExternalIPs: []string{"nope"},
			}},
			want: policy.Service{Namespace: "nsa", Name: "web", ClusterIPs: addrs("10.96.0.15")},
		},
		{
			name: "no clusterIP yet",
			svc:  corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{ExternalIPs: []string{"203.0.113.12"}}},
			want: policy.Service{Namespace: "nsa", Name: "web"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.svc.DeepCopy()
			got := ServiceFromAPI(in)
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("ServiceFromAPI =\n%+v\nwant\n%+v", *got, tt.want)
			}
			if !reflect.DeepEqual(in, &tt.svc) {
				t.Error("ServiceFromAPI modified its input")
			}
		})
	}
}

func TestEndpointSliceFromAPI(t *testing.T) {
	ptr := func(s string) *string { return &s }
	port := func(p int32) *int32 { return &p }
	proto := func(p corev1.Protocol) *corev1.Protocol { return &p }
	yes, no := true, false
	tests := []struct {
		name  string
		slice discoveryv1.EndpointSlice
		want  policy.EndpointSlice
	}{
		{
			name: "ports and readiness",
			slice: discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: "nsa", Name: "web-abcde", Labels: map[string]string{
					ServiceNameLabel: "web", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports: []discoveryv1.EndpointPort{
					{Name: ptr("http"), Protocol: proto(corev1.ProtocolTCP), Port: port(8080)},
					{Name: ptr("dns"), Protocol: proto(corev1.ProtocolUDP), Port: port(5353)},
					{Name: ptr(""), Port: port(9000)}, // protocol unset: TCP
					{},                                // port unset: 0
				},
				Endpoints: []discoveryv1.Endpoint{
					{Addresses: []string{"10.1.0.5"}, NodeName: ptr("node-a"), Conditions: discoveryv1.EndpointConditions{Ready: &yes}},
					{Addresses: []string{"10.1.0.6"}, NodeName: ptr("node-b"), Conditions: discoveryv1.EndpointConditions{Ready: &no, Serving: &yes, Terminating: &yes}},
					{Addresses: []string{"10.1.0.7"}}, // ready unset: ready
					{Addresses: []string{"10.1.0.8", "bad", "10.1.0.8"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes},
						TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"}, Zone: ptr("a")},
				},
			},
			want: policy.EndpointSlice{Namespace: "nsa", Name: "web-abcde", Service: "web",
				Ports: []policy.EndpointPort{
					{Name: "http", Protocol: corev1.ProtocolTCP, Port: 8080},
					{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 5353},
					{Protocol: corev1.ProtocolTCP, Port: 9000},
					{Protocol: corev1.ProtocolTCP},
				},
				Endpoints: []policy.Endpoint{
					{Addrs: addrs("10.1.0.5"), Ready: true, NodeName: "node-a"},
					{Addrs: addrs("10.1.0.6"), NodeName: "node-b"},
					{Addrs: addrs("10.1.0.7"), Ready: true},
					{Addrs: addrs("10.1.0.8"), Ready: true},
				},
			},
		},
		{
			name: "IPv6",
			slice: discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Namespace: "nsa", Name: "web-v6", Labels: map[string]string{ServiceNameLabel: "web"}},
				AddressType: discoveryv1.AddressTypeIPv6,
				Ports:       []discoveryv1.EndpointPort{{Port: port(8080)}},
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"fd10::5"}}},
			},
			want: policy.EndpointSlice{Namespace: "nsa", Name: "web-v6", Service: "web",
				Ports:     []policy.EndpointPort{{Protocol: corev1.ProtocolTCP, Port: 8080}},
				Endpoints: []policy.Endpoint{{Addrs: addrs("fd10::5"), Ready: true}}},
		},
		{
			name: "FQDN addresses are no IPs",
			slice: discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Namespace: "nsa", Name: "ext", Labels: map[string]string{ServiceNameLabel: "ext"}},
				AddressType: discoveryv1.AddressTypeFQDN,
				Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"db.example.com"}}},
			},
			want: policy.EndpointSlice{Namespace: "nsa", Name: "ext", Service: "ext",
				Endpoints: []policy.Endpoint{{Ready: true}}},
		},
		{
			name:  "no service label, no endpoints",
			slice: discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "nsa", Name: "custom"}, AddressType: discoveryv1.AddressTypeIPv4},
			want:  policy.EndpointSlice{Namespace: "nsa", Name: "custom"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.slice.DeepCopy()
			got := EndpointSliceFromAPI(in)
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("EndpointSliceFromAPI =\n%+v\nwant\n%+v", *got, tt.want)
			}
			if !reflect.DeepEqual(in, &tt.slice) {
				t.Error("EndpointSliceFromAPI modified its input")
			}
		})
	}
}

func TestServiceCIDRFromAPI(t *testing.T) {
	tests := []struct {
		name  string
		cidrs []string
		want  []netip.Prefix
	}{
		{"one", []string{"10.96.0.0/12"}, prefixes("10.96.0.0/12")},
		{"dual-stack, sorted", []string{"fd00:96::/108", "10.96.0.0/12"}, prefixes("10.96.0.0/12", "fd00:96::/108")},
		{"masked, deduplicated", []string{"10.96.0.1/12", "10.96.0.0/12"}, prefixes("10.96.0.0/12")},
		{"unparsable skipped", []string{"10.96.0.0/33", "x", "10.100.0.0/16"}, prefixes("10.100.0.0/16")},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: tt.cidrs}}
			if got := ServiceCIDRFromAPI(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ServiceCIDRFromAPI(%v) = %v, want %v", tt.cidrs, got, tt.want)
			}
		})
	}
}

func TestUniquePrefixes(t *testing.T) {
	a := prefixes("10.96.0.0/12", "fd00::/64")
	b := prefixes("10.96.0.0/16", "10.96.0.0/12", "10.0.0.0/8")
	want := prefixes("10.0.0.0/8", "10.96.0.0/12", "10.96.0.0/16", "fd00::/64")
	if got := UniquePrefixes(a, b, nil); !reflect.DeepEqual(got, want) {
		t.Errorf("UniquePrefixes = %v, want %v", got, want)
	}
	if a[0] != netip.MustParsePrefix("10.96.0.0/12") || len(a) != 2 {
		t.Errorf("UniquePrefixes modified its input: %v", a)
	}
	if got := UniquePrefixes(); got != nil {
		t.Errorf("UniquePrefixes() = %v, want nil", got)
	}
}

func TestNodeAddrsFromAPI(t *testing.T) {
	tests := []struct {
		name      string
		addresses []corev1.NodeAddress
		want      []netip.Addr
	}{
		{"internal and external, sorted, others skipped", []corev1.NodeAddress{
			{Type: corev1.NodeHostName, Address: "node-a"},
			{Type: corev1.NodeInternalIP, Address: "192.168.10.5"},
			{Type: corev1.NodeExternalIP, Address: "198.51.100.5"},
			{Type: corev1.NodeInternalDNS, Address: "node-a.internal"},
			{Type: corev1.NodeInternalIP, Address: "fd10::5"},
			{Type: corev1.NodeInternalIP, Address: "172.16.0.5"},
		}, addrs("172.16.0.5", "192.168.10.5", "198.51.100.5", "fd10::5")},
		{"duplicates and junk", []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.168.10.5"},
			{Type: corev1.NodeExternalIP, Address: "192.168.10.5"},
			{Type: corev1.NodeInternalIP, Address: "not-an-ip"},
		}, addrs("192.168.10.5")},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &corev1.Node{Status: corev1.NodeStatus{Addresses: tt.addresses}}
			if got := NodeAddrsFromAPI(n); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("NodeAddrsFromAPI = %v, want %v", got, tt.want)
			}
		})
	}
}
