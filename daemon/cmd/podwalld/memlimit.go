package main

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"
)

// defaultMemoryLimit is the soft memory limit podwalld gives the Go runtime
// (debug.SetMemoryLimit) when the GOMEMLIMIT environment variable is not
// set. Issue 6 asks for an RSS of at most 64 MiB with 10k pods, 1k
// namespaces, 1k policies and 1k Services in the cluster. The limit bounds
// what the runtime manages (heap, stacks, its own metadata), not the
// binary's resident code and read-only data (about 19 MiB of podwalld's RSS
// at that scale, RssFile in /proc/PID/status). There the live heap is about
// 20 MiB after the churn of the control-plane bench (its heap profile; 10 MiB
// of it the Kubernetes source, BenchmarkMemory in daemon/source/kube), so
// 44 MiB leaves the local pods' firewalls and the garbage of a sync or a
// relist room without making the collector run all the time, while GOGC=100
// alone lets the heap grow to twice its live size before each collection.
// Measured side by side with that bench (same build, GOMEMLIMIT set):
// 48 MiB: RSS 58.4 MiB while steady, peak 64.2 MiB, 0.048 cores during the
// churn; 44 MiB: 57.9, 61.1, 0.054; 40 MiB: 53.8, 56.9, 0.063, and peer
// changes slower (p99 69 ms against 43).
//
// The limit is soft: near it the collector runs more often, and it never
// fails an allocation. A cluster large enough that the live heap nears the
// limit makes the collector work harder (the runtime caps it at about half
// the CPU) and the heap then grows past the limit: raise it with
// GOMEMLIMIT (e.g. GOMEMLIMIT=128MiB), or turn it off with GOMEMLIMIT=off.
const defaultMemoryLimit = 44 << 20

// setMemoryLimit sets defaultMemoryLimit unless GOMEMLIMIT is set (the
// runtime applied that at start) and logs the limit in force.
func setMemoryLimit(log *slog.Logger) {
	source := "GOMEMLIMIT"
	if useDefaultMemoryLimit(os.Getenv) {
		source = "default"
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	limit := debug.SetMemoryLimit(-1) // reads it
	if limit == math.MaxInt64 {
		log.Info("no memory limit", "source", source)
		return
	}
	log.Info("memory limit", "bytes", limit, "source", source)
}

// useDefaultMemoryLimit reports whether podwalld sets defaultMemoryLimit:
// when GOMEMLIMIT is unset or empty (the runtime ignores an empty one too).
func useDefaultMemoryLimit(getenv func(string) string) bool {
	return getenv("GOMEMLIMIT") == ""
}
