package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
)

// dataplaneRetry is how often a failed dataplane self-test is repeated.
const dataplaneRetry = 30 * time.Second

// dataplaneCheck is podwalld's self-test of its dataplane: the real
// Manager applies a small firewall (both families, an ipset, a node set) in
// a scratch network namespace, checks that what is in force there is
// exactly what it rendered, and removes it. It proves that its nf_tables
// and ipset netlink writes and iptables-nft-save / ip6tables-nft-save work
// here (kernel modules, nf_tables, capabilities). Until it passes the daemon is not
// ready: /readyz answers 503 and CNI ADD and STATUS "try again later".
type dataplaneCheck struct {
	data   *dataplane.Manager
	log    *slog.Logger
	report func(ok bool)

	mu  sync.Mutex
	err error
}

// checkDataplane runs the self-test once and, while it fails, again every
// dataplaneRetry until ctx ends. report is told every outcome.
func checkDataplane(ctx context.Context, data *dataplane.Manager, log *slog.Logger, report func(bool)) *dataplaneCheck {
	c := &dataplaneCheck{data: data, log: log, report: report}
	if c.once(ctx) {
		return c
	}
	go func() {
		t := time.NewTicker(dataplaneRetry)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if c.once(ctx) {
					return
				}
			}
		}
	}()
	return c
}

// usable returns nil once the self-test passed, else why it failed.
func (c *dataplaneCheck) usable() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// gate returns a readiness func that fails while the dataplane is not
// usable, else asks next.
func (c *dataplaneCheck) gate(next func() error) func() error {
	return func() error {
		if err := c.usable(); err != nil {
			return fmt.Errorf("dataplane not usable: %w", err)
		}
		return next()
	}
}

func (c *dataplaneCheck) once(ctx context.Context) bool {
	start := time.Now()
	err := selfTest(ctx, c.data)
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
	c.report(err == nil)
	if err != nil {
		c.log.Error("dataplane self-test failed: not ready; retrying", "err", err, "retryIn", dataplaneRetry)
		return false
	}
	c.log.Info("dataplane self-test passed", "duration", time.Since(start).Round(time.Millisecond))
	return true
}

// selfTestSpec is the firewall the self-test applies: an isolated ingress
// with one peer set per family and a port, and the node-address sets.
// Its addresses are documentation ranges that never leave the scratch netns.
var selfTestSpec = dataplane.Spec{
	Pod: "podwall/self-test",
	Firewall: &policy.Firewall{Ingress: policy.Direction{
		Isolated: true,
		Policies: []string{"podwall/self-test"},
		Rules: []policy.Rule{{
			Peer:  policy.Peer{Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.128/25"), netip.MustParsePrefix("2001:db8::/64")}},
			Ports: []policy.Port{{Protocol: corev1.ProtocolTCP, Port: 80}},
		}},
	}},
	NodeAddrs: []netip.Addr{netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:1::1")},
}

// selfTest applies, checks and removes selfTestSpec in a scratch netns.
func selfTest(ctx context.Context, data *dataplane.Manager) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	path, release, err := scratchNetns()
	if err != nil {
		return err
	}
	defer release()
	defer data.Forget(path)
	if err := data.Apply(ctx, path, selfTestSpec); err != nil {
		return fmt.Errorf("apply a firewall in a scratch netns: %w", err)
	}
	if err := data.Check(ctx, path, selfTestSpec); err != nil {
		return fmt.Errorf("read back the firewall in a scratch netns: %w", err)
	}
	if err := data.Remove(ctx, path); err != nil {
		return fmt.Errorf("remove the firewall from a scratch netns: %w", err)
	}
	rs, err := data.Inspect(ctx, path)
	if err != nil {
		return fmt.Errorf("inspect a scratch netns: %w", err)
	}
	if rs.V4 != "" || rs.V6 != "" || len(rs.Sets) > 0 {
		return errors.New("the firewall is still in force in the scratch netns after its removal")
	}
	return nil
}

// scratchNetns makes a new network namespace held by one OS thread and
// returns its /proc path; release ends the thread, and with it the netns.
// Nothing is mounted and no name is taken.
func scratchNetns() (string, func(), error) {
	type made struct {
		path string
		err  error
	}
	ready := make(chan made, 1)
	done := make(chan struct{})
	go func() {
		// Never unlocked: the thread, which is in the scratch netns, ends
		// with this goroutine instead of returning to the scheduler.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- made{err: fmt.Errorf("new network namespace: %w", err)}
			return
		}
		ready <- made{path: fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())}
		<-done
	}()
	m := <-ready
	if m.err != nil {
		return "", nil, m.err
	}
	return m.path, func() { close(done) }, nil
}
