package kube

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A change after a quiet spell is reported without waiting for a burst to
// settle; a change right behind it waits. The settle delay here is an hour,
// so a leading change that waited for it would never be reported in time.
func TestChangeAfterQuietSpellIsReportedAtOnce(t *testing.T) {
	client := fake.NewClientset()
	src := New(clientOf(client), testNode, testLogger(t))
	src.settleDelay = time.Hour
	src.maxNotifyDelay = time.Hour
	var calls atomic.Int64
	ctx := runSynced(t, src, func() { calls.Add(1) })
	waitFor(t, "the first changed call", func() bool { return calls.Load() == 1 })

	if _, err := client.CoreV1().Namespaces().Create(ctx, newNamespace("first", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the leading change reported", func() bool { return calls.Load() == 2 })

	// Within the settle delay of the first: it lands in the state but waits.
	if _, err := client.CoreV1().Namespaces().Create(ctx, newNamespace("second", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second namespace in the state", func() bool { return len(src.State().Namespaces) == 2 })
	time.Sleep(200 * time.Millisecond)
	if n := calls.Load(); n != 2 {
		t.Errorf("changed() called %d times after a change inside the settle delay, want 2 (it must wait for the burst)", n)
	}
}

// runSynced runs src with changed until the test ends, waits for its caches
// to sync, and returns the context it runs under.
func runSynced(t *testing.T, src *Source, changed func()) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		src.Run(ctx, changed)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	defer wcancel()
	if err := src.WaitForSync(wctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}
