package server

import (
	"net/netip"
	"strings"

	"github.com/podwall/podwall/daemon/policy"
	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// serviceVerdicts converts the syncer's recorded Service verdicts for the
// status API.
func serviceVerdicts(verdicts []policy.ServiceVerdict) []*pb.ServiceVerdict {
	out := make([]*pb.ServiceVerdict, 0, len(verdicts))
	for _, v := range verdicts {
		ns, name, _ := strings.Cut(v.Service, "/")
		out = append(out, &pb.ServiceVerdict{
			Namespace:        ns,
			Name:             name,
			PortName:         v.Port.Name,
			Protocol:         string(v.Port.Protocol),
			Port:             v.Port.Port,
			Frontends:        addrStrings(v.Frontends),
			Allowed:          v.Allowed,
			AllowedEndpoints: addrPortStrings(v.AllowedEndpoints),
			DeniedEndpoints:  addrPortStrings(v.DeniedEndpoints),
			Reason:           v.Reason,
		})
	}
	return out
}

func addrStrings(addrs []netip.Addr) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, a.String())
	}
	return out
}

func addrPortStrings(aps []netip.AddrPort) []string {
	out := make([]string, 0, len(aps))
	for _, ap := range aps {
		out = append(out, ap.String())
	}
	return out
}
