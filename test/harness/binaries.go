package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// BinDirEnv names the environment variable pointing at a directory that
// holds podwall, podwalld and podwallctl (`make test` sets it to bin/).
const BinDirEnv = "PODWALL_BIN"

// NoEnforcementEnv names the environment variable that, set to 1, runs the
// upstream suites with podwall left out of the CNI chain and no daemon, to
// show that they fail when nothing is enforced.
const NoEnforcementEnv = "PODWALL_E2E_NO_ENFORCEMENT"

// EnforcementOff reports whether $PODWALL_E2E_NO_ENFORCEMENT is 1.
func EnforcementOff() bool { return os.Getenv(NoEnforcementEnv) == "1" }

// Bins finds podwall, podwalld and podwallctl for a test binary: the
// directory $PODWALL_BIN names, else a fresh `go build` of the three into a
// temporary directory, once. A test package keeps one in a package variable
// and calls Remove from its TestMain after the run.
//
//	var bins = &harness.Bins{TempPrefix: "podwall-e2n-bin-"}
//	d, err := harness.NewDaemon(bins.Dir(t), dir, node)
type Bins struct {
	// TempPrefix starts the name of the temporary directory of a build.
	TempPrefix string

	once  sync.Once
	dir   string
	err   error
	built string // the temporary directory of a build, removed by Remove
}

// Dir returns the directory holding the three binaries, finding or building
// them on first use; it fails the test if it cannot.
func (b *Bins) Dir(t testing.TB) string {
	t.Helper()
	b.once.Do(func() {
		if dir := os.Getenv(BinDirEnv); dir != "" {
			b.dir, b.err = checkBinaries(dir)
			return
		}
		dir, err := os.MkdirTemp("", b.TempPrefix)
		if err != nil {
			b.err = fmt.Errorf("build podwall binaries: %w", err)
			return
		}
		b.built = dir
		b.dir, b.err = buildBinaries(dir)
	})
	if b.err != nil {
		t.Fatalf("podwall binaries: %v", b.err)
	}
	return b.dir
}

// Remove removes the binaries Dir built, if it built any. Call it once the
// tests that use them have ended.
func (b *Bins) Remove() error {
	if b.built == "" {
		return nil
	}
	return os.RemoveAll(b.built)
}

// buildTags are the build tags the Makefile's build uses (GOTAGS); like it
// the harness builds without cgo (BUILDENV), so the tests run the binaries
// an operator installs.
const buildTags = "grpcnotrace"

// podwallPackages maps each binary to its package in the module.
var podwallPackages = []struct{ name, pkg string }{
	{"podwall", "./plugin"},
	{"podwalld", "./daemon/cmd/podwalld"},
	{"podwallctl", "./daemon/cmd/podwallctl"},
}

// checkBinaries returns dir made absolute if it holds the three binaries as
// executable files.
func checkBinaries(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for _, b := range podwallPackages {
		fi, err := os.Stat(filepath.Join(dir, b.name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("$%s=%s has no executable %s", BinDirEnv, dir, b.name)
		}
	}
	return dir, nil
}

// buildBinaries builds the three binaries of the module the test belongs to
// (the one around the working directory) into dir.
func buildBinaries(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside podwall's module (go env GOMOD is %q)", gomod)
	}
	for _, b := range podwallPackages {
		cmd := exec.Command("go", "build", "-trimpath", "-tags", buildTags, "-o", filepath.Join(dir, b.name), b.pkg)
		cmd.Dir = filepath.Dir(gomod)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w: %s", b.pkg, err, bytes.TrimSpace(out))
		}
	}
	return dir, nil
}
