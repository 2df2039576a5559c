package syncer

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
)

// driftCounter is an Observer that also counts drift repairs.
type driftCounter struct {
	nopObserver
	repaired, failed int
}

func (d *driftCounter) DriftRepaired(err error) {
	if err != nil {
		d.failed++
		return
	}
	d.repaired++
}

func driftOf(netns string) error {
	return &dataplane.DriftError{Pod: "shop/x", Netns: netns, Differences: []string{`v4: missing "-A PODWALL-INGRESS -i lo -j ACCEPT"`}}
}

func TestRepairDrift(t *testing.T) {
	tests := []struct {
		name string
		// checkErr is what the dataplane's Check says about db's netns.
		checkErr     error
		wantRepaired int
		wantApplies  int // applies in db's netns by RepairDrift
		wantAttached bool
	}{
		{name: "no drift", wantAttached: true},
		{name: "drift", checkErr: driftOf(db.Netns), wantRepaired: 1, wantApplies: 1, wantAttached: true},
		{name: "check fails otherwise", checkErr: errors.New("iptables-nft-save: exit status 1"), wantAttached: true},
		{name: "netns gone", checkErr: fmt.Errorf("open: %w", dataplane.ErrNetnsGone), wantAttached: false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTestBed(t, shopState(t))
			obs := &driftCounter{}
			tb.sync.opts.Observer = obs
			tb.add(t, web, db, client)
			tb.drainTrigger() // the ADDs' trigger
			before, _ := tb.data.applied(db.Netns)
			applies := tb.data.count("apply", db.Netns)
			tb.data.failCheck(db.Netns, tc.checkErr)

			if got := tb.sync.RepairDrift(t.Context()); got != tc.wantRepaired {
				t.Errorf("RepairDrift repaired %d, want %d", got, tc.wantRepaired)
			}
			if got := tb.data.count("apply", db.Netns) - applies; got != tc.wantApplies {
				t.Errorf("%d applies in db's netns, want %d", got, tc.wantApplies)
			}
			if obs.repaired != tc.wantRepaired || obs.failed != 0 {
				t.Errorf("observer told %d repaired, %d failed; want %d, 0", obs.repaired, obs.failed, tc.wantRepaired)
			}
			// Every attachment was checked against what was applied to it.
			for _, rec := range []struct{ netns string }{{web.Netns}, {db.Netns}, {client.Netns}} {
				c, ok := tb.data.lastCall("check", rec.netns)
				want, _ := tb.data.applied(rec.netns)
				if !ok || !reflect.DeepEqual(c.Spec, want) {
					t.Errorf("%s: checked against %s, want %s", rec.netns, describeSpec(c.Spec), describeSpec(want))
				}
			}
			if tc.wantApplies > 0 {
				after, _ := tb.data.applied(db.Netns)
				if !reflect.DeepEqual(after, before) {
					t.Errorf("repair applied %s, want the firewall in force before, %s", describeSpec(after), describeSpec(before))
				}
			}
			if tc.wantAttached {
				checkAttached(t, tb.sync, web, db, client)
				checkCheckpoint(t, tb.store, web, db, client)
				return
			}
			checkAttached(t, tb.sync, web, client)
			checkCheckpoint(t, tb.store, web, client)
			select {
			case <-tb.sync.trigger:
			default:
				t.Error("forgetting a pod whose netns is gone did not trigger a sync")
			}
		})
	}
}

// TestRepairDriftSkipsFailedApplies: a pod whose last apply failed is not
// checked (SyncAll retries it), and a failed repair is left to SyncAll.
func TestRepairDriftSkipsFailedApplies(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	obs := &driftCounter{}
	tb.sync.opts.Observer = obs
	tb.add(t, web, db)
	tb.data.failCheck(db.Netns, driftOf(db.Netns))
	tb.data.failApply(db.Netns, errors.New("boom"))
	if got := tb.sync.RepairDrift(t.Context()); got != 0 {
		t.Errorf("RepairDrift repaired %d, want 0 (the apply fails)", got)
	}
	if obs.failed != 1 {
		t.Errorf("observer told %d failed repairs, want 1", obs.failed)
	}
	checks := tb.data.count("check", db.Netns)
	tb.sync.RepairDrift(t.Context())
	if n := tb.data.count("check", db.Netns); n != checks {
		t.Errorf("a pod whose last apply failed was checked again (%d checks, want %d)", n, checks)
	}
	// SyncAll retries it.
	tb.data.failApply(db.Netns, nil)
	tb.data.failCheck(db.Netns, nil)
	applies := tb.data.count("apply", db.Netns)
	tb.sync.SyncAll(t.Context())
	if n := tb.data.count("apply", db.Netns); n != applies+1 {
		t.Errorf("SyncAll applied %d times after the failed repair, want once", n-applies)
	}
}

// TestRunRepairsDriftEveryResync: the sync loop repairs drift on its
// periodic tick, without any trigger.
func TestRunRepairsDriftEveryResync(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db)
	applies := tb.data.count("apply", db.Netns)
	tb.data.failCheck(db.Netns, driftOf(db.Netns))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { tb.sync.Run(ctx, 20*time.Millisecond); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for tb.data.count("apply", db.Netns) == applies {
		if time.Now().After(deadline) {
			t.Fatal("the sync loop did not re-apply the drifted firewall")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestoreDropsGoneBeforeReturning: an attachment whose netns vanished
// while the daemon was down (a missed DEL) is forgotten by Restore, and
// before Restore returns (before ADDs are served) no other pod allows its
// address any more: IPAM may already have given it to a new pod.
func TestRestoreDropsGoneBeforeReturning(t *testing.T) {
	state := shopState(t)
	state.Pods = append(state.Pods, sourcePod("gone", map[string]string{"app": "web"}))
	tb := newTestBed(t, state)
	gone := attachmentFor("gone", "10.1.0.99")
	if err := tb.store.Save([]checkpoint.Attachment{web, db, client, gone}); err != nil {
		t.Fatal(err)
	}
	tb.data.failApply(gone.Netns, fmt.Errorf("open %s: %w", gone.Netns, dataplane.ErrNetnsGone))
	if err := tb.sync.Restore(t.Context()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	got, _ := tb.data.applied(db.Netns)
	if ingressAllows(got.Firewall, "10.1.0.99", 5432) {
		t.Errorf("after Restore, db still allows the address of the pod whose netns is gone: %s", describeSpec(got))
	}
	if !ingressAllows(got.Firewall, "10.1.0.10", 5432) {
		t.Errorf("after Restore, db does not allow web: %s", describeSpec(got))
	}
	checkAttached(t, tb.sync, web, db, client)
	checkCheckpoint(t, tb.store, web, db, client)
}

// TestDriftPassYieldsToChanges: a change that arrives while Run's periodic
// drift pass checks the pods is in force before the pass checks the next
// pod, not after the whole pass (half a second at 110 pods).
func TestDriftPassYieldsToChanges(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db, client)
	tb.drainTrigger() // the ADDs' trigger
	if spec, _ := tb.data.applied(db.Netns); !spec.Firewall.Ingress.Isolated {
		t.Fatal("db's ingress is not isolated to begin with")
	}
	open := shopState(t)
	open.Policies = nil // db's ingress no longer isolated
	var checks atomic.Int32
	secondCheck := make(chan bool, 1)
	tb.data.mu.Lock()
	tb.data.beforeCheck = func(string) {
		switch checks.Add(1) {
		case 1:
			tb.src.setState(open)
			tb.sync.Trigger()
		case 2:
			spec, _ := tb.data.applied(db.Netns)
			secondCheck <- !spec.Firewall.Ingress.Isolated
		}
	}
	tb.data.mu.Unlock()

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tb.sync.Run(ctx, 20*time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	select {
	case applied := <-secondCheck:
		if !applied {
			t.Error("the change was not applied before the drift pass checked the next pod")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drift pass never checked a second pod")
	}
}
