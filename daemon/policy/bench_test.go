package policy

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// benchmarkState builds a synthetic cluster: pods spread over namespaces,
// one policy per namespace in turn (kinds rotating through default deny,
// same-namespace selectors, cross-namespace selectors with named ports,
// egress to every pod on a named port, ipBlocks with excepts), and nLocal
// local pods spread over the namespaces.
func benchmarkState(nPods, nNamespaces, nPolicies, nLocal int) (*State, []LocalPod) {
	st := &State{}
	for i := range nNamespaces {
		env := "prod"
		if i%3 == 0 {
			env = "dev"
		}
		name := fmt.Sprintf("ns-%04d", i)
		st.Namespaces = append(st.Namespaces, &Namespace{Name: name, Labels: map[string]string{
			corev1.LabelMetadataName: name, "team": fmt.Sprintf("t%d", i%10), "env": env,
		}})
	}
	for i := range nPods {
		ns := st.Namespaces[i%nNamespaces].Name
		tier := "backend"
		if i%4 == 0 {
			tier = "frontend"
		}
		httpPort := int32(8080)
		if i%5 == 0 {
			httpPort = 9090
		}
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		p := &Pod{
			Namespace: ns,
			Name:      fmt.Sprintf("pod-%05d", i),
			UID:       fmt.Sprintf("uid-%05d", i),
			Labels:    map[string]string{"app": fmt.Sprintf("app%d", i%20), "tier": tier},
			Ports:     []ContainerPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: httpPort}},
			IPs:       []netip.Addr{a},
			Phase:     corev1.PodRunning,
			Created:   metav1.Unix(int64(1_700_000_000+i), 0),
		}
		if i%7 == 0 {
			p.IPs = append(p.IPs, netip.AddrFrom16([16]byte{0xfd, 0x10, 14: byte(i >> 8), 15: byte(i)}))
		}
		if i%97 == 0 {
			p.Phase = corev1.PodSucceeded
		}
		st.Pods = append(st.Pods, p)
	}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	port := func(p intstr.IntOrString, proto *corev1.Protocol) networkingv1.NetworkPolicyPort {
		return networkingv1.NetworkPolicyPort{Port: &p, Protocol: proto}
	}
	endPort := int32(9000)
	for i := range nPolicies {
		ns := st.Namespaces[i%nNamespaces].Name
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("policy-%04d", i)}}
		spec := &np.Spec
		switch i % 6 {
		case 0:
			spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		case 1:
			spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"tier": "backend"}}
			spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", i%20)}}}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(8080), &tcp)},
			}}
		case 2:
			spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}},
					PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "frontend"}},
				}},
				Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"), &tcp)},
			}}
		case 3:
			spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
			spec.Egress = []networkingv1.NetworkPolicyEgressRule{
				{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromInt32(53), &udp)}},
				{Ports: []networkingv1.NetworkPolicyPort{port(intstr.FromString("http"), &tcp)}},
			}
		case 4:
			spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.0.1.0/24"}}},
					{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "env", Operator: metav1.LabelSelectorOpIn, Values: []string{"dev"}},
					}}},
				},
			}}
		case 5:
			p := port(intstr.FromInt32(8000), &tcp)
			p.EndPort = &endPort
			spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
				To: []networkingv1.NetworkPolicyPeer{
					{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}},
				},
				Ports: []networkingv1.NetworkPolicyPort{p, port(intstr.FromString("http"), &tcp)},
			}}
		}
		st.Policies = append(st.Policies, np)
	}
	var local []LocalPod
	step := max(nPods/max(nLocal, 1), 1)
	for i := 1; i < nPods && len(local) < nLocal; i += step {
		p := st.Pods[i]
		local = append(local, LocalPod{Key: "podwall/" + p.UID + "/eth0", Pod: p})
	}
	return st, local
}

// BenchmarkCompile compiles a large node: 10k pods in 1k namespaces, 1k
// policies, 110 local pods. It reports; it asserts nothing about time.
func BenchmarkCompile(b *testing.B) {
	st, local := benchmarkState(10_000, 1_000, 1_000, 110)
	var rules int
	for _, fw := range Compile(st, local).Firewalls {
		rules += len(fw.Ingress.Rules) + len(fw.Egress.Rules)
	}
	for b.Loop() {
		Compile(st, local)
	}
	b.ReportMetric(float64(rules), "rules")
}

// addBenchmarkServices adds nServices Services to st, each with a ClusterIP
// from 10.96.0.0/16, one named port whose targetPort resolves to the pods'
// "http" port, and an EndpointSlice per target port number with 5 of the
// pods of its namespace (one of them not ready).
func addBenchmarkServices(st *State, nServices int) {
	st.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	podsByNS := make(map[string][]*Pod)
	for _, p := range st.Pods {
		podsByNS[p.Namespace] = append(podsByNS[p.Namespace], p)
	}
	for i := range nServices {
		ns := st.Namespaces[i%len(st.Namespaces)].Name
		name := fmt.Sprintf("svc-%05d", i)
		st.Services = append(st.Services, &Service{
			Namespace:  ns,
			Name:       name,
			ClusterIPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)})},
			Ports:      []ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
		})
		byPort := make(map[int32]*EndpointSlice)
		for j, p := range podsByNS[ns] {
			if j >= 5 {
				break
			}
			port := p.Ports[0].Port
			es := byPort[port]
			if es == nil {
				es = &EndpointSlice{Namespace: ns, Name: fmt.Sprintf("%s-%d", name, port), Service: name,
					Ports: []EndpointPort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: port}}}
				byPort[port] = es
				st.EndpointSlices = append(st.EndpointSlices, es)
			}
			es.Endpoints = append(es.Endpoints, Endpoint{Addrs: p.IPs[:1], Ready: j != 4, NodeName: "node-1"})
		}
	}
}

// BenchmarkCompileServices is BenchmarkCompile with 2k Services: every
// egress-isolated local pod is judged against every Service port.
func BenchmarkCompileServices(b *testing.B) {
	st, local := benchmarkState(10_000, 1_000, 1_000, 110)
	addBenchmarkServices(st, 2_000)
	res := Compile(st, local)
	var open, verdicts int
	for _, vs := range res.Services {
		verdicts += len(vs)
		for _, v := range vs {
			if v.Allowed {
				open++
			}
		}
	}
	for b.Loop() {
		Compile(st, local)
	}
	b.ReportMetric(float64(verdicts), "verdicts")
	b.ReportMetric(float64(open), "open")
}
