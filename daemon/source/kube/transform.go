package kube

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/daemon/source"
)

// transform strips every object before the informers store it, keeping only
// what the policy source reads:
//
//   - Pod: becomes a cachedPod (podcache.go), the policy.Pod the compiler
//     reads plus the resourceVersion and deletion timestamp; a cachedPod
//     is kept as it is.
//   - Namespace: name, uid, resourceVersion, labels.
//   - NetworkPolicy: name, namespace, uid, resourceVersion, generation,
//     labels, creation timestamp and the spec.
//   - Service: name, namespace, uid, resourceVersion; spec.type, clusterIP,
//     clusterIPs, externalIPs, internalTrafficPolicy and the ports' name,
//     protocol, port and nodePort (no selector, no targetPort: the
//     EndpointSlices carry the resolved target ports);
//     status.loadBalancer.ingress[].ip and ipMode.
//   - EndpointSlice: name, namespace, uid, resourceVersion, the
//     kubernetes.io/service-name label only, addressType, ports, and per
//     endpoint its addresses, conditions.ready and nodeName (no targetRef,
//     hints, zone or hostname).
//   - ServiceCIDR: name, uid, resourceVersion, spec.cidrs.
//   - Node: name, uid, resourceVersion and the InternalIP and ExternalIP
//     entries of status.addresses.
//
// Annotations (last-applied-configuration can be large) and managedFields
// are dropped everywhere. It builds new objects, so the decoded originals
// can be freed, and it is idempotent, as client-go asks.
func transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return newCachedPod(o), nil
	case *cachedPod:
		return o, nil
	case *corev1.Namespace:
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:            o.Name,
			UID:             o.UID,
			ResourceVersion: o.ResourceVersion,
			Labels:          o.Labels,
		}}, nil
	case *networkingv1.NetworkPolicy:
		return &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{
				Name:              o.Name,
				Namespace:         o.Namespace,
				UID:               o.UID,
				ResourceVersion:   o.ResourceVersion,
				Generation:        o.Generation,
				Labels:            o.Labels,
				CreationTimestamp: o.CreationTimestamp,
			},
			Spec: o.Spec,
		}, nil
	case *corev1.Service:
		return stripService(o), nil
	case *discoveryv1.EndpointSlice:
		return stripEndpointSlice(o), nil
	case *networkingv1.ServiceCIDR:
		return &networkingv1.ServiceCIDR{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion},
			Spec:       networkingv1.ServiceCIDRSpec{CIDRs: o.Spec.CIDRs},
		}, nil
	case *corev1.Node:
		return stripNode(o), nil
	case metav1.Object:
		o.SetManagedFields(nil)
		o.SetAnnotations(nil)
		return obj, nil
	}
	return obj, nil
}

// stripService returns what podwall needs of s (see transform).
func stripService(s *corev1.Service) *corev1.Service {
	out := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:            s.Name,
			Namespace:       s.Namespace,
			UID:             s.UID,
			ResourceVersion: s.ResourceVersion,
		},
		Spec: corev1.ServiceSpec{
			Type:                  s.Spec.Type,
			ClusterIP:             s.Spec.ClusterIP,
			ClusterIPs:            s.Spec.ClusterIPs,
			ExternalIPs:           s.Spec.ExternalIPs,
			InternalTrafficPolicy: s.Spec.InternalTrafficPolicy,
		},
	}
	if len(s.Spec.Ports) > 0 {
		out.Spec.Ports = make([]corev1.ServicePort, len(s.Spec.Ports))
		for i, p := range s.Spec.Ports {
			out.Spec.Ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, NodePort: p.NodePort}
		}
	}
	for _, ing := range s.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			out.Status.LoadBalancer.Ingress = append(out.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ing.IP, IPMode: ing.IPMode})
		}
	}
	return out
}

// stripEndpointSlice returns what podwall needs of s (see transform).
func stripEndpointSlice(s *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	out := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:            s.Name,
			Namespace:       s.Namespace,
			UID:             s.UID,
			ResourceVersion: s.ResourceVersion,
		},
		AddressType: s.AddressType,
		Ports:       s.Ports,
	}
	if svc, ok := s.Labels[source.ServiceNameLabel]; ok {
		out.Labels = map[string]string{source.ServiceNameLabel: svc}
	}
	if len(s.Endpoints) > 0 {
		out.Endpoints = make([]discoveryv1.Endpoint, len(s.Endpoints))
		for i, e := range s.Endpoints {
			out.Endpoints[i] = discoveryv1.Endpoint{
				Addresses:  e.Addresses,
				Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready},
				NodeName:   e.NodeName,
			}
		}
	}
	return out
}

// stripNode returns what podwall needs of n (see transform).
func stripNode(n *corev1.Node) *corev1.Node {
	out := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion}}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	return out
}
