package source

import (
	"errors"
	"io/fs"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/daemon/policy"
)

func TestPodFromAPI(t *testing.T) {
	created := metav1.NewTime(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	deleted := metav1.NewTime(created.Add(time.Minute))
	tests := []struct {
		name string
		pod  corev1.Pod
		want policy.Pod
	}{
		{
			name: "full",
			pod: corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{
					Namespace: "nsa", Name: "web", UID: "uid-1",
					Labels:            map[string]string{"app": "web"},
					CreationTimestamp: created,
				},
				Spec: corev1.PodSpec{
					NodeName: "node-1",
					InitContainers: []corev1.Container{{Name: "sidecar", Ports: []corev1.ContainerPort{
						{Name: "metrics", ContainerPort: 9090},
					}}},
					Containers: []corev1.Container{
						{Name: "web", Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP},
							{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
						}},
						{Name: "sctp", Ports: []corev1.ContainerPort{{ContainerPort: 9000, Protocol: corev1.ProtocolSCTP}}},
					},
				},
				Status: corev1.PodStatus{
					Phase:  corev1.PodRunning,
					PodIP:  "10.1.0.5",
					PodIPs: []corev1.PodIP{{IP: "10.1.0.5"}, {IP: "fd10::5"}},
				},
			},
			want: policy.Pod{
				Namespace: "nsa", Name: "web", UID: "uid-1",
				Labels: map[string]string{"app": "web"},
				Ports: []policy.ContainerPort{
					{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9090},
					{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80},
					{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53},
					{Protocol: corev1.ProtocolSCTP, Port: 9000},
				},
				IPs:      []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd10::5")},
				NodeName: "node-1",
				Phase:    corev1.PodRunning,
				Created:  created,
			},
		},
		{
			name: "podIP fallback",
			pod: corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "nsa", Name: "old"},
				Status:     corev1.PodStatus{PodIP: "10.1.0.6"},
			},
			want: policy.Pod{Namespace: "nsa", Name: "old", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.6")}},
		},
		{
			name: "unparsable, zoned and duplicate addresses skipped, 4in6 unmapped",
			pod: corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "nsa", Name: "odd"},
				Status: corev1.PodStatus{PodIP: "10.1.0.9", PodIPs: []corev1.PodIP{
					{IP: "not-an-ip"}, {IP: "10.1.0.7/32"}, {IP: "fe80::1%eth0"}, {IP: "::ffff:10.1.0.8"}, {IP: "10.1.0.8"},
				}},
			},
			want: policy.Pod{Namespace: "nsa", Name: "odd", IPs: []netip.Addr{netip.MustParseAddr("10.1.0.8")}},
		},
		{
			name: "host network, deleting, finished",
			pod: corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "proxy", DeletionTimestamp: &deleted},
				Spec:       corev1.PodSpec{HostNetwork: true},
				Status:     corev1.PodStatus{Phase: corev1.PodSucceeded},
			},
			want: policy.Pod{Namespace: "kube-system", Name: "proxy", HostNetwork: true, Deleting: true, Phase: corev1.PodSucceeded},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := PodFromAPI(&tt.pod)
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("PodFromAPI:\n got %+v\nwant %+v", *got, tt.want)
			}
			if tt.pod.Labels != nil {
				got.Labels["changed"] = "yes"
				if _, ok := tt.pod.Labels["changed"]; ok {
					t.Error("PodFromAPI shares its labels map with the API object")
				}
			}
		})
	}
}

func TestNamespaceFromAPI(t *testing.T) {
	tests := []struct {
		name string
		ns   corev1.Namespace
		want map[string]string
	}{
		{"no labels", corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nsa"}},
			map[string]string{NamespaceNameLabel: "nsa"}},
		{"labels kept", corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nsb", Labels: map[string]string{"app": "nsb"}}},
			map[string]string{"app": "nsb", NamespaceNameLabel: "nsb"}},
		{"name label forced", corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nsc", Labels: map[string]string{NamespaceNameLabel: "lie"}}},
			map[string]string{NamespaceNameLabel: "nsc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(tt.ns.Labels)
			got := NamespaceFromAPI(&tt.ns)
			if got.Name != tt.ns.Name || !reflect.DeepEqual(got.Labels, tt.want) {
				t.Errorf("NamespaceFromAPI = %+v, want name %s labels %v", got, tt.ns.Name, tt.want)
			}
			if len(tt.ns.Labels) != before {
				t.Error("NamespaceFromAPI modified the API object's labels")
			}
		})
	}
}

func TestPolicyFromAPI(t *testing.T) {
	tcp, udp, icmp := corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.Protocol("ICMP")
	port := func(p intstr.IntOrString) *intstr.IntOrString { return &p }
	end := func(p int32) *int32 { return &p }
	tests := []struct {
		name      string
		spec      networkingv1.NetworkPolicySpec
		wantTypes []networkingv1.PolicyType
		wantErr   string // substring; empty: valid
	}{
		{name: "ingress by default",
			spec:      networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port(intstr.FromInt32(80))}}}}},
			wantTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
		{name: "egress added when egress rules exist",
			spec:      networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp}}}}},
			wantTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}},
		{name: "explicit types kept",
			spec:      networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}},
			wantTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}},
		{name: "named port and range",
			spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{
				{Port: port(intstr.FromString("http"))}, {Protocol: &tcp, Port: port(intstr.FromInt32(1000)), EndPort: end(2000)}}}}},
			wantTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
		{name: "bad policy type",
			spec:    networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Sideways"}},
			wantErr: `spec.policyTypes[0]: unsupported value "Sideways"`},
		{name: "bad protocol",
			spec:    networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &icmp}}}}},
			wantErr: `spec.ingress[0].ports[0]: protocol: unsupported value "ICMP"`},
		{name: "port out of range",
			spec:    networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port(intstr.FromInt32(70000))}}}}},
			wantErr: "spec.egress[0].ports[0]: port: 70000 is out of range"},
		{name: "endPort below port",
			spec:    networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port(intstr.FromInt32(80)), EndPort: end(79)}}}}},
			wantErr: "endPort: 79 is less than port 80"},
		{name: "endPort with named port",
			spec:    networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port(intstr.FromString("http")), EndPort: end(90)}}}}},
			wantErr: "endPort: may not be set with a named port"},
		{name: "bad port name",
			spec:    networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{{Port: port(intstr.FromString("Not_A_Name"))}}}}},
			wantErr: `port: "Not_A_Name": must contain only`},
		{name: "empty peer",
			spec:    networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{}}}}},
			wantErr: "spec.ingress[0].from[0]: must specify"},
		{name: "ipBlock with selector",
			spec: networkingv1.NetworkPolicySpec{Egress: []networkingv1.NetworkPolicyEgressRule{{To: []networkingv1.NetworkPolicyPeer{{
				IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}, PodSelector: &metav1.LabelSelector{}}}}}},
			wantErr: "spec.egress[0].to[0]: ipBlock may not be combined"},
		{name: "bad cidr",
			spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0"}}}}}},
			wantErr: "ipBlock: cidr:"},
		{name: "except outside cidr",
			spec: networkingv1.NetworkPolicySpec{Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
				IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{"10.1.0.0/24"}}}}}}},
			wantErr: "ipBlock: except[0]: 10.1.0.0/24 is not strictly inside cidr 10.0.0.0/16"},
		{name: "bad selector",
			spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: "Near"}}}},
			wantErr: "spec.podSelector"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			np := &networkingv1.NetworkPolicy{
				ObjectMeta: metav1.ObjectMeta{Namespace: "nsa", Name: "p",
					ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
				Spec: tt.spec,
			}
			orig := np.DeepCopy()
			got, err := PolicyFromAPI(np)
			if !reflect.DeepEqual(np, orig) {
				t.Error("PolicyFromAPI modified its argument")
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("PolicyFromAPI error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("PolicyFromAPI: %v", err)
			}
			if !reflect.DeepEqual(got.Spec.PolicyTypes, tt.wantTypes) {
				t.Errorf("policyTypes = %v, want %v", got.Spec.PolicyTypes, tt.wantTypes)
			}
			if got.ManagedFields != nil {
				t.Error("managedFields kept")
			}
			for _, rule := range got.Spec.Ingress {
				checkProtocols(t, rule.Ports)
			}
			for _, rule := range got.Spec.Egress {
				checkProtocols(t, rule.Ports)
			}
		})
	}
}

func checkProtocols(t *testing.T, ports []networkingv1.NetworkPolicyPort) {
	t.Helper()
	for _, p := range ports {
		if p.Protocol == nil || *p.Protocol == "" {
			t.Errorf("port %v has no protocol after defaulting", p)
		}
	}
}

func TestErrorUnwrap(t *testing.T) {
	err := error(Error{Object: "x.yaml: Pod nsa/web", Err: fs.ErrPermission})
	if got, want := err.Error(), "x.yaml: Pod nsa/web: permission denied"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, fs.ErrPermission) {
		t.Error("errors.Is does not see the wrapped error")
	}
	var se Error
	if !errors.As(err, &se) || se.Object != "x.yaml: Pod nsa/web" {
		t.Errorf("errors.As = %+v", se)
	}
}
