package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/test/bench/remote"
)

// The cluster this benchmark builds. Local pods (on the bed) live in
// localNamespace; the prober in probeNamespace; the pods of nsPeerNamespace
// are peers by their namespace's label. Remote pods spread over the other
// namespaces (ns-0001 …), on remote nodes.
const (
	localNamespace  = "ns-0000"
	probeNamespace  = "bench-probe"
	nsPeerNamespace = "bench-nspeer"
	// nsKeepNamespace keeps the label nsPeerNamespace loses, so that the
	// peer set of bench-nsrelabel never empties (an empty set would be a
	// change of rules, not of members).
	nsKeepNamespace = "bench-nspeer-keep"
	proberName      = "prober"
	// nsPeerPods is how many remote pods nsPeerNamespace holds.
	nsPeerPods = 50
	// probePort is the port targets serve and the measured policies open.
	probePort = 80
	// closedPort is the port the measured policies open when "closed".
	closedPort = 81
)

var (
	// remoteRange holds every remote address of this benchmark
	// (blackholed while it runs); the datapath benchmark takes the other
	// half of remote.Range.
	remoteRange = netip.MustParsePrefix("10.216.128.0/17")
	// remotePods is where remote pod addresses come from: the first 127
	// /24s of remoteRange.
	remotePods = netip.MustParsePrefix("10.216.128.0/17")
	// remoteNodes is where remote nodes' InternalIPs come from: its last.
	remoteNodes = netip.MustParsePrefix("10.216.255.0/24")
)

// maxRemotePods is how many addresses remotePods has below remoteNodes.
const maxRemotePods = 127 * remote.PerBlock

// groups are the numbers of local pods a peer change affects in the peer
// churn: churn-g<K> peers are admitted by a policy selecting the first K
// targets.
var groups = []int{1, 10, 50, 110}

func namespaceName(i int) string { return fmt.Sprintf("ns-%04d", i) }
func targetName(i int) string    { return fmt.Sprintf("t%03d", i) }
func remoteNodeName(i int) string {
	return fmt.Sprintf("node-r%02d", i)
}
func churnLabel(k int) string { return fmt.Sprintf("churn-g%d", k) }
func groupLabel(k int) string { return fmt.Sprintf("g%d", k) }

// parallel runs fn(0..n-1) on workers goroutines and returns the errors
// joined (at most the first 5, and how many more).
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var mu sync.Mutex
	var errs []error
	failed := 0
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					failed++
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if failed > len(errs) {
		errs = append(errs, fmt.Errorf("and %d more errors", failed-len(errs)))
	}
	if err := ctx.Err(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// specialNamespaces is the number of namespaces besides the generic ones.
const specialNamespaces = 3

// createNamespaces creates the generic namespaces ns-0000 … (labels team
// and env), the probe and the two ns-peer namespaces, each with its default
// ServiceAccount (without which pods are rejected), and waits until all
// have one.
func createNamespaces(ctx context.Context, c kubernetes.Interface, generic, workers int) error {
	names := make([]string, 0, generic+specialNamespaces)
	labels := make([]map[string]string, 0, generic+specialNamespaces)
	for i := range generic {
		env := "prod"
		if i%3 == 0 {
			env = "dev"
		}
		names = append(names, namespaceName(i))
		labels = append(labels, map[string]string{"team": fmt.Sprintf("t%d", i%10), "env": env})
	}
	names = append(names, probeNamespace, nsPeerNamespace, nsKeepNamespace)
	labels = append(labels, map[string]string{"purpose": "probe"}, map[string]string{"nspeer": "y"}, map[string]string{"nspeer": "y"})
	err := parallel(ctx, len(names), workers, func(ctx context.Context, i int) error {
		_, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: names[i], Labels: labels[i]},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", names[i], err)
		}
		// The controller manager creates it too, but works through 1k
		// namespaces slowly: whoever comes second gets AlreadyExists.
		_, err = c.CoreV1().ServiceAccounts(names[i]).Create(ctx, &corev1.ServiceAccount{
			ObjectMeta: metav1.ObjectMeta{Name: "default"},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create the default ServiceAccount of %s: %w", names[i], err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		sas, err := c.CoreV1().ServiceAccounts("").List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=default"})
		if err == nil && len(sas.Items) >= len(names) {
			return nil
		}
		if time.Now().After(deadline) {
			n := 0
			if sas != nil {
				n = len(sas.Items)
			}
			return fmt.Errorf("only %d of %d namespaces have their default ServiceAccount after 5 min (%v)", n, len(names), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// remotePod is a pod on another node: only its API object exists.
type remotePod struct {
	Namespace, Name, Node string
	Labels                map[string]string
	IP                    netip.Addr
}

// remotePodSpecs returns the remote pods of the cluster: n spread over the
// generic namespaces ns-0001 … ns-<generic-1>, then nsPeerPods in
// nsPeerNamespace and one in nsKeepNamespace. Pod i of the first kind has app=app<i%20> and, by
// g=i%10: churn-g1/g10/g50/g110=y for g=0..3 (never frontend), tier=frontend
// for g=4..6, else backend. Addresses are remote.Addr(remotePods, 0…).
func remotePodSpecs(n, generic, nodes int) ([]remotePod, error) {
	out := make([]remotePod, 0, n+nsPeerPods)
	for i := range n {
		labels := map[string]string{"app": fmt.Sprintf("app%d", i%20), "tier": "backend"}
		switch g := i % 10; {
		case g < len(groups):
			labels[churnLabel(groups[g])] = "y"
		case g <= 6:
			labels["tier"] = "frontend"
		}
		ip, err := remote.Addr(remotePods, i)
		if err != nil {
			return nil, err
		}
		out = append(out, remotePod{
			Namespace: namespaceName(1 + i%(generic-1)), Name: fmt.Sprintf("r-%05d", i),
			Node: remoteNodeName(i % nodes), Labels: labels, IP: ip,
		})
	}
	for j := range nsPeerPods {
		ip, err := remote.Addr(remotePods, n+j)
		if err != nil {
			return nil, err
		}
		out = append(out, remotePod{
			Namespace: nsPeerNamespace, Name: fmt.Sprintf("p-%02d", j), Node: remoteNodeName(j % nodes),
			Labels: map[string]string{"app": "nspeer", "tier": "backend"}, IP: ip,
		})
	}
	ip, err := remote.Addr(remotePods, n+nsPeerPods)
	if err != nil {
		return nil, err
	}
	out = append(out, remotePod{
		Namespace: nsKeepNamespace, Name: "keep-0", Node: remoteNodeName(0),
		Labels: map[string]string{"app": "nspeer", "tier": "backend"}, IP: ip,
	})
	return out, nil
}

// podObject is a remote pod's object, without status.
func (rp remotePod) object() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: rp.Namespace, Name: rp.Name, Labels: rp.Labels},
		Spec: corev1.PodSpec{NodeName: rp.Node, Containers: []corev1.Container{{
			Name: "main", Image: "podwall-bench",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
		}}},
	}
}

// runningStatus is the status a kubelet writes for a running, ready pod.
func runningStatus(pod *corev1.Pod, ip, hostIP netip.Addr) corev1.PodStatus {
	now := metav1.Now()
	st := corev1.PodStatus{
		Phase: corev1.PodRunning, StartTime: &now, QOSClass: pod.Status.QOSClass,
		PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}},
	}
	if hostIP.IsValid() {
		st.HostIP, st.HostIPs = hostIP.String(), []corev1.HostIP{{IP: hostIP.String()}}
	}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, c := range pod.Spec.Containers {
		started := true
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: &started,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return st
}

// createRemotePod creates a remote pod's object and, unless noStatus, writes
// its running status with its address: it is a peer from then on.
func createRemotePod(ctx context.Context, c kubernetes.Interface, rp remotePod, hostIP netip.Addr, noStatus bool) (*corev1.Pod, error) {
	created, err := c.CoreV1().Pods(rp.Namespace).Create(ctx, rp.object(), metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create pod %s/%s: %w", rp.Namespace, rp.Name, err)
	}
	if noStatus {
		return created, nil
	}
	return setRunning(ctx, c, created, rp.IP, hostIP)
}

// setRunning writes the running status with ip to pod (the object as
// created or last read).
func setRunning(ctx context.Context, c kubernetes.Interface, pod *corev1.Pod, ip, hostIP netip.Addr) (*corev1.Pod, error) {
	obj := pod.DeepCopy()
	obj.Status = runningStatus(pod, ip, hostIP)
	updated, err := c.CoreV1().Pods(obj.Namespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("status of pod %s/%s: %w", obj.Namespace, obj.Name, err)
	}
	return updated, nil
}

// createServices creates n ClusterIP Services spread over the generic
// namespaces ns-0001 …, each selecting app=app<i%20> on port 80 → "http".
func createServices(ctx context.Context, c kubernetes.Interface, n, generic, workers int) error {
	return parallel(ctx, n, workers, func(ctx context.Context, i int) error {
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: namespaceName(1 + i%(generic-1)), Name: fmt.Sprintf("svc-%04d", i)},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": fmt.Sprintf("app%d", i%20)},
				Ports: []corev1.ServicePort{{
					Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http"),
				}},
			},
		}
		if _, err := c.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create service %s/%s: %w", svc.Namespace, svc.Name, err)
		}
		return nil
	})
}

func tcpPorts(ports ...int) []networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	var out []networkingv1.NetworkPolicyPort
	for _, p := range ports {
		v := intstr.FromInt32(int32(p))
		out = append(out, networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &v})
	}
	return out
}

func selector(kv ...string) *metav1.LabelSelector {
	s := &metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func ingressPolicy(ns, name string, podSelector *metav1.LabelSelector, rules ...networkingv1.NetworkPolicyIngressRule) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *podSelector,
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress:     rules,
		},
	}
}

func from(peers ...networkingv1.NetworkPolicyPeer) []networkingv1.NetworkPolicyPeer { return peers }

// benchPolicies are the standing policies of the local namespace. Every
// target (bench=target) is ingress-isolated (bench-deny) and has large peer
// sets (bench-big: every frontend pod of the cluster, and those of the t1
// teams); the churn policies admit churn-g<K> peers into the first K
// targets (g<K>=y); bench-nsrelabel admits the pods of namespaces labelled
// nspeer=y. Nothing admits the prober.
func benchPolicies() []*networkingv1.NetworkPolicy {
	target := selector("bench", "target")
	out := []*networkingv1.NetworkPolicy{
		ingressPolicy(localNamespace, "bench-deny", target),
		ingressPolicy(localNamespace, "bench-big", target,
			networkingv1.NetworkPolicyIngressRule{
				From:  from(networkingv1.NetworkPolicyPeer{NamespaceSelector: selector(), PodSelector: selector("tier", "frontend")}),
				Ports: tcpPorts(9000),
			},
			networkingv1.NetworkPolicyIngressRule{
				From:  from(networkingv1.NetworkPolicyPeer{NamespaceSelector: selector("team", "t1"), PodSelector: selector("tier", "frontend")}),
				Ports: tcpPorts(9001),
			}),
		ingressPolicy(localNamespace, "bench-nsrelabel", target, networkingv1.NetworkPolicyIngressRule{
			From:  from(networkingv1.NetworkPolicyPeer{NamespaceSelector: selector("nspeer", "y")}),
			Ports: tcpPorts(9090),
		}),
	}
	for i, k := range groups {
		out = append(out, ingressPolicy(localNamespace, "bench-peers-"+groupLabel(k), selector(groupLabel(k), "y"),
			networkingv1.NetworkPolicyIngressRule{
				From:  from(networkingv1.NetworkPolicyPeer{NamespaceSelector: selector(), PodSelector: selector(churnLabel(k), "y")}),
				Ports: tcpPorts(8081 + i),
			}))
	}
	return out
}

// probePolicy is a measured policy: it admits the prober into the pods
// podSelector selects, on port.
func probePolicy(name string, podSelector *metav1.LabelSelector, port int) *networkingv1.NetworkPolicy {
	return ingressPolicy(localNamespace, name, podSelector, networkingv1.NetworkPolicyIngressRule{
		From:  from(networkingv1.NetworkPolicyPeer{NamespaceSelector: selector(corev1.LabelMetadataName, probeNamespace)}),
		Ports: tcpPorts(port),
	})
}

// genericPolicy is the i-th policy of the rest of the cluster, in namespace
// ns, cycling through default deny, same-namespace selectors,
// cross-namespace selectors with named ports, egress on ports only, ipBlocks
// with excepts, and egress to a namespace selector plus an ipBlock. None
// names the local namespace, the prober, or the bed's addresses.
func genericPolicy(ns string, i int) *networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	named := intstr.FromString("http")
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("policy-%04d", i)}}
	spec := &np.Spec
	switch i % 6 {
	case 0:
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 1:
		spec.PodSelector = *selector("tier", "backend")
		spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: from(networkingv1.NetworkPolicyPeer{PodSelector: selector("app", fmt.Sprintf("app%d", i%20))}), Ports: tcpPorts(8080),
		}}
	case 2:
		spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: from(networkingv1.NetworkPolicyPeer{
				NamespaceSelector: selector("team", fmt.Sprintf("t%d", i%10)), PodSelector: selector("tier", "frontend"),
			}),
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &named}},
		}}
	case 3:
		dns := intstr.FromInt32(53)
		spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		spec.Egress = []networkingv1.NetworkPolicyEgressRule{
			{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}}},
			{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &named}}},
		}
	case 4:
		spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: from(
				networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/12", Except: []string{"172.16.1.0/24"}}},
				networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "env", Operator: metav1.LabelSelectorOpIn, Values: []string{"dev"}},
				}}},
			),
		}}
	case 5:
		spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To: from(
				networkingv1.NetworkPolicyPeer{NamespaceSelector: selector("env", "prod")},
				networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8"}}},
			),
			Ports: append(tcpPorts(8000), networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &named}),
		}}
	}
	return np
}

// createPolicies creates the bench policies and n-len(bench) generic ones
// spread over ns-0001 ….
func createPolicies(ctx context.Context, c kubernetes.Interface, n, generic, workers int) error {
	bench := benchPolicies()
	all := append([]*networkingv1.NetworkPolicy(nil), bench...)
	for i := range max(n-len(bench), 0) {
		all = append(all, genericPolicy(namespaceName(1+i%(generic-1)), i))
	}
	return parallel(ctx, len(all), workers, func(ctx context.Context, i int) error {
		np := all[i]
		if _, err := c.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
		}
		return nil
	})
}
