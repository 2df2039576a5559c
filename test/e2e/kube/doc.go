// Package kubee2e runs podwall end to end against a real Kubernetes control
// plane, as root: etcd, kube-apiserver and kube-controller-manager from
// test/kube/cluster; podwalld started with --kubeconfig exactly as on a node,
// authenticated as the podwall ServiceAccount whose only rights are those
// install/rbac.yaml grants; and a kubelet stand-in (test/kube/kubelet) that
// creates Pod objects through the API and plumbs them through the real CNI
// chain (ptp + host-local, then the podwall plugin, which asks podwalld, which
// looks the pod up in the API). Policies, namespace labels and pod labels
// change through the API; probes are real TCP and UDP connections and raw
// SCTP packets between the pods' network namespaces.
//
// Its tests (all in _test.go files) run the upstream NetworkPolicy e2e suites
// of test/netpol on such a node (kubeCluster), and check what only a real API
// server can show: a CNI ADD for a pod the API does not know, the RBAC being
// enough, and enforcement across an API server outage.
//
// Address ranges: pods 10.213.0.0/16 (below 10.213.128.0/17), Service ranges
// inside 10.213.128.0/17, bed names starting with "k8n". The package has no
// non-test code; it must not be imported.
package kubee2e
