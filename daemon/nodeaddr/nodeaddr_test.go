package nodeaddr

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// The host-side test fixture: a link on the host named testLink, carrying
// addresses of 10.205.0.0/16 and fd00:205::/64 only. This kernel has no
// dummy driver, so it is one end of a veth pair whose other end
// (testLinkPeer) stays on the host too, down. Tests using it must not run
// in parallel (one name).
const (
	testLink     = "pwn-dummy0"
	testLinkPeer = "pwn-dummy0p"
)

var (
	testAddr4  = netip.MustParsePrefix("10.205.255.1/32")
	testAddr6  = netip.MustParsePrefix("fd00:205::ff01/128")
	objectAddr = netip.MustParseAddr("10.205.254.1")
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: adds a dummy link and addresses on the host")
	}
}

// hostDummy creates testLink on the host (removing a leftover first) and
// deletes it when the test ends.
func hostDummy(t testing.TB) netlink.Link {
	t.Helper()
	needRoot(t)
	if old, err := netlink.LinkByName(testLink); err == nil {
		if err := netlink.LinkDel(old); err != nil {
			t.Fatalf("remove leftover %s: %v", testLink, err)
		}
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: testLink}, PeerName: testLinkPeer}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add %s: %v", testLink, err)
	}
	t.Cleanup(func() {
		link, err := netlink.LinkByName(testLink)
		if err != nil {
			return
		}
		if err := netlink.LinkDel(link); err != nil {
			t.Errorf("delete %s: %v", testLink, err)
		}
	})
	link, err := netlink.LinkByName(testLink)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	return link
}

func addAddr(t testing.TB, link netlink.Link, p netip.Prefix) {
	t.Helper()
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = syscall.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(link, a); err != nil {
		t.Fatalf("add %s to %s: %v", p, testLink, err)
	}
}

func delAddr(t testing.TB, link netlink.Link, p netip.Prefix) {
	t.Helper()
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if err := netlink.AddrDel(link, a); err != nil {
		t.Fatalf("delete %s from %s: %v", p, testLink, err)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// running is a Tracker whose Run goroutine the test owns.
type running struct {
	*Tracker
	changed atomic.Int64
}

func startTracker(t *testing.T) *running {
	t.Helper()
	r := &running{Tracker: New(testLogger(t))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, func() { r.changed.Add(1) })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	waitFor(t, "the subscription", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.live
	})
	return r
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// has reports whether the tracker's set holds a; a failed read fails the
// test.
func has(t *testing.T, tr *Tracker, a netip.Addr) bool {
	t.Helper()
	addrs, err := tr.Addrs()
	if err != nil {
		t.Fatalf("Addrs: %v", err)
	}
	return slices.Contains(addrs, a)
}

// Other engineers' tests add and remove host veths all the time, so these
// tests never count changed calls exactly: they check that a call came
// after the change they made and that the set holds what the host holds.
func TestTrackerFollowsHostAddresses(t *testing.T) {
	link := hostDummy(t)
	tr := startTracker(t)
	for _, p := range []netip.Prefix{testAddr4, testAddr6} {
		t.Run(p.String(), func(t *testing.T) {
			if has(t, tr.Tracker, p.Addr()) {
				t.Fatalf("%s in the set before it was added", p)
			}
			before := tr.changed.Load()
			addAddr(t, link, p)
			waitFor(t, "the address in the set and a changed call", func() bool {
				return tr.changed.Load() > before && has(t, tr.Tracker, p.Addr())
			})
			before = tr.changed.Load()
			delAddr(t, link, p)
			waitFor(t, "the address gone from the set and a changed call", func() bool {
				return tr.changed.Load() > before && !has(t, tr.Tracker, p.Addr())
			})
		})
	}
	// Deleting the link takes its addresses with it.
	addAddr(t, link, testAddr4)
	waitFor(t, "the address in the set", func() bool { return has(t, tr.Tracker, testAddr4.Addr()) })
	before := tr.changed.Load()
	if err := netlink.LinkDel(link); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the link's address gone and a changed call", func() bool {
		return tr.changed.Load() > before && !has(t, tr.Tracker, testAddr4.Addr())
	})
}

func TestTrackerNodeObjectAddrs(t *testing.T) {
	needRoot(t)
	tr := startTracker(t)
	if has(t, tr.Tracker, objectAddr) {
		t.Fatalf("%s in the set before the Node had it", objectAddr)
	}
	before := tr.changed.Load()
	tr.SetNodeObjectAddrs([]netip.Addr{objectAddr, objectAddr})
	waitFor(t, "the Node's address in the set and a changed call", func() bool {
		return tr.changed.Load() > before && has(t, tr.Tracker, objectAddr)
	})
	addrs, err := tr.Addrs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(addrs, netip.Addr.Compare) || len(slices.Compact(slices.Clone(addrs))) != len(addrs) {
		t.Errorf("Addrs() = %v, want sorted and unique", addrs)
	}
	if !slices.Contains(addrs, netip.MustParseAddr("127.0.0.1")) {
		t.Errorf("Addrs() = %v lacks the host's 127.0.0.1", addrs)
	}
	before = tr.changed.Load()
	tr.SetNodeObjectAddrs(nil)
	waitFor(t, "the Node's address gone and a changed call", func() bool {
		return tr.changed.Load() > before && !has(t, tr.Tracker, objectAddr)
	})
}

// Without Run, Addrs reads the host on every call: an address added is in
// the next answer.
func TestAddrsWithoutRun(t *testing.T) {
	link := hostDummy(t)
	tr := New(nil)
	tr.SetNodeObjectAddrs([]netip.Addr{objectAddr})
	if has(t, tr, testAddr4.Addr()) || !has(t, tr, objectAddr) {
		t.Fatalf("Addrs() before the add: want the Node's address and not %s", testAddr4)
	}
	addAddr(t, link, testAddr4)
	if !has(t, tr, testAddr4.Addr()) {
		t.Errorf("Addrs() right after the add lacks %s", testAddr4)
	}
}

// After the subscription fails (here: Run stopped), the set is read live
// again: Addrs never serves a stale copy.
func TestAddrsAfterRunStops(t *testing.T) {
	link := hostDummy(t)
	tr := New(testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Run(ctx, func() {})
	}()
	waitFor(t, "the subscription", func() bool {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		return tr.live
	})
	cancel()
	<-done
	addAddr(t, link, testAddr4)
	if !has(t, tr, testAddr4.Addr()) {
		t.Errorf("Addrs() after Run ended lacks %s, added since", testAddr4)
	}
}

func TestHostAddrs(t *testing.T) {
	needRoot(t)
	addrs, err := HostAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"127.0.0.1", "::1"} {
		if !slices.Contains(addrs, netip.MustParseAddr(want)) {
			t.Errorf("HostAddrs() = %v, lacks %s", addrs, want)
		}
	}
	if !slices.IsSortedFunc(addrs, netip.Addr.Compare) {
		t.Errorf("HostAddrs() not sorted: %v", addrs)
	}
}

// Every host veth carries its own fe80:: address: were they node addresses,
// each pod's ADD and DEL would re-sync every pod on the node.
func TestHostAddrsSkipLinkLocal(t *testing.T) {
	link := hostDummy(t)
	linkLocal := netip.MustParsePrefix("fe80::205:1/64")
	global := netip.MustParsePrefix("fd00:205::255:1/128")
	addAddr(t, link, linkLocal)
	addAddr(t, link, global)
	addrs, err := HostAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(addrs, linkLocal.Addr()) {
		t.Errorf("HostAddrs() = %v, holds the link-local %s", addrs, linkLocal.Addr())
	}
	if !slices.Contains(addrs, global.Addr()) {
		t.Errorf("HostAddrs() = %v, lacks %s", addrs, global.Addr())
	}
}
