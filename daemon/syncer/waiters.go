package syncer

import (
	"context"
	gosync "sync"
)

// syncWaiters coalesces the syncs that DEL and GC wait for. Each caller
// waits for one SyncAll that started after it changed the attachments;
// callers that arrive while that sync runs share the next one, so 110
// parallel DELs cost a few syncs, not 110 concurrent ones. The sync runs
// to its end even when every caller has given up waiting (the plugin's DEL
// deadline): the other pods must stop allowing the removed addresses
// anyway, and cancelling their applies halfway would only log errors and
// leave the work to a later sync.
type syncWaiters struct {
	mu      gosync.Mutex
	running bool
	waiting []chan struct{}
}

// syncOthers waits until a SyncAll that started after this call has
// finished, starting one if none is about to, or until ctx ends (the sync
// goes on then). Callers change the attachments first.
func (s *Syncer) syncOthers(ctx context.Context) error {
	done := make(chan struct{})
	w := &s.waiters
	w.mu.Lock()
	w.waiting = append(w.waiting, done)
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		go s.runWaitedSyncs(context.WithoutCancel(ctx))
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runWaitedSyncs syncs until nobody waits: each round serves the callers
// that were waiting when it started.
func (s *Syncer) runWaitedSyncs(ctx context.Context) {
	w := &s.waiters
	for {
		w.mu.Lock()
		batch := w.waiting
		w.waiting = nil
		if len(batch) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		s.SyncAll(ctx)
		for _, done := range batch {
			close(done)
		}
	}
}
