package e2e

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
var bins = &harness.Bins{TempPrefix: "podwall-e2n-bin-"}

// ownedRanges are the host address ranges this package's tests route; after
// the run, TestMain fails it if any route inside them is left.
var ownedRanges = []netip.Prefix{podRangeV4}

// ownedNetnsGlob matches the netns of this package's beds (pw-<bed>-<n>).
const ownedNetnsGlob = "pw-" + bedPrefix + "*"

// TestMain runs the tests and then fails the run if any of them left a netns
// of an e2n bed or a route inside the package's ranges behind. Without root
// every test skips (requireE2E). Binaries are found or built on first use
// (bins) and a build is removed here afterwards.
func TestMain(m *testing.M) {
	code := m.Run()
	bins.Remove()
	if os.Geteuid() == 0 {
		if left := harness.Leftovers(ownedNetnsGlob, ownedRanges...); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "e2e tests left behind:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}
