package policy

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"go4.org/netipx"
)

// peerTable interns peers by content, so that rules with identical peers can
// be merged by comparing small integers, and identical prefix lists are
// stored once per Compile call.
type peerTable struct {
	ids   map[string]int
	bySet map[*netipx.IPSet]int
	peers []Peer
}

// internSet interns the peer of an address set; it returns -1 when the set
// is empty or nil.
func (t *peerTable) internSet(set *netipx.IPSet) int {
	if set == nil {
		return -1
	}
	if id, ok := t.bySet[set]; ok {
		return id
	}
	id := -1
	if prefixes := set.Prefixes(); len(prefixes) > 0 {
		id = t.intern(Peer{Prefixes: prefixes})
	}
	t.bySet[set] = id
	return id
}

// intern returns the id of p, adding it when new.
func (t *peerTable) intern(p Peer) int {
	key := peerKey(p)
	if id, ok := t.ids[key]; ok {
		return id
	}
	id := len(t.peers)
	t.ids[key] = id
	t.peers = append(t.peers, p)
	return id
}

// peerKey is a compact binary encoding of a peer's content.
func peerKey(p Peer) string {
	if p.Any {
		return "*"
	}
	var sb strings.Builder
	sb.Grow(len(p.Prefixes) * 18)
	for _, pfx := range p.Prefixes {
		a := pfx.Addr().As16()
		sb.Write(a[:])
		if pfx.Addr().Is4() {
			sb.WriteByte(4)
		} else {
			sb.WriteByte(6)
		}
		sb.WriteByte(byte(pfx.Bits()))
	}
	return sb.String()
}

// ruleSet accumulates the rules of one direction of one pod, merging rules
// with identical peers.
type ruleSet struct {
	byPeer map[int]*pendingRule
}

type pendingRule struct {
	allPorts bool
	ports    []Port
}

// add allows ports (every port when allPorts) to the peer with id peerID.
func (s *ruleSet) add(peerID int, allPorts bool, ports []Port) {
	if s.byPeer == nil {
		s.byPeer = make(map[int]*pendingRule)
	}
	r := s.byPeer[peerID]
	if r == nil {
		r = &pendingRule{}
		s.byPeer[peerID] = r
	}
	if allPorts {
		r.allPorts = true
		r.ports = nil
		return
	}
	if !r.allPorts {
		r.ports = append(r.ports, ports...)
	}
}

// rules returns the merged rules, sorted: the any-peer rule first, then by
// prefixes. A rule allowing every port from any peer makes every other rule
// redundant and is then the only one.
func (s *ruleSet) rules(peers *peerTable) []Rule {
	if len(s.byPeer) == 0 {
		return nil
	}
	out := make([]Rule, 0, len(s.byPeer))
	for id, r := range s.byPeer {
		peer := peers.peers[id]
		if peer.Any && r.allPorts {
			return []Rule{{Peer: peer}}
		}
		rule := Rule{Peer: peer}
		if !r.allPorts {
			rule.Ports = normalizePorts(r.ports)
		}
		out = append(out, rule)
	}
	slices.SortFunc(out, func(a, b Rule) int { return comparePeers(a.Peer, b.Peer) })
	return out
}

// comparePeers orders the any-peer first, then prefix lists
// lexicographically (IPv4 before IPv6, then by address, then by length).
func comparePeers(a, b Peer) int {
	if a.Any != b.Any {
		if a.Any {
			return -1
		}
		return 1
	}
	return slices.CompareFunc(a.Prefixes, b.Prefixes, func(x, y netip.Prefix) int {
		if c := x.Addr().Compare(y.Addr()); c != 0 {
			return c
		}
		return cmp.Compare(x.Bits(), y.Bits())
	})
}

// comparePorts orders ports by protocol, then port, then end port.
func comparePorts(a, b Port) int {
	if c := cmp.Compare(a.Protocol, b.Protocol); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Port, b.Port); c != 0 {
		return c
	}
	return cmp.Compare(a.EndPort, b.EndPort)
}

// normalizePorts returns ports sorted, without duplicates and without
// entries another entry covers (every port of a protocol covers that
// protocol's ports; a range covers the ports and ranges inside it).
func normalizePorts(ports []Port) []Port {
	out := slices.Clone(ports)
	for i := range out {
		if out[i].EndPort <= out[i].Port {
			out[i].EndPort = 0
		}
	}
	slices.SortFunc(out, comparePorts)
	out = slices.Compact(out)
	kept := make([]Port, 0, len(out))
	for i, p := range out {
		covered := false
		for j, q := range out {
			if i != j && portCovers(q, p) {
				covered = true
				break
			}
		}
		if !covered {
			kept = append(kept, p)
		}
	}
	return kept
}

// portCovers reports whether every port that q matches is matched by p
// (p covers q).
func portCovers(p, q Port) bool {
	if p.Protocol != q.Protocol {
		return false
	}
	if p.Port == 0 {
		return true
	}
	if q.Port == 0 {
		return false
	}
	return p.Port <= q.Port && portHigh(q) <= portHigh(p)
}

// portHigh is the last port of p's range.
func portHigh(p Port) int32 {
	if p.EndPort > p.Port {
		return p.EndPort
	}
	return p.Port
}
