package harness

import (
	"fmt"
	"net/netip"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Leftovers lists what a test package left on the host: the netns under
// /run/netns matching netnsGlob and the host routes inside ranges. A test
// package's TestMain calls it (as root) after the run and fails the run if
// anything is listed.
func Leftovers(netnsGlob string, ranges ...netip.Prefix) []string {
	left, _ := filepath.Glob(filepath.Join("/run/netns", netnsGlob))
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return append(left, fmt.Sprintf("cannot list routes: %v", err))
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, err := netip.ParsePrefix(r.Dst.String())
		if err != nil {
			continue
		}
		for _, owned := range ranges {
			if owned.Overlaps(dst) && dst.Bits() >= owned.Bits() {
				left = append(left, "route "+r.String())
			}
		}
	}
	return left
}
