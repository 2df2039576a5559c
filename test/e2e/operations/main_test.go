// Package operations holds podwall's end-to-end tests of what an operator
// relies on, on one machine as root: `podwallctl explain` checked against
// real probes between pods over an upstream-style model, and the real
// podwalld's /metrics, /healthz and /readyz scraped over HTTP and its logs
// read while pods come and go. Pods are network namespaces plumbed by the
// real CNI chain (ptp + host-local + podwall via libcni), the daemon reads a
// manifests directory.
//
// Address ranges: pods 10.207.0.0/16 (a /24 per test), bed names starting
// with "pwx" (netns pw-pwx*). The package has no non-test code.
package operations

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/podwall/podwall/test/harness"
)

// bins are podwall, podwalld and podwallctl: $PODWALL_BIN or a build,
// removed by TestMain.
var bins = &harness.Bins{TempPrefix: "podwall-pwx-bin-"}

// podRange holds every pod range of this package.
var podRange = netip.MustParsePrefix("10.207.0.0/16")

// TestMain runs the tests and then fails the run if any of them left a
// netns of a pwx bed or a route inside podRange behind.
func TestMain(m *testing.M) {
	code := m.Run()
	bins.Remove()
	if os.Geteuid() == 0 {
		if left := harness.Leftovers("pw-pwx*", podRange); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "operations tests left behind:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}
