# podwall — build, test, demo. `make demo` and `make test` install what they
# need themselves (Debian packages, Go tools) on a fresh machine, as root.

GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
# grpcnotrace leaves out gRPC's x/net/trace (podwall never turns tracing on):
# it imports html/template, whose reflection keeps every exported method of
# every type the linker cannot prove unused. podwalld 26.8 -> 22.3 MB, the
# plugin 10.9 -> 8.0 MB; the pages of that code were part of podwalld's RSS.
GOTAGS    := grpcnotrace
# The three binaries are static (no cgo): they run on any node whatever its
# libc, and podwalld's RSS loses libc's and the loader's pages and glibc's
# thread stacks (control-plane bench: steady 64.4 -> 62.2 MiB, peak 67.5 ->
# 64.9 MiB).
BUILDENV  := CGO_ENABLED=0
BIN       := bin
CNI_BIN   := $(BIN)/cni
TOOLS     := $(CURDIR)/.tools
FUZZTIME  ?= 20s

.PHONY: all build cni-plugins prereqs generate check-generated vet test demo fuzz clean

all: build

# kube-bins: kube-apiserver, kube-controller-manager and kube-proxy for the
# cluster-in-a-box test bed (test/kube), cached under KUBE_BIN_DIR.
include test/kube/kube.mk

# conformance: the 73 upstream NetworkPolicy tests on the manifests source and
# on a real API server; writes docs/conformance.md.
include test/conformance.mk

# soak: the reliability suite with its long settings (300 daemon kills, a
# 60 s API server outage, 10 rounds of 110 parallel pods).
include test/soak.mk

# bench: the performance benchmarks (test/bench); writes docs/performance.md,
# docs/performance.json and docs/performance-*.png.
include test/bench/bench.mk

build:
	$(BUILDENV) $(GO) build -trimpath -tags '$(GOTAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/podwall ./plugin
	$(BUILDENV) $(GO) build -trimpath -tags '$(GOTAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/podwalld ./daemon/cmd/podwalld
	$(BUILDENV) $(GO) build -trimpath -tags '$(GOTAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/podwallctl ./daemon/cmd/podwallctl

# The reference plugins the test bed chains podwall after (ptp stands in for a
# VPC-ENI plugin), built from the containernetworking/plugins module in go.mod.
cni-plugins: build
	$(GO) run ./test/cmd/cni-plugins -dir $(CNI_BIN)
	cp $(BIN)/podwall $(CNI_BIN)/podwall

# Debian packages the dataplane and the tests need (iptables on nf_tables,
# ipset, iproute2, protoc for `make generate`).
prereqs:
	@bash test/prereqs.sh

generate:
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install tool
	PATH=$(TOOLS):$$PATH protoc -I proto -I /usr/include \
		--go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative \
		proto/podwall/v1/podwall.proto

# Fails when the committed generated code differs from what protoc makes.
check-generated: generate
	@git diff --exit-code -- proto/ || { echo "generated code is stale: run make generate and commit"; exit 1; }

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...

# Everything CI runs: prerequisites, build, vet, generated-code check, unit and
# privileged end-to-end tests (root), and a bounded fuzz run of each target.
test: prereqs cni-plugins vet check-generated kube-bins
	PODWALL_BIN=$(CURDIR)/$(BIN) PODWALL_CNI_BIN_DIR=$(CURDIR)/$(CNI_BIN) \
	PODWALL_KUBE_BIN_DIR=$(KUBE_BIN_DIR) PODWALL_KUBE_REQUIRED=1 \
		$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) fuzz

fuzz:
	@bash test/fuzz.sh $(FUZZTIME)

# The main job: a few pods on network namespaces through the real CNI chain,
# podwalld on a manifests directory, the seed's five example policies applied
# one after another, and after each the reachability matrix measured with real
# connections next to what the policy intends.
demo: prereqs cni-plugins
	$(GO) build -o $(BIN)/podwall-demo ./test/cmd/demo
	$(BIN)/podwall-demo --bin $(CURDIR)/$(BIN) --cni-bin $(CURDIR)/$(CNI_BIN)

clean:
	rm -rf $(BIN) $(TOOLS)
