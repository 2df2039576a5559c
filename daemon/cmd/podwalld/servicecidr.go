package main

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/podwall/podwall/daemon/source"
)

// serviceCIDRFlag is --service-cidr: the ranges ClusterIPs are allocated
// from, for clusters whose ServiceCIDR objects cannot be read. It may be
// given several times and each value may be a comma-separated list; IPv4 and
// IPv6 ranges mix. Host bits are masked, as kube-apiserver's
// --service-cluster-ip-range does.
type serviceCIDRFlag struct {
	prefixes []netip.Prefix
}

func (f *serviceCIDRFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(prefixStrings(f.prefixes), ",")
}

func (f *serviceCIDRFlag) Set(value string) error {
	var add []netip.Prefix
	for s := range strings.SplitSeq(value, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return fmt.Errorf("empty range in %q", value)
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("range %q: want a CIDR such as 10.96.0.0/12 or fd00:96::/108", s)
		}
		if p.Addr().Zone() != "" || p.Addr().Is4In6() {
			return fmt.Errorf("range %q: want a plain IPv4 or IPv6 CIDR", s)
		}
		add = append(add, p.Masked())
	}
	f.prefixes = source.UniquePrefixes(f.prefixes, add)
	return nil
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
