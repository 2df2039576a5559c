package kube

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

const (
	benchNamespaces = 1000
	benchPods       = 10000
	benchPolicies   = 1000
	benchServices   = 1000 // each with one EndpointSlice of 10 of the pods
)

// benchSource returns a source whose caches and state hold 1k namespaces,
// 10k pods, 1k policies, 1k Services and their 1k EndpointSlices (10k
// endpoints), filled through the same transform and apply path the
// informers use (without running them). The API objects are as the API
// server and the EndpointSlice controller write them (targetRef, zone,
// managed-by labels, annotations), so that the transform's trimming counts.
func benchSource(b *testing.B) *Source {
	b.Helper()
	s := New(clientOf(fake.NewClientset()), testNode, nil)
	add := func(informer cache.SharedIndexInformer, k kind, obj any) {
		stripped, err := transform(obj)
		if err != nil {
			b.Fatal(err)
		}
		if err := informer.GetIndexer().Add(stripped); err != nil {
			b.Fatal(err)
		}
		key, err := cache.MetaNamespaceKeyFunc(stripped)
		if err != nil {
			b.Fatal(err)
		}
		namespace, name, _ := cache.SplitMetaNamespaceKey(key)
		if _, err := s.apply(objectKey{kind: k, namespace: namespace, name: name}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range benchNamespaces {
		add(s.namespaces, kindNamespace, newNamespace(fmt.Sprintf("ns-%04d", i), map[string]string{"team": fmt.Sprint(i % 10)}))
	}
	for i := range benchPods {
		ns := fmt.Sprintf("ns-%04d", i%benchNamespaces)
		ip := fmt.Sprintf("10.%d.%d.%d", 100+i/65536, i/256%256, i%256)
		p := newPod(ns, fmt.Sprintf("pod-%05d", i), fmt.Sprintf("node-%03d", i%200),
			map[string]string{"app": fmt.Sprintf("app-%d", i%50), "pod-template-hash": "abc123"}, ip)
		add(s.pods, kindPod, p)
	}
	for i := range benchPolicies {
		ns := fmt.Sprintf("ns-%04d", i%benchNamespaces)
		add(s.policies, kindPolicy, newPolicy(ns, fmt.Sprintf("allow-%04d", i), fmt.Sprintf("app-%d", i%50), 8080))
	}
	for i := range benchServices {
		ns := fmt.Sprintf("ns-%04d", i%benchNamespaces)
		name := fmt.Sprintf("svc-%04d", i)
		svc := newService(ns, name, fmt.Sprintf("10.96.%d.%d", i/256, i%256))
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "metrics", Port: 9090, Protocol: corev1.ProtocolTCP})
		svc.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 600)}
		add(s.services, kindService, svc)
		ready := map[string]bool{}
		for j := range 10 {
			p := i*10 + j
			ready[fmt.Sprintf("10.%d.%d.%d", 100+p/65536, p/256%256, p%256)] = true
		}
		slice := newSlice(ns, name+"-abcde", name, 8080, ready)
		slice.Labels[discoveryv1.LabelManagedBy] = "endpointslice-controller.k8s.io"
		slice.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-02T03:04:05Z"}
		for j := range slice.Endpoints {
			node, zone, yes := fmt.Sprintf("node-%03d", j), "zone-a", true
			slice.Endpoints[j].NodeName, slice.Endpoints[j].Zone = &node, &zone
			slice.Endpoints[j].Conditions.Serving, slice.Endpoints[j].Conditions.Terminating = &yes, new(bool)
			slice.Endpoints[j].TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("pod-%05d", i*10+j), UID: "0123456789abcdef0123456789abcdef"}
		}
		add(s.endpointSlices, kindEndpointSlice, slice)
	}
	if st := s.State(); len(st.Pods) != benchPods || len(st.Namespaces) != benchNamespaces || len(st.Policies) != benchPolicies ||
		len(st.Services) != benchServices || len(st.EndpointSlices) != benchServices {
		b.Fatalf("state has %d pods, %d namespaces, %d policies, %d services, %d slices",
			len(st.Pods), len(st.Namespaces), len(st.Policies), len(st.Services), len(st.EndpointSlices))
	}
	return s
}

// BenchmarkState measures State() at 10k pods / 1k namespaces / 1k
// policies: with nothing changed since the last call (what every sync
// without an event pays), and after one pod or one policy changed (apply
// of the event plus the rebuild of that kind's slice).
func BenchmarkState(b *testing.B) {
	s := benchSource(b)
	b.Run("unchanged", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if s.State() == nil {
				b.Fatal("nil state")
			}
		}
	})
	b.Run("after-pod-change", func(b *testing.B) {
		obj, _, _ := s.pods.GetIndexer().GetByKey("ns-0007/pod-00007")
		pod := obj.(*cachedPod).DeepCopyObject().(*cachedPod)
		key := objectKey{kind: kindPod, namespace: pod.Namespace, name: pod.Name}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			pod.Labels = map[string]string{"app": "app-7", "rev": fmt.Sprint(i)}
			if err := s.pods.GetIndexer().Update(pod.DeepCopyObject()); err != nil {
				b.Fatal(err)
			}
			if changed, err := s.apply(key); err != nil || !changed {
				b.Fatalf("apply = %v, %v", changed, err)
			}
			if len(s.State().Pods) != benchPods {
				b.Fatal("pods missing")
			}
		}
	})
	b.Run("after-policy-change", func(b *testing.B) {
		obj, _, _ := s.policies.GetIndexer().GetByKey("ns-0007/allow-0007")
		np := obj.(*networkingv1.NetworkPolicy).DeepCopy()
		key := objectKey{kind: kindPolicy, namespace: np.Namespace, name: np.Name}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			i++
			np.Spec.PodSelector.MatchLabels = map[string]string{"app": fmt.Sprintf("app-%d", i%50), "rev": fmt.Sprint(i)}
			if err := s.policies.GetIndexer().Update(np.DeepCopy()); err != nil {
				b.Fatal(err)
			}
			if changed, err := s.apply(key); err != nil || !changed {
				b.Fatalf("apply = %v, %v", changed, err)
			}
			if len(s.State().Policies) != benchPolicies {
				b.Fatal("policies missing")
			}
		}
	})
	b.Run("after-endpoint-change", func(b *testing.B) {
		obj, _, _ := s.endpointSlices.GetIndexer().GetByKey("ns-0007/svc-0007-abcde")
		slice := obj.(*cachedEndpointSlice).DeepCopyObject().(*cachedEndpointSlice)
		key := objectKey{kind: kindEndpointSlice, namespace: slice.namespace, name: slice.name}
		b.ReportAllocs()
		for b.Loop() {
			slice.value.Endpoints[0].Ready = !slice.value.Endpoints[0].Ready
			if err := s.endpointSlices.GetIndexer().Update(slice.DeepCopyObject()); err != nil {
				b.Fatal(err)
			}
			if changed, err := s.apply(key); err != nil || !changed {
				b.Fatalf("apply = %v, %v", changed, err)
			}
			if len(s.State().EndpointSlices) != benchServices {
				b.Fatal("slices missing")
			}
		}
	})
	b.Run("status-only-pod-update", func(b *testing.B) {
		obj, _, _ := s.pods.GetIndexer().GetByKey("ns-0009/pod-00009")
		pod := obj.(*cachedPod)
		key := objectKey{kind: kindPod, namespace: pod.Namespace, name: pod.Name}
		b.ReportAllocs()
		for b.Loop() {
			if err := s.pods.GetIndexer().Update(pod.DeepCopyObject()); err != nil {
				b.Fatal(err)
			}
			if changed, err := s.apply(key); err != nil || changed {
				b.Fatalf("apply = %v, %v", changed, err)
			}
		}
	})
}

// BenchmarkMemory reports the heap that 10k pods, 1k namespaces, 1k
// policies, 1k Services and 1k EndpointSlices take in the caches plus the
// maintained state.
func BenchmarkMemory(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		s := benchSource(b)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-heap")
		runtime.KeepAlive(s)
	}
}
