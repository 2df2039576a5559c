package syncer

import (
	"context"
	"fmt"
	"sort"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
)

// PodView is what the status API shows of one attachment.
type PodView struct {
	Attachment checkpoint.Attachment
	// Firewall is the firewall in force (nil before the first apply).
	Firewall *policy.Firewall
	Err      error
	// Services are the Service verdicts of the last compile: for a pod
	// whose egress is isolated, every Service port (per IP family) with
	// the endpoints its rules allow and deny.
	Services []policy.ServiceVerdict
	// Rules are the allow rules of Firewall (both directions) and
	// SetMembers the members of its peer ipsets (both families, node
	// addresses not counted), counted when it was applied.
	Rules, SetMembers int
}

// firewallSize is what one firewall holds in the dataplane.
type firewallSize struct {
	rules, setMembers int
}

// sizeOf counts fw's allow rules and the members of the ipsets the
// dataplane holds for its peers, as its renderer lays them out (identical
// peers share a set, a /0 is two /1 halves). Without node addresses it
// renders no node set.
func sizeOf(fw *policy.Firewall) firewallSize {
	return firewallSize{
		rules:      len(fw.Ingress.Rules) + len(fw.Egress.Rules),
		setMembers: dataplane.SetMembers(dataplane.Spec{Firewall: fw}),
	}
}

// Pods returns every attachment, sorted by namespace, name and key.
func (s *Syncer) Pods() []PodView {
	s.mu.Lock()
	atts := make([]*attachment, 0, len(s.atts))
	for _, a := range s.atts {
		atts = append(atts, a)
	}
	s.mu.Unlock()
	views := make([]PodView, 0, len(atts))
	for _, a := range atts {
		a.mu.Lock()
		views = append(views, PodView{Attachment: a.rec, Firewall: a.applied, Err: a.lastErr, Services: servicesOf(a),
			Rules: a.size.rules, SetMembers: a.size.setMembers})
		a.mu.Unlock()
	}
	sort.Slice(views, func(i, j int) bool {
		x, y := views[i].Attachment, views[j].Attachment
		if x.Namespace != y.Namespace {
			return x.Namespace < y.Namespace
		}
		if x.Name != y.Name {
			return x.Name < y.Name
		}
		return x.Key() < y.Key()
	})
	return views
}

// Inspect returns the rules in force in an attachment's netns.
func (s *Syncer) Inspect(ctx context.Context, key string) (*dataplane.Ruleset, error) {
	s.mu.Lock()
	a, ok := s.atts[key]
	s.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("attachment %s: %w", key, ErrNotFound)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return s.opts.Data.Inspect(ctx, a.rec.Netns)
}

// Stats returns the sync counters.
func (s *Syncer) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Problems = append([]string(nil), s.stats.Problems...)
	return st
}

// State returns the cluster state as the compiler sees it (local pods with
// their CNI addresses) and the local pods.
func (s *Syncer) State() (*policy.State, []policy.LocalPod) {
	s.mu.Lock()
	atts := make([]*attachment, 0, len(s.atts))
	for _, a := range s.atts {
		atts = append(atts, a)
	}
	s.mu.Unlock()
	return s.localState(atts)
}
