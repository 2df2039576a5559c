package cluster

import (
	"context"
	"os"
	"testing"
)

// RequiredEnv names the environment variable that, set to 1 (as CI does),
// turns a missing binary from a skipped test into a failed one.
const RequiredEnv = "PODWALL_KUBE_REQUIRED"

// RequireBinaries skips the test unless it runs as root and the binaries
// opts needs are there (see FindBinaries), saying how to build them; with
// $PODWALL_KUBE_REQUIRED=1 missing binaries fail the test instead.
func RequireBinaries(t testing.TB, opts Options) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (host routes, network namespaces)")
	}
	if _, err := FindBinaries(opts); err != nil {
		if os.Getenv(RequiredEnv) == "1" {
			t.Fatalf("%v (and %s=1)", err, RequiredEnv)
		}
		t.Skipf("kubernetes binaries not built: %v", err)
	}
}

// StartForTest is RequireBinaries and Start, failing the test on error. When
// the test ends the cluster is stopped; if the test failed, the last lines of
// each component's log are logged first.
func StartForTest(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireBinaries(t, opts)
	c, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.processes() {
				t.Logf("%s log ends:\n%s", p.name, p.logTail(40))
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return c
}
