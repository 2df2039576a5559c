package installe2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
)

// bins are podwall, podwalld and podwallctl: $PODWALL_BIN (make test sets
// it) or a build, removed by TestMain.
var bins = &harness.Bins{TempPrefix: "podwall-pwi-bin-"}

// The package's addresses: everything inside ownRange.
var (
	ownRange = netip.MustParsePrefix("10.206.0.0/16")
	// serviceCIDR is the test cluster's Service range.
	serviceCIDR = netip.MustParsePrefix("10.206.240.0/20")
)

// repoRoot is the repository, relative to this package.
var repoRoot = filepath.Join("..", "..", "..")

// TestMain runs the tests, removes the binaries bins built, and, as root,
// fails the run if a network namespace pwi-* or a route in 10.206.0.0/16
// was left behind.
func TestMain(m *testing.M) {
	code := m.Run()
	bins.Remove()
	if os.Geteuid() == 0 {
		if left := harness.Leftovers("pwi-*", ownRange); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "left behind: %s\n", strings.Join(left, ", "))
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// kubectlEnv names the environment variable pointing at a kubectl to use
// instead of the one build-kubectl.sh builds.
const kubectlEnv = "PODWALL_KUBECTL"

// kubectlForTest returns kubectl v1.34.4: $PODWALL_KUBECTL, else the one in
// the Kubernetes binaries' cache, building it there with build-kubectl.sh
// when missing (a few minutes the first time). If it cannot be built the
// test is skipped, or fails with $PODWALL_KUBE_REQUIRED=1.
func kubectlForTest(t *testing.T) string {
	t.Helper()
	if path := os.Getenv(kubectlEnv); path != "" {
		return path
	}
	path := filepath.Join(cluster.BinDir(), "kubectl")
	if fi, err := os.Stat(path); err == nil && fi.Mode()&0o111 != 0 {
		return path
	}
	cmd := exec.Command("sh", "build-kubectl.sh")
	cmd.Env = append(os.Environ(), cluster.BinDirEnv+"="+cluster.BinDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := fmt.Sprintf("build kubectl: %v\n%s", err, stderr.String())
		if os.Getenv(cluster.RequiredEnv) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Logf("%s", strings.TrimSpace(stderr.String()))
	return strings.TrimSpace(string(out))
}
