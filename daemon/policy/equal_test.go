package policy

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	"github.com/podwall/podwall/internal/fuzzinput"
	corev1 "k8s.io/api/core/v1"
)

func TestFirewallEqual(t *testing.T) {
	peers := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("10.0.0.2/32")}
	base := func() *Firewall {
		return &Firewall{
			Ingress: Direction{Isolated: true, Policies: []string{"ns/a"}, Rules: []Rule{
				{Peer: Peer{Prefixes: slices.Clone(peers)}, Ports: []Port{{Protocol: corev1.ProtocolTCP, Port: 80}}},
				{Peer: Peer{Any: true}},
			}},
			Egress: Direction{Isolated: true, Policies: []string{"ns/b"},
				Services:     []Rule{{Peer: Peer{Prefixes: slices.Clone(peers)}, Ports: []Port{{Protocol: corev1.ProtocolUDP, Port: 53}}}},
				ServiceGuard: []Rule{{Peer: Peer{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}}},
			},
		}
	}
	tests := []struct {
		name   string
		change func(*Firewall)
		equal  bool
	}{
		{"unchanged", func(*Firewall) {}, true},
		{"nil and empty slices", func(f *Firewall) { f.Ingress.Rules[1].Ports = []Port{} }, true},
		{"isolation", func(f *Firewall) { f.Egress.Isolated = false }, false},
		{"policies", func(f *Firewall) { f.Ingress.Policies = []string{"ns/c"} }, false},
		{"rule added", func(f *Firewall) { f.Ingress.Rules = append(f.Ingress.Rules, Rule{Peer: Peer{Any: true}}) }, false},
		{"peer member", func(f *Firewall) { f.Ingress.Rules[0].Peer.Prefixes[1] = netip.MustParsePrefix("10.0.0.3/32") }, false},
		{"peer prefix length", func(f *Firewall) { f.Ingress.Rules[0].Peer.Prefixes[1] = netip.MustParsePrefix("10.0.0.2/31") }, false},
		{"peer any", func(f *Firewall) { f.Ingress.Rules[1].Peer.Any = false }, false},
		{"port", func(f *Firewall) { f.Ingress.Rules[0].Ports[0].Port = 81 }, false},
		{"end port", func(f *Firewall) { f.Ingress.Rules[0].Ports[0].EndPort = 90 }, false},
		{"protocol", func(f *Firewall) { f.Ingress.Rules[0].Ports[0].Protocol = corev1.ProtocolSCTP }, false},
		{"service member", func(f *Firewall) { f.Egress.Services[0].Peer.Prefixes = peers[:1] }, false},
		{"guard", func(f *Firewall) { f.Egress.ServiceGuard = nil }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := base(), base()
			tt.change(b)
			if got := a.Equal(b); got != tt.equal {
				t.Errorf("a.Equal(b) = %v, want %v", got, tt.equal)
			}
			if got := b.Equal(a); got != tt.equal {
				t.Errorf("b.Equal(a) = %v, want %v", got, tt.equal)
			}
		})
	}
}

func TestFirewallEqualNil(t *testing.T) {
	var none *Firewall
	if !none.Equal(nil) {
		t.Error("nil.Equal(nil) = false")
	}
	if none.Equal(&Firewall{}) || (&Firewall{}).Equal(nil) {
		t.Error("nil equals a firewall")
	}
}

// TestFirewallEqualAgreesWithDeepEqual compiles random clusters (as
// FuzzCompile builds them) twice and checks Equal against reflect.DeepEqual
// on every pair of firewalls.
func TestFirewallEqualAgreesWithDeepEqual(t *testing.T) {
	var equal, unequal int
	for seed := uint64(1); seed <= 40; seed++ {
		rnd := rand.New(rand.NewPCG(seed, seed))
		data := make([]byte, 400)
		for i := range data {
			data[i] = byte(rnd.Uint32())
		}
		state, locals := fuzzState(t, fuzzinput.New(data))
		first := Compile(state, locals).Firewalls
		again := Compile(state, locals).Firewalls
		for key, fw := range first {
			for key2, other := range again {
				want := reflect.DeepEqual(normalize(fw), normalize(other))
				if got := fw.Equal(other); got != want {
					t.Fatalf("seed %d: %s.Equal(%s) = %v, reflect.DeepEqual = %v", seed, key, key2, got, want)
				}
				if want {
					equal++
				} else {
					unequal++
				}
			}
		}
	}
	if equal == 0 || unequal == 0 {
		t.Fatalf("the random clusters gave %d equal and %d unequal pairs: both must occur", equal, unequal)
	}
	t.Logf("%d equal and %d unequal pairs", equal, unequal)
}

// normalize turns empty slices into nil, which Equal does not tell apart.
func normalize(f *Firewall) *Firewall {
	out := *f
	for _, d := range []*Direction{&out.Ingress, &out.Egress} {
		d.Policies = nilIfEmpty(d.Policies)
		for _, rules := range []*[]Rule{&d.Rules, &d.Services, &d.ServiceGuard} {
			r := slices.Clone(nilIfEmpty(*rules))
			for i := range r {
				r[i].Ports = nilIfEmpty(r[i].Ports)
				r[i].Peer.Prefixes = nilIfEmpty(r[i].Peer.Prefixes)
			}
			*rules = r
		}
	}
	return &out
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
