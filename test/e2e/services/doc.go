// Package servicese2e proves, end to end with a real kube-proxy, that
// podwall judges traffic to Kubernetes Services exactly: a real
// kube-apiserver, etcd and kube-controller-manager (EndpointSlices) from
// test/kube/cluster, a real kube-proxy in iptables mode on the host, one
// node (podwalld with --kubeconfig, a dual-stack test bed whose CNI chain
// ends with podwall, and the kubelet stand-in of test/kube/kubelet). Pods
// reach Services by their ClusterIPs, which podwall judges inside the
// client's netns before kube-proxy rewrites them on the host.
//
// Its tests (all in _test.go files) cover allowed, denied and partly
// allowed Services, named and differing target ports, ipBlocks that must
// not open a Service, endpoints that come and go under a live policy,
// headless Services, DNS through the kube-dns Service under the usual
// "allow DNS" policy, node traffic under default-deny ingress (and a new
// host address), IPv6 ipBlocks with except, and ingress through a Service.
// Every allowed probe has a denied twin.
//
// With $PODWALL_SV_SERVICES_OFF=1 the daemon reads the API through a proxy
// that hides every Service, EndpointSlice and ServiceCIDR
// (harness.ServiceHider): podwall then has no Service handling, and every
// test that is about Services must fail.
//
// Address ranges: pods 10.217.0.0/17 and fd00:217::/64, Services
// 10.217.128.0/20 and fd00:217:8000::/112, the added host address
// 10.217.255.1 (10.217.255.0/24 blackholed), the external host
// 203.0.113.208/28; bed names start with "sv", the host link TestNodeProbe
// adds is sv-dummy0 (an empty bridge on kernels without the dummy driver). The package has no non-test code; it must not be imported.
package servicese2e
