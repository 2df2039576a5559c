// Package source turns Kubernetes API objects into the stripped objects the
// policy compiler works on (policy.Pod, policy.Namespace, NetworkPolicies
// with the API's defaults applied and validated, policy.Service,
// policy.EndpointSlice, ServiceCIDR ranges and a Node's addresses). Every
// policy source uses it: the client-go informers and the manifests directory
// (package source/manifests) must agree on what a Pod or a Namespace means.
// It does no I/O and must not import client-go, the dataplane or the sync
// package.
package source

import (
	"maps"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/daemon/policy"
)

// NamespaceNameLabel is the label the API server puts on every Namespace,
// holding its name. Policies select namespaces by name through it.
const NamespaceNameLabel = "kubernetes.io/metadata.name"

// Error is a problem with one object of a source, e.g. a broken document in
// a manifests file.
type Error struct {
	// Object names where the problem is: the file and, when known, the
	// object ("policies.yaml: NetworkPolicy nsa/deny-all").
	Object string
	Err    error
}

func (e Error) Error() string {
	if e.Err == nil {
		return e.Object
	}
	return e.Object + ": " + e.Err.Error()
}

func (e Error) Unwrap() error { return e.Err }

// PodFromAPI returns what the policy compiler needs of p. Container ports
// come from containers and init containers (sidecars may serve), with the
// protocol defaulted to TCP; addresses come from status.podIPs, else
// status.podIP, and unparsable ones are skipped. The result shares nothing
// with p.
func PodFromAPI(p *corev1.Pod) *policy.Pod {
	pod := &policy.Pod{
		Namespace:   p.Namespace,
		Name:        p.Name,
		UID:         string(p.UID),
		Labels:      maps.Clone(p.Labels),
		NodeName:    p.Spec.NodeName,
		HostNetwork: p.Spec.HostNetwork,
		Phase:       p.Status.Phase,
		Deleting:    p.DeletionTimestamp != nil,
		Created:     p.CreationTimestamp,
	}
	for _, containers := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range containers {
			for _, cp := range c.Ports {
				protocol := cp.Protocol
				if protocol == "" {
					protocol = corev1.ProtocolTCP
				}
				pod.Ports = append(pod.Ports, policy.ContainerPort{Name: cp.Name, Protocol: protocol, Port: cp.ContainerPort})
			}
		}
	}
	ips := make([]string, 0, len(p.Status.PodIPs))
	for _, ip := range p.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 && p.Status.PodIP != "" {
		ips = append(ips, p.Status.PodIP)
	}
	for _, s := range ips {
		addr, err := netip.ParseAddr(s)
		if err != nil || addr.Zone() != "" {
			continue
		}
		addr = addr.Unmap()
		if !containsAddr(pod.IPs, addr) {
			pod.IPs = append(pod.IPs, addr)
		}
	}
	return pod
}

func containsAddr(addrs []netip.Addr, a netip.Addr) bool {
	for _, b := range addrs {
		if a == b {
			return true
		}
	}
	return false
}

// NamespaceFromAPI returns what the policy compiler needs of ns. Like the API
// server, it forces the kubernetes.io/metadata.name label to the name.
func NamespaceFromAPI(ns *corev1.Namespace) *policy.Namespace {
	labels := make(map[string]string, len(ns.Labels)+1)
	maps.Copy(labels, ns.Labels)
	labels[NamespaceNameLabel] = ns.Name
	return &policy.Namespace{Name: ns.Name, Labels: labels}
}

// ImplicitNamespace returns the Namespace a source assumes when objects refer
// to a namespace it has no object for: just the name label.
func ImplicitNamespace(name string) *policy.Namespace {
	return &policy.Namespace{Name: name, Labels: map[string]string{NamespaceNameLabel: name}}
}

// PolicyFromAPI returns a copy of np with the API's defaults applied (port
// protocol TCP, policyTypes) and managedFields dropped, or an error saying
// why the API server would have rejected it.
func PolicyFromAPI(np *networkingv1.NetworkPolicy) (*networkingv1.NetworkPolicy, error) {
	out := np.DeepCopy()
	out.ManagedFields = nil
	policy.ApplyDefaults(out)
	if err := policy.Validate(out); err != nil {
		return nil, err
	}
	return out, nil
}
