package dataplane

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// BenchmarkApplyManyPods is a peer change as podwalld applies it: one
// member of a 3000-member peer set (the same slices in every pod, as the
// compiler hands them out) changes in each of 110 pod netns
// (pw-bnmp-<random>-<i>), eight Applies at a time. One op is the 110
// Applies. It reports; it asserts nothing about time.
func BenchmarkApplyManyPods(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: creates network namespaces")
	}
	id := randomID(b)
	var paths []string
	for i := range 110 {
		name := fmt.Sprintf("pw-bnmp-%s-%d", id, i)
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			b.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		b.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
				b.Errorf("ip netns del %s: %v: %s", name, err, out)
			}
		})
		paths = append(paths, "/run/netns/"+name)
	}
	specs := [2]Spec{largeSpec(3000, false, false), largeSpec(3000, false, true)}
	m := newManager(b)
	ctx := context.Background()
	applyAll := func(spec Spec) {
		var wg sync.WaitGroup
		work := make(chan string)
		for range 8 {
			wg.Go(func() {
				for p := range work {
					if err := m.Apply(ctx, p, spec); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for _, p := range paths {
			work <- p
		}
		close(work)
		wg.Wait()
	}
	applyAll(specs[0])
	i := 1
	for b.Loop() {
		applyAll(specs[i%2])
		i++
	}
}
