# kube.mk — the Kubernetes binaries of the cluster test bed (test/kube).
# Included by the Makefile. `make kube-bins` installs Debian's etcd-server if
# etcd is missing and builds kube-apiserver, kube-controller-manager and
# kube-proxy v1.34.4 (nested module test/kube/bins), and kubectl for the
# install/ dry-run test (test/e2e/install/build-kubectl.sh), into KUBE_BIN_DIR,
# skipping binaries already there: 7-20 min with a cold Go build cache on
# 2 cores, nothing when they are there. Tests find them through
# PODWALL_KUBE_BIN_DIR (default the same directory); PODWALL_KUBE_REQUIRED=1
# makes them fail instead of skip when a binary is missing.

KUBE_BIN_DIR ?= $(or $(PODWALL_KUBE_BIN_DIR),$(HOME)/.cache/podwall/k8s-v1.34.4)

.PHONY: kube-bins

kube-bins:
	PODWALL_KUBE_BIN_DIR=$(KUBE_BIN_DIR) sh $(CURDIR)/test/kube/build-bins.sh
	PODWALL_KUBE_BIN_DIR=$(KUBE_BIN_DIR) sh $(CURDIR)/test/e2e/install/build-kubectl.sh >/dev/null
