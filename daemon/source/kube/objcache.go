package kube

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podwall/podwall/daemon/policy"
)

// cachedObject is what the Service and EndpointSlice informers' caches hold:
// the object converted, once, as it is stored (source.ServiceFromAPI,
// source.EndpointSliceFromAPI), plus the metadata client-go needs. The
// maintained state points at the same value, so each object is held once.
// Before, the caches held a stripped API object and the state its
// conversion: the stripped EndpointSlices alone were 2.5 MiB of podwalld's
// 25 MiB live heap at 1k Services of 10 endpoints (a heap profile of the
// control-plane bench), as each endpoint kept a discoveryv1.Endpoint of
// nine pointer fields beside its policy.Endpoint.
//
// Like every object in an informer's cache it is never modified once
// stored. It implements metav1.Object over the fields it keeps (namespace,
// name, uid, resourceVersion); the others read as empty and setting them
// does nothing.
type cachedObject[V interface{ Clone() V }] struct {
	noMeta
	namespace, name, uid, resourceVersion string
	value                                 V
}

// The informers' cached types.
type (
	cachedService       = cachedObject[*policy.Service]
	cachedEndpointSlice = cachedObject[*policy.EndpointSlice]
)

// newCachedObject returns the cachedObject of value, the conversion of the
// API object meta describes.
func newCachedObject[V interface{ Clone() V }](meta *metav1.ObjectMeta, value V) *cachedObject[V] {
	return &cachedObject[V]{
		namespace:       meta.Namespace,
		name:            meta.Name,
		uid:             string(meta.UID),
		resourceVersion: meta.ResourceVersion,
		value:           value,
	}
}

// GetObjectKind implements runtime.Object: a cachedObject has no type meta.
func (c *cachedObject[V]) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject implements runtime.Object.
func (c *cachedObject[V]) DeepCopyObject() runtime.Object {
	out := *c
	out.value = c.value.Clone()
	return &out
}

func (c *cachedObject[V]) GetNamespace() string               { return c.namespace }
func (c *cachedObject[V]) SetNamespace(namespace string)      { c.namespace = namespace }
func (c *cachedObject[V]) GetName() string                    { return c.name }
func (c *cachedObject[V]) SetName(name string)                { c.name = name }
func (c *cachedObject[V]) GetUID() types.UID                  { return types.UID(c.uid) }
func (c *cachedObject[V]) SetUID(uid types.UID)               { c.uid = string(uid) }
func (c *cachedObject[V]) GetResourceVersion() string         { return c.resourceVersion }
func (c *cachedObject[V]) SetResourceVersion(version string)  { c.resourceVersion = version }
func (c *cachedObject[V]) GetCreationTimestamp() metav1.Time  { return metav1.Time{} }
func (c *cachedObject[V]) SetCreationTimestamp(metav1.Time)   {}
func (c *cachedObject[V]) GetDeletionTimestamp() *metav1.Time { return nil }
func (c *cachedObject[V]) SetDeletionTimestamp(*metav1.Time)  {}
func (c *cachedObject[V]) GetLabels() map[string]string       { return nil }
func (c *cachedObject[V]) SetLabels(map[string]string)        {}

var (
	_ metav1.Object  = (*cachedService)(nil)
	_ runtime.Object = (*cachedEndpointSlice)(nil)
)

// noMeta gives the cached types (cachedPod, cachedObject) the parts of
// metav1.Object none of them keeps: they read as empty, and setting them
// does nothing, as metav1.Common describes for objects without a field.
type noMeta struct{}

func (noMeta) GetGenerateName() string                       { return "" }
func (noMeta) SetGenerateName(string)                        {}
func (noMeta) GetGeneration() int64                          { return 0 }
func (noMeta) SetGeneration(int64)                           {}
func (noMeta) GetSelfLink() string                           { return "" }
func (noMeta) SetSelfLink(string)                            {}
func (noMeta) GetDeletionGracePeriodSeconds() *int64         { return nil }
func (noMeta) SetDeletionGracePeriodSeconds(*int64)          {}
func (noMeta) GetAnnotations() map[string]string             { return nil }
func (noMeta) SetAnnotations(map[string]string)              {}
func (noMeta) GetFinalizers() []string                       { return nil }
func (noMeta) SetFinalizers([]string)                        {}
func (noMeta) GetOwnerReferences() []metav1.OwnerReference   { return nil }
func (noMeta) SetOwnerReferences([]metav1.OwnerReference)    {}
func (noMeta) GetManagedFields() []metav1.ManagedFieldsEntry { return nil }
func (noMeta) SetManagedFields([]metav1.ManagedFieldsEntry)  {}
