package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// blackholeMetric is the metric of the Service range's host blackhole route:
// high, so a real route with the same prefix wins, and different from the
// test bed's (4242) so the two never replace each other.
const blackholeMetric = 4243

// blackhole is a host blackhole route added by a cluster.
type blackhole struct {
	prefix netip.Prefix
	ours   bool // added by us, so removed by us
}

// addBlackhole adds a host blackhole route for prefix. If one exists already
// (another cluster with the same range), it is left to its owner.
func addBlackhole(prefix netip.Prefix) (*blackhole, error) {
	err := netlink.RouteAdd(blackholeRoute(prefix))
	switch {
	case err == nil:
		return &blackhole{prefix: prefix, ours: true}, nil
	case errors.Is(err, unix.EEXIST):
		return &blackhole{prefix: prefix}, nil
	}
	return nil, fmt.Errorf("add host blackhole route %s: %w", prefix, err)
}

func (b *blackhole) remove() error {
	if !b.ours {
		return nil
	}
	b.ours = false
	if err := netlink.RouteDel(blackholeRoute(b.prefix)); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete host blackhole route %s: %w", b.prefix, err)
	}
	return nil
}

func blackholeRoute(p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())},
		Type:     unix.RTN_BLACKHOLE,
		Priority: blackholeMetric,
		Table:    unix.RT_TABLE_MAIN,
	}
}
