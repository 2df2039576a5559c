package syncer

import (
	"net/netip"

	"github.com/podwall/podwall/daemon/policy"
)

// Explain answers an explain query from exactly what the syncer compiles:
// the source's state merged with the local attachments (localState), the
// node addresses the dataplane allows into each local pod, and the
// firewalls in force, so that a verdict that differs from what is enforced
// says so. Its errors wrap policy.ErrExplainInvalid or
// policy.ErrExplainNotFound.
func (s *Syncer) Explain(q policy.ExplainQuery) (*policy.Explanation, error) {
	return policy.Explain(s.explainInput(), q)
}

// explainInput snapshots what Explain reads.
func (s *Syncer) explainInput() *policy.ExplainInput {
	s.mu.Lock()
	atts := make([]*attachment, 0, len(s.atts))
	for _, a := range s.atts {
		atts = append(atts, a)
	}
	s.mu.Unlock()
	state, locals := s.localState(atts)
	host := s.readHostAddrs()
	in := &policy.ExplainInput{
		State:       state,
		Local:       locals,
		NodeAddrs:   make(map[string][]netip.Addr, len(atts)),
		InForce:     make(map[string]*policy.Firewall, len(atts)),
		ApplyErrors: make(map[string]error),
	}
	for _, a := range atts {
		key := a.rec.Key()
		in.NodeAddrs[key] = nodeAddrs(a, host.addrs)
		a.mu.Lock()
		if a.applied != nil {
			in.InForce[key] = a.applied
		}
		if a.lastErr != nil {
			in.ApplyErrors[key] = a.lastErr
		}
		a.mu.Unlock()
	}
	return in
}
