// Package policy compiles Kubernetes NetworkPolicies into the desired firewall
// of each local pod. It is pure: it takes the cluster state (namespaces, pods,
// policies, Services and their EndpointSlices) and the local pods, and
// returns, per local pod, which directions are isolated, which (peer, port)
// pairs are allowed and which Service frontends egress may reach (judged by
// their endpoints). It does no I/O and must not import client-go, the
// dataplane or anything that touches the host.
package policy

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Namespace is what the compiler needs of a Namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// ContainerPort is one named (or unnamed) port a pod's containers declare.
type ContainerPort struct {
	Name     string
	Protocol corev1.Protocol // TCP, UDP or SCTP; never empty
	Port     int32
}

// Pod is what the compiler needs of a Pod: a stripped copy, so that a node
// can hold every pod of a large cluster in little memory.
type Pod struct {
	Namespace string
	Name      string
	UID       string
	Labels    map[string]string
	Ports     []ContainerPort
	// IPs are the pod's addresses: status.podIPs for peers, the CNI result
	// for local pods.
	IPs         []netip.Addr
	NodeName    string
	HostNetwork bool
	Phase       corev1.PodPhase
	// Deleting is true once the pod has a deletionTimestamp.
	Deleting bool
	Created  metav1.Time
}

// Key returns "namespace/name".
func (p *Pod) Key() string { return p.Namespace + "/" + p.Name }

// State is the cluster as a source sees it. Policies are the API objects with
// the API's defaults applied (port protocol TCP); the compiler applies the
// policyTypes default itself when a policy has none.
type State struct {
	Namespaces []*Namespace
	Pods       []*Pod
	Policies   []*networkingv1.NetworkPolicy
	// Services and EndpointSlices let egress policies allow a Service's
	// frontend exactly when they allow every ready endpoint behind it.
	Services       []*Service
	EndpointSlices []*EndpointSlice
	// ServiceCIDRs are the ranges ClusterIPs are allocated from (the
	// cluster's ServiceCIDR objects, or the daemon's --service-cidr). Like
	// every Service frontend, they are never matched by an ipBlock or a
	// peer-less rule.
	ServiceCIDRs []netip.Prefix
}

// Service is what the compiler needs of a Service: the addresses a pod sends
// to and kube-proxy rewrites on the node, and its ports.
type Service struct {
	Namespace string
	Name      string
	// ClusterIPs is spec.clusterIPs; empty for a headless or ExternalName
	// Service (clients of a headless Service reach pod IPs directly).
	ClusterIPs []netip.Addr
	// ExternalIPs are spec.externalIPs and status.loadBalancer.ingress[].ip:
	// kube-proxy rewrites them on the node like ClusterIPs when a pod sends to
	// them.
	ExternalIPs []netip.Addr
	Ports       []ServicePort
	// InternalTrafficLocal is spec.internalTrafficPolicy: Local — pods reach
	// only the endpoints on their own node.
	InternalTrafficLocal bool
}

// Key returns "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Clone returns a copy of s that shares nothing with it.
func (s *Service) Clone() *Service {
	out := *s
	out.ClusterIPs = slices.Clone(s.ClusterIPs)
	out.ExternalIPs = slices.Clone(s.ExternalIPs)
	out.Ports = slices.Clone(s.Ports)
	return &out
}

// ServicePort is one port of a Service.
type ServicePort struct {
	// Name is empty only for a Service with a single port.
	Name     string
	Protocol corev1.Protocol // TCP, UDP or SCTP; never empty
	Port     int32
	NodePort int32
}

// EndpointSlice is what the compiler needs of a discovery.k8s.io/v1
// EndpointSlice.
type EndpointSlice struct {
	Namespace string
	Name      string
	// Service is the kubernetes.io/service-name label: the Service the slice
	// belongs to, in the same namespace.
	Service string
	// Ports are the slice's ports: Name is the ServicePort's name, Port the
	// target port number on this slice's endpoints (named targetPorts are
	// resolved per endpoint by the EndpointSlice controller, which puts
	// endpoints with different numbers in different slices).
	Ports     []EndpointPort
	Endpoints []Endpoint
}

// Clone returns a copy of s that shares nothing with it.
func (s *EndpointSlice) Clone() *EndpointSlice {
	out := *s
	out.Ports = slices.Clone(s.Ports)
	out.Endpoints = slices.Clone(s.Endpoints)
	for i := range out.Endpoints {
		out.Endpoints[i].Addrs = slices.Clone(out.Endpoints[i].Addrs)
	}
	return &out
}

// EndpointPort is one port of an EndpointSlice.
type EndpointPort struct {
	Name     string
	Protocol corev1.Protocol
	Port     int32
}

// Endpoint is one endpoint of an EndpointSlice.
type Endpoint struct {
	Addrs []netip.Addr
	// Ready is conditions.ready, with the API's "unset means ready".
	Ready    bool
	NodeName string
}

// LocalPod is a pod attached on this node: Pod.IPs come from its CNI result.
type LocalPod struct {
	// Key identifies the attachment (network/containerID/ifName).
	Key string
	Pod *Pod
}

// Firewall is the desired firewall of one local pod.
type Firewall struct {
	Ingress Direction
	Egress  Direction
}

// Isolated reports whether any direction is isolated, i.e. whether the pod
// needs rules at all.
func (f *Firewall) Isolated() bool { return f.Ingress.Isolated || f.Egress.Isolated }

// Direction is one direction of a pod's firewall. When Isolated is false the
// direction is open and Rules, Services and ServiceGuard are empty. When it is
// true, traffic is allowed exactly when some rule matches (plus loopback,
// established connections and, for ingress, the node's own addresses, which
// the dataplane adds); for egress a destination that some Services rule
// matches is allowed, one that a ServiceGuard rule matches is dropped, and
// only the rest is judged by Rules.
type Direction struct {
	Isolated bool
	// Policies are "namespace/name" of the policies that select the pod for
	// this direction, sorted.
	Policies []string
	// Rules are deduplicated and sorted deterministically.
	Rules []Rule
	// Services (egress only) are the Service frontends the pod may reach:
	// one rule per service port (one Port: protocol and number), sorted by
	// port, whose peer holds every frontend address (ClusterIP, external or
	// load-balancer IP) the compiler allowed on that port. They are matched
	// before ServiceGuard and Rules. Pods with the same egress rules share
	// the slices: treat them as read-only.
	Services []Rule
	// ServiceGuard (egress only, when Rules is not empty) are the Service
	// frontends that no rule of Rules may match: they are dropped after
	// Services and before Rules. A rule without ports holds every ClusterIP
	// and the ServiceCIDRs; the others hold external and load-balancer IPs
	// on their service ports only (other ports of such an address are not a
	// Service). Every firewall of one Compile shares the slices: treat them
	// as read-only.
	ServiceGuard []Rule
}

// Rule allows traffic from (ingress) or to (egress) Peer on any of Ports.
type Rule struct {
	Peer Peer
	// Ports is empty when the rule allows every port of every protocol.
	Ports []Port
}

// Peer is the remote side of a rule: either anything, or a set of addresses.
// Prefixes are disjoint, sorted, and may mix IPv4 and IPv6; pod addresses are
// host prefixes (/32, /128). ipBlock excepts are already subtracted, and the
// union of several peers already taken, so a dataplane can put Prefixes in one
// hash:net set without "nomatch" entries.
type Peer struct {
	Any      bool
	Prefixes []netip.Prefix
}

// Port is one protocol with one port or a port range. Port 0 means every port
// of Protocol; EndPort 0 means just Port.
type Port struct {
	Protocol corev1.Protocol
	Port     int32
	EndPort  int32
}
