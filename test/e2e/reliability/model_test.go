package reliability

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// model is a test's own record of the cluster it gives the daemon: the
// namespaces, pods and policies, each written as a manifest file of its own
// (ns-<ns>.yaml, pod-<ns>.<name>.yaml, np-<ns>.yaml), and which bed pod
// each pod is attached as. It is plain data: callers serialise access.
type model struct {
	namespaces map[string]map[string]string // name -> labels
	pods       map[string]*modelPod         // "ns/name"
	policies   map[string][]*networkingv1.NetworkPolicy
}

// modelPod is one pod: its labels, the TCP ports it declares, and its bed
// pod once attached.
type modelPod struct {
	namespace, name string
	labels          map[string]string
	ports           []int32
	attached        *bed.Pod
}

func (p *modelPod) key() string { return p.namespace + "/" + p.name }

func newModel() *model {
	return &model{namespaces: map[string]map[string]string{}, pods: map[string]*modelPod{}, policies: map[string][]*networkingv1.NetworkPolicy{}}
}

// clone copies m deeply (bed pods are shared: they do not change).
func (m *model) clone() *model {
	c := newModel()
	for ns, labels := range m.namespaces {
		c.namespaces[ns] = maps.Clone(labels)
	}
	for k, p := range m.pods {
		cp := *p
		cp.labels = maps.Clone(p.labels)
		cp.ports = slices.Clone(p.ports)
		c.pods[k] = &cp
	}
	for ns, nps := range m.policies {
		for _, np := range nps {
			c.policies[ns] = append(c.policies[ns], np.DeepCopy())
		}
	}
	return c
}

// attachedPods returns the attached pods, sorted by key.
func (m *model) attachedPods() []*modelPod {
	var out []*modelPod
	for _, p := range m.pods {
		if p.attached != nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key() < out[j].key() })
	return out
}

// The manifest files of the model's objects.
func nsFile(ns string) string              { return "ns-" + ns + ".yaml" }
func podFile(p *modelPod) string           { return "pod-" + p.namespace + "." + p.name + ".yaml" }
func policyFile(namespace string) string   { return "np-" + namespace + ".yaml" }
func podKey(namespace, name string) string { return namespace + "/" + name }
func labelsOf(kv ...string) map[string]string {
	out := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func (m *model) namespaceObject(ns string) *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: maps.Clone(m.namespaces[ns])},
	}
}

func (p *modelPod) object() *corev1.Pod {
	c := corev1.Container{Name: "c", Image: "i"}
	for _, port := range p.ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d", port), ContainerPort: port})
	}
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Namespace: p.namespace, Name: p.name, Labels: maps.Clone(p.labels)},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{c}},
	}
}

// renderYAML renders objects as one multi-document YAML manifest.
func renderYAML(objs ...any) (string, error) {
	var b bytes.Buffer
	for _, o := range objs {
		out, err := yaml.Marshal(o)
		if err != nil {
			return "", err
		}
		b.WriteString("---\n")
		b.Write(out)
	}
	return b.String(), nil
}

// writeNamespace writes (or, when the namespace is gone from m, removes)
// its manifest.
func (m *model) writeNamespace(d *harness.Daemon, ns string) error {
	if _, ok := m.namespaces[ns]; !ok {
		return d.RemoveManifest(nsFile(ns))
	}
	out, err := renderYAML(m.namespaceObject(ns))
	if err != nil {
		return err
	}
	return d.WriteManifest(nsFile(ns), out)
}

// writePod writes (or, when the pod is gone from m, removes) its manifest.
func (m *model) writePod(d *harness.Daemon, p *modelPod) error {
	if m.pods[p.key()] == nil {
		return d.RemoveManifest(podFile(p))
	}
	out, err := renderYAML(p.object())
	if err != nil {
		return err
	}
	return d.WriteManifest(podFile(p), out)
}

// writePolicies writes the namespace's policies, or removes their file
// when it has none.
func (m *model) writePolicies(d *harness.Daemon, ns string) error {
	nps := m.policies[ns]
	if len(nps) == 0 {
		return d.RemoveManifest(policyFile(ns))
	}
	objs := make([]any, 0, len(nps))
	for _, np := range nps {
		objs = append(objs, np)
	}
	out, err := renderYAML(objs...)
	if err != nil {
		return err
	}
	return d.WriteManifest(policyFile(ns), out)
}

// writeAll writes every object of m.
func (m *model) writeAll(d *harness.Daemon) error {
	for ns := range m.namespaces {
		if err := m.writeNamespace(d, ns); err != nil {
			return err
		}
		if err := m.writePolicies(d, ns); err != nil {
			return err
		}
	}
	for _, p := range m.pods {
		if err := m.writePod(d, p); err != nil {
			return err
		}
	}
	return nil
}

// Policy building blocks.

func networkPolicy(ns, name string) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
	}
}

func selector(kv ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: labelsOf(kv...)}
}

func tcpPorts(ports ...int) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, p := range ports {
		port := intstr.FromInt32(int32(p))
		proto := corev1.ProtocolTCP
		out = append(out, networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port})
	}
	return out
}

// ingressPolicy selects pods by selector and admits from on ports (none:
// every port); no from at all denies every ingress.
func ingressPolicy(ns, name string, pods *metav1.LabelSelector, from []networkingv1.NetworkPolicyPeer, ports ...int) *networkingv1.NetworkPolicy {
	np := networkPolicy(ns, name)
	np.Spec.PodSelector = *pods
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if from != nil {
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: from, Ports: tcpPorts(ports...)}}
	}
	return np
}

// egressPolicy selects pods by selector and lets them reach to on ports.
func egressPolicy(ns, name string, pods *metav1.LabelSelector, to []networkingv1.NetworkPolicyPeer, ports ...int) *networkingv1.NetworkPolicy {
	np := networkPolicy(ns, name)
	np.Spec.PodSelector = *pods
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{To: to, Ports: tcpPorts(ports...)}}
	return np
}

func podPeer(kv ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: selector(kv...)}
}

func namespacePeer(kv ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: selector(kv...)}
}

// policyTemplates are the policies a churning namespace may have, built
// for namespace ns and a /24 pod range's first address base (ipBlocks).
func policyTemplates(ns, base string) []*networkingv1.NetworkPolicy {
	webFromBlock := networkPolicy(ns, "web-from-block")
	webFromBlock.Spec.PodSelector = *selector("role", "web")
	webFromBlock.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	webFromBlock.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
		IPBlock: &networkingv1.IPBlock{CIDR: base + "/25", Except: []string{base + "/28"}},
	}}}}
	return []*networkingv1.NetworkPolicy{
		ingressPolicy(ns, "deny-ingress", selector(), nil),
		ingressPolicy(ns, "web-from-clients", selector("role", "web"), []networkingv1.NetworkPolicyPeer{podPeer("role", "client")}, 80),
		ingressPolicy(ns, "db-from-team-x", selector("role", "db"), []networkingv1.NetworkPolicyPeer{namespacePeer("team", "x")}),
		egressPolicy(ns, "clients-to-web", selector("role", "client"), []networkingv1.NetworkPolicyPeer{{
			NamespaceSelector: selector(), PodSelector: selector("role", "web"),
		}}, 80),
		webFromBlock,
		ingressPolicy(ns, "other-port-only", selector(), []networkingv1.NetworkPolicyPeer{podPeer()}, 8080),
		ingressPolicy(ns, "from-team-y", selector(), []networkingv1.NetworkPolicyPeer{namespacePeer("team", "y")}),
	}
}

// randomPolicies picks up to three of ns's templates.
func randomPolicies(r *rand.Rand, ns, base string) []*networkingv1.NetworkPolicy {
	all := policyTemplates(ns, base)
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	return all[:r.IntN(4)]
}

var (
	roles = []string{"web", "db", "client"}
	teams = []string{"x", "y", ""}
)

// teamLabels returns a churning namespace's labels for team ("" none).
func teamLabels(team string) map[string]string {
	if team == "" {
		return map[string]string{}
	}
	return labelsOf("team", team)
}
