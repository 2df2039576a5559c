# conformance.mk — `make conformance`: the upstream NetworkPolicy e2e suites
# (test/netpol) in every mode, and docs/conformance.md from their results.
# Included by the Makefile (after kube.mk, whose KUBE_BIN_DIR it uses); needs
# root, like the end-to-end tests.
#
# It runs the manifests-source suites (test/e2e, TestUpstream*: IPv4 pods,
# pod IPs) and then every kubernetes-source run (test/e2e/kube,
# TestKubeUpstream*: a real kube-apiserver; IPv4, IPv6 and dual-stack pods;
# pod IPs and Service ClusterIPs through a real kube-proxy), each package
# with `go test -json` into $(CONFORMANCE_DIR), one after the other so they
# do not compete for the CPU. `make test` runs the IPv4 runs only: the IPv6
# and dual-stack ones (PODWALL_KUBE_E2E_ALL_MODES=1) take the kube package
# from about 5 to over 20 minutes on a busy 2-core machine. A failing test does not stop the run:
# test/cmd/conformance writes the report from both streams (one row per
# upstream test, one column per mode, the podwall version, the API server's
# version, the date) and then fails the target if any test did not pass.

CONFORMANCE_DIR ?= $(BIN)/conformance
CONFORMANCE_DOC ?= docs/conformance.md

.PHONY: conformance

conformance: build cni-plugins kube-bins
	@mkdir -p $(CONFORMANCE_DIR)
	-PODWALL_BIN=$(CURDIR)/$(BIN) PODWALL_CNI_BIN_DIR=$(CURDIR)/$(CNI_BIN) \
		$(GO) test -json -count=1 -timeout 20m -run '^TestUpstream' ./test/e2e/ \
		> $(CONFORMANCE_DIR)/manifests.json
	-PODWALL_BIN=$(CURDIR)/$(BIN) PODWALL_CNI_BIN_DIR=$(CURDIR)/$(CNI_BIN) \
	PODWALL_KUBE_BIN_DIR=$(KUBE_BIN_DIR) PODWALL_KUBE_REQUIRED=1 PODWALL_KUBE_E2E_ALL_MODES=1 \
		$(GO) test -json -count=1 -timeout 60m -run '^TestKubeUpstream' ./test/e2e/kube/ \
		> $(CONFORMANCE_DIR)/kube.json
	$(GO) run ./test/cmd/conformance -manifests $(CONFORMANCE_DIR)/manifests.json \
		-kube $(CONFORMANCE_DIR)/kube.json -out $(CONFORMANCE_DOC) -podwall-version $(VERSION)
