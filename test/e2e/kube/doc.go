// Package kubee2e runs podwall end to end against a real Kubernetes control
// plane, as root: etcd, kube-apiserver and kube-controller-manager from
// test/kube/cluster (one dual-stack control plane, IPv4 primary, shared by
// the suites), the real kube-proxy in iptables mode on the host for the
// tests that go through Services; podwalld started with --kubeconfig exactly
// as on a node, authenticated as the podwall ServiceAccount whose only
// rights are those install/rbac.yaml grants; and a kubelet stand-in
// (test/kube/kubelet) that creates Pod objects through the API and plumbs
// them through the real CNI chain (ptp + host-local with an IPv4 range, an
// IPv6 range or both, then the podwall plugin, which asks podwalld, which
// looks the pod up in the API). Policies, namespace labels and pod labels
// change through the API; probes are real TCP and UDP connections and raw
// SCTP packets between the pods' network namespaces, to pod IPs or to
// Service ClusterIPs.
//
// Its tests (all in _test.go files) run the upstream NetworkPolicy e2e suites
// of test/netpol on such nodes (kubeCluster) in every mode: IPv4, IPv6 and
// dual-stack pods, each family probed, to pod IPs and through Services
// (netpol_test.go lists the Go tests); they prove the Service path is real
// (service_test.go), and check what only a real API server can show: a CNI
// ADD for a pod the API does not know, the RBAC being enough, and
// enforcement across an API server outage.
//
// Address ranges: IPv4 pods in 10.213.0.0/17, Service ranges inside
// 10.213.128.0/17; IPv6 pods in fd00:213::/64 (a /80 per bed), IPv6 Service
// ranges inside fd00:213:0:8000::/64. Bed names start with "k8n" (IPv4),
// "k8s6" (IPv6) or "k8d" (dual-stack). The package has no non-test code; it
// must not be imported.
package kubee2e
