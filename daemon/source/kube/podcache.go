package kube

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

// cachedPod is what the pod informer's cache holds of a Pod: the pod as the
// policy compiler sees it (source.PodFromAPI) plus the metadata client-go
// needs. The maintained state points into these objects, so each pod of the
// cluster is held once, in about 0.4 KB instead of the 2 KB a stripped
// corev1.Pod (1.3 KB of mostly empty structs, plus its containers) and a
// converted copy took.
//
// It implements metav1.Object over the fields it keeps (namespace, name,
// uid, resourceVersion, labels, creation and deletion timestamps); the
// others read as empty and setting them does nothing (noMeta). Like every
// object in an informer's cache it is never modified once stored.
type cachedPod struct {
	noMeta
	policy.Pod
	resourceVersion   string
	deletionTimestamp *metav1.Time
	// labels holds the interned set Pod.Labels is (nil without labels):
	// while a cachedPod uses it, it stays interned.
	labels *labelSet
}

// newCachedPod returns the cachedPod of p. It shares nothing with p; its
// labels map is shared with the other cachedPods of the same labels.
func newCachedPod(p *corev1.Pod) *cachedPod {
	c := &cachedPod{Pod: *source.PodFromAPI(p), resourceVersion: p.ResourceVersion}
	if p.DeletionTimestamp != nil {
		t := *p.DeletionTimestamp
		c.deletionTimestamp = &t
	}
	if len(c.Labels) > 0 {
		c.labels = podLabels.intern(c.Labels)
		c.Labels = c.labels.labels
	}
	return c
}

// policyPod returns a copy of the pod that shares nothing with the cache.
func (c *cachedPod) policyPod() *policy.Pod {
	p := c.Pod
	p.Labels = maps.Clone(c.Labels)
	p.Ports = slices.Clone(c.Ports)
	p.IPs = slices.Clone(c.IPs)
	return &p
}

// GetObjectKind implements runtime.Object: a cachedPod has no type meta.
func (c *cachedPod) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (c *cachedPod) DeepCopyObject() runtime.Object {
	out := *c
	out.Pod = *c.policyPod()
	out.labels = nil // out.Labels is a copy, not the interned set
	if c.deletionTimestamp != nil {
		t := *c.deletionTimestamp
		out.deletionTimestamp = &t
	}
	return &out
}

// metav1.Object over the fields a cachedPod keeps.

func (c *cachedPod) GetNamespace() string               { return c.Namespace }
func (c *cachedPod) SetNamespace(namespace string)      { c.Namespace = namespace }
func (c *cachedPod) GetName() string                    { return c.Name }
func (c *cachedPod) SetName(name string)                { c.Name = name }
func (c *cachedPod) GetUID() types.UID                  { return types.UID(c.UID) }
func (c *cachedPod) SetUID(uid types.UID)               { c.UID = string(uid) }
func (c *cachedPod) GetResourceVersion() string         { return c.resourceVersion }
func (c *cachedPod) SetResourceVersion(version string)  { c.resourceVersion = version }
func (c *cachedPod) GetCreationTimestamp() metav1.Time  { return c.Created }
func (c *cachedPod) SetCreationTimestamp(t metav1.Time) { c.Created = t }
func (c *cachedPod) GetDeletionTimestamp() *metav1.Time { return c.deletionTimestamp }
func (c *cachedPod) GetLabels() map[string]string       { return c.Labels }
func (c *cachedPod) SetLabels(labels map[string]string) { c.Labels, c.labels = labels, nil }

func (c *cachedPod) SetDeletionTimestamp(t *metav1.Time) {
	c.deletionTimestamp = t
	c.Deleting = t != nil
}

var (
	_ metav1.Object  = (*cachedPod)(nil)
	_ runtime.Object = (*cachedPod)(nil)
)

// cachedPodList is what listPods returns to the pod informer's reflector:
// the list's metadata and the cachedPod of every item.
type cachedPodList struct {
	metav1.TypeMeta
	metav1.ListMeta
	Items []*cachedPod // meta.ExtractList reads the field by this name
}

// DeepCopyObject implements runtime.Object.
func (l *cachedPodList) DeepCopyObject() runtime.Object {
	out := &cachedPodList{TypeMeta: l.TypeMeta}
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]*cachedPod, len(l.Items))
		for i, p := range l.Items {
			out.Items[i] = p.DeepCopyObject().(*cachedPod)
		}
	}
	return out
}

var _ metav1.ListInterface = (*cachedPodList)(nil)

// cachePod is the pod informer's conversion (its transform, and listPods's
// for the items of a list): the cachedPod of p, or the one the cache holds
// already when that has p's resourceVersion. A relist after an outage then
// leaves the cache and the state pointing at the same objects as before,
// instead of the cache holding a new copy of every pod that the state,
// which sees nothing changed, does not take.
func (s *Source) cachePod(p *corev1.Pod) *cachedPod {
	if p.ResourceVersion != "" {
		obj, exists, err := s.pods.GetIndexer().GetByKey(p.Namespace + "/" + p.Name)
		if c, ok := obj.(*cachedPod); err == nil && exists && ok && c.resourceVersion == p.ResourceVersion {
			return c
		}
	}
	return newCachedPod(p)
}

// transformPod is the pod informer's transform (see transform).
func (s *Source) transformPod(obj any) (any, error) {
	if p, ok := obj.(*corev1.Pod); ok {
		return s.cachePod(p), nil
	}
	return transform(obj)
}
