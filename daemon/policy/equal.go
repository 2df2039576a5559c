package policy

import (
	"slices"
	"unsafe"
)

// Equal reports whether f and o describe the same firewall. It is what the
// syncer asks on every sync for every local pod, so it is cheap: slices the
// compiler shared between firewalls (the peers of one policy rule, the
// Service frontends) compare by identity before their elements are compared.
// A nil slice equals an empty one.
func (f *Firewall) Equal(o *Firewall) bool {
	if f == nil || o == nil {
		return f == o
	}
	return f.Ingress.equal(&o.Ingress) && f.Egress.equal(&o.Egress)
}

func (d *Direction) equal(o *Direction) bool {
	return d.Isolated == o.Isolated &&
		slices.Equal(d.Policies, o.Policies) &&
		rulesEqual(d.Rules, o.Rules) &&
		rulesEqual(d.Services, o.Services) &&
		rulesEqual(d.ServiceGuard, o.ServiceGuard)
}

func rulesEqual(a, b []Rule) bool {
	if sameSlice(a, b) {
		return true
	}
	return slices.EqualFunc(a, b, func(x, y Rule) bool {
		return x.Peer.Any == y.Peer.Any &&
			slices.Equal(x.Ports, y.Ports) &&
			(sameSlice(x.Peer.Prefixes, y.Peer.Prefixes) || slices.Equal(x.Peer.Prefixes, y.Peer.Prefixes))
	})
}

// sameSlice reports whether a and b are the same slice: same length, same
// backing array.
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || unsafe.SliceData(a) == unsafe.SliceData(b))
}
