package datapath

import (
	"encoding/json"
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/test/bench/remote"
)

// The cluster the datapath benchmark describes to podwalld's manifests
// source. Namespace "bench" holds the server and client pods (local, on the
// podwall bed) and the remote pods (manifest entries on other nodes, with
// addresses in remotePods); "other" holds the intruder, the denied twin of
// the client.
const (
	benchNamespace = "bench"
	otherNamespace = "other"
	serverName     = "server"
	clientName     = "client"
	intruderName   = "intruder"
	policyName     = "bench-select-all"
	httpPort       = 80
)

var (
	// remoteRange holds every address of remote pods and Services of this
	// benchmark (blackholed while it runs); the control-plane benchmark
	// takes the other half of remote.Range.
	remoteRange = netip.MustParsePrefix("10.216.0.0/17")
	// remotePods is where remote pod addresses come from.
	remotePods = netip.MustParsePrefix("10.216.0.0/18")
	// serviceIPs is where the Services' ClusterIPs come from.
	serviceIPs = netip.MustParsePrefix("10.216.64.0/20")
)

// The manifest files the benchmark writes.
const (
	namespacesFile = "namespaces.json"
	localFile      = "local.json"
	remoteFile     = "remote.json"
	policyFile     = "policy.json"
	servicesFile   = "services.json"
)

func renderJSON(v any) (string, error) {
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		return "", err
	}
	return string(b) + "\n", nil
}

func renderNamespaces() (string, error) {
	list := corev1.NamespaceList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "NamespaceList"}}
	for _, n := range []string{benchNamespace, otherNamespace} {
		list.Items = append(list.Items, corev1.Namespace{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
			ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"team": n}},
		})
	}
	return renderJSON(list)
}

// renderLocal describes the pods of the podwall bed: the server (serving
// "http"), the client and the intruder, on node.
func renderLocal(node string) (string, error) {
	pod := func(ns, name string, labels map[string]string, ports []corev1.ContainerPort) corev1.Pod {
		return corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
				Name: "main", Image: "podwall-bench", Ports: ports,
			}}},
		}
	}
	list := corev1.PodList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PodList"}}
	list.Items = []corev1.Pod{
		pod(benchNamespace, serverName, map[string]string{"app": "server"},
			[]corev1.ContainerPort{{Name: "http", ContainerPort: httpPort, Protocol: corev1.ProtocolTCP}}),
		pod(benchNamespace, clientName, map[string]string{"app": "client", "role": "client"}, nil),
		pod(otherNamespace, intruderName, map[string]string{"app": "intruder", "role": "client"}, nil),
	}
	return renderJSON(list)
}

// renderRemote describes n running pods of namespace bench on 50 other
// nodes: every second one is role=client, app cycles through 20 values.
func renderRemote(n int) (string, error) {
	list := corev1.PodList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "PodList"}, Items: make([]corev1.Pod, 0, n)}
	for i := range n {
		ip, err := remote.Addr(remotePods, i)
		if err != nil {
			return "", err
		}
		labels := map[string]string{"app": fmt.Sprintf("r%d", i%20)}
		if i%2 == 0 {
			labels["role"] = "client"
		}
		list.Items = append(list.Items, corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: fmt.Sprintf("r-%05d", i), Labels: labels},
			Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node-r%02d", i%50), Containers: []corev1.Container{{
				Name: "main", Image: "podwall-bench",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}},
		})
	}
	return renderJSON(list)
}

// renderPolicy is the policy of the seed's experiment: it selects every pod
// of namespace bench and admits, on ingress, the seed's three ipBlocks (each
// on its port: 9090, 8080, 80) and then two selector rules whose peer sets
// hold the pods of the namespace (every pod, on 80 and 8080) and its
// role=client pods (on 80). The client matches both selector rules; the
// intruder none.
func renderPolicy() (string, error) {
	tcp := corev1.ProtocolTCP
	port := func(p int) []networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(int32(p))
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &v}}
	}
	block := func(cidr string, p int) networkingv1.NetworkPolicyIngressRule {
		return networkingv1.NetworkPolicyIngressRule{
			From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: cidr}}},
			Ports: port(p),
		}
	}
	np := networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: policyName},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				block("14.215.0.0/16", 9090),
				block("14.216.0.0/16", 8080),
				block("14.217.0.0/16", 80),
				{
					From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}},
					Ports: append(port(80), port(8080)...),
				},
				{
					From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": benchNamespace}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}},
					}},
					Ports: port(80),
				},
			},
		},
	}
	return renderJSON(np)
}

// renderServices describes n ClusterIP Services of namespace bench, each
// selecting one of the remote pods' app values.
func renderServices(n int) (string, error) {
	list := corev1.ServiceList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceList"}}
	for i := range n {
		ip, err := remote.Addr(serviceIPs, i)
		if err != nil {
			return "", err
		}
		list.Items = append(list.Items, corev1.Service{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: fmt.Sprintf("svc-%04d", i)},
			Spec: corev1.ServiceSpec{
				Selector:   map[string]string{"app": fmt.Sprintf("r%d", i%20)},
				ClusterIP:  ip.String(),
				ClusterIPs: []string{ip.String()},
				Ports: []corev1.ServicePort{{
					Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http"),
				}},
			},
		})
	}
	return renderJSON(list)
}
