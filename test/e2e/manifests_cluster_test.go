package e2e

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/netpol"
)

// manifestsCluster is a netpol.Cluster on a testEnv: namespaces, pods and
// policies are manifests in podwalld's directory, pods are bed pods attached
// through the CNI chain (so podwall enforces their policies), and probes are
// real connections between them.
//
// Setting up pods is the slow part, so with keepPods the pods outlive a test:
// Teardown only marks the test done, and the next Setup removes its policies,
// rewrites every namespace and pod manifest with the new model's labels,
// deletes the pods the new model does not have (or has with other ports) and
// adds the missing ones, then waits until podwalld has read the new state and
// every pod's firewall is open again. The suites run with a fixed namespace
// suffix per suite, so consecutive tests on the same layout (the 9-pod model
// on the same ports, the legacy server and its standard clients) find their
// pods. release deletes everything; without keepPods Teardown calls it.
type manifestsCluster struct {
	env          *testEnv
	keepPods     bool
	probeTimeout time.Duration

	mu         sync.RWMutex // guards pods (Probe and PodIP run concurrently)
	pods       map[netpol.PodRef]*clusterPod
	namespaces map[string]bool // namespace manifests written
	policies   map[string]bool // "namespace/name" of the policy manifests written
	model      *netpol.Model   // of the test running; nil between tests
}

// clusterPod is a pod of the cluster: the bed's pod and what it serves.
type clusterPod struct {
	pod   *bed.Pod
	ports []netpol.ContainerPort
}

func newManifestsCluster(env *testEnv, keepPods bool) *manifestsCluster {
	return &manifestsCluster{
		env:          env,
		keepPods:     keepPods,
		probeTimeout: time.Second,
		pods:         map[netpol.PodRef]*clusterPod{},
		namespaces:   map[string]bool{},
		policies:     map[string]bool{},
	}
}

var _ netpol.Cluster = (*manifestsCluster)(nil)

// Setup creates the model's namespaces and pods, reusing the pods of the
// previous test that the model has too (see manifestsCluster).
func (c *manifestsCluster) Setup(ctx context.Context, m *netpol.Model) error {
	if m == nil {
		return errors.New("no model")
	}
	if c.model != nil {
		return errors.New("a model is already set up")
	}
	want := map[netpol.PodRef]*netpol.Pod{}
	wantNS := map[string]bool{}
	for _, ns := range m.Namespaces {
		if ns == nil || ns.Name == "" {
			return errors.New("model has a namespace without a name")
		}
		wantNS[ns.Name] = true
		for _, p := range ns.Pods {
			if p == nil || p.Name == "" || p.Namespace != ns.Name {
				return fmt.Errorf("namespace %s has an invalid pod %+v", ns.Name, p)
			}
			want[p.Ref()] = p
		}
	}
	if err := c.removePolicies(func(string) bool { return true }); err != nil {
		return err
	}

	// Pods the model does not have as they are go first: a pod re-created
	// under the same name is deleted (CNI DEL) before its new ADD.
	var stale []netpol.PodRef
	for ref, cp := range c.pods {
		if p := want[ref]; p == nil || !slices.Equal(p.Ports, cp.ports) {
			stale = append(stale, ref)
		}
	}
	if err := c.deletePods(ctx, stale); err != nil {
		return err
	}
	for ns := range c.namespaces {
		if !wantNS[ns] {
			if err := c.env.removeManifest(namespaceFile(ns)); err != nil {
				return err
			}
			delete(c.namespaces, ns)
		}
	}

	c.model = m
	for _, ns := range m.Namespaces {
		if err := c.env.writeNamespace(ns.Name, ns.Labels); err != nil {
			return err
		}
		c.namespaces[ns.Name] = true
	}
	var missing []*netpol.Pod
	for _, p := range m.AllPods() {
		if err := c.env.writePod(p.Namespace, p.Name, p.Labels, containerPorts(p.Ports)); err != nil {
			return err
		}
		if c.pods[p.Ref()] == nil {
			missing = append(missing, p)
		}
	}
	if err := c.addPods(ctx, missing); err != nil {
		return err
	}
	return c.waitOpen(ctx, m)
}

// containerPorts converts the model's ports to a pod spec's.
func containerPorts(ports []netpol.ContainerPort) []corev1.ContainerPort {
	out := make([]corev1.ContainerPort, 0, len(ports))
	for _, p := range ports {
		out = append(out, corev1.ContainerPort{Name: p.Name, ContainerPort: p.Port, Protocol: p.Protocol})
	}
	return out
}

// addPods attaches pods through the CNI chain, all at once, and starts their
// servers. Their manifests must be written already.
func (c *manifestsCluster) addPods(ctx context.Context, pods []*netpol.Pod) error {
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Go(func() {
			bp, err := c.env.Bed.AddPod(ctx, p.Namespace, p.Name, bed.PodOptions{})
			if err != nil {
				errs[i] = err
				return
			}
			c.mu.Lock()
			c.pods[p.Ref()] = &clusterPod{pod: bp, ports: slices.Clone(p.Ports)}
			c.mu.Unlock()
			var serve []bed.ServePort
			for _, cp := range p.Ports {
				serve = append(serve, bed.ServePort{Protocol: string(cp.Protocol), Port: int(cp.Port)})
			}
			errs[i] = bp.Serve(serve...)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// deletePods deletes pods (CNI DEL, netns) all at once and removes their
// manifests.
func (c *manifestsCluster) deletePods(ctx context.Context, refs []netpol.PodRef) error {
	errs := make([]error, len(refs))
	var wg sync.WaitGroup
	for i, ref := range refs {
		c.mu.Lock()
		cp := c.pods[ref]
		delete(c.pods, ref)
		c.mu.Unlock()
		wg.Go(func() {
			if cp != nil {
				errs[i] = c.env.Bed.DelPod(ctx, cp.pod)
			}
			errs[i] = errors.Join(errs[i], c.env.removeManifest(podFile(ref.Namespace, ref.Name)))
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitOpen waits until podwalld has read the manifests and enforces no
// policy on any pod of m: every pod is attached with the container of its
// bed pod, isolated in neither direction, without sync errors. So a test
// never starts on what the previous one left.
func (c *manifestsCluster) waitOpen(ctx context.Context, m *netpol.Model) error {
	if c.env.Daemon == nil {
		return nil
	}
	if err := c.env.waitRead(ctx); err != nil {
		return err
	}
	return harness.Poll(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		attached, err := c.env.Daemon.Pods(ctx)
		if err != nil {
			return err
		}
		byRef := map[netpol.PodRef][]harness.CtlPod{}
		for _, a := range attached {
			ref := netpol.Ref(a.Namespace, a.Name)
			byRef[ref] = append(byRef[ref], a)
		}
		var problems []string
		for _, p := range m.AllPods() {
			c.mu.RLock()
			cp := c.pods[p.Ref()]
			c.mu.RUnlock()
			as := byRef[p.Ref()]
			switch {
			case cp == nil:
				problems = append(problems, fmt.Sprintf("%s: not added", p.Ref()))
			case len(as) != 1 || as[0].ContainerID != cp.pod.ContainerID:
				problems = append(problems, fmt.Sprintf("%s: attachments %+v, want one of container %s", p.Ref(), as, cp.pod.ContainerID))
			case len(as[0].Policies) > 0 || as[0].IngressIsolated || as[0].EgressIsolated || as[0].SyncError != "":
				problems = append(problems, fmt.Sprintf("%s: not open yet: %+v", p.Ref(), as[0]))
			}
		}
		if len(problems) > 0 {
			return fmt.Errorf("pods not ready for a new test:\n%s", strings.Join(problems, "\n"))
		}
		return nil
	})
}

// CreatePolicy writes policy-<namespace>-<name>.yaml; the policy must not
// exist yet.
func (c *manifestsCluster) CreatePolicy(_ context.Context, np *networkingv1.NetworkPolicy) error {
	return c.putPolicy(np, false)
}

// UpdatePolicy rewrites an existing policy's manifest.
func (c *manifestsCluster) UpdatePolicy(_ context.Context, np *networkingv1.NetworkPolicy) error {
	return c.putPolicy(np, true)
}

func (c *manifestsCluster) putPolicy(np *networkingv1.NetworkPolicy, update bool) error {
	if np == nil {
		return errors.New("networkpolicy is nil")
	}
	if !c.namespaces[np.Namespace] {
		return fmt.Errorf("namespace %q not found", np.Namespace)
	}
	key := np.Namespace + "/" + np.Name
	switch {
	case update && !c.policies[key]:
		return fmt.Errorf("networkpolicy %s not found", key)
	case !update && c.policies[key]:
		return fmt.Errorf("networkpolicy %s already exists", key)
	}
	if err := c.env.writePolicy(np); err != nil {
		return err
	}
	c.policies[key] = true
	return nil
}

// DeletePolicy removes a policy's manifest.
func (c *manifestsCluster) DeletePolicy(_ context.Context, namespace, name string) error {
	key := namespace + "/" + name
	if !c.policies[key] {
		return fmt.Errorf("networkpolicy %s not found", key)
	}
	if err := c.env.removeManifest(policyFile(namespace, name)); err != nil {
		return err
	}
	delete(c.policies, key)
	return nil
}

// DeleteAllPolicies removes the manifests of every policy in the model's
// namespaces.
func (c *manifestsCluster) DeleteAllPolicies(context.Context) error {
	return c.removePolicies(func(ns string) bool { return c.model != nil && c.model.Namespace(ns) != nil })
}

// removePolicies removes the manifests of the policies in the namespaces
// inNamespace accepts.
func (c *manifestsCluster) removePolicies(inNamespace func(string) bool) error {
	for _, key := range slices.Sorted(maps.Keys(c.policies)) {
		ns, name, _ := strings.Cut(key, "/")
		if !inNamespace(ns) {
			continue
		}
		if err := c.env.removeManifest(policyFile(ns, name)); err != nil {
			return err
		}
		delete(c.policies, key)
	}
	return nil
}

// SetNamespaceLabels rewrites the namespace's manifest.
func (c *manifestsCluster) SetNamespaceLabels(_ context.Context, ns string, labels map[string]string) error {
	if !c.namespaces[ns] {
		return fmt.Errorf("namespace %q not found", ns)
	}
	return c.env.writeNamespace(ns, labels)
}

// SetPodLabels rewrites the pod's manifest.
func (c *manifestsCluster) SetPodLabels(_ context.Context, ns, pod string, labels map[string]string) error {
	c.mu.RLock()
	cp := c.pods[netpol.Ref(ns, pod)]
	c.mu.RUnlock()
	if cp == nil {
		return fmt.Errorf("pod %s/%s not found", ns, pod)
	}
	return c.env.writePod(ns, pod, labels, containerPorts(cp.ports))
}

// PodIP returns the pod's address of the family, from its CNI result.
func (c *manifestsCluster) PodIP(ns, pod string, family netpol.Family) (netip.Addr, bool) {
	return harness.BedPodIP(c.bedPod(netpol.Ref(ns, pod)), family)
}

// bedPod returns the bed pod of ref, nil if the cluster has none.
func (c *manifestsCluster) bedPod(ref netpol.PodRef) *bed.Pod {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if cp := c.pods[ref]; cp != nil {
		return cp.pod
	}
	return nil
}

// Probe connects from one pod to the other's address with the bed's real
// TCP, UDP or SCTP probe; blocked or refused is (false, nil).
func (c *manifestsCluster) Probe(ctx context.Context, from, to netpol.PodRef, family netpol.Family, port int, proto corev1.Protocol) (bool, error) {
	return harness.ProbeBedPods(ctx, c.bedPod, from, to, family, port, proto, c.probeTimeout)
}

// Teardown ends the test. With keepPods it leaves pods, namespaces and
// policies for the next Setup to reuse or remove (and for diagnostics of a
// failed test); otherwise it deletes everything.
func (c *manifestsCluster) Teardown(ctx context.Context) error {
	c.model = nil
	if c.keepPods {
		return nil
	}
	return c.release(ctx)
}

// release deletes every pod (CNI DEL, netns) and removes every manifest the
// cluster wrote, then waits until the daemon has read that.
func (c *manifestsCluster) release(ctx context.Context) error {
	c.model = nil
	err := c.removePolicies(func(string) bool { return true })
	c.mu.RLock()
	refs := slices.Collect(maps.Keys(c.pods))
	c.mu.RUnlock()
	err = errors.Join(err, c.deletePods(ctx, refs))
	for ns := range c.namespaces {
		err = errors.Join(err, c.env.removeManifest(namespaceFile(ns)))
		delete(c.namespaces, ns)
	}
	if err != nil {
		return fmt.Errorf("release cluster: %w", err)
	}
	return c.env.waitRead(ctx)
}

// diagnose returns what podwalld shows of the current state: its status, the
// policies with the pods they select, each pod's firewall summary, and the
// rules and ipsets in force in every pod of the cluster.
func (c *manifestsCluster) diagnose(ctx context.Context) string {
	c.mu.RLock()
	refs := slices.SortedFunc(maps.Keys(c.pods), func(a, b netpol.PodRef) int {
		return cmp.Compare(a.String(), b.String())
	})
	c.mu.RUnlock()
	pods := make([]string, len(refs))
	for i, ref := range refs {
		pods[i] = ref.String()
	}
	return c.env.Daemon.Diagnose(ctx, pods...)
}
