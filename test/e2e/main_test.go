package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// binDirEnv names the environment variable pointing at a directory that
// holds podwall, podwalld and podwallctl (`make test` sets it to bin/).
const binDirEnv = "PODWALL_BIN"

// ownedRanges are the host address ranges this package's tests route; after
// the run, TestMain fails it if any route inside them is left.
var ownedRanges = []netip.Prefix{podRangeV4}

// ownedNetnsGlob matches the netns of this package's beds (pw-<bed>-<n>).
const ownedNetnsGlob = "pw-" + bedPrefix + "*"

// TestMain runs the tests and then fails the run if any of them left a netns
// of an e2n bed or a route inside the package's ranges behind. Without root
// every test skips (requireE2E). Binaries are found or built on first use
// (binaries) and a build is removed here afterwards.
func TestMain(m *testing.M) {
	code := m.Run()
	if builtBinDir != "" {
		os.RemoveAll(builtBinDir)
	}
	if os.Geteuid() == 0 {
		if left := leftovers(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "e2e tests left behind:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

// leftovers lists the netns and host routes of this package still present.
func leftovers() []string {
	left, _ := filepath.Glob(filepath.Join("/run/netns", ownedNetnsGlob))
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return append(left, fmt.Sprintf("cannot list routes: %v", err))
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		dst, err := netip.ParsePrefix(r.Dst.String())
		if err != nil {
			continue
		}
		for _, owned := range ownedRanges {
			if owned.Overlaps(dst) && dst.Bits() >= owned.Bits() {
				left = append(left, "route "+r.String())
			}
		}
	}
	return left
}

var (
	binariesOnce sync.Once
	binariesDir  string
	binariesErr  error
	// builtBinDir is the temporary directory binaries built, removed by
	// TestMain.
	builtBinDir string
)

// binaries returns the directory holding podwall, podwalld and podwallctl:
// $PODWALL_BIN, else a fresh `go build` of the three (once per test binary).
func binaries(t testing.TB) string {
	t.Helper()
	binariesOnce.Do(func() {
		if dir := os.Getenv(binDirEnv); dir != "" {
			binariesDir, binariesErr = checkBinaries(dir)
			return
		}
		dir, err := os.MkdirTemp("", "podwall-e2n-bin-")
		if err != nil {
			binariesErr = fmt.Errorf("build podwall binaries: %w", err)
			return
		}
		builtBinDir = dir
		binariesDir, binariesErr = buildBinaries(dir)
	})
	if binariesErr != nil {
		t.Fatalf("podwall binaries: %v", binariesErr)
	}
	return binariesDir
}

// podwallPackages maps each binary to its package in the module.
var podwallPackages = []struct{ name, pkg string }{
	{"podwall", "./plugin"},
	{"podwalld", "./daemon/cmd/podwalld"},
	{"podwallctl", "./daemon/cmd/podwallctl"},
}

func checkBinaries(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for _, b := range podwallPackages {
		fi, err := os.Stat(filepath.Join(dir, b.name))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("$%s=%s has no executable %s", binDirEnv, dir, b.name)
		}
	}
	return dir, nil
}

// buildBinaries builds the three binaries of the module this test belongs to
// into dir.
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
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, b.name), b.pkg)
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w: %s", b.pkg, err, bytes.TrimSpace(out))
		}
	}
	return dir, nil
}
