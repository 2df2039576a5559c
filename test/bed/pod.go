package bed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Family is an IP address family.
type Family int

// The address families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

func familyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// PodOptions tunes AddPod. The zero value is what a runtime would do.
type PodOptions struct {
	// ContainerID overrides the generated (random, 64 hex digits) one.
	ContainerID string
	// UID overrides the generated (random UUID) K8S_POD_UID.
	UID string
	// IfName overrides eth0.
	IfName string
	// Args, when not nil, replaces the CNI_ARGS the bed would send
	// (IgnoreUnknown=1, K8S_POD_NAMESPACE, K8S_POD_NAME,
	// K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID), e.g. to leave one out.
	Args [][2]string
}

// Pod is a network namespace attached to the bed's network, or the external
// host.
type Pod struct {
	Namespace   string
	Name        string
	ContainerID string
	UID         string
	IfName      string
	NetnsName   string // e.g. pw-bt1-0
	NetnsPath   string // /run/netns/<NetnsName>
	IPs         []netip.Addr
	// HostVeth is the host side of the pod's veth.
	HostVeth string
	// Result is the CNI ADD result (nil for the external host).
	Result *current.Result

	bed      *Bed
	args     [][2]string
	external bool

	mu        sync.Mutex
	deleted   bool
	servers   []io.Closer
	sctpPorts map[int]bool
	sctpSeen  []SCTPPacket
}

// String returns namespace/name, the pod's name in truth tables.
func (p *Pod) String() string { return p.Namespace + "/" + p.Name }

// IP returns the pod's address of family f.
func (p *Pod) IP(f Family) (netip.Addr, bool) {
	for _, a := range p.IPs {
		if familyOf(a) == f {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// IPv4 returns the pod's IPv4 address, or the zero Addr.
func (p *Pod) IPv4() netip.Addr { a, _ := p.IP(IPv4); return a }

// IPv6 returns the pod's IPv6 address, or the zero Addr.
func (p *Pod) IPv6() netip.Addr { a, _ := p.IP(IPv6); return a }

// Families returns the address families the pod has, IPv4 first.
func (p *Pod) Families() []Family {
	var out []Family
	for _, f := range []Family{IPv4, IPv6} {
		if _, ok := p.IP(f); ok {
			out = append(out, f)
		}
	}
	return out
}

// RuntimeConf returns the libcni runtime configuration of the pod's
// attachment (container ID, netns, ifname, CNI_ARGS), to run CNI verbs on it
// with Bed.CNI and Bed.NetworkList.
func (p *Pod) RuntimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.NetnsPath,
		IfName:      p.IfName,
		Args:        slices.Clone(p.args),
	}
}

// AddPod creates a netns pw-<bed>-<n> and runs CNI ADD of the bed's chain on
// it, with the CNI_ARGS kubelet would send. If ADD fails, it runs CNI DEL (as
// a runtime does), removes the netns, and returns ADD's error (wrapping the
// plugin's *types.Error).
func (b *Bed) AddPod(ctx context.Context, namespace, name string, opts PodOptions) (*Pod, error) {
	if namespace == "" || name == "" {
		return nil, fmt.Errorf("add pod %q/%q: empty namespace or name", namespace, name)
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, fmt.Errorf("add pod %s/%s: bed %s is closed", namespace, name, b.opts.Name)
	}
	n := b.next
	b.next++
	b.mu.Unlock()

	p := &Pod{
		Namespace:   namespace,
		Name:        name,
		ContainerID: opts.ContainerID,
		UID:         opts.UID,
		IfName:      opts.IfName,
		NetnsName:   fmt.Sprintf("pw-%s-%d", b.opts.Name, n),
		bed:         b,
	}
	if p.ContainerID == "" {
		p.ContainerID = randomHex(32)
	}
	if p.UID == "" {
		p.UID = randomUUID()
	}
	if p.IfName == "" {
		p.IfName = "eth0"
	}
	p.args = opts.Args
	if p.args == nil {
		p.args = [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", namespace},
			{"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
			{"K8S_POD_UID", p.UID},
		}
	}
	path, err := createNetns(p.NetnsName)
	if err != nil {
		return nil, fmt.Errorf("add pod %s: %w", p, err)
	}
	p.NetnsPath = path

	res, addErr := b.cni.AddNetworkList(ctx, b.netList, p.RuntimeConf())
	if addErr == nil {
		addErr = p.readResult(res)
	}
	if addErr == nil {
		addErr = waitHostAddrsSettled(ctx, p.HostVeth, 5*time.Second)
	}
	if addErr != nil {
		err := fmt.Errorf("add pod %s: cni add: %w", p, addErr)
		// Like a runtime, undo the failed ADD with a DEL; then make sure
		// nothing of the pod is left.
		delCtx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if delErr := b.cni.DelNetworkList(delCtx, b.netList, p.RuntimeConf()); delErr != nil {
			err = errors.Join(err, fmt.Errorf("cni del after failed add: %w", delErr))
		}
		return nil, errors.Join(err, deleteLinksIn(path), deleteNetns(path))
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errors.Join(fmt.Errorf("add pod %s: bed %s closed meanwhile", p, b.opts.Name), b.teardownPod(p))
	}
	b.pods[p] = struct{}{}
	return p, nil
}

func (p *Pod) readResult(res types.Result) error {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return fmt.Errorf("convert result: %w", err)
	}
	p.Result = r
	for _, ipc := range r.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return fmt.Errorf("bad address %v in result", ipc.Address.IP)
		}
		p.IPs = append(p.IPs, a.Unmap())
	}
	if len(p.IPs) == 0 {
		return fmt.Errorf("result has no IPs")
	}
	for _, intf := range r.Interfaces {
		if intf.Sandbox == "" {
			p.HostVeth = intf.Name
		}
	}
	return nil
}

// waitHostAddrsSettled waits until the global IPv6 addresses on the host side
// of a pod's veth (ptp puts the range's gateway there) have left duplicate
// address detection, so the pod reaches its gateway right after AddPod.
func waitHostAddrsSettled(ctx context.Context, link string, within time.Duration) error {
	if link == "" {
		return nil
	}
	l, err := netlink.LinkByName(link)
	if err != nil {
		return fmt.Errorf("host veth %s: %w", link, err)
	}
	deadline := time.Now().Add(within)
	for {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if errors.Is(err, netlink.ErrDumpInterrupted) {
			continue // links came or went meanwhile (other pods): read again
		}
		if err != nil {
			return fmt.Errorf("host veth %s addresses: %w", link, err)
		}
		tentative := false
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() {
				continue // the pod's routes do not use it
			}
			if a.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("host veth %s: address %s failed duplicate address detection", link, a.IPNet)
			}
			if a.Flags&unix.IFA_F_TENTATIVE != 0 {
				tentative = true
			}
		}
		if !tentative {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host veth %s: addresses still tentative after %s", link, within)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DelPod stops the pod's servers, runs CNI DEL, deletes the pod's links and
// its netns. It goes on past failures and returns them joined; the pod is gone
// from the bed either way. Deleting a deleted pod is a no-op.
func (b *Bed) DelPod(ctx context.Context, p *Pod) error {
	if p == nil || p.external {
		return fmt.Errorf("del pod: not a pod of bed %s", b.opts.Name)
	}
	b.mu.Lock()
	delete(b.pods, p)
	b.mu.Unlock()
	return b.teardownPodCtx(ctx, p)
}

func (b *Bed) teardownPod(p *Pod) error {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	return b.teardownPodCtx(ctx, p)
}

func (b *Bed) teardownPodCtx(ctx context.Context, p *Pod) error {
	p.mu.Lock()
	if p.deleted {
		p.mu.Unlock()
		return nil
	}
	p.deleted = true
	p.mu.Unlock()

	var errs []error
	errs = append(errs, p.stopServers())
	if err := b.cni.DelNetworkList(ctx, b.netList, p.RuntimeConf()); err != nil {
		errs = append(errs, fmt.Errorf("cni del: %w", err))
	}
	errs = append(errs, deleteLinksIn(p.NetnsPath), deleteNetns(p.NetnsPath))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("del pod %s: %w", p, err)
	}
	return nil
}

func randomHex(n int) string {
	buf := make([]byte, n)
	rand.Read(buf)
	return hex.EncodeToString(buf)
}

func randomUUID() string {
	var u [16]byte
	rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// AddPods adds pods named "namespace/name" concurrently (a dual-stack ADD
// takes seconds, mostly IPv6 duplicate address detection), each serving
// ports, and returns them in the order given. If any fails, the pods already
// added are deleted and the errors returned.
func (b *Bed) AddPods(ctx context.Context, names []string, ports ...ServePort) ([]*Pod, error) {
	pods := make([]*Pod, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		namespace, name, ok := strings.Cut(n, "/")
		if !ok {
			return nil, fmt.Errorf("add pods: %q is not namespace/name", n)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := b.AddPod(ctx, namespace, name, PodOptions{})
			if err == nil && len(ports) > 0 {
				err = p.Serve(ports...)
			}
			pods[i], errs[i] = p, err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, p := range pods {
			if p != nil {
				err = errors.Join(err, b.DelPod(ctx, p))
			}
		}
		return nil, err
	}
	return pods, nil
}
