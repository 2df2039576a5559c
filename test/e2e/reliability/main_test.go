package reliability

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/podwall/podwall/test/harness"
)

// bins are podwall, podwalld and podwallctl: $PODWALL_BIN (make test sets
// it) or a build, removed by TestMain.
var bins = &harness.Bins{TempPrefix: "podwall-rl-bin-"}

// The address ranges of this package: a /24 of podRangeV4 per bed, the
// Service range of the outage test's API server inside it.
var (
	podRangeV4  = netip.MustParsePrefix("10.214.0.0/16")
	podRangeV6  = netip.MustParsePrefix("fd00:214::/64")
	serviceCIDR = netip.MustParsePrefix("10.214.240.0/20")
)

// hostNetns is a path to the host's network namespace (a descriptor opened
// by TestMain), "" if it could not be opened.
var hostNetns string

// bedPrefix starts the name of every bed of this package.
const bedPrefix = "rl"

// ownedNetnsGlob matches the netns of this package's beds (pw-<bed>-<n>).
const ownedNetnsGlob = "pw-" + bedPrefix + "*"

// TestMain runs the tests, removes binaries it built, and then fails the run
// if any test left a netns of an rl bed or a route inside the package's
// ranges behind. Without root every test skips.
func TestMain(m *testing.M) {
	// Before any goroutine enters a pod netns: /proc/self/ns/net follows the
	// main thread, which may later be lent to a goroutine inside a pod netns.
	if f, err := os.Open("/proc/thread-self/ns/net"); err == nil {
		hostNetns = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
		defer f.Close()
	}
	code := m.Run()
	bins.Remove()
	if os.Geteuid() == 0 {
		if left := harness.Leftovers(ownedNetnsGlob, podRangeV4, podRangeV6); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "reliability tests left behind:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}
