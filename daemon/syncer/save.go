package syncer

import (
	gosync "sync"

	"github.com/podwall/podwall/daemon/checkpoint"
)

// saver orders the checkpoint's writes: every snapshot of the attachments
// is numbered when it is taken (under Syncer.mu), and a snapshot older than
// the last one written is not written, since that one holds every change
// the older one had and those made since. So a snapshot may be written
// outside Syncer.mu — an ADD writes it while it compiles and applies the
// pod's firewall — and writes that finish out of order never put an older
// set of attachments back on disk.
type saver struct {
	taken uint64 // snapshots numbered; under Syncer.mu

	mu      gosync.Mutex // serialises writes; taken after Syncer.mu, never before
	written uint64       // the newest snapshot on disk
}

// snapshot is the attachments at one moment, numbered.
type snapshot struct {
	version uint64
	recs    []checkpoint.Attachment
}

// snapshotLocked takes a snapshot of the attachments; s.mu must be held.
func (s *Syncer) snapshotLocked() snapshot {
	s.saves.taken++
	recs := make([]checkpoint.Attachment, 0, len(s.atts))
	for _, a := range s.atts {
		recs = append(recs, a.rec)
	}
	return snapshot{version: s.saves.taken, recs: recs}
}

// write saves snap unless a newer snapshot is on disk already.
func (s *Syncer) write(snap snapshot) error {
	s.saves.mu.Lock()
	defer s.saves.mu.Unlock()
	if snap.version <= s.saves.written {
		return nil
	}
	if err := s.opts.Store.Save(snap.recs); err != nil {
		return err
	}
	s.saves.written = snap.version
	return nil
}

// saveLocked writes the attachments as they are; s.mu must be held.
func (s *Syncer) saveLocked() error {
	return s.write(s.snapshotLocked())
}
