package bed

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CNIBinDirEnv names the environment variable that points tests at a
// directory of prebuilt reference plugins (e.g. `make` output).
const CNIBinDirEnv = "PODWALL_CNI_BIN_DIR"

// RequireRoot skips the test unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, routes)")
	}
}

// CNIBinDirForTest returns a directory holding ptp, host-local and loopback:
// $PODWALL_CNI_BIN_DIR if set, else a per-version directory under the temp
// dir, building what is missing (once per machine).
func CNIBinDirForTest(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(CNIBinDirEnv)
	if dir == "" {
		version, err := pluginsVersion()
		if err != nil {
			t.Fatalf("cni plugins: %v", err)
		}
		dir = filepath.Join(os.TempDir(), "podwall-cni-plugins-"+version)
	}
	if err := BuildCNIPlugins(dir); err != nil {
		t.Fatalf("cni plugins: %v", err)
	}
	return dir
}

// NewForTest is New, failing the test on error and closing the bed when the
// test ends.
func NewForTest(t testing.TB, opts Options) *Bed {
	t.Helper()
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return b
}

// AddPodForTest is AddPod plus Serve, failing the test on error.
func (b *Bed) AddPodForTest(t testing.TB, namespace, name string, ports ...ServePort) *Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	p, err := b.AddPod(ctx, namespace, name, PodOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) > 0 {
		if err := p.Serve(ports...); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// AssertReachability probes the matrix retrying each cell towards want (for
// up to within), probes it once more if anything differed (upstream's "second
// try"), and fails the test printing the expected, observed and comparison
// tables if it still differs.
func (b *Bed) AssertReachability(t testing.TB, pods []*Pod, want *Truth, port int, proto string, timeout, within time.Duration) {
	t.Helper()
	ctx := context.Background()
	observed := b.MatrixUntil(ctx, pods, want, port, proto, timeout, within)
	if len(want.Mismatches(observed)) == 0 {
		return
	}
	t.Logf("reachability %d/%s differs, second try", port, proto)
	observed = b.MatrixUntil(ctx, pods, want, port, proto, timeout, within)
	if m := want.Mismatches(observed); len(m) > 0 {
		t.Errorf("reachability %d/%s:\nexpected:\n%s\nobserved:\n%s\ncomparison:\n%s\n%s",
			port, proto, want.PrettyPrint(), observed.PrettyPrint(), want.Compare(observed).PrettyPrint(), strings.Join(m, "\n"))
	}
}
