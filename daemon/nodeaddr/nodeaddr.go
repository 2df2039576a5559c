// Package nodeaddr keeps the set of this node's own addresses, which podwall
// always allows into local pods (kubelet probes, the node itself): every
// address on the host's interfaces, kept current through a netlink address
// subscription, and the InternalIP and ExternalIP addresses of the node's
// Node object, which the policy source hands in. It tells its caller when
// the set changes. The host side of each pod's link is not its business (the
// syncer adds each pod's gateways). It must not import the policy source,
// the syncer or the dataplane.
package nodeaddr

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

const (
	// resubscribeDelay is how long Run waits before subscribing again
	// after the subscription failed or lost updates.
	resubscribeDelay = time.Second
	// receiveBufferSize is the subscription socket's buffer: pods starting
	// in bulk add an address to the host per veth.
	receiveBufferSize = 1 << 20
	// dumpAttempts bounds how often a dump interrupted by links coming and
	// going is read again.
	dumpAttempts = 10
)

// Tracker is the set of the node's own addresses. Its methods are safe for
// concurrent use; Run must be called once.
type Tracker struct {
	log  *slog.Logger
	kick chan struct{} // the Node object's addresses changed

	mu sync.Mutex
	// host are the host's interface addresses as last read; live is true
	// while a subscription keeps them current (else Addrs reads them).
	host []netip.Addr
	live bool
	// object are the Node object's addresses.
	object []netip.Addr
	// known is the set as last returned by Addrs or reported by Run: Run
	// calls changed when the set differs from it.
	known []netip.Addr
}

// New returns a Tracker. Until Run subscribes, Addrs reads the host's
// addresses on every call.
func New(log *slog.Logger) *Tracker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tracker{log: log.With("component", "nodeaddr"), kick: make(chan struct{}, 1)}
}

// Addrs returns the node's own addresses: the host's interface addresses
// and the Node object's, sorted and without duplicates. It fits
// syncer.Options.NodeAddrs. While Run's subscription is down it reads the
// host's addresses itself and fails when that read fails.
func (t *Tracker) Addrs() ([]netip.Addr, error) {
	t.mu.Lock()
	live, host := t.live, t.host
	t.mu.Unlock()
	if !live {
		var err error
		if host, err = HostAddrs(); err != nil {
			return nil, err
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	set := union(host, t.object)
	t.known = set
	return slices.Clone(set), nil
}

// SetNodeObjectAddrs replaces the Node object's addresses (the policy
// source's view of status.addresses). Run reports the change. It never
// blocks.
func (t *Tracker) SetNodeObjectAddrs(addrs []netip.Addr) {
	t.mu.Lock()
	t.object = union(addrs)
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Run follows the host's addresses through a netlink subscription until ctx
// ends, and calls changed each time the set Addrs returns changes (an
// address added to or removed from any host interface, or new Node object
// addresses). Calls are never concurrent; a burst of changes may yield one
// call. When the subscription fails or loses updates, Run reads every
// address again and subscribes anew.
func (t *Tracker) Run(ctx context.Context, changed func()) {
	for {
		err := t.follow(ctx, changed)
		t.mu.Lock()
		t.live = false
		t.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		t.log.Warn("host address subscription ended; reading the addresses on every sync until it is back", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(resubscribeDelay):
		}
	}
}

// follow subscribes, reads the host's addresses and keeps them current
// until ctx ends (nil) or the subscription fails (its error).
func (t *Tracker) follow(ctx context.Context, changed func()) error {
	updates := make(chan netlink.AddrUpdate, 256)
	done := make(chan struct{})
	failed := make(chan error, 1)
	err := netlink.AddrSubscribeWithOptions(updates, done, netlink.AddrSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
		ReceiveBufferSize:      receiveBufferSize,
		ReceiveBufferForceSize: true,
	})
	if err != nil {
		return fmt.Errorf("subscribe to address changes: %w", err)
	}
	defer func() {
		close(done)
		// The receiving goroutine may be blocked sending; let it finish.
		go func() {
			for range updates {
			}
		}()
	}()
	// Read after subscribing, so that no change in between is missed.
	if err := t.readHost(); err != nil {
		return err
	}
	t.report(changed)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return fmt.Errorf("address subscription: %w", err)
		case _, ok := <-updates:
			if !ok {
				return errors.New("address subscription closed")
			}
			// Take the rest of a burst, then read the whole set: an
			// update says what changed, a read what is.
			for drained := false; !drained; {
				select {
				case _, ok := <-updates:
					if !ok {
						return errors.New("address subscription closed")
					}
				default:
					drained = true
				}
			}
			if err := t.readHost(); err != nil {
				return err
			}
			t.report(changed)
		case <-t.kick:
			t.report(changed)
		}
	}
}

// readHost reads the host's addresses into t.host, which the subscription
// then keeps current.
func (t *Tracker) readHost() error {
	host, err := HostAddrs()
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.host, t.live = host, true
	return nil
}

// report calls changed when the set differs from the one last known.
func (t *Tracker) report(changed func()) {
	t.mu.Lock()
	set := union(t.host, t.object)
	same := slices.Equal(set, t.known)
	t.known = set
	t.mu.Unlock()
	if !same {
		t.log.Debug("node addresses changed", "addrs", len(set))
		changed()
	}
}

// HostAddrs returns every address on the host's interfaces (of the network
// namespace the calling thread is in) except IPv6 link-local ones, sorted and
// without duplicates.
func HostAddrs() ([]netip.Addr, error) {
	// A dump is interrupted when links come and go meanwhile (other pods
	// starting): the result may be incomplete, so read again.
	var addrs []netlink.Addr
	var err error
	for range dumpAttempts {
		addrs, err = netlink.AddrList(nil, netlink.FAMILY_ALL)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		// Every new host veth gets its own fe80:: address: counting them
		// would re-sync every pod on every ADD and DEL. No node traffic
		// needs them: towards a pod's global address the host picks a
		// global source, and neighbour discovery is allowed on its own.
		if ip.Is6() && ip.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, ip)
	}
	return union(out), nil
}

// union returns the addresses of every list, sorted and without
// duplicates, sharing nothing with them.
func union(lists ...[]netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, l := range lists {
		out = append(out, l...)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}
