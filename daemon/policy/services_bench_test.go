package policy

import (
	"fmt"
	"slices"
	"testing"
)

// BenchmarkCompileServicesIncremental recompiles the 110 local pods of the
// 10k-pod cluster with 1k Services (BenchmarkCompileServices' cluster) with
// the persistent compiler, switching between two states: change=none (the
// same state again, as a sync no source change caused) and
// change=endpoint-slice (one EndpointSlice loses an endpoint, as a peer pod
// behind a Service going away does). It reports; it asserts nothing about
// time.
func BenchmarkCompileServicesIncremental(b *testing.B) {
	for _, change := range []string{"none", "endpoint-slice"} {
		b.Run(fmt.Sprintf("change=%s", change), func(b *testing.B) {
			st, local := benchmarkState(10_000, 1000, 1000, 110)
			addBenchmarkServices(st, 1000)
			states := []*State{st}
			if change == "endpoint-slice" {
				next := *st
				next.EndpointSlices = slices.Clone(st.EndpointSlices)
				es := *next.EndpointSlices[3]
				es.Endpoints = slices.Clone(es.Endpoints[:len(es.Endpoints)-1])
				next.EndpointSlices[3] = &es
				states = append(states, &next)
			}
			c := NewCompiler()
			for _, s := range states {
				c.Compile(s, local)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c.Compile(states[i%len(states)], local)
				i++
			}
		})
	}
}
