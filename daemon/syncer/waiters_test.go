package syncer

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podwall/podwall/daemon/checkpoint"
)

// TestDelSyncGoesOnWhenTheCallerGivesUp: a DEL whose caller stops waiting
// (the plugin's deadline) returns, and the other pods are still synced:
// db stops allowing the deleted web's address.
func TestDelSyncGoesOnWhenTheCallerGivesUp(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db)
	release := make(chan struct{})
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	var once sync.Once
	tb.data.setBeforeApply(func(string) { once.Do(func() { <-release }) })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- tb.sync.Del(ctx, web.Key(), web.Netns) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Del: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Del did not return when its caller gave up")
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := tb.data.applied(db.Netns)
		if !ingressAllows(got.Firewall, "10.1.0.10", 5432) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("db still allows the deleted web's address: %s", describeSpec(got))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestParallelDelsShareSyncs: DELs that arrive while a sync runs share the
// next one, and each returns only after a sync that started after it.
func TestParallelDelsShareSyncs(t *testing.T) {
	const pods = 40
	state := shopState(t)
	var recs []checkpoint.Attachment
	for i := range pods {
		name := fmt.Sprintf("p%02d", i)
		state.Pods = append(state.Pods, sourcePod(name, map[string]string{"app": "web"}))
		recs = append(recs, attachmentFor(name, fmt.Sprintf("10.1.1.%d", i+1)))
	}
	tb := newTestBed(t, state)
	tb.add(t, recs...)
	tb.add(t, db)
	// Slow applies, so that the DELs pile up behind the first sync.
	tb.data.setBeforeApply(func(string) { time.Sleep(5 * time.Millisecond) })
	syncs := tb.sync.Stats().Syncs
	var wg sync.WaitGroup
	for _, rec := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tb.sync.Del(t.Context(), rec.Key(), rec.Netns); err != nil {
				t.Errorf("Del %s: %v", rec.Key(), err)
			}
			// When Del returns, db no longer allows this pod's address.
			got, _ := tb.data.applied(db.Netns)
			if ingressAllows(got.Firewall, strings.TrimSuffix(rec.IPs[0], "/32"), 5432) {
				t.Errorf("Del %s returned while db still allows its address", rec.Name)
			}
		}()
	}
	wg.Wait()
	n := tb.sync.Stats().Syncs - syncs
	t.Logf("%d parallel DELs: %d syncs", pods, n)
	if n >= pods/2 {
		t.Errorf("%d parallel DELs ran %d syncs; they should share them", pods, n)
	}
}
