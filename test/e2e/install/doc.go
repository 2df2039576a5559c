// Package installe2e tests podwall's installation end to end, as root:
//
//   - `podwalld install-cni` (the real binary) patches each real-world
//     configuration directory of conflist/testdata; the patched conflist,
//     with its ENI plugin replaced by ptp + host-local (the test bed's
//     stand-in for a routed ENI plugin) and the helpers the machine has no
//     binary for (egress-cni, portmap) left out, is run through libcni on
//     network namespaces with the real podwalld serving it, and a
//     NetworkPolicy denies one probe while its twin passes;
//   - `podwalld install-cni --watch` puts the entry back after the conflist
//     is rewritten, and `uninstall-cni` restores the original byte for byte;
//   - the manifests of install/ pass `kubectl apply --dry-run=server`
//     (kustomization and each file) against a real kube-apiserver
//     (test/kube/cluster), with kubectl v1.34.4 built by build-kubectl.sh;
//   - the DaemonSet's commands parse with the real podwalld, and the
//     Dockerfile builds what `make build` produces.
//
// Network namespaces are named pwi-*, and every address is inside
// 10.206.0.0/16: pods in 10.206.<n>.0/24 (each with a host blackhole route),
// the test cluster's Service range 10.206.240.0/20. The package has no
// non-test code; it must not be imported.
package installe2e
