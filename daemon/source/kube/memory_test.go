package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/test/kube/cluster"
)

// The cluster BenchmarkAPIServerMemory loads into the package's shared test
// cluster: the scale of issue 6 (10k pods, 1k namespaces, 1k policies, 1k
// Services), each namespace and object prefixed pwm-. Pod addresses come
// from 10.205.64.0/18, inside this package's range; they are only written
// into status.podIPs, never routed.
const (
	memNamespaces = 1000
	memPods       = 10000
	memPolicies   = 1000
	memServices   = 1000 // each with one hand-written EndpointSlice of 10 pods
	memLocalPods  = 110  // on memNode, the rest on memRemoteNodes other nodes
	memNode       = "pwm-node-local"
	// memRemoteNodes is how many other nodes the remote pods spread over.
	memRemoteNodes = 50
	// memWorkers is how many requests the loader has in flight.
	memWorkers = 16
)

var memPodAddrs = netip.MustParsePrefix("10.205.64.0/18")

// BenchmarkAPIServerMemory reports the Go heap a Source keeps once it has
// synced 10k pods, 1k namespaces, 1k policies, 1k Services and their 1k
// EndpointSlices from a real kube-apiserver, through the same client
// settings (protobuf), informers and transform as podwalld:
//
//   - MiB-retained: live heap after the sync and a GC, minus the live heap
//     before the source started (what the source holds);
//   - MiB-peak: the highest heap-object bytes seen while it synced, minus
//     the same baseline (lists decoded, transformed, garbage not yet
//     collected; it depends on GOGC and GOMEMLIMIT);
//   - B-per-pod: MiB-retained per pod, a rough figure (the other kinds
//     are in it too).
//
// The objects are created once per test binary, in the cluster it shares
// (60-90 s on this 2-core VM), before the iterations. It needs root and the
// kube binaries, like the other tests against the API server.
func BenchmarkAPIServerMemory(b *testing.B) {
	c := sharedAPIServer(b)
	start := time.Now()
	if err := loadMemoryCluster(context.Background(), c.RestConfig()); err != nil {
		b.Fatalf("load the cluster: %v", err)
	}
	b.Logf("cluster loaded in %v", time.Since(start).Round(time.Millisecond))
	cfg, err := InClusterOrKubeconfig(c.Kubeconfig())
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		client, err := NewClient(cfg)
		if err != nil {
			b.Fatal(err)
		}
		before := liveHeap()
		peak := watchHeapPeak()
		src := New(client, memNode, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			src.Run(ctx, func() {})
		}()
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
		err = src.WaitForSync(wctx)
		wcancel()
		if err != nil {
			cancel()
			<-done
			b.Fatalf("WaitForSync: %v", err)
		}
		// What the daemon holds in steady state: the worker has drained
		// the queue and the syncer has taken a snapshot.
		for src.queue.Len() > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		st := src.State()
		peakBytes := peak()
		after := liveHeap()
		local, err := src.LocalPods()
		if err != nil {
			b.Fatal(err)
		}
		if n := countPrefixed(st); n != memPods || len(local) != memLocalPods {
			b.Fatalf("state has %d of the %d pwm- pods and %d of %d local pods", n, memPods, len(local), memLocalPods)
		}
		retained := float64(after) - float64(before)
		b.ReportMetric(retained/(1<<20), "MiB-retained")
		b.ReportMetric((float64(peakBytes)-float64(before))/(1<<20), "MiB-peak")
		b.ReportMetric(retained/memPods, "B-per-pod")
		b.Logf("state: %d pods, %d namespaces, %d policies, %d services, %d slices",
			len(st.Pods), len(st.Namespaces), len(st.Policies), len(st.Services), len(st.EndpointSlices))
		runtime.KeepAlive(src)
		cancel()
		<-done
	}
}

// sharedAPIServer is apiServer for benchmarks: the package's shared
// cluster, started on first use, or a skip without root or the binaries.
func sharedAPIServer(tb testing.TB) *cluster.Cluster {
	tb.Helper()
	opts := cluster.Options{ServiceCIDR: apiServiceCIDR}
	cluster.RequireBinaries(tb, opts)
	sharedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		sharedCluster, sharedErr = cluster.Start(ctx, opts)
	})
	if sharedErr != nil {
		tb.Fatalf("start the test cluster: %v", sharedErr)
	}
	return sharedCluster
}

// liveHeap returns the bytes of live heap objects after two collections
// (the second frees what the first one's finalizers and cleanups let go).
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// watchHeapPeak samples the heap's object bytes every few milliseconds
// until the returned func is called, which returns the highest sample.
func watchHeapPeak() func() uint64 {
	const name = "/memory/classes/heap/objects:bytes"
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		sample := []metrics.Sample{{Name: name}}
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	return func() uint64 {
		close(stop)
		wg.Wait()
		return peak.Load()
	}
}

// countPrefixed counts the state's pods in the benchmark's namespaces.
func countPrefixed(st *policy.State) int {
	n := 0
	for _, p := range st.Pods {
		if strings.HasPrefix(p.Namespace, "pwm-") {
			n++
		}
	}
	return n
}

func memNamespace(i int) string { return fmt.Sprintf("pwm-%04d", i) }

// memNodeName is the node of pod i: the local node for the first
// memLocalPods, else one of the remote nodes.
func memNodeName(i int) string {
	if i < memLocalPods {
		return memNode
	}
	return fmt.Sprintf("pwm-node-%02d", i%memRemoteNodes)
}

func memPodAddr(i int) string {
	a := memPodAddrs.Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n += uint32(i) + 1
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}).String()
}

// loadMemoryCluster creates the benchmark's objects unless the last
// EndpointSlice (created last) exists already. Creates that find their
// object exist are no error: an interrupted load is resumed.
func loadMemoryCluster(ctx context.Context, cfg *rest.Config) error {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 2000, 4000
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	last := memServices - 1
	if _, err := c.DiscoveryV1().EndpointSlices(memNamespace(last%memNamespaces)).Get(ctx, memSliceName(last), metav1.GetOptions{}); err == nil {
		return nil
	}
	err = memParallel(ctx, memNamespaces, func(ctx context.Context, i int) error {
		env := "prod"
		if i%3 == 0 {
			env = "dev"
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: memNamespace(i),
			Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10), "env": env}}}
		if _, err := c.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
		// The controller manager creates it too, slowly at 1k namespaces.
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		if _, err := c.CoreV1().ServiceAccounts(ns.Name).Create(ctx, sa, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("create the default ServiceAccount of %s: %w", ns.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = memParallel(ctx, memPods, func(ctx context.Context, i int) error {
		pod := memPod(i)
		created, err := c.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			created, err = c.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		}
		if err != nil {
			return fmt.Errorf("create pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		created.Status = memPodStatus(created, i)
		if _, err := c.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	err = memParallel(ctx, memPolicies, func(ctx context.Context, i int) error {
		np := memPolicy(i)
		if _, err := c.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("create networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return memParallel(ctx, memServices, func(ctx context.Context, i int) error {
		ns := memNamespace(i % memNamespaces)
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("svc-%04d", i),
				Labels:      map[string]string{"app": fmt.Sprintf("app-%d", i%50)},
				Annotations: map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 600)}},
			// No selector: the EndpointSlice controller leaves it alone
			// and the slice below is the only one.
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "metrics", Protocol: corev1.ProtocolTCP, Port: 9090, TargetPort: intstr.FromInt32(9090)},
			}},
		}
		if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("create service %s/%s: %w", ns, svc.Name, err)
		}
		slice := memSlice(i)
		if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); ignoreExists(err) != nil {
			return fmt.Errorf("create endpointslice %s/%s: %w", ns, slice.Name, err)
		}
		return nil
	})
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// memPod is pod i as a Deployment's ReplicaSet writes it: owner, labels,
// an annotation, two containers with image, args, env, resources, probes
// and mounts (the ServiceAccount admission adds the token volume).
func memPod(i int) *corev1.Pod {
	app := fmt.Sprintf("app-%d", i%50)
	hash := fmt.Sprintf("5d8f7c9b%02d", i%50)
	yes := true
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
		PeriodSeconds: 10}
	resources := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: memNamespace(i % memNamespaces), Name: fmt.Sprintf("%s-%s-%05d", app, hash, i),
			Labels:      map[string]string{"app": app, "pod-template-hash": hash, "app.kubernetes.io/part-of": "pwm"},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-01-02T03:04:05Z"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-" + hash,
				UID: "0123456789abcdef0123456789abcdef", Controller: &yes, BlockOwnerDeletion: &yes}},
		},
		Spec: corev1.PodSpec{
			NodeName: memNodeName(i),
			Volumes:  []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: app}}}}},
			Containers: []corev1.Container{
				{
					Name: "app", Image: "registry.example.com/team/" + app + ":v1.2.3", Args: []string{"--listen=:8080", "--metrics=:9090"},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}, {Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}},
					Env: []corev1.EnvVar{{Name: "APP", Value: app}, {Name: "LOG_LEVEL", Value: "info"},
						{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
					Resources: resources, ReadinessProbe: probe, LivenessProbe: probe,
					VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}},
				},
				{Name: "log-shipper", Image: "registry.example.com/infra/shipper:v4", Resources: resources},
			},
		},
	}
}

// memPodStatus is the status a kubelet writes for pod i, running and ready.
func memPodStatus(pod *corev1.Pod, i int) corev1.PodStatus {
	now := metav1.Now()
	ip := memPodAddr(i)
	st := corev1.PodStatus{
		Phase: corev1.PodRunning, StartTime: &now, QOSClass: pod.Status.QOSClass,
		PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: "10.205.0.40", HostIPs: []corev1.HostIP{{IP: "10.205.0.40"}},
	}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, c := range pod.Spec.Containers {
		started := true
		st.ContainerStatuses = append(st.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image + "@sha256:" + strings.Repeat("ab", 32), Ready: true, Started: &started,
			ContainerID: "containerd://" + strings.Repeat("cd", 32),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return st
}

// memPolicy is policy i: by i%4 a default deny, an allow from an app in
// the namespace, one from frontends of a team's namespaces on a named
// port, or egress to DNS and an ipBlock with an except.
func memPolicy(i int) *networkingv1.NetworkPolicy {
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	http, dns := intstr.FromString("http"), intstr.FromInt32(53)
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: memNamespace(i % memNamespaces), Name: fmt.Sprintf("policy-%04d", i)}}
	app := &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i%50)}}
	switch i % 4 {
	case 0:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 1:
		np.Spec.PodSelector = *app
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", (i+1)%50)}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}},
		}}
	case 2:
		np.Spec.PodSelector = *app
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%10)}},
				PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "frontend"}},
			}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &http}},
		}}
	case 3:
		np.Spec.PodSelector = *app
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{
			{Ports: []networkingv1.NetworkPolicyPort{{Protocol: &udp, Port: &dns}}},
			{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "172.16.0.0/12", Except: []string{"172.16.1.0/24"}}}}},
		}
	}
	return np
}

func memSliceName(i int) string { return fmt.Sprintf("svc-%04d-pwm", i) }

// memSlice is Service i's EndpointSlice: 10 ready pods of the cluster, as
// the EndpointSlice controller writes them (targetRef, zone, conditions).
func memSlice(i int) *discoveryv1.EndpointSlice {
	yes, no := true, false
	name, port, tcp := "http", int32(8080), corev1.ProtocolTCP
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: memNamespace(i % memNamespaces), Name: memSliceName(i),
			Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("svc-%04d", i), discoveryv1.LabelManagedBy: "pwm-bench"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &tcp}},
	}
	for j := range 10 {
		p := (i*10 + j) % memPods
		node, zone := memNodeName(p), "zone-a"
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{memPodAddr(p)},
			Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes, Terminating: &no},
			NodeName:   &node, Zone: &zone,
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: memNamespace(p % memNamespaces), Name: memPod(p).Name},
		})
	}
	return slice
}

// memParallel runs fn(0..n-1) on memWorkers goroutines and returns the
// first errors joined.
func memParallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range min(memWorkers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
