package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

// ErrPodNotFound is wrapped by Pod's error when the API server has no such
// pod.
var ErrPodNotFound = errors.New("pod not found")

// Pod returns the pod a CNI ADD names, stripped to what the compiler needs.
//
// It answers only once the caches have synced, waiting for that at most 10 s
// (or until ctx's deadline, if sooner); it returns an error when they have
// not, and the ADD is then retried later (CNI error 11). It reads the cache
// first and falls back to a GET from the API server when the cache does not
// have the pod, or has it only as terminated or being deleted (likely the
// previous pod of that name): the runtime calls CNI after the Pod object
// exists, but the informer may lag.
//
// A pod the API server does not have yields an error wrapping
// ErrPodNotFound, never (nil, nil): the ADD must then fail with CNI error 11
// ("try again later"), since a pod sandbox whose Pod object is gone (or was
// never there) is not to be given a firewall built without its labels.
func (s *Source) Pod(ctx context.Context, namespace, name string) (*policy.Pod, error) {
	if namespace == "" || name == "" {
		return nil, fmt.Errorf("look up pod %q/%q: namespace and name are required", namespace, name)
	}
	ctx, cancel := context.WithTimeout(ctx, s.podSyncWait)
	defer cancel()
	if err := s.WaitForSync(ctx); err != nil {
		return nil, fmt.Errorf("look up pod %s/%s: %w", namespace, name, err)
	}
	obj, exists, err := s.pods.GetIndexer().GetByKey(namespace + "/" + name)
	if err == nil && exists {
		if p, ok := obj.(*cachedPod); ok && !p.Deleting &&
			p.Phase != corev1.PodSucceeded && p.Phase != corev1.PodFailed {
			return p.policyPod(), nil
		}
	}
	p, err := s.client.getPod(ctx, namespace, name)
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("pod %s/%s: %w", namespace, name, ErrPodNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	s.log.Debug("pod not in cache yet, read from the API server", "pod", namespace+"/"+name)
	return source.PodFromAPI(p), nil
}

// LocalPods returns the pods the cache has on this node (spec.nodeName equal
// to the node name given to New), sorted by namespace/name. It is empty
// before the first sync.
func (s *Source) LocalPods() ([]*policy.Pod, error) {
	objs, err := s.pods.GetIndexer().ByIndex(nodeIndex, s.nodeName)
	if err != nil {
		return nil, fmt.Errorf("list pods on node %s: %w", s.nodeName, err)
	}
	out := make([]*policy.Pod, 0, len(objs))
	for _, obj := range objs {
		if p, ok := obj.(*cachedPod); ok {
			out = append(out, p.policyPod())
		}
	}
	slices.SortFunc(out, func(a, b *policy.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}
