// Package remote holds what podwall's benchmarks need of pods that exist
// only as API objects or manifest entries ("remote" pods on other nodes):
// their addresses, drawn from 10.216.0.0/16, and the host blackhole routes
// that keep any packet to such an address on this machine. It must not
// import podwall's own packages.
package remote

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Range is the range remote pod addresses come from. Nothing answers there.
var Range = netip.MustParsePrefix("10.216.0.0/16")

// blackholeMetric is the metric of the blackhole route: high, and different
// from the test bed's (4242) and the kube cluster's (4243), so none of them
// replaces another's.
const blackholeMetric = 4244

// PerBlock is how many addresses Addr takes from each /24.
const PerBlock = 127

// Addr returns the i-th address of the sub-range base (a prefix inside
// Range). It takes only odd host numbers (.1, .3, … .253 of each /24), so no
// two addresses are adjacent and the compiler cannot merge them into wider
// prefixes: each is a member of its own in a pod's ipsets, as the scattered
// addresses of a VPC are. It fails when i does not fit.
func Addr(base netip.Prefix, i int) (netip.Addr, error) {
	if !Range.Contains(base.Addr()) || base.Bits() < Range.Bits() || !base.Addr().Is4() {
		return netip.Addr{}, fmt.Errorf("remote range %s is not inside %s", base, Range)
	}
	if i < 0 {
		return netip.Addr{}, fmt.Errorf("remote address index %d is negative", i)
	}
	block, host := i/PerBlock, 2*(i%PerBlock)+1
	a := base.Masked().Addr().As4()
	n := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	n += uint32(block)<<8 | uint32(host)
	out := netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)})
	if !base.Contains(out) {
		return netip.Addr{}, fmt.Errorf("remote address index %d does not fit in %s", i, base)
	}
	return out, nil
}

// Blackhole is a host blackhole route for a part of Range.
type Blackhole struct {
	prefix netip.Prefix
	ours   bool
}

// AddBlackhole adds a blackhole route for prefix, which must lie inside
// Range (needs root). A route that exists already (someone else's) is left
// to its owner. Benchmarks that may run at once take disjoint prefixes.
func AddBlackhole(prefix netip.Prefix) (*Blackhole, error) {
	if !Range.Contains(prefix.Addr()) || prefix.Bits() < Range.Bits() {
		return nil, fmt.Errorf("blackhole %s: not inside %s", prefix, Range)
	}
	prefix = prefix.Masked()
	err := netlink.RouteAdd(route(prefix))
	switch {
	case err == nil:
		return &Blackhole{prefix: prefix, ours: true}, nil
	case errors.Is(err, unix.EEXIST):
		return &Blackhole{prefix: prefix}, nil
	}
	return nil, fmt.Errorf("add host blackhole route %s: %w", prefix, err)
}

// Remove deletes the route if AddBlackhole added it; safe to call twice and
// on nil.
func (b *Blackhole) Remove() error {
	if b == nil || !b.ours {
		return nil
	}
	b.ours = false
	if err := netlink.RouteDel(route(b.prefix)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete host blackhole route %s: %w", b.prefix, err)
	}
	return nil
}

func route(p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		Type:     unix.RTN_BLACKHOLE,
		Priority: blackholeMetric,
		Table:    unix.RT_TABLE_MAIN,
	}
}
