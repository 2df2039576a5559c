package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

// These are narrow unit tests against client-go's fake clientset; the
// behaviour against a real API server is covered by the integration tests.

const testNode = "node-a"

var (
	podsResource     = corev1.SchemeGroupVersion.WithResource("pods")
	policiesResource = networkingv1.SchemeGroupVersion.WithResource("networkpolicies")
)

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func newNamespace(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func newPod(namespace, name, node string, labels map[string]string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, UID: types.UID("uid-" + name), Labels: labels,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "app", Image: "nginx",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	if len(ips) > 0 {
		p.Status.PodIP = ips[0]
	}
	return p
}

// newPolicy returns a policy selecting app=<app> that allows ingress from
// the policy's namespace on port.
func newPolicy(namespace, name, app string, port int32) *networkingv1.NetworkPolicy {
	p := intstr.FromInt32(port)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &p}},
			}},
		},
	}
}

// newInvalidPolicy returns a policy the API server would reject (a CIDR that
// does not parse); the fake clientset does not validate.
func newInvalidPolicy(namespace, name string) *networkingv1.NetworkPolicy {
	np := newPolicy(namespace, name, "web", 80)
	np.Spec.Ingress[0].From = []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}}
	return np
}

// summarize renders a state as one sorted line per object.
func summarize(st *policy.State) []string {
	var out []string
	for _, ns := range st.Namespaces {
		out = append(out, "namespace "+ns.Name+" "+labelString(ns.Labels))
	}
	for _, p := range st.Pods {
		var ports, ips []string
		for _, cp := range p.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s/%d", cp.Name, cp.Protocol, cp.Port))
		}
		for _, ip := range p.IPs {
			ips = append(ips, ip.String())
		}
		out = append(out, fmt.Sprintf("pod %s node=%s labels=%s ports=%s ips=%s phase=%s deleting=%v",
			p.Key(), p.NodeName, labelString(p.Labels), strings.Join(ports, ","), strings.Join(ips, ","), p.Phase, p.Deleting))
	}
	for _, np := range st.Policies {
		var types, ports []string
		for _, pt := range np.Spec.PolicyTypes {
			types = append(types, string(pt))
		}
		for _, r := range np.Spec.Ingress {
			for _, pp := range r.Ports {
				ports = append(ports, fmt.Sprintf("%s/%s", *pp.Protocol, pp.Port))
			}
		}
		out = append(out, fmt.Sprintf("policy %s/%s types=%s ports=%s select=%s",
			np.Namespace, np.Name, strings.Join(types, ","), strings.Join(ports, ","), labelString(np.Spec.PodSelector.MatchLabels)))
	}
	return out
}

func labelString(labels map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kv = append(kv, k+"="+labels[k])
	}
	return strings.Join(kv, ",")
}

// waitFor polls cond until it holds or 15 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runningSource is a Source whose Run goroutine a test drives.
type runningSource struct {
	*Source
	client  *fake.Clientset
	changed atomic.Int64
}

// startSource runs a source over a fake clientset holding objs until the
// test ends; prepare may add reactors before anything is watched.
func startSource(t *testing.T, prepare func(*fake.Clientset), objs ...runtime.Object) *runningSource {
	t.Helper()
	client := fake.NewClientset(objs...)
	if prepare != nil {
		prepare(client)
	}
	rs := &runningSource{Source: New(clientOf(client), testNode, testLogger(t)), client: client}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		rs.Run(ctx, func() { rs.changed.Add(1) })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return rs
}

func (rs *runningSource) waitSynced(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := rs.WaitForSync(ctx); err != nil {
		t.Fatalf("WaitForSync: %v", err)
	}
}

func TestStateFollowsEvents(t *testing.T) {
	rs := startSource(t, nil,
		newNamespace("nsa", map[string]string{"team": "a"}),
		newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5"),
		newPolicy("nsa", "allow-web", "web", 80),
	)
	rs.waitSynced(t)
	ctx := context.Background()
	core := rs.client.CoreV1()
	net := rs.client.NetworkingV1()

	steps := []struct {
		name   string
		change func() error
		want   []string
	}{
		{
			name:   "initial list",
			change: func() error { return nil },
			want: []string{
				"namespace nsa kubernetes.io/metadata.name=nsa,team=a",
				"pod nsa/web node=node-a labels=app=web ports=http/TCP/80 ips=10.1.0.5 phase=Running deleting=false",
				"policy nsa/allow-web types=Ingress ports=TCP/80 select=app=web",
			},
		},
		{
			name: "add one of each kind",
			change: func() error {
				_, err1 := core.Namespaces().Create(ctx, newNamespace("nsb", nil), metav1.CreateOptions{})
				_, err2 := core.Pods("nsb").Create(ctx, newPod("nsb", "db", "node-b", map[string]string{"app": "db"}, "10.1.1.7", "fd10::7"), metav1.CreateOptions{})
				_, err3 := net.NetworkPolicies("nsb").Create(ctx, newPolicy("nsb", "allow-db", "db", 5432), metav1.CreateOptions{})
				return errors.Join(err1, err2, err3)
			},
			want: []string{
				"namespace nsa kubernetes.io/metadata.name=nsa,team=a",
				"namespace nsb kubernetes.io/metadata.name=nsb",
				"pod nsa/web node=node-a labels=app=web ports=http/TCP/80 ips=10.1.0.5 phase=Running deleting=false",
				"pod nsb/db node=node-b labels=app=db ports=http/TCP/80 ips=10.1.1.7,fd10::7 phase=Running deleting=false",
				"policy nsa/allow-web types=Ingress ports=TCP/80 select=app=web",
				"policy nsb/allow-db types=Ingress ports=TCP/5432 select=app=db",
			},
		},
		{
			name: "update one of each kind",
			change: func() error {
				_, err1 := core.Namespaces().Update(ctx, newNamespace("nsb", map[string]string{"env": "prod"}), metav1.UpdateOptions{})
				p := newPod("nsa", "web", testNode, map[string]string{"app": "web", "v": "2"}, "10.1.0.5")
				p.Status.Phase = corev1.PodSucceeded
				_, err2 := core.Pods("nsa").Update(ctx, p, metav1.UpdateOptions{})
				_, err3 := net.NetworkPolicies("nsb").Update(ctx, newPolicy("nsb", "allow-db", "db", 6432), metav1.UpdateOptions{})
				return errors.Join(err1, err2, err3)
			},
			want: []string{
				"namespace nsa kubernetes.io/metadata.name=nsa,team=a",
				"namespace nsb env=prod,kubernetes.io/metadata.name=nsb",
				"pod nsa/web node=node-a labels=app=web,v=2 ports=http/TCP/80 ips=10.1.0.5 phase=Succeeded deleting=false",
				"pod nsb/db node=node-b labels=app=db ports=http/TCP/80 ips=10.1.1.7,fd10::7 phase=Running deleting=false",
				"policy nsa/allow-web types=Ingress ports=TCP/80 select=app=web",
				"policy nsb/allow-db types=Ingress ports=TCP/6432 select=app=db",
			},
		},
		{
			name: "delete one of each kind",
			change: func() error {
				err1 := core.Pods("nsa").Delete(ctx, "web", metav1.DeleteOptions{})
				err2 := net.NetworkPolicies("nsa").Delete(ctx, "allow-web", metav1.DeleteOptions{})
				err3 := core.Namespaces().Delete(ctx, "nsa", metav1.DeleteOptions{})
				return errors.Join(err1, err2, err3)
			},
			want: []string{
				"namespace nsb env=prod,kubernetes.io/metadata.name=nsb",
				"pod nsb/db node=node-b labels=app=db ports=http/TCP/80 ips=10.1.1.7,fd10::7 phase=Running deleting=false",
				"policy nsb/allow-db types=Ingress ports=TCP/6432 select=app=db",
			},
		},
	}
	for _, step := range steps {
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		var got []string
		deadline := time.Now().Add(15 * time.Second)
		for {
			got = summarize(rs.State())
			if slices.Equal(got, step.want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !slices.Equal(got, step.want) {
			t.Fatalf("%s: state\n%s\nwant\n%s", step.name, strings.Join(got, "\n"), strings.Join(step.want, "\n"))
		}
	}
	if errs := rs.Errors(); len(errs) != 0 {
		t.Errorf("Errors() = %v, want none", errs)
	}
}

func TestStateIsStableSnapshot(t *testing.T) {
	rs := startSource(t, nil, newPod("nsa", "web", testNode, nil, "10.1.0.5"))
	rs.waitSynced(t)
	first := rs.State()
	if second := rs.State(); second != first {
		t.Errorf("State() without a change returned a new snapshot")
	}
	if _, err := rs.client.CoreV1().Pods("nsa").Create(context.Background(), newPod("nsa", "db", testNode, nil, "10.1.0.6"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new pod", func() bool { return len(rs.State().Pods) == 2 })
	if len(first.Pods) != 1 || first.Pods[0].Name != "web" {
		t.Errorf("an earlier snapshot changed: %v", summarize(first))
	}
}

func TestTransformStripsCachedObjects(t *testing.T) {
	deleted := metav1.NewTime(time.Date(2026, 1, 2, 3, 9, 0, 0, time.UTC))
	managed := []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply,
		FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{}}`)}}}
	pod := newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5", "fd10::5")
	pod.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 4096)}
	pod.ManagedFields = managed
	pod.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-123", UID: "rs"}}
	pod.Finalizers = []string{"example.com/keep"}
	pod.DeletionTimestamp = &deleted
	pod.Spec.HostNetwork = true
	pod.Spec.Volumes = []corev1.Volume{{Name: "data"}}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "SECRET", Value: "x"}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "sidecar-without-ports", Image: "busybox"})
	pod.Spec.InitContainers = []corev1.Container{
		{Name: "init", Image: "busybox"},
		{Name: "proxy", Image: "envoy", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 9901, Protocol: corev1.ProtocolTCP}}},
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true}}
	pod.Status.HostIP = "192.168.0.1"

	ns := newNamespace("nsa", map[string]string{"team": "a"})
	ns.Annotations = map[string]string{"big": strings.Repeat("y", 4096)}
	ns.ManagedFields = managed
	ns.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
	ns.Status.Phase = corev1.NamespaceActive

	np := newPolicy("nsa", "allow-web", "web", 80)
	np.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}
	np.ManagedFields = managed
	np.Labels = map[string]string{"owner": "team-a"}

	rs := startSource(t, nil, pod, ns, np)
	rs.waitSynced(t)

	// The pod cache holds the compiler's view of the pod (see podcache.go).
	wantPod := &cachedPod{
		Pod: policy.Pod{Namespace: "nsa", Name: "web", UID: "uid-web", Labels: map[string]string{"app": "web"},
			Ports:    []policy.ContainerPort{{Name: "admin", Protocol: corev1.ProtocolTCP, Port: 9901}, {Name: "http", Protocol: corev1.ProtocolTCP, Port: 80}},
			IPs:      []netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd10::5")},
			NodeName: testNode, HostNetwork: true, Phase: corev1.PodRunning, Deleting: true, Created: pod.CreationTimestamp},
		deletionTimestamp: &deleted,
	}
	wantNS := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nsa", Labels: map[string]string{"team": "a"}}}
	wantNP := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: "nsa", Name: "allow-web", Labels: map[string]string{"owner": "team-a"}},
		Spec:       np.Spec,
	}
	for _, c := range []struct {
		name  string
		store interface {
			GetByKey(string) (any, bool, error)
		}
		key  string
		want runtime.Object
	}{
		{"pod", rs.pods.GetStore(), "nsa/web", wantPod},
		{"namespace", rs.namespaces.GetStore(), "nsa", wantNS},
		{"networkpolicy", rs.policies.GetStore(), "nsa/allow-web", wantNP},
	} {
		t.Run(c.name, func(t *testing.T) {
			obj, ok, err := c.store.GetByKey(c.key)
			if err != nil || !ok {
				t.Fatalf("GetByKey(%s) = %v, %v", c.key, ok, err)
			}
			got := obj.(runtime.Object).DeepCopyObject()
			// The fake clientset may fill the resource version; it is kept.
			got.(metav1.Object).SetResourceVersion("")
			if !equalObjects(got, c.want) {
				t.Errorf("cache holds\n%#v\nwant\n%#v", got, c.want)
			}
		})
	}

	// What the compiler gets is the same whether read from the full or the
	// stripped pod.
	stored, _, _ := rs.pods.GetStore().GetByKey("nsa/web")
	fromStore, fromFull := &stored.(*cachedPod).Pod, source.PodFromAPI(pod)
	if !samePod(fromStore, fromFull) {
		t.Errorf("PodFromAPI of the cached pod\n%+v\ndiffers from that of the full pod\n%+v", fromStore, fromFull)
	}
	if got, want := summarize(&policy.State{Pods: []*policy.Pod{fromStore}}),
		"pod nsa/web node=node-a labels=app=web ports=admin/TCP/9901,http/TCP/80 ips=10.1.0.5,fd10::5 phase=Running deleting=true"; !slices.Equal(got, []string{want}) {
		t.Errorf("stripped pod = %v, want %s", got, want)
	}
}

func TestTransformIsIdempotent(t *testing.T) {
	pod := newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5")
	pod.Annotations = map[string]string{"a": "b"}
	for _, obj := range []runtime.Object{pod, newNamespace("nsa", map[string]string{"x": "y"}), newPolicy("nsa", "p", "web", 80)} {
		once, err := transform(obj)
		if err != nil {
			t.Fatal(err)
		}
		twice, err := transform(once)
		if err != nil {
			t.Fatal(err)
		}
		if !equalObjects(once.(runtime.Object), twice.(runtime.Object)) {
			t.Errorf("%T: transform is not idempotent:\n%#v\n%#v", obj, once, twice)
		}
	}
}

func equalObjects(a, b runtime.Object) bool {
	if pa, ok := a.(*cachedPod); ok { // unexported fields: see equalCachedPods
		pb, ok := b.(*cachedPod)
		return ok && equalCachedPods(pa, pb)
	}
	switch a.(type) {
	case *cachedService, *cachedEndpointSlice: // unexported fields
		return reflect.DeepEqual(a, b)
	}
	return equality.Semantic.DeepEqual(a, b)
}

func TestPodLookup(t *testing.T) {
	cached := newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5")
	terminating := newPod("nsa", "stateful-0", testNode, map[string]string{"gen": "old"}, "10.1.0.6")
	terminating.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	// uncached exists only behind GET: the informer never sees it.
	uncached := newPod("nsa", "fresh", testNode, map[string]string{"app": "fresh"}, "10.1.0.7")
	recreated := newPod("nsa", "stateful-0", testNode, map[string]string{"gen": "new"})

	rs := startSource(t, func(c *fake.Clientset) {
		c.PrependReactor("get", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
			switch action.(k8stesting.GetAction).GetName() {
			case "fresh":
				return true, uncached.DeepCopy(), nil
			case "stateful-0":
				return true, recreated.DeepCopy(), nil
			}
			return false, nil, nil
		})
	}, cached, terminating)
	rs.waitSynced(t)

	gets := func() int {
		n := 0
		for _, a := range rs.client.Actions() {
			if a.GetVerb() == "get" && a.GetResource() == podsResource {
				n++
			}
		}
		return n
	}
	cases := []struct {
		name       string
		pod        string
		wantLabels string
		wantGet    bool
		wantErr    error
	}{
		{name: "in cache", pod: "web", wantLabels: "app=web"},
		{name: "not in cache yet: GET", pod: "fresh", wantLabels: "app=fresh", wantGet: true},
		{name: "cache has the previous pod of that name: GET", pod: "stateful-0", wantLabels: "gen=new", wantGet: true},
		{name: "unknown to the API server", pod: "ghost", wantGet: true, wantErr: ErrPodNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := gets()
			p, err := rs.Pod(context.Background(), "nsa", c.pod)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || p != nil {
					t.Fatalf("Pod() = %v, %v; want error wrapping %v", p, err, c.wantErr)
				}
			} else {
				if err != nil {
					t.Fatalf("Pod(): %v", err)
				}
				if got := labelString(p.Labels); got != c.wantLabels || p.Name != c.pod || p.Namespace != "nsa" {
					t.Errorf("Pod() = %s labels %s, want nsa/%s labels %s", p.Key(), got, c.pod, c.wantLabels)
				}
			}
			if got := gets() > before; got != c.wantGet {
				t.Errorf("GET issued = %v, want %v", got, c.wantGet)
			}
		})
	}
	if _, err := rs.Pod(context.Background(), "", "web"); err == nil {
		t.Error("Pod with an empty namespace: no error")
	}
}

func TestPodWaitsForSync(t *testing.T) {
	var listPods atomic.Bool // pods cannot be listed until set
	rs := startSource(t, func(c *fake.Clientset) {
		c.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
			if !listPods.Load() {
				return true, nil, errors.New("injected: pods cannot be listed yet")
			}
			return false, nil, nil
		})
	}, newNamespace("nsa", nil), newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5"))

	type result struct {
		pod *policy.Pod
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := rs.Pod(context.Background(), "nsa", "web")
		done <- result{p, err}
	}()
	// Namespaces and policies sync; pods do not.
	waitFor(t, "only pods to be unsynced", func() bool {
		err := rs.Ready()
		return err != nil && strings.HasSuffix(err.Error(), "not synced: pods")
	})
	select {
	case r := <-done:
		t.Fatalf("Pod() answered before the pods synced: %v, %v", r.pod, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	listPods.Store(true)
	select {
	case r := <-done:
		if r.err != nil || r.pod == nil || r.pod.Name != "web" {
			t.Fatalf("Pod() = %v, %v after sync", r.pod, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Pod() did not answer after the caches synced")
	}
	if err := rs.Ready(); err != nil {
		t.Errorf("Ready() after sync = %v", err)
	}
}

func TestPodTimesOutBeforeSync(t *testing.T) {
	src := New(clientOf(fake.NewClientset(newPod("nsa", "web", testNode, nil))), testNode, testLogger(t))
	for _, c := range []struct {
		name    string
		bound   time.Duration // Pod's own
		timeout time.Duration // of the caller's ctx
		within  time.Duration
	}{
		{"own bound", 200 * time.Millisecond, time.Minute, 3 * time.Second},
		{"caller's deadline", time.Minute, 50 * time.Millisecond, 3 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			src.podSyncWait = c.bound
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			defer cancel()
			start := time.Now()
			p, err := src.Pod(ctx, "nsa", "web")
			if took := time.Since(start); took > c.within {
				t.Errorf("Pod() took %v, want at most %v", took, c.within)
			}
			if err == nil || p != nil {
				t.Fatalf("Pod() before sync = %v, %v; want an error", p, err)
			}
			if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "not started") {
				t.Errorf("Pod() error %q: want it to say the source is not started and wrap the deadline", err)
			}
			if errors.Is(err, ErrPodNotFound) {
				t.Errorf("Pod() before sync reports %v, which means the pod does not exist", err)
			}
		})
	}
}

func TestReady(t *testing.T) {
	var list atomic.Bool
	fail := func(k8stesting.Action) (bool, runtime.Object, error) {
		if !list.Load() {
			return true, nil, errors.New("injected: cannot list yet")
		}
		return false, nil, nil
	}
	client := fake.NewClientset()
	client.PrependReactor("list", "pods", fail)
	client.PrependReactor("list", "networkpolicies", fail)
	src := New(clientOf(client), testNode, testLogger(t))
	if err := src.Ready(); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Errorf("Ready() before Run = %v, want 'not started'", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, func() {})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, "namespaces to sync", func() bool {
		err := src.Ready()
		return err != nil && err.Error() == "kubernetes caches not synced: pods, networkpolicies"
	})
	wctx, wcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer wcancel()
	if err := src.WaitForSync(wctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "pods, networkpolicies") {
		t.Errorf("WaitForSync before sync = %v", err)
	}
	list.Store(true)
	wctx, wcancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer wcancel()
	if err := src.WaitForSync(wctx); err != nil {
		t.Fatalf("WaitForSync: %v", err)
	}
	if err := src.Ready(); err != nil {
		t.Errorf("Ready() after sync = %v", err)
	}
}

// waitQuiet waits until the worker applied more than `after` keys and then
// for long enough that a changed call would have been made.
func (rs *runningSource) waitQuiet(t *testing.T, after uint64) {
	t.Helper()
	waitFor(t, "the worker to apply the event", func() bool { return rs.processed.Load() > after })
	time.Sleep(3 * rs.settleDelay)
}

func TestUpdatesTheCompilerCannotSeeDoNotNotify(t *testing.T) {
	base := newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5")
	rs := startSource(t, nil, newNamespace("nsa", nil), base, newPolicy("nsa", "allow-web", "web", 80))
	rs.waitSynced(t)
	waitFor(t, "the first changed call", func() bool { return rs.changed.Load() == 1 })
	ctx := context.Background()
	pods := rs.client.CoreV1().Pods("nsa")

	cases := []struct {
		name   string
		change func() error
		notify bool
	}{
		{"status conditions", func() error {
			p := base.DeepCopy()
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, RestartCount: 3}}
			_, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err
		}, false},
		{"pod annotations and resource version", func() error {
			p := base.DeepCopy()
			p.Annotations = map[string]string{"touched": "yes"}
			p.ResourceVersion = "12345"
			_, err := pods.Update(ctx, p, metav1.UpdateOptions{})
			return err
		}, false},
		{"namespace annotation", func() error {
			ns := newNamespace("nsa", nil)
			ns.Annotations = map[string]string{"touched": "yes"}
			_, err := rs.client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
			return err
		}, false},
		{"policy labels and annotations", func() error {
			np := newPolicy("nsa", "allow-web", "web", 80)
			np.Labels = map[string]string{"owner": "b"}
			np.Annotations = map[string]string{"touched": "yes"}
			_, err := rs.client.NetworkingV1().NetworkPolicies("nsa").Update(ctx, np, metav1.UpdateOptions{})
			return err
		}, false},
		// The twins: changes the compiler sees.
		{"pod labels", func() error {
			p := base.DeepCopy()
			p.Labels = map[string]string{"app": "web", "v": "2"}
			_, err := pods.Update(ctx, p, metav1.UpdateOptions{})
			return err
		}, true},
		{"pod IPs", func() error {
			p := base.DeepCopy()
			p.Labels = map[string]string{"app": "web", "v": "2"}
			p.Status.PodIPs = []corev1.PodIP{{IP: "10.1.0.9"}}
			_, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
			return err
		}, true},
		{"namespace labels", func() error {
			_, err := rs.client.CoreV1().Namespaces().Update(ctx, newNamespace("nsa", map[string]string{"team": "a"}), metav1.UpdateOptions{})
			return err
		}, true},
		{"policy port", func() error {
			_, err := rs.client.NetworkingV1().NetworkPolicies("nsa").Update(ctx, newPolicy("nsa", "allow-web", "web", 8080), metav1.UpdateOptions{})
			return err
		}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls, processed := rs.changed.Load(), rs.processed.Load()
			if err := c.change(); err != nil {
				t.Fatal(err)
			}
			rs.waitQuiet(t, processed)
			got := rs.changed.Load() - calls
			if c.notify && got != 1 {
				t.Errorf("changed() called %d times, want 1", got)
			}
			if !c.notify && got != 0 {
				t.Errorf("changed() called %d times for an update the compiler cannot see", got)
			}
		})
	}
}

func TestBurstCoalesces(t *testing.T) {
	rs := startSource(t, nil)
	rs.waitSynced(t)
	waitFor(t, "the first changed call", func() bool { return rs.changed.Load() == 1 })
	ctx := context.Background()
	const perKind = 34 // 102 events
	for i := range perKind {
		ns := fmt.Sprintf("ns%02d", i)
		if _, err := rs.client.CoreV1().Namespaces().Create(ctx, newNamespace(ns, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.client.CoreV1().Pods(ns).Create(ctx, newPod(ns, "web", "node-b", map[string]string{"app": "web"}, fmt.Sprintf("10.2.0.%d", i+1)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := rs.client.NetworkingV1().NetworkPolicies(ns).Create(ctx, newPolicy(ns, "allow", "web", 80), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every object in the state", func() bool {
		st := rs.State()
		return len(st.Namespaces) == perKind && len(st.Pods) == perKind && len(st.Policies) == perKind
	})
	waitFor(t, "a changed call after the burst", func() bool { return rs.changed.Load() > 1 })
	time.Sleep(3 * rs.settleDelay)
	calls := rs.changed.Load() - 1
	t.Logf("%d events -> %d changed() calls", 3*perKind, calls)
	if calls > 5 {
		t.Errorf("%d events caused %d changed() calls, want a handful", 3*perKind, calls)
	}
}

func TestChangedIsNeverConcurrent(t *testing.T) {
	client := fake.NewClientset()
	src := New(clientOf(client), testNode, testLogger(t))
	src.settleDelay = time.Millisecond
	var inside, overlaps, calls atomic.Int64
	ctx := runSynced(t, src, func() {
		if inside.Add(1) > 1 {
			overlaps.Add(1)
		}
		time.Sleep(20 * time.Millisecond) // a slow sync
		calls.Add(1)
		inside.Add(-1)
	})
	for i := range 40 {
		if _, err := client.CoreV1().Namespaces().Create(ctx, newNamespace(fmt.Sprintf("ns%d", i), nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	waitFor(t, "all namespaces", func() bool { return len(src.State().Namespaces) == 40 })
	time.Sleep(100 * time.Millisecond)
	if overlaps.Load() != 0 {
		t.Errorf("changed() ran concurrently %d times", overlaps.Load())
	}
	if calls.Load() < 2 {
		t.Errorf("changed() called %d times, want the first call and at least one more", calls.Load())
	}
}

// An invalid policy stays in the state (the compiler enforces it
// fail-closed: leaving it out would open the pods it selects) and is reported.
func TestInvalidPolicyIsReported(t *testing.T) {
	rs := startSource(t, nil,
		newNamespace("nsa", nil),
		newInvalidPolicy("nsa", "bad"),
		newPolicy("nsa", "good", "web", 80),
	)
	rs.waitSynced(t)
	policyNames := func() []string {
		var names []string
		for _, np := range rs.State().Policies {
			names = append(names, np.Namespace+"/"+np.Name)
		}
		return names
	}
	errorObjects := func() []string {
		var out []string
		for _, e := range rs.Errors() {
			out = append(out, e.Object)
		}
		return out
	}
	if got := policyNames(); !slices.Equal(got, []string{"nsa/bad", "nsa/good"}) {
		t.Errorf("policies in state = %v, want nsa/bad (fail-closed) and nsa/good", got)
	}
	errs := rs.Errors()
	if len(errs) != 1 || errs[0].Object != "NetworkPolicy nsa/bad" || !strings.Contains(errs[0].Error(), "10.0.0.0/33") {
		t.Fatalf("Errors() = %v, want one naming NetworkPolicy nsa/bad and its CIDR", errs)
	}

	ctx := context.Background()
	api := rs.client.NetworkingV1().NetworkPolicies("nsa")
	steps := []struct {
		name       string
		change     func() error
		wantState  []string
		wantErrors []string
	}{
		{"fixed", func() error {
			_, err := api.Update(ctx, newPolicy("nsa", "bad", "db", 5432), metav1.UpdateOptions{})
			return err
		}, []string{"nsa/bad", "nsa/good"}, nil},
		{"broken again", func() error {
			_, err := api.Update(ctx, newInvalidPolicy("nsa", "bad"), metav1.UpdateOptions{})
			return err
		}, []string{"nsa/bad", "nsa/good"}, []string{"NetworkPolicy nsa/bad"}},
		{"deleted", func() error { return api.Delete(ctx, "bad", metav1.DeleteOptions{}) },
			[]string{"nsa/good"}, nil},
	}
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		waitFor(t, s.name, func() bool {
			return slices.Equal(policyNames(), s.wantState) && slices.Equal(errorObjects(), s.wantErrors)
		})
	}
}

// outageClient is a fake clientset whose API "goes down" on request: lists
// and watches fail and the open watches end.
type outageClient struct {
	*fake.Clientset
	down    atomic.Bool
	mu      sync.Mutex
	watches []*watch.RaceFreeFakeWatcher
}

func newOutageClient(objs ...runtime.Object) *outageClient {
	c := &outageClient{Clientset: fake.NewClientset(objs...)}
	c.PrependReactor("list", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		if c.down.Load() {
			return true, nil, errors.New("injected: API server unreachable")
		}
		return false, nil, nil
	})
	c.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		if c.down.Load() {
			return true, nil, errors.New("injected: API server unreachable")
		}
		var opts metav1.ListOptions
		if wa, ok := action.(k8stesting.WatchActionImpl); ok {
			opts = wa.ListOptions
		}
		w, err := c.Tracker().Watch(action.GetResource(), action.GetNamespace(), opts)
		if err != nil {
			return true, nil, err
		}
		if rf, ok := w.(*watch.RaceFreeFakeWatcher); ok {
			c.mu.Lock()
			c.watches = append(c.watches, rf)
			c.mu.Unlock()
		}
		return true, w, nil
	})
	return c
}

func (c *outageClient) goDown() {
	c.down.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range c.watches {
		w.Stop()
	}
	c.watches = nil
}

func TestOutageKeepsLastState(t *testing.T) {
	client := newOutageClient(
		newNamespace("nsa", nil),
		newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5"),
		newPod("nsa", "gone", "node-b", map[string]string{"app": "gone"}, "10.1.0.6"),
		newPolicy("nsa", "allow-web", "web", 80),
	)
	src := New(clientOf(client), testNode, testLogger(t))
	runSynced(t, src, func() {})
	before := summarize(src.State())
	if len(before) != 4 {
		t.Fatalf("state before the outage: %v", before)
	}

	client.goDown()
	// While the API is unreachable, objects change behind the source's back.
	if err := client.Tracker().Delete(podsResource, "nsa", "gone"); err != nil {
		t.Fatal(err)
	}
	if err := client.Tracker().Delete(policiesResource, "nsa", "allow-web"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // several failed relists
	if got := summarize(src.State()); !slices.Equal(got, before) {
		t.Errorf("state during the outage\n%s\nwant the last good one\n%s", strings.Join(got, "\n"), strings.Join(before, "\n"))
	}
	if err := src.Ready(); err != nil {
		t.Errorf("Ready() during the outage = %v", err)
	}
	if p, err := src.Pod(context.Background(), "nsa", "web"); err != nil || p == nil {
		t.Errorf("Pod() from the cache during the outage = %v, %v", p, err)
	}

	client.down.Store(false)
	want := []string{
		"namespace nsa kubernetes.io/metadata.name=nsa",
		"pod nsa/web node=node-a labels=app=web ports=http/TCP/80 ips=10.1.0.5 phase=Running deleting=false",
	}
	deadline := time.Now().Add(40 * time.Second) // the reflector backs off
	for !slices.Equal(summarize(src.State()), want) {
		if time.Now().After(deadline) {
			t.Fatalf("state after the outage\n%s\nwant\n%s", strings.Join(summarize(src.State()), "\n"), strings.Join(want, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := src.Ready(); err != nil {
		t.Errorf("Ready() after the outage = %v", err)
	}
}

func TestLocalPods(t *testing.T) {
	rs := startSource(t, nil,
		newPod("nsb", "local-2", testNode, nil, "10.1.0.2"),
		newPod("nsa", "local-1", testNode, nil, "10.1.0.1"),
		newPod("nsa", "remote", "node-b", nil, "10.1.0.3"),
		newPod("nsa", "pending", "", nil),
	)
	rs.waitSynced(t)
	pods, err := rs.LocalPods()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range pods {
		got = append(got, p.Key())
	}
	if want := []string{"nsa/local-1", "nsb/local-2"}; !slices.Equal(got, want) {
		t.Errorf("LocalPods() = %v, want %v", got, want)
	}
}

func TestName(t *testing.T) {
	if got := New(clientOf(fake.NewClientset()), testNode, nil).Name(); got != "kubernetes" {
		t.Errorf("Name() = %q", got)
	}
}

func TestRunTwice(t *testing.T) {
	src := New(clientOf(fake.NewClientset()), testNode, testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, func() {})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, "Run to start", func() bool { return src.running.Load() })
	returned := make(chan struct{})
	go func() {
		src.Run(ctx, func() {})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("a second Run did not return")
	}
}
