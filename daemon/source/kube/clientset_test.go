package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/watchlist"
)

// clientOf returns a Client that reads through cs's typed clients: the
// unit tests' fake clientset, whose reactors and recorded actions then see
// every list, watch and GET of the source. The pod list converts the typed
// List's items (a fake clientset has no REST client to stream from).
func clientOf(cs kubernetes.Interface) *Client {
	return &Client{
		list: func(ctx context.Context, r apiResource, opts metav1.ListOptions) (runtime.Object, error) {
			return typedList(ctx, cs, r, opts)
		},
		listPods: func(ctx context.Context, opts metav1.ListOptions, convert func(*corev1.Pod) *cachedPod) (*cachedPodList, error) {
			list, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
			if err != nil {
				return nil, err
			}
			out := &cachedPodList{ListMeta: list.ListMeta, Items: make([]*cachedPod, 0, len(list.Items))}
			for i := range list.Items {
				out.Items = append(out.Items, convert(&list.Items[i]))
			}
			return out, nil
		},
		watch: func(ctx context.Context, r apiResource, opts metav1.ListOptions) (watch.Interface, error) {
			return typedWatch(ctx, cs, r, opts)
		},
		getPod: func(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
			return cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		},
		noWatchList: watchlist.DoesClientNotSupportWatchListSemantics(cs),
	}
}

func typedList(ctx context.Context, cs kubernetes.Interface, r apiResource, opts metav1.ListOptions) (runtime.Object, error) {
	all := metav1.NamespaceAll
	switch r.name {
	case "pods":
		return cs.CoreV1().Pods(all).List(ctx, opts)
	case "namespaces":
		return cs.CoreV1().Namespaces().List(ctx, opts)
	case "services":
		return cs.CoreV1().Services(all).List(ctx, opts)
	case "nodes":
		return cs.CoreV1().Nodes().List(ctx, opts)
	case "networkpolicies":
		return cs.NetworkingV1().NetworkPolicies(all).List(ctx, opts)
	case "servicecidrs":
		return cs.NetworkingV1().ServiceCIDRs().List(ctx, opts)
	case "endpointslices":
		return cs.DiscoveryV1().EndpointSlices(all).List(ctx, opts)
	}
	return nil, fmt.Errorf("no typed client for %s", r)
}

func typedWatch(ctx context.Context, cs kubernetes.Interface, r apiResource, opts metav1.ListOptions) (watch.Interface, error) {
	all := metav1.NamespaceAll
	switch r.name {
	case "pods":
		return cs.CoreV1().Pods(all).Watch(ctx, opts)
	case "namespaces":
		return cs.CoreV1().Namespaces().Watch(ctx, opts)
	case "services":
		return cs.CoreV1().Services(all).Watch(ctx, opts)
	case "nodes":
		return cs.CoreV1().Nodes().Watch(ctx, opts)
	case "networkpolicies":
		return cs.NetworkingV1().NetworkPolicies(all).Watch(ctx, opts)
	case "servicecidrs":
		return cs.NetworkingV1().ServiceCIDRs().Watch(ctx, opts)
	case "endpointslices":
		return cs.DiscoveryV1().EndpointSlices(all).Watch(ctx, opts)
	}
	return nil, fmt.Errorf("no typed client for %s", r)
}
