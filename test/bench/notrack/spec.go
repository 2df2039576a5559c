package notrack

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
	corev1 "k8s.io/api/core/v1"
)

// remotePods is where BenchSpec's remote peers come from: every second
// address, so that no two merge into a wider prefix.
var remotePods = netip.MustParsePrefix("10.218.64.0/18")

// MaxRemote is the most remote peers BenchSpec can hold.
const MaxRemote = 1 << (32 - 18 - 1)

// BenchSpec is the firewall of a pod of the datapath benchmark's namespace,
// which its policy selects whole: ingress isolated, the seed's three ipBlock
// rules (14.215/16 on 9090, 14.216/16 on 8080, 14.217/16 on 80) and two
// selector rules, every pod of the namespace (server, client and the remote
// pods) on 80 and 8080, and its role=client pods (the client and every
// second remote pod) on 80. The node's gateway is a node address.
func BenchSpec(pod string, server, client netip.Addr, remote int) (dataplane.Spec, error) {
	if remote < 0 || remote > MaxRemote {
		return dataplane.Spec{}, fmt.Errorf("bench spec: %d remote pods, want 0..%d", remote, MaxRemote)
	}
	all := []netip.Prefix{host(server), host(client)}
	clients := []netip.Prefix{host(client)}
	base := remotePods.Addr().As4()
	for i := range remote {
		n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		n += uint32(2 * i)
		p := host(netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}))
		all = append(all, p)
		if i%2 == 0 {
			clients = append(clients, p)
		}
	}
	fw := &policy.Firewall{Ingress: policy.Direction{
		Isolated: true,
		Policies: []string{"bench/bench-select-all"},
		Rules: []policy.Rule{
			{Peer: peer(netip.MustParsePrefix("14.215.0.0/16")), Ports: tcp(9090)},
			{Peer: peer(netip.MustParsePrefix("14.216.0.0/16")), Ports: tcp(8080)},
			{Peer: peer(netip.MustParsePrefix("14.217.0.0/16")), Ports: tcp(80)},
			{Peer: peer(all...), Ports: tcp(80, 8080)},
			{Peer: peer(clients...), Ports: tcp(80)},
		},
	}}
	return dataplane.Spec{Pod: pod, Firewall: fw, NodeAddrs: []netip.Addr{Gateway}}, nil
}

// SemanticSpec is the server pod's firewall of the semantic checks: ingress
// isolated, admitting client on TCP 80 and UDP 5353; egress isolated,
// admitting egressPeer on TCP 8080 and UDP 5353. It has no node addresses,
// so that an ICMP error from the host (the gateway) is judged like one from
// a router beyond the node.
func SemanticSpec(client, egressPeer netip.Addr) dataplane.Spec {
	udp := policy.Port{Protocol: corev1.ProtocolUDP, Port: 5353}
	fw := &policy.Firewall{
		Ingress: policy.Direction{Isolated: true, Policies: []string{"sem/server"}, Rules: []policy.Rule{
			{Peer: peer(host(client)), Ports: append(tcp(80), udp)},
		}},
		Egress: policy.Direction{Isolated: true, Policies: []string{"sem/server"}, Rules: []policy.Rule{
			{Peer: peer(host(egressPeer)), Ports: append(tcp(8080), udp)},
		}},
	}
	return dataplane.Spec{Pod: "sem/server", Firewall: fw}
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func peer(ps ...netip.Prefix) policy.Peer {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return policy.Peer{Prefixes: slices.Compact(ps)}
}

func tcp(ports ...int32) []policy.Port {
	var out []policy.Port
	for _, p := range ports {
		out = append(out, policy.Port{Protocol: corev1.ProtocolTCP, Port: p})
	}
	return out
}
