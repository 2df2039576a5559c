// Package cluster runs a small real Kubernetes control plane on loopback for
// podwall's tests and demo: Debian's etcd, and kube-apiserver and
// kube-controller-manager built from k8s.io/kubernetes by
// test/kube/build-bins.sh. The API server authenticates a system:masters
// token and service-account tokens (a key generated per cluster), authorizes
// with RBAC, and serves certificates from a CA generated per cluster. The
// controller manager runs only the controllers a node's view of pods needs:
// service accounts and their tokens, EndpointSlices and namespace deletion.
// The Service range gets a host blackhole route, so test traffic to a
// ClusterIP never leaves the machine.
//
// Start needs root only for that route. The package plays no kubelet (see
// package kubelet) and must not import podwall's own packages: it exercises
// them from the outside.
package cluster
