package kube

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// transform strips every object before the informers store it, keeping only
// what the policy source reads:
//
//   - Pod: name, namespace, uid, resourceVersion, labels, creation and
//     deletion timestamps; spec.nodeName, spec.hostNetwork and the ports of
//     containers and init containers (other container fields dropped,
//     containers without ports left out); status.phase, podIP, podIPs.
//   - Namespace: name, uid, resourceVersion, labels.
//   - NetworkPolicy: name, namespace, uid, resourceVersion, generation,
//     labels, creation timestamp and the spec.
//
// Annotations (last-applied-configuration can be large) and managedFields
// are dropped everywhere. It builds new objects, so the decoded originals
// can be freed, and it is idempotent, as client-go asks.
func transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return stripPod(o), nil
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
	case metav1.Object:
		o.SetManagedFields(nil)
		o.SetAnnotations(nil)
		return obj, nil
	}
	return obj, nil
}

// stripPod returns what podwall needs of p (see transform).
func stripPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:              p.Name,
			Namespace:         p.Namespace,
			UID:               p.UID,
			ResourceVersion:   p.ResourceVersion,
			Labels:            p.Labels,
			CreationTimestamp: p.CreationTimestamp,
			DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{
			NodeName:       p.Spec.NodeName,
			HostNetwork:    p.Spec.HostNetwork,
			InitContainers: portsOnly(p.Spec.InitContainers),
			Containers:     portsOnly(p.Spec.Containers),
		},
		Status: corev1.PodStatus{
			Phase:  p.Status.Phase,
			PodIP:  p.Status.PodIP,
			PodIPs: p.Status.PodIPs,
		},
	}
	return out
}

// portsOnly returns the containers that declare ports, with only their name
// and ports.
func portsOnly(containers []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for _, c := range containers {
		if len(c.Ports) == 0 {
			continue
		}
		out = append(out, corev1.Container{Name: c.Name, Ports: c.Ports})
	}
	return out
}
