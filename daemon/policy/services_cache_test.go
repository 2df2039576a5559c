package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/podwall/podwall/internal/fuzzinput"
)

// TestServiceCacheMatchesFresh changes one Service-side input at a time —
// one Service replaced, added or removed, one EndpointSlice replaced, added
// or removed, the Service CIDRs, or nothing — and checks after each change
// that the persistent compiler (whose service cache reuses the entries of
// unchanged Services, the guard and the verdicts of the ports both tables
// have) agrees with a fresh Compile. Pods and policies stay, so the local
// pods' egress rules keep their prefix slices and the verdicts carry over.
func TestServiceCacheMatchesFresh(t *testing.T) {
	seeds := 300
	if testing.Short() {
		seeds = 60
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(uint64(seed), 0x51ab1e))
		data := make([]byte, 4096)
		for i := range data {
			data[i] = byte(rng.UintN(256))
		}
		in := fuzzinput.New(data)
		st, local := fuzzState(t, in)
		c := NewCompiler()
		for step := 0; step <= 40; step++ {
			what := "initial"
			if step > 0 {
				st, what = changeServices(in, st, step)
			}
			got := c.Compile(st, local)
			want := Compile(st, local)
			if diff := resultDiff(got, want); diff != "" {
				t.Fatalf("seed %d, step %d (%s): persistent compiler differs from Compile: %s", seed, step, what, diff)
			}
		}
	}
}

// changeServices returns st with one Service-side change.
func changeServices(in *fuzzInput, st *State, step int) (*State, string) {
	next := *st
	other := &State{}
	fuzzServices(in, other)
	switch in.Intn(8) {
	case 0:
		return &next, "nothing"
	case 1: // one Service replaced by another of the same name
		if len(st.Services) == 0 || len(other.Services) == 0 {
			return &next, "nothing"
		}
		i := in.Intn(len(st.Services))
		svc := *other.Services[0]
		svc.Namespace, svc.Name = st.Services[i].Namespace, st.Services[i].Name
		next.Services = slices.Clone(st.Services)
		next.Services[i] = &svc
		return &next, "service " + svc.Key() + " replaced"
	case 2: // one Service added, its slices too
		if len(other.Services) == 0 {
			return &next, "nothing"
		}
		svc := *other.Services[0]
		svc.Name = fmt.Sprintf("added-%d", step)
		next.Services = append(slices.Clone(st.Services), &svc)
		next.EndpointSlices = slices.Clone(st.EndpointSlices)
		for _, es := range other.EndpointSlices {
			if es.Namespace == svc.Namespace && es.Service == other.Services[0].Name {
				cp := *es
				cp.Service, cp.Name = svc.Name, svc.Name+"-"+es.Name
				next.EndpointSlices = append(next.EndpointSlices, &cp)
			}
		}
		return &next, "service " + svc.Key() + " added"
	case 3: // one Service removed (its slices stay, as they may for a while)
		if len(st.Services) == 0 {
			return &next, "nothing"
		}
		i := in.Intn(len(st.Services))
		next.Services = slices.Delete(slices.Clone(st.Services), i, i+1)
		return &next, "service " + st.Services[i].Key() + " removed"
	case 4: // one slice replaced: endpoints change readiness, one joins
		if len(st.EndpointSlices) == 0 {
			return &next, "nothing"
		}
		i := in.Intn(len(st.EndpointSlices))
		es := *st.EndpointSlices[i]
		es.Endpoints = slices.Clone(es.Endpoints)
		for j := range es.Endpoints {
			es.Endpoints[j].Ready = in.Bool()
		}
		es.Endpoints = append(es.Endpoints, Endpoint{Addrs: []netip.Addr{netip.AddrFrom4([4]byte{10, 9, 0, byte(in.Intn(16))})},
			Ready: true, NodeName: fuzzinput.Pick(in, "node-1", "node-2", "")})
		next.EndpointSlices = slices.Clone(st.EndpointSlices)
		next.EndpointSlices[i] = &es
		return &next, "slice " + es.Name + " replaced"
	case 5: // one slice added to an existing Service
		if len(st.Services) == 0 || len(other.EndpointSlices) == 0 {
			return &next, "nothing"
		}
		svc := st.Services[in.Intn(len(st.Services))]
		es := *other.EndpointSlices[0]
		es.Namespace, es.Service, es.Name = svc.Namespace, svc.Name, fmt.Sprintf("%s-added-%d", svc.Name, step)
		if len(svc.Ports) > 0 && len(es.Ports) > 0 {
			es.Ports = slices.Clone(es.Ports)
			es.Ports[0].Name, es.Ports[0].Protocol = svc.Ports[0].Name, svc.Ports[0].Protocol
		}
		next.EndpointSlices = append(slices.Clone(st.EndpointSlices), &es)
		return &next, "slice " + es.Name + " added"
	case 6: // one slice removed
		if len(st.EndpointSlices) == 0 {
			return &next, "nothing"
		}
		i := in.Intn(len(st.EndpointSlices))
		next.EndpointSlices = slices.Delete(slices.Clone(st.EndpointSlices), i, i+1)
		return &next, "slice " + st.EndpointSlices[i].Name + " removed"
	default: // the Service CIDRs change
		next.ServiceCIDRs = other.ServiceCIDRs
		return &next, fmt.Sprintf("service CIDRs %v", other.ServiceCIDRs)
	}
}
