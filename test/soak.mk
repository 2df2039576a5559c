# soak: the reliability suite (test/e2e/reliability) with its long settings,
# PODWALL_SOAK=1: 300 SIGKILLs of podwalld under churn, a 60 s API server
# outage, 10 rounds of 110 pods added and deleted in parallel (each can be
# changed, see the suite's settings_test.go). The full log goes to
# bin/soak.log; the figures docs/reliability.md quotes are printed at the end.
.PHONY: soak
soak: prereqs cni-plugins kube-bins
	@mkdir -p $(BIN)
	PODWALL_BIN=$(CURDIR)/$(BIN) PODWALL_CNI_BIN_DIR=$(CURDIR)/$(CNI_BIN) \
	PODWALL_KUBE_BIN_DIR=$(KUBE_BIN_DIR) PODWALL_KUBE_REQUIRED=1 PODWALL_SOAK=1 \
		$(GO) test -count=1 -timeout 120m -v ./test/e2e/reliability/ > $(BIN)/soak.log 2>&1; \
	status=$$?; \
	grep -E -- '(figures|rounds|before:|down for|enforced|repaired|--- (PASS|FAIL)|^(ok|FAIL))' $(BIN)/soak.log; \
	echo "soak: full log in $(BIN)/soak.log"; \
	exit $$status
