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
//   - Service and EndpointSlice: become a cachedObject (objcache.go), what
//     the compiler reads of them (source.ServiceFromAPI,
//     source.EndpointSliceFromAPI) plus name, namespace, uid and
//     resourceVersion; a cachedObject is kept as it is.
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
		return newCachedObject(&o.ObjectMeta, source.ServiceFromAPI(o)), nil
	case *cachedService:
		return o, nil
	case *discoveryv1.EndpointSlice:
		return newCachedObject(&o.ObjectMeta, source.EndpointSliceFromAPI(o)), nil
	case *cachedEndpointSlice:
		return o, nil
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
