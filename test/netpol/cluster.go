package netpol

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Cluster is what the suites drive. Implementations must be safe for
// concurrent Probe calls (Validate probes with several workers); the other
// methods are called one at a time.
type Cluster interface {
	// Setup creates the model's namespaces (with Namespace.Labels; the cluster
	// adds kubernetes.io/metadata.name itself) and pods (with Pod.Labels and
	// one container port per Pod.Ports, a server listening on each), and
	// waits until they serve.
	Setup(ctx context.Context, m *Model) error
	CreatePolicy(ctx context.Context, np *networkingv1.NetworkPolicy) error
	UpdatePolicy(ctx context.Context, np *networkingv1.NetworkPolicy) error
	DeletePolicy(ctx context.Context, namespace, name string) error
	// DeleteAllPolicies deletes every policy in the model's namespaces.
	DeleteAllPolicies(ctx context.Context) error
	// SetNamespaceLabels replaces the namespace's labels (all of them except
	// kubernetes.io/metadata.name, which the cluster keeps).
	SetNamespaceLabels(ctx context.Context, ns string, labels map[string]string) error
	// SetPodLabels replaces the pod's labels.
	SetPodLabels(ctx context.Context, ns, pod string, labels map[string]string) error
	PodIP(ns, pod string, family Family) (netip.Addr, bool)
	// Probe reports whether a connection from one pod to another pod's IP
	// of the family (or to the ClusterIP of the family of a Service that
	// selects only that pod) on port/proto succeeds right now. An error means
	// the probe could not be run at all (unknown pod, broken harness), not
	// that it was refused.
	Probe(ctx context.Context, from, to PodRef, family Family, port int, proto corev1.Protocol) (bool, error)
	// Teardown removes everything Setup created, policies included.
	Teardown(ctx context.Context) error
}

// Family is an IP family.
type Family int

// The IP families; the zero Family is invalid.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// Bits is the address length of the family: 32 or 128.
func (f Family) Bits() int {
	if f == IPv6 {
		return 128
	}
	return 32
}

// Valid reports whether f is IPv4 or IPv6.
func (f Family) Valid() bool { return f == IPv4 || f == IPv6 }

// PodRef names a pod by its real namespace name and its name.
type PodRef struct {
	Namespace string
	Name      string
}

// Ref returns the PodRef of pod name in namespace ns.
func Ref(ns, name string) PodRef { return PodRef{Namespace: ns, Name: name} }

// String returns "namespace/name", the upstream PodString.
func (p PodRef) String() string { return p.Namespace + "/" + p.Name }

// ContainerPort is one port a pod serves: a container port named Name.
type ContainerPort struct {
	Name     string
	Port     int32
	Protocol corev1.Protocol
}

// Pod is a pod of the model.
type Pod struct {
	Namespace string // the real namespace name
	Name      string
	// Labels are the pod's current labels (the tests keep them up to date
	// when they relabel a pod; they replace the map, never modify it).
	Labels map[string]string
	// Ports are the ports the pod serves, one container port each.
	Ports []ContainerPort
}

// Ref returns the pod's PodRef.
func (p *Pod) Ref() PodRef { return Ref(p.Namespace, p.Name) }

// Serves reports whether the pod serves port/proto.
func (p *Pod) Serves(port int, proto corev1.Protocol) bool {
	return slices.ContainsFunc(p.Ports, func(cp ContainerPort) bool {
		return int(cp.Port) == port && cp.Protocol == proto
	})
}

// Namespace is a namespace of the model.
type Namespace struct {
	// Base is the name the tests use ("x", "y", "z"; "a", "b", "c" in the
	// legacy suite); Name is the real name, Base plus prefix and suffix.
	Base string
	Name string
	// Labels are the namespace's current labels, without
	// kubernetes.io/metadata.name (replaced, never modified, on relabel).
	Labels map[string]string
	Pods   []*Pod
}

// Model is the set of namespaces and pods a test runs on.
type Model struct {
	Namespaces []*Namespace
	// Family is the IP family probes and ipBlocks use.
	Family Family
}

// NS returns the real name of the namespace with the given base name, or ""
// when there is none.
func (m *Model) NS(base string) string {
	for _, ns := range m.Namespaces {
		if ns.Base == base {
			return ns.Name
		}
	}
	return ""
}

// Namespace returns the namespace with the given real name, or nil.
func (m *Model) Namespace(name string) *Namespace {
	for _, ns := range m.Namespaces {
		if ns.Name == name {
			return ns
		}
	}
	return nil
}

// Pod returns the pod ref names, or nil.
func (m *Model) Pod(ref PodRef) *Pod {
	if ns := m.Namespace(ref.Namespace); ns != nil {
		for _, p := range ns.Pods {
			if p.Name == ref.Name {
				return p
			}
		}
	}
	return nil
}

// AllPods returns every pod, namespace by namespace, in model order.
func (m *Model) AllPods() []*Pod {
	var out []*Pod
	for _, ns := range m.Namespaces {
		out = append(out, ns.Pods...)
	}
	return out
}

// AllPodRefs returns every pod's ref in model order (upstream AllPodStrings).
func (m *Model) AllPodRefs() []PodRef {
	var out []PodRef
	for _, p := range m.AllPods() {
		out = append(out, p.Ref())
	}
	return out
}

// modelSpec describes a model to build.
type modelSpec struct {
	prefix    string // "netpol", "network-policy", ...
	suffix    string // random per test, may be empty
	family    Family
	ports     []int32
	protocols []corev1.Protocol
	// portName names the container port of port/proto.
	portName func(port int32, proto corev1.Protocol) string
	// podLabelKey is the label that carries the pod's name ("pod" or
	// "pod-name").
	podLabelKey string
	// namespaceLabels returns the initial labels of a namespace.
	namespaceLabels func(base, name string) map[string]string
	// pods are "base/name" strings; namespaces appear in the order of their
	// first pod.
	pods []string
}

// truthTablePortName is the 1.3x naming: serve-80-tcp.
func truthTablePortName(port int32, proto corev1.Protocol) string {
	return fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto)))
}

// legacyPortName is the release-1.18 naming: serve-80.
func legacyPortName(port int32, _ corev1.Protocol) string {
	return fmt.Sprintf("serve-%d", port)
}

// newModel builds the model spec describes.
func newModel(spec modelSpec) (*Model, error) {
	if !spec.family.Valid() {
		return nil, fmt.Errorf("invalid IP family %v", spec.family)
	}
	if len(spec.pods) == 0 {
		return nil, fmt.Errorf("model has no pods")
	}
	if len(spec.ports) == 0 || len(spec.protocols) == 0 {
		return nil, fmt.Errorf("model needs at least one port and one protocol")
	}
	var ports []ContainerPort
	for _, port := range spec.ports {
		for _, proto := range spec.protocols {
			ports = append(ports, ContainerPort{Name: spec.portName(port, proto), Port: port, Protocol: proto})
		}
	}
	m := &Model{Family: spec.family}
	byBase := make(map[string]*Namespace)
	for _, s := range spec.pods {
		base, name, ok := strings.Cut(s, "/")
		if !ok || base == "" || name == "" {
			return nil, fmt.Errorf("invalid model pod %q, want <namespace>/<pod>", s)
		}
		ns := byBase[base]
		if ns == nil {
			nsName := spec.prefix + "-" + base
			if spec.suffix != "" {
				nsName += "-" + spec.suffix
			}
			ns = &Namespace{Base: base, Name: nsName, Labels: map[string]string{}}
			if spec.namespaceLabels != nil {
				ns.Labels = copyLabels(spec.namespaceLabels(base, nsName))
			}
			byBase[base] = ns
			m.Namespaces = append(m.Namespaces, ns)
		}
		if slices.ContainsFunc(ns.Pods, func(p *Pod) bool { return p.Name == name }) {
			return nil, fmt.Errorf("duplicate model pod %q", s)
		}
		ns.Pods = append(ns.Pods, &Pod{
			Namespace: ns.Name,
			Name:      name,
			Labels:    map[string]string{spec.podLabelKey: name},
			Ports:     slices.Clone(ports),
		})
	}
	return m, nil
}

// copyLabels returns a copy of labels that is never nil.
func copyLabels(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels))
	maps.Copy(out, labels)
	return out
}
