# bench.mk — `make bench`: podwall's performance benchmarks and the documents
# made from them. Included by the Makefile after kube.mk (it uses
# KUBE_BIN_DIR). Needs root, like the end-to-end tests.
#
# One after the other, so they do not compete for the 2 cores:
#   bench-micro         go test -bench of the compiler and the dataplane (benchstat summary)
#   bench-datapath      HTTP through pods, podwall vs. absent (test/bench/datapath)
#   bench-controlplane  convergence, ADD latency, RSS and profiles on a real API server (test/bench/controlplane)
#   bench-report        docs/performance.md, docs/performance.json, docs/performance-*.png
# A failing step does not stop the others; bench-report then writes what was
# measured, says what was not, and fails. Results go to $(BENCH_DIR). About
# 20 minutes on this 2-core VM when the Kubernetes binaries are cached
# (make kube-bins builds them once: 7-20 min more on a fresh machine).

BENCH_DIR        ?= $(BIN)/bench
BENCH_MICRO_COUNT ?= 6
BENCH_MICRO       := ^Benchmark(CompileScale|CompileGrowth|CompileSelectAll|RenderLarge|ApplyLarge)$$
# Fewer rounds of the slow changes (a policy change on all 110 pods takes
# tens of seconds today) keep `make bench` under 30 minutes.
BENCH_DATAPATH_FLAGS     ?=
BENCH_CONTROLPLANE_FLAGS ?= -policy-all-rounds 1 -peer-rounds 3 -namespace-rounds 3
BENCHSTAT ?= $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

.PHONY: bench bench-prereqs bench-bin bench-micro bench-datapath bench-controlplane bench-report

bench: bench-prereqs cni-plugins kube-bins bench-bin
	@rm -f $(BENCH_DIR)/*.json $(BENCH_DIR)/*.txt $(BENCH_DIR)/*.pprof $(BENCH_DIR)/podwalld.log $(BENCH_DIR)/finished
	@date +%s > $(BENCH_DIR)/started
	-$(MAKE) --no-print-directory bench-micro
	-$(MAKE) --no-print-directory bench-datapath
	-$(MAKE) --no-print-directory bench-controlplane
	@date +%s > $(BENCH_DIR)/finished
	$(MAKE) --no-print-directory bench-report

bench-prereqs:
	@bash test/bench/prereqs.sh

bench-bin:
	@mkdir -p $(BENCH_DIR)
	$(GO) build -o $(BENCH_DIR)/bench ./test/cmd/bench

bench-micro:
	@mkdir -p $(BENCH_DIR)
	$(GO) test -run '^$$' -bench '$(BENCH_MICRO)' -count $(BENCH_MICRO_COUNT) -timeout 20m \
		./daemon/policy/ ./daemon/dataplane/ > $(BENCH_DIR)/micro.txt || { cat $(BENCH_DIR)/micro.txt; rm -f $(BENCH_DIR)/micro.txt; exit 1; }
	$(BENCHSTAT) $(BENCH_DIR)/micro.txt > $(BENCH_DIR)/micro-benchstat.txt

bench-datapath: bench-bin
	$(BENCH_DIR)/bench datapath -out $(BENCH_DIR)/datapath.json -bin $(BIN) -cni-bin $(CNI_BIN) $(BENCH_DATAPATH_FLAGS)

bench-controlplane: bench-bin
	$(BENCH_DIR)/bench controlplane -out $(BENCH_DIR)/controlplane.json -profiles $(BENCH_DIR) \
		-bin $(BIN) -cni-bin $(CNI_BIN) -kube-bin $(KUBE_BIN_DIR) $(BENCH_CONTROLPLANE_FLAGS)
	@if [ -s $(BENCH_DIR)/podwalld-cpu.pprof ]; then \
		$(GO) tool pprof -top -nodecount=25 $(BENCH_DIR)/podwalld-cpu.pprof > $(BENCH_DIR)/cpu-top.txt 2>/dev/null; \
		$(GO) tool pprof -top -cum -nodecount=40 $(BENCH_DIR)/podwalld-cpu.pprof > $(BENCH_DIR)/cpu-cum.txt 2>/dev/null; fi
	@if [ -s $(BENCH_DIR)/podwalld-heap.pprof ]; then \
		$(GO) tool pprof -sample_index=inuse_space -top -nodecount=20 $(BENCH_DIR)/podwalld-heap.pprof > $(BENCH_DIR)/heap-top.txt 2>/dev/null; fi

bench-report: bench-bin
	$(BENCH_DIR)/bench report -in $(BENCH_DIR) -md docs/performance.md -json docs/performance.json -plots docs -podwall-version $(VERSION)
