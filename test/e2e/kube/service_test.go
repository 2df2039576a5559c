package kubee2e

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/test/bed"
)

// TestKubeServicePath proves that a probe to a ClusterIP really goes through
// the real kube-proxy, without any policy in the way (podwall is in the
// chain, no policy selects the pods): on dual-stack pods, a client reaches
// a dual-stack Service (port 80 → target port 9090) on both ClusterIPs, and
// the server sees the client pod's own address of that family as the source
// (--cluster-cidr: no masquerading between pods). Its denied twin: once the
// Service is deleted, the same ClusterIPs reach nothing, while the server's
// pod IP still answers.
func TestKubeServicePath(t *testing.T) {
	cp := theSharedCluster(t)
	proxy := theSharedProxy(t)
	t.Parallel()
	n := newNode(t, cp, nodeOptions{Name: "k8dsm",
		PodCIDRv4: netip.MustParsePrefix("10.213.67.0/24"), PodCIDRv6: netip.MustParsePrefix("fd00:213::5:0:0:0/80")})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const ns = "k8n-service-path"
	if _, err := cp.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	server, err := n.Kubelet.RunPod(ctx, serverPod(ns, "server", nil))
	if err != nil {
		t.Fatal(err)
	}
	client, err := n.Kubelet.RunPod(ctx, serverPod(ns, "client", nil))
	if err != nil {
		t.Fatal(err)
	}
	const targetPort = 9090
	if err := server.ServeSource(targetPort); err != nil {
		t.Fatal(err)
	}
	if len(server.IPs) != 2 || len(client.IPs) != 2 {
		t.Fatalf("pods are not dual-stack: server %v, client %v", server.IPs, client.IPs)
	}

	dual := corev1.IPFamilyPolicyRequireDualStack
	svc, err := cp.Client().CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "whoami"},
		Spec: corev1.ServiceSpec{
			Selector:       map[string]string{"app": "server"},
			IPFamilyPolicy: &dual,
			Ports:          []corev1.ServicePort{{Name: "whoami", Port: 80, TargetPort: intstr.FromInt32(targetPort)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := proxy.WaitService(ctx, svc, server.IPs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("Service %v programmed by kube-proxy %s after its creation", svc.Spec.ClusterIPs, time.Since(start).Round(time.Millisecond))

	var clusterIPs []netip.Addr
	for _, s := range svc.Spec.ClusterIPs {
		ip := netip.MustParseAddr(s)
		clusterIPs = append(clusterIPs, ip)
		family := bed.IPv4
		if ip.Is6() {
			family = bed.IPv6
		}
		want, _ := client.IP(family)
		got, err := bed.DialLine(ctx, client, netip.AddrPortFrom(ip, 80), probeTimeout)
		if err != nil {
			t.Errorf("%s -> Service %s:80: %v", client, ip, err)
			continue
		}
		if got != want.String() {
			t.Errorf("%s -> Service %s:80: the server saw source %s, want the client pod's %s (masqueraded?)", client, ip, got, want)
		}
	}

	// The twin: without the Service its ClusterIPs lead nowhere (kube-proxy
	// removes the rules, the host blackholes the range); the pod still
	// answers on its own addresses.
	if err := cp.Client().CoreV1().Services(ns).Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range clusterIPs {
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, err := bed.DialLine(ctx, client, netip.AddrPortFrom(ip, 80), probeTimeout)
			if errors.Is(err, bed.ErrNotConnected) {
				break
			}
			if err != nil {
				t.Fatalf("%s -> deleted Service %s:80: %v", client, ip, err)
			}
			if time.Now().After(deadline) {
				t.Errorf("%s -> deleted Service %s:80 still connects 15 s after the deletion", client, ip)
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	for _, ip := range server.IPs {
		if got, err := bed.DialLine(ctx, client, netip.AddrPortFrom(ip, targetPort), probeTimeout); err != nil {
			t.Errorf("%s -> server pod %s:%d after the Service was deleted: %v", client, ip, targetPort, err)
		} else if want, _ := client.IP(familyOfAddr(ip)); got != want.String() {
			t.Errorf("%s -> server pod %s:%d: source %s, want %s", client, ip, targetPort, got, want)
		}
	}
}

func familyOfAddr(a netip.Addr) bed.Family {
	if a.Is4() {
		return bed.IPv4
	}
	return bed.IPv6
}
