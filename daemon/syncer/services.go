package syncer

import "github.com/podwall/podwall/daemon/policy"

// recordServices keeps, for each compiled attachment, the Service verdicts
// of the compile, for the status API.
func (s *Syncer) recordServices(targets []*attachment, res *policy.Result) {
	for _, a := range targets {
		key := a.rec.Key()
		if _, ok := res.Firewalls[key]; !ok {
			continue // deleted or replaced meanwhile
		}
		verdicts := res.Services[key]
		a.services.Store(&verdicts)
	}
}

// servicesOf returns the Service verdicts recorded at a's last compile.
func servicesOf(a *attachment) []policy.ServiceVerdict {
	if p := a.services.Load(); p != nil {
		return *p
	}
	return nil
}
