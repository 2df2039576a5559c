package kubee2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
	"github.com/podwall/podwall/test/netpol"
)

// kubeCluster is a netpol.Cluster on a kubeNode: namespaces, pods,
// policies and labels are API objects changed through the admin client; pods
// run through the kubelet stand-in (Pod object → CNI ADD through ptp,
// host-local and podwall → status.podIPs and Ready → servers), and probes
// are real connections between their network namespaces.
//
// Each test gets its own namespaces (the runner's random suffix) and pods;
// Teardown deletes the pods (CNI DEL, objects) and the namespaces, which the
// namespace controller then empties of policies. A kubeCluster serves one
// test at a time; tests that run at once each have their own, on one node.
//
// Pods are shaped like upstream's: one container per served port and
// protocol, named cont-<port>-<protocol>, whose one container port carries
// the model's name (serve-80-tcp, or serve-80 in the legacy suite).
//
// In Service mode (a kube-proxy set), Setup also creates one Service per
// pod, as upstream's e2e does, and Probe connects to the Service's ClusterIP
// of the probed family instead of the pod's IP; kube-proxy on the host
// rewrites it to the pod's IP, after podwall's egress rules in the client's
// netns have judged it.
type kubeCluster struct {
	node         *kubeNode
	client       kubernetes.Interface
	log          func(string, ...any)
	probeTimeout time.Duration
	// proxy, when set, is the kube-proxy programming the Services: Service
	// mode.
	proxy *cluster.Proxy
	// namedTargetPorts makes the Services' target ports the container
	// ports' names instead of their numbers.
	namedTargetPorts bool

	mu       sync.RWMutex // guards pods and services (Probe and PodIP run concurrently)
	pods     map[netpol.PodRef]*bed.Pod
	services map[netpol.PodRef]*corev1.Service
	model    *netpol.Model
	// namespaces are the ones Setup created (or tried to).
	namespaces []string
	// wrong is set when a validation saw a wrong cell (see logf); Teardown
	// then records podwalld's view in diagnosis before deleting anything.
	wrong     atomic.Bool
	diagnosis string
}

var _ netpol.Cluster = (*kubeCluster)(nil)

// newKubeCluster returns a cluster on n for one test at a time, logging to
// logf (the test's t.Logf).
func newKubeCluster(n *kubeNode, logf func(string, ...any)) *kubeCluster {
	return &kubeCluster{
		node:         n,
		log:          logf,
		client:       n.CP.Client(),
		probeTimeout: time.Second,
		pods:         map[netpol.PodRef]*bed.Pod{},
		services:     map[netpol.PodRef]*corev1.Service{},
	}
}

// newKubeServiceCluster is newKubeCluster in Service mode: proxy programs
// the Services, whose target ports are names when namedTargetPorts is set.
func newKubeServiceCluster(n *kubeNode, proxy *cluster.Proxy, namedTargetPorts bool, logf func(string, ...any)) *kubeCluster {
	c := newKubeCluster(n, logf)
	c.proxy, c.namedTargetPorts = proxy, namedTargetPorts
	return c
}

// Logf logs through the test's log. It is the test's netpol Options.Logf:
// it notices netpol's "SECOND TRY" line (a validation saw a wrong cell), so
// that Teardown captures podwalld's view while the pods still exist.
func (c *kubeCluster) Logf(format string, args ...any) {
	if strings.Contains(format, "SECOND TRY") {
		c.wrong.Store(true)
	}
	c.log(format, args...)
}

// Setup creates the model's namespaces (with their labels; the API server
// adds kubernetes.io/metadata.name) and then its pods, each group at once.
// In Service mode it then creates every pod's Service and waits until
// kube-proxy has programmed each to its pod's addresses.
func (c *kubeCluster) Setup(ctx context.Context, m *netpol.Model) error {
	if m == nil {
		return errors.New("no model")
	}
	if c.model != nil {
		return errors.New("a model is already set up")
	}
	for _, ns := range m.Namespaces {
		if ns == nil || ns.Name == "" {
			return errors.New("model has a namespace without a name")
		}
		for _, p := range ns.Pods {
			if p == nil || p.Name == "" || p.Namespace != ns.Name {
				return fmt.Errorf("namespace %s has an invalid pod %+v", ns.Name, p)
			}
		}
	}
	c.model = m
	c.wrong.Store(false)
	c.diagnosis = ""

	errs := make([]error, len(m.Namespaces))
	var wg sync.WaitGroup
	for i, ns := range m.Namespaces {
		c.namespaces = append(c.namespaces, ns.Name)
		wg.Go(func() {
			_, errs[i] = c.node.CP.CreateNamespace(ctx, ns.Name, ns.Labels)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}

	pods := m.AllPods()
	errs = make([]error, len(pods))
	for i, p := range pods {
		wg.Go(func() {
			bp, err := c.node.Kubelet.RunPod(ctx, podObject(p))
			if err != nil {
				errs[i] = err
				return
			}
			c.mu.Lock()
			c.pods[p.Ref()] = bp
			c.mu.Unlock()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil || c.proxy == nil {
		return err
	}

	start := time.Now()
	for i, p := range pods {
		wg.Go(func() { errs[i] = c.createService(ctx, p) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.log("%d Services programmed by kube-proxy in %s", len(pods), time.Since(start).Round(time.Millisecond))
	return nil
}

// createService creates the Service of model pod p (serviceObject) and
// waits until kube-proxy sends its ClusterIPs to the pod's addresses.
func (c *kubeCluster) createService(ctx context.Context, p *netpol.Pod) error {
	bp := c.bedPod(p.Ref())
	if bp == nil {
		return fmt.Errorf("service of %s: pod not running", p.Ref())
	}
	svc, err := c.client.CoreV1().Services(p.Namespace).Create(ctx, serviceObject(p, bp.Families(), c.namedTargetPorts), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create service of %s: %w", p.Ref(), err)
	}
	if err := c.proxy.WaitService(ctx, svc, bp.IPs...); err != nil {
		return fmt.Errorf("service %s/%s of pod %s: %w", svc.Namespace, svc.Name, p.Ref(), err)
	}
	c.mu.Lock()
	c.services[p.Ref()] = svc
	c.mu.Unlock()
	return nil
}

// serviceObject is the Service of a model pod, as upstream's e2e makes it:
// named s-<namespace>-<pod>, selecting the pod by its labels at set-up (the
// model's pod=<name> or pod-name=<name>, unique in its namespace), one
// service port per container port (service-port-<protocol>-<port>, the
// container port's number), in the pod's families (both ClusterIPs for a
// dual-stack pod). Its target ports are the container ports' names when
// named is set, else their numbers (upstream: numbers).
func serviceObject(p *netpol.Pod, families []bed.Family, named bool) *corev1.Service {
	policy := corev1.IPFamilyPolicySingleStack
	if len(families) > 1 {
		policy = corev1.IPFamilyPolicyRequireDualStack
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: "s-" + p.Namespace + "-" + p.Name},
		Spec: corev1.ServiceSpec{
			Selector:       copyLabels(p.Labels),
			IPFamilyPolicy: &policy,
		},
	}
	for _, f := range families {
		if f == bed.IPv6 {
			svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, corev1.IPv6Protocol)
		} else {
			svc.Spec.IPFamilies = append(svc.Spec.IPFamilies, corev1.IPv4Protocol)
		}
	}
	for _, cp := range p.Ports {
		target := intstr.FromInt32(cp.Port)
		if named && cp.Name != "" {
			target = intstr.FromString(cp.Name)
		}
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name:       fmt.Sprintf("service-port-%s-%d", strings.ToLower(string(cp.Protocol)), cp.Port),
			Protocol:   cp.Protocol,
			Port:       cp.Port,
			TargetPort: target,
		})
	}
	return svc
}

// clusterIP returns the ClusterIP of svc in family f.
func clusterIP(svc *corev1.Service, f netpol.Family) (netip.Addr, bool) {
	for _, s := range svc.Spec.ClusterIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		if (f == netpol.IPv4) == ip.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// podObject is the Pod object of a model pod: its labels, and one container
// per port (see kubeCluster).
func podObject(p *netpol.Pod) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: copyLabels(p.Labels)},
	}
	for _, cp := range p.Ports {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name:  fmt.Sprintf("cont-%d-%s", cp.Port, strings.ToLower(string(cp.Protocol))),
			Image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
			Ports: []corev1.ContainerPort{{Name: cp.Name, ContainerPort: cp.Port, Protocol: cp.Protocol}},
		})
	}
	if len(pod.Spec.Containers) == 0 {
		pod.Spec.Containers = []corev1.Container{{Name: "client", Image: "registry.k8s.io/e2e-test-images/agnhost:2.53"}}
	}
	return pod
}

func copyLabels(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		out[k] = v
	}
	return out
}

// CreatePolicy creates np through the API.
func (c *kubeCluster) CreatePolicy(ctx context.Context, np *networkingv1.NetworkPolicy) error {
	if np == nil {
		return errors.New("networkpolicy is nil")
	}
	_, err := c.client.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
	return err
}

// UpdatePolicy replaces the labels and spec of the existing policy of np's
// name by np's.
func (c *kubeCluster) UpdatePolicy(ctx context.Context, np *networkingv1.NetworkPolicy) error {
	if np == nil {
		return errors.New("networkpolicy is nil")
	}
	policies := c.client.NetworkingV1().NetworkPolicies(np.Namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := policies.Get(ctx, np.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels = np.Labels
		cur.Spec = *np.Spec.DeepCopy()
		_, err = policies.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// DeletePolicy deletes a policy through the API.
func (c *kubeCluster) DeletePolicy(ctx context.Context, namespace, name string) error {
	return c.client.NetworkingV1().NetworkPolicies(namespace).Delete(ctx, name, metav1.DeleteOptions{})
}

// DeleteAllPolicies deletes every policy in the model's namespaces.
func (c *kubeCluster) DeleteAllPolicies(ctx context.Context) error {
	if c.model == nil {
		return errors.New("no model set up")
	}
	var errs []error
	for _, ns := range c.model.Namespaces {
		errs = append(errs, c.client.NetworkingV1().NetworkPolicies(ns.Name).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}))
	}
	return errors.Join(errs...)
}

// SetNamespaceLabels replaces the namespace's labels; the API server keeps
// kubernetes.io/metadata.name.
func (c *kubeCluster) SetNamespaceLabels(ctx context.Context, ns string, labels map[string]string) error {
	namespaces := c.client.CoreV1().Namespaces()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := namespaces.Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels = copyLabels(labels)
		_, err = namespaces.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// SetPodLabels replaces the pod's labels.
func (c *kubeCluster) SetPodLabels(ctx context.Context, ns, pod string, labels map[string]string) error {
	pods := c.client.CoreV1().Pods(ns)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := pods.Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Labels = copyLabels(labels)
		_, err = pods.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
}

// PodIP returns the pod's address of the family: the CNI result's, which
// the kubelet wrote to status.podIPs.
func (c *kubeCluster) PodIP(ns, pod string, family netpol.Family) (netip.Addr, bool) {
	return harness.BedPodIP(c.bedPod(netpol.Ref(ns, pod)), family)
}

// bedPod returns the bed pod of ref, nil if the test has none.
func (c *kubeCluster) bedPod(ref netpol.PodRef) *bed.Pod {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.pods[ref]
}

// Probe connects from one pod to the other's address (in Service mode: its
// Service's ClusterIP) of the family with the bed's real TCP, UDP or SCTP
// probe; blocked or refused is (false, nil).
func (c *kubeCluster) Probe(ctx context.Context, from, to netpol.PodRef, family netpol.Family, port int, proto corev1.Protocol) (bool, error) {
	if c.proxy == nil {
		return harness.ProbeBedPods(ctx, c.bedPod, from, to, family, port, proto, c.probeTimeout)
	}
	src := c.bedPod(from)
	if src == nil {
		return false, fmt.Errorf("pod %s not found", from)
	}
	c.mu.RLock()
	svc := c.services[to]
	c.mu.RUnlock()
	if svc == nil {
		return false, fmt.Errorf("pod %s has no Service", to)
	}
	ip, ok := clusterIP(svc, family)
	if !ok {
		return false, fmt.Errorf("service %s/%s of pod %s has no %v ClusterIP (%v)", svc.Namespace, svc.Name, to, family, svc.Spec.ClusterIPs)
	}
	return bed.Probe(ctx, src, ip, port, string(proto), c.probeTimeout)
}

// Teardown deletes the test's pods (CNI DEL, then the objects, waiting until
// they are gone) and its namespaces (not waiting: the namespace controller
// deletes their policies). If a validation saw a wrong cell it first
// records podwalld's view in c.diagnosis.
func (c *kubeCluster) Teardown(ctx context.Context) error {
	if c.wrong.Load() && c.node.Daemon != nil {
		var pods []string
		if c.model != nil {
			for _, ref := range c.model.AllPodRefs() {
				pods = append(pods, ref.String())
			}
		}
		c.diagnosis = c.node.Daemon.Diagnose(ctx, pods...)
		if c.proxy != nil {
			c.mu.RLock()
			c.diagnosis += "\nServices (ClusterIPs → pod):\n" + describeServices(c.services)
			c.mu.RUnlock()
		}
	}
	c.model = nil
	c.mu.Lock()
	refs := make([]netpol.PodRef, 0, len(c.pods))
	for ref := range c.pods {
		refs = append(refs, ref)
	}
	c.pods = map[netpol.PodRef]*bed.Pod{}
	c.services = map[netpol.PodRef]*corev1.Service{}
	c.mu.Unlock()

	errs := make([]error, len(refs))
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Go(func() { errs[i] = c.node.Kubelet.DeletePod(ctx, ref.Namespace, ref.Name) })
	}
	wg.Wait()
	for _, ns := range slices.Compact(slices.Sorted(slices.Values(c.namespaces))) {
		err := c.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete namespace %s: %w", ns, err))
		}
	}
	c.namespaces = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("teardown: %w", err)
	}
	return nil
}

// describeServices lists the Services of a test, one line each, sorted.
func describeServices(services map[netpol.PodRef]*corev1.Service) string {
	var lines []string
	for ref, svc := range services {
		lines = append(lines, fmt.Sprintf("  %s/%s %v → %s", svc.Namespace, svc.Name, svc.Spec.ClusterIPs, ref))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
