// Package cluster runs a small real Kubernetes control plane on loopback for
// podwall's tests and demo: Debian's etcd, and kube-apiserver and
// kube-controller-manager built from k8s.io/kubernetes by
// test/kube/build-bins.sh. The API server authenticates a system:masters
// token and service-account tokens (a key generated per cluster), authorizes
// with RBAC, and serves certificates from a CA generated per cluster. The
// controller manager runs only the controllers a node's view of pods needs:
// service accounts and their tokens, EndpointSlices and namespace deletion.
// The Service range (IPv4, IPv6, or one of each for a dual-stack cluster)
// gets a host blackhole route, so test traffic to a ClusterIP never leaves
// the machine.
//
// On request (Options.Proxy, StartProxy) the cluster also runs the real
// kube-proxy of the same release in iptables mode in the host netns, which
// programs the ClusterIPs for traffic from pod veths. Its rules are
// host-wide, so one kube-proxy runs on the machine at a time: StartProxy
// takes a host-wide lock (ProxyLockPath), and StopProxy runs
// `kube-proxy --cleanup` before releasing it. Proxy.WaitService waits until
// a Service's ClusterIPs lead to given endpoints.
//
// Start needs root only for that route. The package plays no kubelet (see
// package kubelet) and must not import podwall's own packages: it exercises
// them from the outside.
package cluster
