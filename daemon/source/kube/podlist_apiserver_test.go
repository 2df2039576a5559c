package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

// TestAPIServerPodsStreamed: with the protobuf client podwalld uses
// (InClusterOrKubeconfig), the real API server's pods reach the state
// through the streamed list and the watch exactly as PodFromAPI converts
// them (labels, named ports of init and app containers, dual-stack IPs,
// phase, deletion); and a paginated list streams page by page.
func TestAPIServerPodsStreamed(t *testing.T) {
	c := apiServer(t)
	ctx := context.Background()
	const ns, node = "pwn-stream", "pwn-node-stream"
	createNamespace(t, c, ns)
	admin := c.Client()
	pods := admin.CoreV1().Pods(ns)
	for i := range 4 {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-%d", i), Labels: map[string]string{"app": "web", "i": fmt.Sprint(i)},
				Annotations: map[string]string{"big": strings.Repeat("x", 2048)}},
			Spec: corev1.PodSpec{
				NodeName:       node,
				InitContainers: []corev1.Container{{Name: "proxy", Image: "none", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 9901}}}},
				Containers: []corev1.Container{{Name: "app", Image: "none", Ports: []corev1.ContainerPort{
					{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}},
			},
		}
		if i == 3 {
			pod.Finalizers = []string{"podwall.test/keep"} // deleted below, kept while deleting
		}
		created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v4, v6 := fmt.Sprintf("10.205.3.%d", 10+i), fmt.Sprintf("fd00:205::3:%d", 10+i)
		created.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: v4, PodIPs: []corev1.PodIP{{IP: v4}, {IP: v6}}}
		if _, err := pods.UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		patch := []byte(`{"metadata":{"finalizers":null}}`)
		if _, err := pods.Patch(context.Background(), "web-3", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Errorf("remove the finalizer of web-3: %v", err)
		}
	})
	if err := pods.Delete(ctx, "web-3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg, err := InClusterOrKubeconfig(c.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	src := runAgainst(t, cfg, node, nil, nil, nil)
	checkPods := func(what string) {
		t.Helper()
		list, err := pods.List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]*policy.Pod{}
		for i := range list.Items {
			want[list.Items[i].Name] = source.PodFromAPI(&list.Items[i])
		}
		waitFor(t, what, func() bool {
			got := 0
			for _, p := range src.State().Pods {
				if p.Namespace != ns {
					continue
				}
				if w := want[p.Name]; w == nil || !samePod(p, w) {
					return false
				}
				got++
			}
			return got == len(want)
		})
	}
	checkPods("the listed pods")
	if got, _ := src.Pod(ctx, ns, "web-3"); got == nil || !got.Deleting {
		// Pod falls back to a GET for a deleting pod: still the pod.
		t.Errorf("Pod(web-3) = %+v, want the deleting pod", got)
	}
	web0, err := pods.Get(ctx, "web-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	web0.Labels["app"] = "api"
	if _, err := pods.Update(ctx, web0, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	checkPods("the relabelled pod (watch)")

	// Page by page: every pod of the cluster once, as the typed list has
	// them.
	all, err := admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	opts := metav1.ListOptions{Limit: 2}
	for pages := 0; ; pages++ {
		page, err := client.listPods(ctx, opts, newCachedPod)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		if len(page.Items) > 2 {
			t.Fatalf("page %d has %d items, limit 2", pages, len(page.Items))
		}
		for _, p := range page.Items {
			seen[p.Key()] = true
		}
		if page.Continue == "" {
			break
		}
		opts.Continue = page.Continue
	}
	if len(seen) != len(all.Items) {
		t.Errorf("pages held %d pods, the API server %d", len(seen), len(all.Items))
	}
}
