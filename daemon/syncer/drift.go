package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/podwall/podwall/daemon/dataplane"
)

// DriftObserver is implemented by an Observer that also wants to know about
// each firewall the periodic drift check found changed and re-applied. Its
// method is called with the attachment's lock held: it must be quick.
type DriftObserver interface {
	// DriftRepaired reports one drifted firewall and the error of
	// re-applying it (nil: repaired).
	DriftRepaired(err error)
}

// RepairDrift compares, for every attachment, what is in force in its netns
// with the firewall last applied there (the dataplane's Check: rules,
// jumps and sets), and re-applies that firewall where they differ, e.g.
// after someone flushed or edited podwall's chains or sets by hand. Pods
// whose last apply failed or that were never applied are left to SyncAll,
// which retries them. An attachment whose netns is gone is forgotten, as
// SyncAll does, and the others are re-synced so they stop allowing its
// addresses. It returns how many firewalls it repaired. Run calls it after
// the sync of every resync period.
func (s *Syncer) RepairDrift(ctx context.Context) int {
	return s.repairDrift(ctx, nil)
}

// repairDrift is RepairDrift, calling between (when not nil) before each
// attachment's check: Run syncs there when a change is waiting, so that a
// pass over every pod (each check reads the pod's rules and sets back from
// its netns, thousands of set members for a large peer set) does not hold
// back the propagation of a change by more than one pod's check.
func (s *Syncer) repairDrift(ctx context.Context, between func()) int {
	start := time.Now()
	s.mu.Lock()
	atts := make([]*attachment, 0, len(s.atts))
	for _, a := range s.atts {
		atts = append(atts, a)
	}
	s.mu.Unlock()

	var repaired int
	var gone bool
	for _, a := range atts {
		if ctx.Err() != nil {
			break
		}
		if between != nil {
			between()
		}
		ok, err := s.repairAttachment(ctx, a)
		if ok {
			repaired++
		}
		switch {
		case err == nil:
		case errors.Is(err, dataplane.ErrNetnsGone):
			dropped, saveErr := s.dropGone(a)
			gone = gone || dropped
			if saveErr != nil {
				s.log.Error("save checkpoint", "err", saveErr)
			}
		case ctx.Err() != nil:
			// Stopping: not a finding.
		default:
			s.log.Warn("drift check", "pod", a.rec.Namespace+"/"+a.rec.Name, "containerID", a.rec.ContainerID, "err", err)
		}
	}
	if gone {
		s.Trigger()
	}
	level := slog.LevelDebug
	if repaired > 0 {
		level = slog.LevelInfo
	}
	s.log.Log(ctx, level, "drift check", "pods", len(atts), "repaired", repaired, "duration", time.Since(start))
	return repaired
}

// repairAttachment checks one attachment's netns against the firewall last
// applied to it and re-applies that firewall on drift. It reports whether
// it repaired something.
func (s *Syncer) repairAttachment(ctx context.Context, a *attachment) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.retired || a.applied == nil || a.lastErr != nil {
		return false, nil
	}
	pod := a.rec.Namespace + "/" + a.rec.Name
	spec := dataplane.Spec{Pod: pod, Firewall: a.applied, NodeAddrs: a.nodeAddr}
	err := s.opts.Data.Check(ctx, a.rec.Netns, spec)
	var drift *dataplane.DriftError
	if !errors.As(err, &drift) {
		return false, err
	}
	s.log.Warn("firewall drifted from what podwall applied; re-applying", "pod", pod,
		"containerID", a.rec.ContainerID, "netns", a.rec.Netns, "differences", len(drift.Differences), "drift", drift.Error())
	start := time.Now()
	err = s.opts.Data.Apply(ctx, a.rec.Netns, spec)
	s.opts.Observer.ApplyDone(time.Since(start), err)
	if o, ok := s.opts.Observer.(DriftObserver); ok {
		o.DriftRepaired(err)
	}
	if err != nil {
		// SyncAll retries a failed apply on its next round.
		a.lastErr = err
		return false, fmt.Errorf("repair firewall of %s: %w", pod, err)
	}
	s.log.Info("firewall repaired", "pod", pod, "containerID", a.rec.ContainerID,
		"duration", time.Since(start).Round(time.Microsecond))
	return true, nil
}

// dropGone forgets a, whose netns is gone (the runtime removed the sandbox
// without a DEL reaching the daemon), if it is still attached; it reports
// whether it dropped it.
func (s *Syncer) dropGone(a *attachment) (bool, error) {
	dropped, err := s.forget(a.rec.Key(), a)
	if dropped {
		a.retire()
		s.opts.Data.Forget(a.rec.Netns)
		s.log.Warn("netns gone, forgetting attachment", "pod", a.rec.Namespace+"/"+a.rec.Name,
			"containerID", a.rec.ContainerID, "netns", a.rec.Netns)
	}
	return dropped, err
}

// resyncAfterDrops syncs again if the sync before it asked for another one,
// e.g. because it forgot attachments whose netns is gone (their DEL was
// missed while the daemon was down). Those were forgotten only after the
// other pods had been compiled with them: without this second sync, the
// other pods would still allow the forgotten pods' addresses when the
// socket opens, and a new pod given one of those addresses by IPAM could
// inherit that allowance until the sync loop's first round.
func (s *Syncer) resyncAfterDrops(ctx context.Context) {
	select {
	case <-s.trigger:
		s.SyncAll(ctx)
	default:
	}
}
