package bed

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// externalVethName is the host side of the external host's veth.
func externalVethName(bedName string) string { return "pw-" + bedName + "-x" }

// externalAddrs returns the host side (.1) and the external host's (.10)
// addresses of the external range.
func externalAddrs(p netip.Prefix) (host, ext netip.Addr) {
	host = p.Addr().Next()
	ext = host
	for range 9 {
		ext = ext.Next()
	}
	return host, ext
}

// createExternal creates the external host: netns pw-<Name>-ext with eth0
// holding .10 of the external range and a default route via .1, the host side
// of the veth (pw-<Name>-x), which holds .1 and so routes the range to it. On
// failure it returns what it created (for Close to delete) with the error.
func (b *Bed) createExternal() (*Pod, error) {
	cidr := b.opts.ExternalCIDRv4
	hostAddr, extAddr := externalAddrs(cidr)
	name := "pw-" + b.opts.Name + "-ext"
	path, err := createNetns(name)
	if err != nil {
		return nil, fmt.Errorf("create external host: %w", err)
	}
	ext := &Pod{
		Namespace: "external",
		Name:      "host",
		IfName:    "eth0",
		NetnsName: name,
		NetnsPath: path,
		IPs:       []netip.Addr{extAddr},
		HostVeth:  externalVethName(b.opts.Name),
		bed:       b,
		external:  true,
	}
	if err := plumbExternal(ext, cidr, hostAddr, extAddr); err != nil {
		return ext, fmt.Errorf("create external host: %w", err)
	}
	return ext, nil
}

func plumbExternal(ext *Pod, cidr netip.Prefix, hostAddr, extAddr netip.Addr) error {
	nsh, err := netns.GetFromPath(ext.NetnsPath)
	if err != nil {
		return err
	}
	defer nsh.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ext.HostVeth, MTU: 1500},
		PeerName:      ext.IfName,
		PeerNamespace: netlink.NsFd(nsh),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("add veth %s: %w", ext.HostVeth, err)
	}
	host, err := netlink.LinkByName(ext.HostVeth)
	if err != nil {
		return err
	}
	hostNet := &net.IPNet{IP: hostAddr.AsSlice(), Mask: net.CIDRMask(cidr.Bits(), 32)}
	if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: hostNet}); err != nil {
		return fmt.Errorf("address %s on %s: %w", hostNet, ext.HostVeth, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return fmt.Errorf("bring up %s: %w", ext.HostVeth, err)
	}
	return withNetlinkAt(ext.NetnsPath, func(h *netlink.Handle) error {
		eth, err := h.LinkByName(ext.IfName)
		if err != nil {
			return err
		}
		extNet := &net.IPNet{IP: extAddr.AsSlice(), Mask: net.CIDRMask(cidr.Bits(), 32)}
		if err := h.AddrAdd(eth, &netlink.Addr{IPNet: extNet}); err != nil {
			return fmt.Errorf("address %s in external host: %w", extNet, err)
		}
		if err := h.LinkSetUp(eth); err != nil {
			return err
		}
		def := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: hostAddr.AsSlice()}
		if err := h.RouteAdd(def); err != nil {
			return fmt.Errorf("default route in external host: %w", err)
		}
		return nil
	})
}

func (b *Bed) deleteExternal(ext *Pod) error {
	ext.mu.Lock()
	if ext.deleted {
		ext.mu.Unlock()
		return nil
	}
	ext.deleted = true
	ext.mu.Unlock()
	errs := []error{ext.stopServers()}
	if l, err := netlink.LinkByName(ext.HostVeth); err == nil {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", ext.HostVeth, err))
		}
	}
	errs = append(errs, deleteNetns(ext.NetnsPath))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete external host: %w", err)
	}
	return nil
}
