package kube

import (
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
)

// equalCachedPods reports whether a and b hold the same pod, timestamps
// compared as instants. (equality.Semantic cannot compare them: it refuses
// unexported fields, which netip.Addr has.)
func equalCachedPods(a, b *cachedPod) bool {
	return samePod(&a.Pod, &b.Pod) && a.resourceVersion == b.resourceVersion &&
		a.deletionTimestamp.Equal(b.deletionTimestamp)
}

// testPodList is a list as the API server sends it: full pods (what the
// cache must not keep), list metadata of a paginated list.
func testPodList() *corev1.PodList {
	web := newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5", "fd10::5")
	web.ResourceVersion = "41"
	web.Annotations = map[string]string{"big": strings.Repeat("x", 4096)}
	web.Spec.InitContainers = []corev1.Container{{Name: "proxy", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 9901}}}}
	web.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	db := newPod("nsb", "db", "node-b", map[string]string{"app": "db"}, "10.1.0.6")
	db.ResourceVersion = "42"
	db.DeletionTimestamp = &metav1.Time{Time: time.Date(2026, 1, 2, 3, 9, 0, 0, time.UTC)}
	pending := newPod("nsb", "pending", "", nil)
	pending.Status.Phase = corev1.PodPending
	remaining := int64(7)
	return &corev1.PodList{
		ListMeta: metav1.ListMeta{ResourceVersion: "42", Continue: "next-page", RemainingItemCount: &remaining},
		Items:    []corev1.Pod{*web, *db, *pending},
	}
}

func encodeList(t *testing.T, obj k8sruntime.Object, contentType string) []byte {
	t.Helper()
	var serializer k8sruntime.Serializer = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	if contentType == "json" {
		info, _ := k8sruntime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), k8sruntime.ContentTypeJSON)
		serializer = info.Serializer
	}
	data, err := k8sruntime.Encode(scheme.Codecs.EncoderForVersion(serializer, corev1.SchemeGroupVersion), obj)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestDecodePodList: the streamed protobuf list and the JSON list give the
// cachedPod of each item, in order, and the list's metadata.
func TestDecodePodList(t *testing.T) {
	list := testPodList()
	for _, tc := range []struct {
		name string
		list *corev1.PodList
	}{
		{"three pods", list},
		{"empty", &corev1.PodList{ListMeta: metav1.ListMeta{ResourceVersion: "9"}}},
	} {
		for _, format := range []string{"protobuf", "json"} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				data := encodeList(t, tc.list, format)
				got, err := decodePodList(strings.NewReader(string(data)), newCachedPod)
				if err != nil {
					t.Fatalf("decodePodList: %v", err)
				}
				if got.ResourceVersion != tc.list.ResourceVersion || got.Continue != tc.list.Continue ||
					!equalInt64Ptr(got.RemainingItemCount, tc.list.RemainingItemCount) {
					t.Errorf("list metadata = %+v, want %+v", got.ListMeta, tc.list.ListMeta)
				}
				if got.Kind != "PodList" || got.APIVersion != "v1" {
					t.Errorf("type = %s %s, want v1 PodList", got.APIVersion, got.Kind)
				}
				if len(got.Items) != len(tc.list.Items) {
					t.Fatalf("%d items, want %d", len(got.Items), len(tc.list.Items))
				}
				for i := range tc.list.Items {
					if want := newCachedPod(&tc.list.Items[i]); !equalCachedPods(got.Items[i], want) {
						t.Errorf("item %d = %+v, want %+v", i, got.Items[i], want)
					}
				}
			})
		}
	}
}

func equalInt64Ptr(a, b *int64) bool {
	return a == b || (a != nil && b != nil && *a == *b)
}

// TestDecodePodListRejects: broken and foreign responses are errors, never
// a partial list.
func TestDecodePodListRejects(t *testing.T) {
	valid := encodeList(t, testPodList(), "protobuf")
	services := encodeList(t, &corev1.ServiceList{Items: []corev1.Service{*newService("nsa", "web", "10.96.0.1")}}, "protobuf")
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated in an item", valid[:len(valid)-20], "unexpected EOF"},
		{"truncated in a length", append([]byte("k8s\x00"), 0x12, 0x80), "unexpected EOF"},
		{"wrong wire type", append([]byte("k8s\x00"), 0x08, 0x01), "wire type 0"},
		{"list larger than the limit", podListEnvelope(t, 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f), "larger than"},
		{"item larger than its list", podListEnvelope(t, 0x12, 0x03, 0x12, 0x10, 0x00), "larger than"},
		{"items before the type", append([]byte("k8s\x00"), 0x12, 0x00), `holds a "", not a PodList`},
		{"not a pod list", services, `holds a "ServiceList"`},
		{"json, not a pod list", encodeList(t, &corev1.ServiceList{}, "json"), "not a PodList"},
		{"empty", nil, "decode response"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodePodList(strings.NewReader(string(tc.data)), newCachedPod)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decodePodList = %v, %v; want an error containing %q", got, err, tc.want)
			}
		})
	}
	// A reader that fails midway: its error, not a list.
	failing := io.MultiReader(strings.NewReader(string(valid[:100])), errReader{errors.New("connection reset")})
	if _, err := decodePodList(failing, newCachedPod); err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Errorf("decodePodList of a failing reader = %v, want the read error", err)
	}
}

// podListEnvelope is the protobuf envelope of a v1 PodList, its type
// followed by fields.
func podListEnvelope(t *testing.T, fields ...byte) []byte {
	t.Helper()
	typeMeta, err := (&k8sruntime.TypeMeta{APIVersion: "v1", Kind: "PodList"}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte("k8s\x00"), 0x0a, byte(len(typeMeta)))
	return append(append(out, typeMeta...), fields...)
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestCachePodReusesTheCachedVersion: a pod whose resourceVersion the cache
// holds already (a relist) is not converted again.
func TestCachePodReusesTheCachedVersion(t *testing.T) {
	s := New(clientOf(fake.NewClientset()), testNode, nil)
	pod := newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5")
	pod.ResourceVersion = "7"
	cached := s.cachePod(pod)
	if err := s.pods.GetIndexer().Add(cached); err != nil {
		t.Fatal(err)
	}
	if again := s.cachePod(pod.DeepCopy()); again != cached {
		t.Errorf("the same resourceVersion was converted again")
	}
	newer := pod.DeepCopy()
	newer.ResourceVersion = "8"
	if got := s.cachePod(newer); got == cached || got.resourceVersion != "8" || !samePod(&got.Pod, &cached.Pod) {
		t.Errorf("a newer version = %+v (the cached one: %v)", got, got == cached)
	}
	unversioned := pod.DeepCopy()
	unversioned.ResourceVersion = ""
	if got := s.cachePod(unversioned); got == cached {
		t.Errorf("a pod without resourceVersion was taken for the cached one")
	}
}

// TestStateSharesTheCachedPods: the state's pods are the cache's, also
// after an update the compiler cannot see (the state then moves to the new
// version without a change being reported), so that each pod is held once.
func TestStateSharesTheCachedPods(t *testing.T) {
	pod := newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5")
	rs := startSource(t, nil, pod)
	rs.waitSynced(t)
	shared := func() bool {
		obj, _, _ := rs.pods.GetIndexer().GetByKey("nsa/web")
		rs.mu.Lock()
		defer rs.mu.Unlock()
		inState, _ := rs.podSet.get("nsa/web")
		return obj != nil && &obj.(*cachedPod).Pod == inState
	}
	if !shared() {
		t.Fatal("after the first sync the state does not point at the cached pod")
	}
	// Run reports the first state just after WaitForSync returns.
	waitFor(t, "the first changed call", func() bool { return rs.changed.Load() == 1 })
	changes := rs.changed.Load()
	before := rs.processed.Load()
	updated := pod.DeepCopy()
	updated.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if _, err := rs.client.CoreV1().Pods("nsa").UpdateStatus(context.Background(), updated, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	rs.waitQuiet(t, before)
	if !shared() {
		t.Error("after a status update the state does not point at the cached pod")
	}
	if rs.changed.Load() != changes {
		t.Error("a status update was reported as a change")
	}
}

// TestFirstListIsNotQueued: the objects of the first list reach the state
// through buildFirstState only; the work queue gets the changes after it.
func TestFirstListIsNotQueued(t *testing.T) {
	rs := startSource(t, nil, newPod("nsa", "web", testNode, nil, "10.1.0.5"), newNamespace("nsa", nil),
		newPolicy("nsa", "allow-web", "web", 80))
	rs.waitSynced(t)
	if n, queued := rs.processed.Load(), rs.queue.Len(); n != 0 || queued != 0 {
		t.Errorf("after the first sync the worker applied %d keys and %d are queued, want none", n, queued)
	}
	if got := len(rs.State().Pods); got != 1 {
		t.Fatalf("state has %d pods, want 1", got)
	}
	if _, err := rs.client.CoreV1().Pods("nsa").Create(context.Background(), newPod("nsa", "db", testNode, nil, "10.1.0.6"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new pod", func() bool { return len(rs.State().Pods) == 2 })
}

// TestLabelSetsIntern: equal label maps share one set, different ones
// (however their strings split) do not, and a set nobody uses any more is
// dropped.
func TestLabelSetsIntern(t *testing.T) {
	sets := &labelSets{sets: map[string]weak.Pointer[labelSet]{}}
	held := []*labelSet{sets.intern(map[string]string{"app": "web", "tier": "frontend"})}
	if again := sets.intern(map[string]string{"tier": "frontend", "app": "web"}); again != held[0] {
		t.Error("an equal map got a set of its own")
	}
	for _, other := range []map[string]string{
		{"app": "web"},
		{"app": "web", "tier": "backend"},
		{"a": "bc"},
		{"ab": "c"},
		{"a": "b", "c": ""},
		{"a": "b\x00c"},
	} {
		set := sets.intern(other)
		for _, h := range held {
			if set == h {
				t.Errorf("%v shares the set of %v", other, h.labels)
			}
		}
		held = append(held, set)
	}
	if n := sets.len(); n != len(held) {
		t.Errorf("%d sets interned, want %d", n, len(held))
	}
	held = nil
	deadline := time.Now().Add(15 * time.Second)
	for sets.len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sets still interned after nothing uses them", sets.len())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
