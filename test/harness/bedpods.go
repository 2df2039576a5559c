package harness

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/netpol"
)

// The netpol.Cluster methods of a cluster whose pods are test bed pods:
// PodIP and Probe answer with the bed's real addresses and connections.

// bedFamily is the bed's family of a netpol family.
func bedFamily(f netpol.Family) (bed.Family, bool) {
	switch f {
	case netpol.IPv4:
		return bed.IPv4, true
	case netpol.IPv6:
		return bed.IPv6, true
	}
	return 0, false
}

// BedPodIP returns p's address of the family (from its CNI result); false
// if p is nil or has none.
func BedPodIP(p *bed.Pod, family netpol.Family) (netip.Addr, bool) {
	f, ok := bedFamily(family)
	if p == nil || !ok {
		return netip.Addr{}, false
	}
	return p.IP(f)
}

// ProbeBedPods connects from one pod to the other's address with the bed's
// real TCP, UDP or SCTP probe, waiting at most timeout; blocked or refused
// is (false, nil). pod returns the bed pod of a reference, nil if the
// cluster has none.
func ProbeBedPods(ctx context.Context, pod func(netpol.PodRef) *bed.Pod, from, to netpol.PodRef, family netpol.Family, port int, proto corev1.Protocol, timeout time.Duration) (bool, error) {
	f, ok := bedFamily(family)
	if !ok {
		return false, fmt.Errorf("invalid IP family %v", family)
	}
	src, dst := pod(from), pod(to)
	if src == nil {
		return false, fmt.Errorf("pod %s not found", from)
	}
	if dst == nil {
		return false, fmt.Errorf("pod %s not found", to)
	}
	return bed.ProbePod(ctx, src, dst, f, port, string(proto), timeout)
}
