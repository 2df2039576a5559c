package syncer

import (
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podwall/podwall/daemon/checkpoint"
)

// An ADD writes the checkpoint while it applies the firewall. When the
// write fails, the ADD fails, the attachment is not kept, and its rules are
// removed again; the attachments added before stay, on disk too.
func TestAddFailsWhenTheCheckpointCannotBeWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	store, err := checkpoint.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBed{data: newFakeDataplane(), src: newFakeSource(shopState(t)), store: store, nodeAddrs: []netip.Addr{testNodeAddr}}
	tb.sync = New(Options{
		NodeName: testNode, Source: tb.src, Data: tb.data, Store: store,
		Log:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError + 1})),
		NodeAddrs: func() ([]netip.Addr, error) { return tb.nodeAddrs, nil },
	})
	tb.add(t, web)
	if st := tb.data.netns[web.Netns]; st == nil || st.lastOp != "apply" {
		t.Fatalf("web's firewall was not applied: %+v", st)
	}

	// The state directory becomes a file: writing the checkpoint fails.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err = tb.sync.Add(t.Context(), db)
	if err == nil || !strings.Contains(err.Error(), "save checkpoint") {
		t.Fatalf("Add with an unwritable checkpoint = %v, want a save checkpoint error", err)
	}
	if st := tb.data.netns[db.Netns]; st != nil && (st.spec != nil || st.lastOp != "remove") {
		t.Errorf("db's netns after the failed ADD: last %q, firewall %v; want none left", st.lastOp, st.spec)
	}
	checkAttached(t, tb.sync, web)

	// Writable again: the next ADD records both.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if tb.store, err = checkpoint.Open(dir); err != nil {
		t.Fatal(err)
	}
	tb.add(t, db)
	checkAttached(t, tb.sync, web, db)
	checkCheckpoint(t, tb.store, web, db)
}

// Snapshots written out of order never put an older set of attachments
// back on disk.
func TestCheckpointWritesKeepTheNewest(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web)
	tb.sync.mu.Lock()
	older := tb.sync.snapshotLocked() // web
	a, err := newAttachment(db)
	if err != nil {
		t.Fatal(err)
	}
	tb.sync.atts[db.Key()] = a
	newer := tb.sync.snapshotLocked() // web and db
	tb.sync.mu.Unlock()
	if err := tb.sync.write(newer); err != nil {
		t.Fatal(err)
	}
	if err := tb.sync.write(older); err != nil {
		t.Fatal(err)
	}
	checkCheckpoint(t, tb.store, web, db)
}
