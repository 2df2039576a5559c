package servicese2e

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podwall/podwall/test/bed"
)

// families are the address families of the node's (dual-stack) pods.
var families = []bed.Family{bed.IPv4, bed.IPv6}

// TestServiceAllowedAndDenied: a client whose egress allows the pods behind
// Service web reaches web's ClusterIPs (IPv4 and IPv6); Service other,
// whose pod it does not allow, is blocked at its ClusterIPs, while the
// client still reaches an allowed pod directly, and a client without
// policy reaches other (the block is podwall's, not a broken Service).
// podwallctl shows both verdicts with their endpoints.
func TestServiceAllowedAndDenied(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-allow"
	s.namespace(ns, nil)
	pods := s.run(
		podObject(ns, "web-1", map[string]string{"app": "web"}, tcpPort("http", 8080)),
		podObject(ns, "web-2", map[string]string{"app": "web"}, tcpPort("http", 8080)),
		podObject(ns, "other-1", map[string]string{"app": "other"}, tcpPort("http", 8080)),
		podObject(ns, "client", map[string]string{"role": "client"}),
		podObject(ns, "free", map[string]string{"role": "free"}),
	)
	web1, web2, other1, client, free := pods[0], pods[1], pods[2], pods[3], pods[4]
	web := s.service(serviceObject(ns, "web", map[string]string{"app": "web"}, 80, intstr.FromInt32(8080), dualStack()))
	other := s.service(serviceObject(ns, "other", map[string]string{"app": "other"}, 80, intstr.FromInt32(8080), dualStack()))
	s.policy(egressPolicy(ns, "client-to-web", map[string]string{"role": "client"}, networkingv1.NetworkPolicyEgressRule{
		To:    []networkingv1.NetworkPolicyPeer{podsPeer(map[string]string{"app": "web"})},
		Ports: policyPorts(corev1.ProtocolTCP, intstr.FromInt32(8080)),
	}))
	s.waitProgrammed(web, web1, web2)
	s.waitProgrammed(other, other1)

	for _, f := range families {
		s.expectOpen("allowed Service "+f.String(), client, s.clusterIP(web, f), 80, bed.TCP)
		s.expectClosed("denied Service "+f.String(), client, s.clusterIP(other, f), 80, bed.TCP)
		s.expectOpen("allowed pod directly "+f.String(), client, s.podIP(web1, f), 8080, bed.TCP)
		s.expectClosed("denied pod directly "+f.String(), client, s.podIP(other1, f), 8080, bed.TCP)
		s.expectOpen("denied Service from a pod without policy "+f.String(), free, s.clusterIP(other, f), 80, bed.TCP)
	}
	for _, f := range families {
		s.expectVerdict(client, web, 80, f, true, []string{endpoint(s.podIP(web1, f), 8080), endpoint(s.podIP(web2, f), 8080)}, nil)
		s.expectVerdict(client, other, 80, f, false, nil, []string{endpoint(s.podIP(other1, f), 8080)})
	}
}

// TestServicePartlyAllowed: a Service with two endpoints of which the
// client's egress allows one stays closed (podwallctl names the allowed
// and the denied endpoint), while the allowed pod is reached directly;
// once the other pod is relabelled into the allowed set, the Service
// opens.
func TestServicePartlyAllowed(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-part"
	s.namespace(ns, nil)
	pods := s.run(
		podObject(ns, "part-1", map[string]string{"app": "part", "role": "ok"}, tcpPort("http", 8080)),
		podObject(ns, "part-2", map[string]string{"app": "part", "role": "no"}, tcpPort("http", 8080)),
		podObject(ns, "client", map[string]string{"role": "client"}),
	)
	part1, part2, client := pods[0], pods[1], pods[2]
	svc := s.service(serviceObject(ns, "part", map[string]string{"app": "part"}, 80, intstr.FromInt32(8080), nil))
	s.policy(egressPolicy(ns, "client-to-ok", map[string]string{"role": "client"}, networkingv1.NetworkPolicyEgressRule{
		To:    []networkingv1.NetworkPolicyPeer{podsPeer(map[string]string{"role": "ok"})},
		Ports: policyPorts(corev1.ProtocolTCP, intstr.FromInt32(8080)),
	}))
	s.waitProgrammed(svc, part1, part2)
	ip := s.clusterIP(svc, bed.IPv4)

	s.expectClosed("partly allowed Service", client, ip, 80, bed.TCP)
	s.expectOpen("its allowed pod directly", client, part1.IPv4(), 8080, bed.TCP)
	s.expectClosed("its denied pod directly", client, part2.IPv4(), 8080, bed.TCP)
	s.expectVerdict(client, svc, 80, bed.IPv4, false, []string{endpoint(part1.IPv4(), 8080)}, []string{endpoint(part2.IPv4(), 8080)})

	s.setPodLabels(part2, map[string]string{"app": "part", "role": "ok"})
	s.expectOpen("Service with both pods allowed", client, ip, 80, bed.TCP)
	s.expectVerdict(client, svc, 80, bed.IPv4, true, []string{endpoint(part1.IPv4(), 8080), endpoint(part2.IPv4(), 8080)}, nil)
}

// TestServiceTargetPorts: Service named (port 80, targetPort "http") has
// two pods whose "http" is 8080 and 8081; Service numbered (port 81 →
// 8080) has the first. Each client's egress allows the pods on other ports:
//
//	numbers   8080 and 8081     named open,   numbered open
//	byname    "http"            named open,   numbered open
//	only8080  8080              named closed (n2 is at 8081), numbered open
//	svcport   80 and 81         named closed, numbered closed (the Service
//	                            port is not the pods' port)
func TestServiceTargetPorts(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-ports"
	s.namespace(ns, nil)
	client := func(role string) *corev1.Pod {
		return podObject(ns, "c-"+role, map[string]string{"role": role})
	}
	pods := s.run(
		podObject(ns, "n1", map[string]string{"app": "named", "which": "n1"}, tcpPort("http", 8080)),
		podObject(ns, "n2", map[string]string{"app": "named", "which": "n2"}, tcpPort("http", 8081)),
		client("numbers"), client("byname"), client("only8080"), client("svcport"),
	)
	n1, n2 := pods[0], pods[1]
	numbers, byname, only8080, svcport := pods[2], pods[3], pods[4], pods[5]
	named := s.service(serviceObject(ns, "named", map[string]string{"app": "named"}, 80, intstr.FromString("http"), nil))
	numbered := s.service(serviceObject(ns, "numbered", map[string]string{"which": "n1"}, 81, intstr.FromInt32(8080), nil))
	toNamed := func(role string, ports ...intstr.IntOrString) *networkingv1.NetworkPolicy {
		return egressPolicy(ns, role, map[string]string{"role": role}, networkingv1.NetworkPolicyEgressRule{
			To:    []networkingv1.NetworkPolicyPeer{podsPeer(map[string]string{"app": "named"})},
			Ports: policyPorts(corev1.ProtocolTCP, ports...),
		})
	}
	s.policy(toNamed("numbers", intstr.FromInt32(8080), intstr.FromInt32(8081)))
	s.policy(toNamed("byname", intstr.FromString("http")))
	s.policy(toNamed("only8080", intstr.FromInt32(8080)))
	s.policy(toNamed("svcport", intstr.FromInt32(80), intstr.FromInt32(81)))
	s.waitProgrammed(named, n1, n2)
	s.waitProgrammed(numbered, n1)
	namedIP, numberedIP := s.clusterIP(named, bed.IPv4), s.clusterIP(numbered, bed.IPv4)

	s.expectOpen("named targetPort, both target ports allowed by number", numbers, namedIP, 80, bed.TCP)
	s.expectOpen("named targetPort, allowed by name", byname, namedIP, 80, bed.TCP)
	s.expectClosed("named targetPort, one target port allowed", only8080, namedIP, 80, bed.TCP)
	s.expectClosed("named targetPort, only the service port allowed", svcport, namedIP, 80, bed.TCP)
	s.expectOpen("port 81 -> 8080, 8080 allowed", numbers, numberedIP, 81, bed.TCP)
	s.expectOpen("port 81 -> 8080, 8080 allowed (only)", only8080, numberedIP, 81, bed.TCP)
	s.expectOpen("port 81 -> 8080, allowed by name", byname, numberedIP, 81, bed.TCP)
	s.expectClosed("port 81 -> 8080, only the service port allowed", svcport, numberedIP, 81, bed.TCP)

	s.expectVerdict(only8080, named, 80, bed.IPv4, false, []string{endpoint(n1.IPv4(), 8080)}, []string{endpoint(n2.IPv4(), 8081)})
	s.expectVerdict(byname, named, 80, bed.IPv4, true, []string{endpoint(n1.IPv4(), 8080), endpoint(n2.IPv4(), 8081)}, nil)
	s.expectVerdict(svcport, numbered, 81, bed.IPv4, false, nil, []string{endpoint(n1.IPv4(), 8080)})
}

// TestServiceNotOpenedByIPBlock: "ipBlock 0.0.0.0/0 except the pod range"
// reaches an external address but opens no Service (nor, by its except,
// the pod behind it); the same Service is open to a client whose egress
// allows its pod.
func TestServiceNotOpenedByIPBlock(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-ipblock"
	s.namespace(ns, nil)
	ext := s.n.Bed.External()
	if err := ext.Serve(bed.ServePort{Protocol: bed.TCP, Port: 8080}); err != nil {
		t.Fatal(err)
	}
	pods := s.run(
		podObject(ns, "backend", map[string]string{"app": "backend"}, tcpPort("http", 8080)),
		podObject(ns, "c-ipblock", map[string]string{"role": "ipblock"}),
		podObject(ns, "c-selector", map[string]string{"role": "selector"}),
	)
	backend, byBlock, bySelector := pods[0], pods[1], pods[2]
	svc := s.service(serviceObject(ns, "backend", map[string]string{"app": "backend"}, 80, intstr.FromInt32(8080), nil))
	s.policy(egressPolicy(ns, "ipblock", map[string]string{"role": "ipblock"}, networkingv1.NetworkPolicyEgressRule{
		To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{podRangeV4.String()}}}},
	}))
	s.policy(egressPolicy(ns, "selector", map[string]string{"role": "selector"}, networkingv1.NetworkPolicyEgressRule{
		To:    []networkingv1.NetworkPolicyPeer{podsPeer(map[string]string{"app": "backend"})},
		Ports: policyPorts(corev1.ProtocolTCP, intstr.FromInt32(8080)),
	}))
	s.waitProgrammed(svc, backend)
	ip := s.clusterIP(svc, bed.IPv4)

	s.expectOpen("external address under 0.0.0.0/0", byBlock, ext.IPv4(), 8080, bed.TCP)
	s.expectClosed("Service under 0.0.0.0/0 except pods", byBlock, ip, 80, bed.TCP)
	s.expectClosed("pod in the except", byBlock, backend.IPv4(), 8080, bed.TCP)
	s.expectOpen("the same Service, its pod allowed", bySelector, ip, 80, bed.TCP)
	s.expectClosed("external address, only the pod allowed", bySelector, ext.IPv4(), 8080, bed.TCP)
	s.expectVerdict(byBlock, svc, 80, bed.IPv4, false, nil, []string{endpoint(backend.IPv4(), 8080)})
}

// TestServiceEndpointsScale: under a live policy that allows pods labelled
// role=ok, a Service with one such pod is open; a second pod without the
// label joins it (kube-proxy sends to both) and the Service closes; the
// pod is deleted and it opens again.
func TestServiceEndpointsScale(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-scale"
	s.namespace(ns, nil)
	pods := s.run(
		podObject(ns, "s1", map[string]string{"app": "scale", "role": "ok"}, tcpPort("http", 8080)),
		podObject(ns, "client", map[string]string{"role": "client"}),
	)
	s1, client := pods[0], pods[1]
	svc := s.service(serviceObject(ns, "scale", map[string]string{"app": "scale"}, 80, intstr.FromInt32(8080), nil))
	s.policy(egressPolicy(ns, "client-to-ok", map[string]string{"role": "client"}, networkingv1.NetworkPolicyEgressRule{
		To:    []networkingv1.NetworkPolicyPeer{podsPeer(map[string]string{"role": "ok"})},
		Ports: policyPorts(corev1.ProtocolTCP, intstr.FromInt32(8080)),
	}))
	s.waitProgrammed(svc, s1)
	ip := s.clusterIP(svc, bed.IPv4)
	s.expectOpen("one allowed endpoint", client, ip, 80, bed.TCP)

	s2 := s.run(podObject(ns, "s2", map[string]string{"app": "scale"}, tcpPort("http", 8080)))[0]
	s.waitProgrammed(svc, s1, s2)
	s.expectClosed("a denied endpoint joined", client, ip, 80, bed.TCP)
	s.expectOpen("the denied endpoint directly from a pod without policy", s1, s2.IPv4(), 8080, bed.TCP)
	s.expectVerdict(client, svc, 80, bed.IPv4, false, []string{endpoint(s1.IPv4(), 8080)}, []string{endpoint(s2.IPv4(), 8080)})

	s.deletePod(s2)
	s.waitProgrammed(svc, s1)
	s.expectOpen("the denied endpoint left", client, ip, 80, bed.TCP)
	s.expectVerdict(client, svc, 80, bed.IPv4, true, []string{endpoint(s1.IPv4(), 8080)}, nil)
}

// TestHeadlessService: a headless Service needs nothing: its clients reach
// the pods' own addresses, judged like any pod (the allowed one open, the
// other blocked, IPv4 and IPv6), and podwallctl has no verdict on it. A
// ClusterIP Service over the allowed pod, next to it, is open.
func TestHeadlessService(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-headless"
	s.namespace(ns, nil)
	pods := s.run(
		podObject(ns, "h1", map[string]string{"app": "hl", "role": "ok"}, tcpPort("http", 8080)),
		podObject(ns, "h2", map[string]string{"app": "hl", "role": "no"}, tcpPort("http", 8080)),
		podObject(ns, "client", map[string]string{"role": "client"}),
	)
	h1, h2, client := pods[0], pods[1], pods[2]
	headless := serviceObject(ns, "hl", map[string]string{"app": "hl"}, 8080, intstr.FromInt32(8080), dualStack())
	headless.Spec.ClusterIP = corev1.ClusterIPNone
	headless = s.service(headless)
	withIP := s.service(serviceObject(ns, "hl-ok", map[string]string{"role": "ok"}, 80, intstr.FromInt32(8080), nil))
	s.policy(egressPolicy(ns, "client-to-ok", map[string]string{"role": "client"}, networkingv1.NetworkPolicyEgressRule{
		To:    []networkingv1.NetworkPolicyPeer{podsPeer(map[string]string{"role": "ok"})},
		Ports: policyPorts(corev1.ProtocolTCP, intstr.FromInt32(8080)),
	}))
	s.waitProgrammed(withIP, h1)

	for _, f := range families {
		s.expectOpen("headless Service's allowed pod "+f.String(), client, s.podIP(h1, f), 8080, bed.TCP)
		s.expectClosed("headless Service's other pod "+f.String(), client, s.podIP(h2, f), 8080, bed.TCP)
	}
	s.expectOpen("ClusterIP Service of the allowed pod", client, s.clusterIP(withIP, bed.IPv4), 80, bed.TCP)
	s.expectVerdict(client, withIP, 80, bed.IPv4, true, []string{endpoint(h1.IPv4(), 8080)}, nil)
	d, err := s.n.Daemon.PodDetail(s.ctx, client.Namespace, client.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range d.GetServices() {
		if v.GetNamespace() == ns && v.GetName() == headless.Name {
			t.Errorf("verdict on the headless Service: %v", v)
		}
	}
}

// TestIngressThroughService: the server's ingress admits the pods labelled
// role=ok; both clients' egress allows the server. Through the Service's
// ClusterIPs (IPv4 and IPv6) the allowed client gets in and the server sees
// its own pod address (kube-proxy does not masquerade pod traffic); the
// other client is blocked at the server although its egress verdict says
// open.
func TestIngressThroughService(t *testing.T) {
	s := newScenario(t)
	const ns = "sv-ingress"
	s.namespace(ns, nil)
	pods := s.run(
		podObject(ns, "server", map[string]string{"app": "server"}),
		podObject(ns, "c-ok", map[string]string{"tier": "client", "role": "ok"}),
		podObject(ns, "c-bad", map[string]string{"tier": "client", "role": "bad"}),
	)
	server, ok, bad := pods[0], pods[1], pods[2]
	if err := server.ServeSource(8080); err != nil {
		t.Fatal(err)
	}
	svc := s.service(serviceObject(ns, "server", map[string]string{"app": "server"}, 80, intstr.FromInt32(8080), dualStack()))
	s.policy(ingressPolicy(ns, "server-from-ok", map[string]string{"app": "server"}, networkingv1.NetworkPolicyIngressRule{
		From:  []networkingv1.NetworkPolicyPeer{podsPeer(map[string]string{"role": "ok"})},
		Ports: policyPorts(corev1.ProtocolTCP, intstr.FromInt32(8080)),
	}))
	s.policy(egressPolicy(ns, "clients-to-server", map[string]string{"tier": "client"}, networkingv1.NetworkPolicyEgressRule{
		To:    []networkingv1.NetworkPolicyPeer{podsPeer(map[string]string{"app": "server"})},
		Ports: policyPorts(corev1.ProtocolTCP, intstr.FromInt32(8080)),
	}))
	s.waitProgrammed(svc, server)

	for _, f := range families {
		ip := s.clusterIP(svc, f)
		if got, want := s.dialLine("allowed client through the Service "+f.String(), ok, ip, 80), s.podIP(ok, f).String(); got != "" && got != want {
			t.Errorf("%s -> Service %s:80: the server saw source %s, want the client's pod address %s", ok, ip, got, want)
		}
		s.expectClosed("other client through the Service "+f.String(), bad, ip, 80, bed.TCP)
		s.expectClosed("other client directly "+f.String(), bad, s.podIP(server, f), 8080, bed.TCP)
		s.expectVerdict(bad, svc, 80, f, true, []string{endpoint(s.podIP(server, f), 8080)}, nil)
	}
}
