package controlplane

import (
	"context"
	"io"
	"log"
	"os"
	"testing"
	"time"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
)

var bins = &harness.Bins{TempPrefix: "podwall-bncp-bin-"}

func TestMain(m *testing.M) {
	// The netlink library logs each ipset attribute it does not decode.
	log.SetOutput(io.Discard)
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// TestRunSmall runs the benchmark on a small cluster (300 pods, 3 local
// ones), one round of each measurement. Every policy change is checked to
// start from the opposite state (the prober's connection denied before an
// opening, allowed before a closing), so the run fails if enforcement does
// not work.
func TestRunSmall(t *testing.T) {
	cluster.RequireBinaries(t, cluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := Run(ctx, Options{
		BinDir: bins.Dir(t), CNIBinDir: bed.CNIBinDirForTest(t), OutDir: t.TempDir(),
		Scale:        Scale{Pods: 300, Namespaces: 12, Policies: 20, Services: 10, LocalPods: 3, RemoteNodes: 3},
		PolicyRounds: 1, PolicyAllRounds: 1, PeerRounds: 1, NamespaceRounds: 1, AddSamples: 2, ProfileSeconds: 5,
		ChangeTimeout: 30 * time.Second, Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, c := range res.Changes {
		kinds[c.Kind]++
		if c.ObservedMs < 0 {
			t.Errorf("%s %s (%d pods) was not observed", c.Kind, c.Op, c.Affected)
		}
	}
	// Groups larger than the 3 local pods are skipped: only the 1-pod one.
	want := map[string]int{"policy-one": 4, "policy-all": 4, "peer": 4, "namespace": 2}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%d %s changes, want %d (all: %v)", kinds[k], k, n, kinds)
		}
	}
	if len(res.Add) != 2 || res.Add[0].PodwallMs <= 0 || res.Add[0].BaseMs <= 0 {
		t.Errorf("ADD samples = %+v", res.Add)
	}
	if len(res.Process) == 0 || len(res.Scrapes) != 3 {
		t.Errorf("%d process samples, %d scrapes (want 3)", len(res.Process), len(res.Scrapes))
	}
	if res.CPUProfile == "" || res.HeapProfile == "" {
		t.Errorf("profiles: cpu %q, heap %q; problems %v", res.CPUProfile, res.HeapProfile, res.Problems)
	}
}
