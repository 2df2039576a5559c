package syncer

import (
	"fmt"
	"net/netip"
	gosync "sync"
	"testing"
	"time"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/policy"
)

// manyPods returns n attachments of pods shop/p<i> in 10.208.0.0/16.
func manyPods(n int) []checkpoint.Attachment {
	recs := make([]checkpoint.Attachment, n)
	for i := range recs {
		recs[i] = attachmentFor(fmt.Sprintf("p%03d", i), fmt.Sprintf("10.208.%d.%d", i/250, i%250+1))
	}
	return recs
}

// concurrencyGauge counts the applies in flight in the fake dataplane and
// remembers the most it saw at once.
type concurrencyGauge struct {
	mu       gosync.Mutex
	inFlight int
	peak     int
	perNetns map[string]int // applies in flight per netns
	overlap  []string       // netns with two applies in flight at once
}

func (g *concurrencyGauge) enter(netns string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight++
	g.peak = max(g.peak, g.inFlight)
	g.perNetns[netns]++
	if g.perNetns[netns] > 1 {
		g.overlap = append(g.overlap, netns)
	}
}

func (g *concurrencyGauge) leave(netns string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight--
	g.perNetns[netns]--
}

func TestSyncAllAppliesPodsInParallel(t *testing.T) {
	tb := newTestBed(t, &policy.State{})
	recs := manyPods(3 * maxParallelApplies)
	tb.add(t, recs...)

	// Every apply waits until maxParallelApplies applies are in flight at
	// once (or, once, a generous deadline passes, so that a sequential
	// syncer fails the test instead of hanging it).
	g := &concurrencyGauge{perNetns: map[string]int{}}
	full := make(chan struct{})
	var fullOnce gosync.Once
	tb.data.setBeforeApply(func(netns string) {
		g.enter(netns)
		defer g.leave(netns)
		g.mu.Lock()
		reached := g.inFlight >= maxParallelApplies
		g.mu.Unlock()
		if reached {
			fullOnce.Do(func() { close(full) })
		}
		select {
		case <-full:
		case <-time.After(5 * time.Second):
			fullOnce.Do(func() { close(full) }) // never reached: stop waiting
		}
	})
	// A new node address changes every pod's firewall.
	tb.nodeAddrs = []netip.Addr{netip.MustParseAddr("10.250.0.2")}
	before := tb.data.totalApplies()
	tb.sync.SyncAll(t.Context())

	if g.peak != maxParallelApplies {
		t.Errorf("at most %d applies in flight at once, want %d", g.peak, maxParallelApplies)
	}
	if len(g.overlap) > 0 {
		t.Errorf("two applies in flight at once for %v", g.overlap)
	}
	after := tb.data.totalApplies()
	for _, rec := range recs {
		if after[rec.Netns] != before[rec.Netns]+1 {
			t.Errorf("%s: %d applies, want %d", rec.Name, after[rec.Netns], before[rec.Netns]+1)
		}
	}
	if st := tb.sync.Stats(); st.SyncErrors != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// BenchmarkSyncAllSlowDataplane syncs 110 pods whose firewalls all changed
// through a dataplane whose every Apply waits 2 ms (as an apply waits for
// the ipset and iptables-nft-restore processes).
func BenchmarkSyncAllSlowDataplane(b *testing.B) {
	tb := newTestBed(b, &policy.State{})
	tb.add(b, manyPods(110)...)
	tb.data.setBeforeApply(func(string) { time.Sleep(2 * time.Millisecond) })
	addrs := [][]netip.Addr{{netip.MustParseAddr("10.250.0.2")}, {netip.MustParseAddr("10.250.0.3")}}
	i := 0
	for b.Loop() {
		tb.nodeAddrs = addrs[i%2] // every pod's firewall changes
		i++
		tb.sync.SyncAll(b.Context())
	}
}

// syncSignal tells a channel about every finished sync.
type syncSignal chan struct{}

func (c syncSignal) SyncDone(time.Duration, error)  { c <- struct{}{} }
func (c syncSignal) ApplyDone(time.Duration, error) {}

// BenchmarkTriggerToSync measures how long the sync loop takes from an idle
// Trigger to the end of the sync it starts (no pods attached: the time is the
// loop's own latency).
func BenchmarkTriggerToSync(b *testing.B) {
	tb := newTestBed(b, &policy.State{})
	done := make(syncSignal)
	tb.sync.opts.Observer = done
	go tb.sync.Run(b.Context(), time.Hour)
	for b.Loop() {
		tb.sync.Trigger()
		<-done
	}
}
