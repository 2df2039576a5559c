package kubelet_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/kube/cluster"
	"github.com/podwall/podwall/test/kube/kubelet"
)

// The ranges of this package's tests, inside 10.212.0.0/16. The Service
// range is the cluster default; package cluster's tests use another one.
var (
	podCIDR       = netip.MustParsePrefix("10.212.0.0/24")
	brokenPodCIDR = netip.MustParsePrefix("10.212.1.0/24")
	// nodeIP is the Node's InternalIP: the gateway ptp puts on the host side
	// of every pod veth, the address node-to-pod traffic comes from.
	nodeIP = netip.MustParseAddr("10.212.0.1")
)

const (
	nodeName     = "kb1-node"
	probeTimeout = 2 * time.Second
)

func webPod(name string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:  "main",
			Image: "registry.invalid/podwall/none:0",
			Ports: ports,
		}}},
	}
}

func TestKubeletRunsPods(t *testing.T) {
	c := cluster.StartForTest(t, cluster.Options{})
	b := bed.NewForTest(t, bed.Options{Name: "kb1", CNIBinDir: bed.CNIBinDirForTest(t), PodCIDRv4: podCIDR})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := c.CreateNode(ctx, nodeName, nodeIP); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateNamespace(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	client := c.Client()
	k := kubelet.New(client, b, nodeName)
	t.Cleanup(func() {
		if err := k.Close(context.Background()); err != nil {
			t.Errorf("close kubelet: %v", err)
		}
	})

	server, err := k.RunPod(ctx, webPod("server",
		corev1.ContainerPort{Name: "http", ContainerPort: 8080},
		corev1.ContainerPort{Name: "dns", ContainerPort: 5353, Protocol: corev1.ProtocolUDP},
		corev1.ContainerPort{Name: "diameter", ContainerPort: 3868, Protocol: corev1.ProtocolSCTP},
	))
	if err != nil {
		t.Fatal(err)
	}
	client1, err := k.RunPod(ctx, webPod("client"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("status has podIPs and Ready", func(t *testing.T) {
		pod, err := client.CoreV1().Pods("web").Get(ctx, "server", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var podIPs []string
		for _, ip := range pod.Status.PodIPs {
			podIPs = append(podIPs, ip.IP)
		}
		if want := []string{server.IPv4().String()}; !slices.Equal(podIPs, want) || pod.Status.PodIP != want[0] {
			t.Errorf("podIP %q podIPs %v, want %v", pod.Status.PodIP, podIPs, want)
		}
		if !podCIDR.Contains(server.IPv4()) {
			t.Errorf("pod IP %s not in %s", server.IPv4(), podCIDR)
		}
		if pod.Status.Phase != corev1.PodRunning || pod.Spec.NodeName != nodeName || pod.Status.HostIP != nodeIP.String() {
			t.Errorf("phase %s node %q hostIP %q, want Running on %s (%s)", pod.Status.Phase, pod.Spec.NodeName, pod.Status.HostIP, nodeName, nodeIP)
		}
		for _, want := range []corev1.PodConditionType{corev1.PodReady, corev1.ContainersReady} {
			if !hasCondition(pod, want) {
				t.Errorf("conditions %v: %s is not True", pod.Status.Conditions, want)
			}
		}
		if len(pod.Status.ContainerStatuses) != 1 || !pod.Status.ContainerStatuses[0].Ready {
			t.Errorf("container statuses %v, want one ready", pod.Status.ContainerStatuses)
		}
	})

	t.Run("CNI gets the object's identity", func(t *testing.T) {
		pod, err := client.CoreV1().Pods("web").Get(ctx, "server", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		args := map[string]string{}
		for _, kv := range server.RuntimeConf().Args {
			args[kv[0]] = kv[1]
		}
		want := map[string]string{
			"K8S_POD_NAMESPACE":          "web",
			"K8S_POD_NAME":               "server",
			"K8S_POD_UID":                string(pod.UID),
			"K8S_POD_INFRA_CONTAINER_ID": server.ContainerID,
			"IgnoreUnknown":              "1",
		}
		for key, v := range want {
			if args[key] != v {
				t.Errorf("CNI_ARGS %s = %q, want %q", key, args[key], v)
			}
		}
		if k.Pod("web", "server") != server {
			t.Errorf("Pod(web, server) is not the pod RunPod returned")
		}
	})

	t.Run("EndpointSlice lists the pod with the named port resolved", func(t *testing.T) {
		_, err := client.CoreV1().Services("web").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "server"},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": "server"},
				Ports:    []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := waitEndpoints(ctx, c, "web", "server", func(eps []endpoint) bool { return len(eps) > 0 })
		if err != nil {
			t.Fatal(err)
		}
		want := []endpoint{{ip: server.IPv4().String(), port: 8080, ready: true, node: nodeName}}
		if !slices.Equal(got, want) {
			t.Errorf("endpoints %v, want %v", got, want)
		}
	})

	t.Run("pods connect over TCP, UDP and SCTP", func(t *testing.T) {
		tests := []struct {
			name  string
			port  int
			proto string
			want  bool
		}{
			{"served TCP port", 8080, bed.TCP, true},
			{"unserved TCP port", 8081, bed.TCP, false},
			{"served UDP port", 5353, bed.UDP, true},
			{"unserved UDP port", 5354, bed.UDP, false},
			{"served SCTP port", 3868, bed.SCTP, true},
			{"unserved SCTP port", 3869, bed.SCTP, false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := bed.ProbePod(ctx, client1, server, bed.IPv4, tt.port, tt.proto, probeTimeout)
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Errorf("client -> server %d/%s: connected %v, want %v", tt.port, tt.proto, got, tt.want)
				}
			})
		}
	})

	t.Run("sidecar ports are served", func(t *testing.T) {
		always := corev1.ContainerRestartPolicyAlways
		pod := webPod("sidecar")
		pod.Spec.InitContainers = []corev1.Container{
			{Name: "setup", Image: "registry.invalid/podwall/none:0"},
			{Name: "proxy", Image: "registry.invalid/podwall/none:0", RestartPolicy: &always,
				Ports: []corev1.ContainerPort{{Name: "proxy", ContainerPort: 9090}}},
		}
		sidecar, err := k.RunPod(ctx, pod)
		if err != nil {
			t.Fatal(err)
		}
		for port, want := range map[int]bool{9090: true, 9091: false} {
			got, err := bed.ProbePod(ctx, client1, sidecar, bed.IPv4, port, bed.TCP, probeTimeout)
			if err != nil || got != want {
				t.Errorf("client -> sidecar %d/TCP: connected %v (%v), want %v", port, got, err, want)
			}
		}
		obj, err := client.CoreV1().Pods("web").Get(ctx, "sidecar", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !hasCondition(obj, corev1.PodReady) || len(obj.Status.InitContainerStatuses) != 2 {
			t.Errorf("sidecar pod: conditions %v, init container statuses %v", obj.Status.Conditions, obj.Status.InitContainerStatuses)
		}
	})

	t.Run("failed CNI ADD deletes the object", func(t *testing.T) {
		// A chain whose second plugin does not exist: ptp runs, then ADD
		// fails, as a broken chained plugin would.
		broken := bed.NewForTest(t, bed.Options{
			Name: "kb2", CNIBinDir: bed.CNIBinDirForTest(t), PodCIDRv4: brokenPodCIDR,
			Extra: []map[string]any{{"type": "podwall-test-missing-plugin"}},
		})
		kb := kubelet.New(client, broken, nodeName)
		_, err := kb.RunPod(ctx, webPod("doomed"))
		if err == nil {
			t.Fatal("RunPod through a broken chain: no error")
		}
		if !strings.Contains(err.Error(), "podwall-test-missing-plugin") {
			t.Errorf("error does not name the failing plugin: %v", err)
		}
		if _, err := client.CoreV1().Pods("web").Get(ctx, "doomed", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("pod object after failed ADD: err = %v, want NotFound", err)
		}
		if kb.Pod("web", "doomed") != nil || len(broken.Pods()) != 0 {
			t.Errorf("failed pod still tracked")
		}
	})

	t.Run("bad input is an error", func(t *testing.T) {
		if _, err := k.RunPod(ctx, nil); err == nil {
			t.Error("RunPod(nil): no error")
		}
		if _, err := k.RunPod(ctx, webPod("server")); err == nil {
			t.Error("RunPod of a running pod: no error")
		}
		hostNet := webPod("hostnet")
		hostNet.Spec.HostNetwork = true
		if _, err := k.RunPod(ctx, hostNet); err == nil || !strings.Contains(err.Error(), "hostNetwork") {
			t.Errorf("RunPod of a hostNetwork pod: err = %v, want one naming hostNetwork", err)
		}
		if err := k.DeletePod(ctx, "web", "nobody"); err == nil {
			t.Error("DeletePod of an unknown pod: no error")
		}
	})

	t.Run("DeletePod removes netns, object and endpoint", func(t *testing.T) {
		if err := k.DeletePod(ctx, "web", "server"); err != nil {
			t.Fatal(err)
		}
		if _, err := client.CoreV1().Pods("web").Get(ctx, "server", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("pod object after DeletePod: err = %v, want NotFound", err)
		}
		if _, err := os.Stat(server.NetnsPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s after DeletePod: %v", server.NetnsPath, err)
		}
		// The twin of the probe that succeeded above.
		if ok, err := bed.Probe(ctx, client1, server.IPv4(), 8080, bed.TCP, probeTimeout); err != nil || ok {
			t.Errorf("client -> deleted server 8080/TCP: connected %v (%v), want false", ok, err)
		}
		if _, err := waitEndpoints(ctx, c, "web", "server", func(eps []endpoint) bool { return len(eps) == 0 }); err != nil {
			t.Error(err)
		}
	})
}

func hasCondition(pod *corev1.Pod, t corev1.PodConditionType) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == t {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// endpoint is one (address, port) of a Service's EndpointSlices.
type endpoint struct {
	ip    string
	port  int32
	ready bool
	node  string
}

// waitEndpoints waits until the endpoints of Service namespace/name satisfy
// done and returns them.
func waitEndpoints(ctx context.Context, c *cluster.Cluster, namespace, name string, done func([]endpoint) bool) ([]endpoint, error) {
	var got []endpoint
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := c.Client().DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{
			LabelSelector: discoveryv1.LabelServiceName + "=" + name,
		})
		if err != nil {
			return false, nil
		}
		got = nil
		for _, s := range list.Items {
			for _, ep := range s.Endpoints {
				for _, addr := range ep.Addresses {
					for _, p := range s.Ports {
						e := endpoint{ip: addr, ready: ep.Conditions.Ready != nil && *ep.Conditions.Ready}
						if p.Port != nil {
							e.port = *p.Port
						}
						if ep.NodeName != nil {
							e.node = *ep.NodeName
						}
						got = append(got, e)
					}
				}
			}
		}
		return done(got), nil
	})
	if err != nil {
		return got, fmt.Errorf("wait for endpoints of %s/%s (last seen %v): %w", namespace, name, got, err)
	}
	return got, nil
}

// TestKubeletDualStack runs a pod on a dual-stack bed of a dual-stack
// cluster: its status lists both addresses (IPv4 first, as the CNI result
// does) and both of the node's, and a dual-stack Service gets an
// EndpointSlice per family with the pod's address of that family.
func TestKubeletDualStack(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.212.4.0/24"), netip.MustParsePrefix("fd00:213:0:101::/80")
	c := cluster.StartForTest(t, cluster.Options{
		ServiceCIDR:          netip.MustParsePrefix("10.212.176.0/20"),
		SecondaryServiceCIDR: netip.MustParsePrefix("fd00:213:0:9002::/112"),
	})
	b := bed.NewForTest(t, bed.Options{Name: "kbd", CNIBinDir: bed.CNIBinDirForTest(t), PodCIDRv4: v4, PodCIDRv6: v6})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const node = "kbd-node"
	nodeIPs := []netip.Addr{v4.Addr().Next(), v6.Addr().Next()}
	if err := c.CreateNodeWithIPs(ctx, node, nodeIPs...); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateNamespace(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	k := kubelet.New(c.Client(), b, node)
	t.Cleanup(func() {
		if err := k.Close(context.Background()); err != nil {
			t.Errorf("close kubelet: %v", err)
		}
	})
	server, err := k.RunPod(ctx, webPod("server", corev1.ContainerPort{Name: "http", ContainerPort: 8080}))
	if err != nil {
		t.Fatal(err)
	}
	if !v4.Contains(server.IPv4()) || !v6.Contains(server.IPv6()) {
		t.Fatalf("pod addresses %v, want one in %s and one in %s", server.IPs, v4, v6)
	}

	pod, err := c.Client().CoreV1().Pods("web").Get(ctx, "server", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var podIPs, hostIPs []string
	for _, ip := range pod.Status.PodIPs {
		podIPs = append(podIPs, ip.IP)
	}
	for _, ip := range pod.Status.HostIPs {
		hostIPs = append(hostIPs, ip.IP)
	}
	if want := []string{server.IPv4().String(), server.IPv6().String()}; !slices.Equal(podIPs, want) || pod.Status.PodIP != want[0] {
		t.Errorf("podIP %q podIPs %v, want %v", pod.Status.PodIP, podIPs, want)
	}
	if want := []string{nodeIPs[0].String(), nodeIPs[1].String()}; !slices.Equal(hostIPs, want) {
		t.Errorf("hostIPs %v, want %v", hostIPs, want)
	}

	dual := corev1.IPFamilyPolicyRequireDualStack
	if _, err := c.Client().CoreV1().Services("web").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"app": "server"},
			IPFamilyPolicy: &dual,
			Ports:          []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := waitEndpoints(ctx, c, "web", "server", func(eps []endpoint) bool { return len(eps) >= 2 })
	if err != nil {
		t.Fatal(err)
	}
	want := []endpoint{
		{ip: server.IPv4().String(), port: 8080, ready: true, node: node},
		{ip: server.IPv6().String(), port: 8080, ready: true, node: node},
	}
	slices.SortFunc(got, func(a, b endpoint) int { return strings.Compare(a.ip, b.ip) })
	if !slices.Equal(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
}
