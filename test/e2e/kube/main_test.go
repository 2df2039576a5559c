package kubee2e

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
)

// bins are podwall, podwalld and podwallctl: $PODWALL_BIN or a build,
// removed by TestMain.
var bins = &harness.Bins{TempPrefix: "podwall-k8n-bin-"}

// The address ranges of this package. Pod ranges lie in podRangeV4, Service
// ranges in serviceRange.
var (
	podRangeV4   = netip.MustParsePrefix("10.213.0.0/17")
	serviceRange = netip.MustParsePrefix("10.213.128.0/17")
	// sharedServiceCIDR is the Service range of the cluster the suites
	// share; tests with a cluster of their own take another one.
	sharedServiceCIDR = netip.MustParsePrefix("10.213.128.0/20")
)

// bedPrefix starts the name of every bed of this package.
const bedPrefix = "k8n"

// ownedNetnsGlob matches the netns of this package's beds (pw-<bed>-<n>).
const ownedNetnsGlob = "pw-" + bedPrefix + "*"

// TestMain runs the tests, stops the shared cluster, removes binaries it
// built, and then fails the run if any test left a netns of a k8n bed or a
// route inside the package's ranges behind. Without root every test skips.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := stopSharedCluster(); err != nil {
		fmt.Fprintf(os.Stderr, "stop the shared cluster: %v\n", err)
		code = 1
	}
	bins.Remove()
	if os.Geteuid() == 0 {
		if left := harness.Leftovers(ownedNetnsGlob, podRangeV4, serviceRange); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "kube e2e tests left behind:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

// requireKube skips the test unless it runs as root and the Kubernetes
// binaries are there (with $PODWALL_KUBE_REQUIRED=1 missing binaries fail
// it instead).
func requireKube(t testing.TB) {
	t.Helper()
	cluster.RequireBinaries(t, cluster.Options{})
}

// controlPlane is a running cluster with install/rbac.yaml applied.
type controlPlane struct {
	*cluster.Cluster
	// DaemonKubeconfig authenticates as podwalld's ServiceAccount of
	// install/rbac.yaml (made once per cluster: the file is shared by every
	// node's daemon).
	DaemonKubeconfig string
}

var (
	sharedMu      sync.Mutex
	sharedCluster *controlPlane
	sharedErr     error
)

// theSharedCluster returns the control plane the suites share, starting it
// on first use (about 5 s); TestMain stops it. Tests that stop the API
// server start a cluster of their own (startCluster).
func theSharedCluster(t testing.TB) *controlPlane {
	t.Helper()
	requireKube(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedCluster == nil && sharedErr == nil {
		sharedCluster, sharedErr = startControlPlane(sharedServiceCIDR)
	}
	if sharedErr != nil {
		t.Fatalf("shared cluster: %v", sharedErr)
	}
	return sharedCluster
}

func stopSharedCluster() error {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedCluster == nil {
		return nil
	}
	err := sharedCluster.Stop()
	sharedCluster = nil
	return err
}

// startCluster starts a control plane of the test's own on serviceCIDR and
// stops it when the test ends, logging the components' logs if it failed.
func startCluster(t testing.TB, serviceCIDR netip.Prefix) *controlPlane {
	t.Helper()
	requireKube(t)
	c, err := startControlPlane(serviceCIDR)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, component := range []string{"kube-apiserver", "kube-controller-manager"} {
				t.Logf("%s log ends:\n%s", component, c.LogTail(component, 30))
			}
		}
		if err := c.Stop(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return c
}

// startControlPlane starts a cluster on serviceCIDR (inside the package's
// Service range), applies install/rbac.yaml to it and makes the daemon's
// kubeconfig.
func startControlPlane(serviceCIDR netip.Prefix) (*controlPlane, error) {
	if !serviceRange.Contains(serviceCIDR.Addr()) || serviceCIDR.Bits() < serviceRange.Bits() {
		return nil, fmt.Errorf("service range %s is not inside %s", serviceCIDR, serviceRange)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.Start(ctx, cluster.Options{ServiceCIDR: serviceCIDR})
	if err != nil {
		return nil, err
	}
	if err := applyRBAC(ctx, c.Client(), rbacFile); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	kubeconfig, err := daemonKubeconfig(ctx, c)
	if err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	return &controlPlane{Cluster: c, DaemonKubeconfig: kubeconfig}, nil
}
