// Package ipsets reads the ipsets inside a pod's network namespace over
// netlink, from the benchmark process itself: no `ipset` command is run, so
// polling dozens of namespaces every few milliseconds stays cheap enough not
// to disturb the daemon being measured. It only reads. It must not import
// podwall's own packages.
//
// The netlink library logs (standard log package) every ipset attribute it
// does not decode, several per set that List dumps: programs that list often
// filter those lines.
package ipsets

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Reader reads the ipsets of one network namespace.
type Reader struct {
	path string
	nsh  netns.NsHandle
	h    *netlink.Handle
}

// Set is one ipset and its members.
type Set struct {
	Name    string
	Members []netip.Prefix
}

// Open returns a Reader of the netns at path (needs root).
func Open(path string) (*Reader, error) {
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_NETFILTER)
	if err != nil {
		nsh.Close()
		return nil, fmt.Errorf("netfilter netlink in netns %s: %w", path, err)
	}
	return &Reader{path: path, nsh: nsh, h: h}, nil
}

// Close releases the netlink socket and the netns handle.
func (r *Reader) Close() {
	r.h.Close()
	r.nsh.Close()
}

// List returns the sets whose names start with prefix, sorted by name, with
// their members. A set the kernel dumps in several messages is merged.
func (r *Reader) List(prefix string) ([]Set, error) {
	results, err := r.h.IpsetListAll()
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list ipsets in %s: %w", r.path, err)
	}
	byName := map[string]*Set{}
	var names []string
	for _, res := range results {
		if !strings.HasPrefix(res.SetName, prefix) {
			continue
		}
		s := byName[res.SetName]
		if s == nil {
			s = &Set{Name: res.SetName}
			byName[res.SetName] = s
			names = append(names, res.SetName)
		}
		for _, e := range res.Entries {
			p, ok := entryPrefix(e)
			if ok {
				s.Members = append(s.Members, p)
			}
		}
	}
	slices.Sort(names)
	out := make([]Set, 0, len(names))
	for _, n := range names {
		out = append(out, *byName[n])
	}
	return out, nil
}

func entryPrefix(e netlink.IPSetEntry) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(e.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	bits := int(e.CIDR)
	if bits == 0 {
		bits = a.BitLen()
	}
	return netip.PrefixFrom(a, bits), true
}

// Contains reports whether set holds addr (a member covers it). A set that
// does not exist is an error.
func (r *Reader) Contains(set string, addr netip.Addr) (bool, error) {
	ok, err := r.h.IpsetTest(set, &netlink.IPSetEntry{IP: net.IP(addr.AsSlice())})
	if err != nil {
		return false, fmt.Errorf("test %s in ipset %s of %s: %w", addr, set, r.path, err)
	}
	return ok, nil
}

// SetHolding returns the name of the only set (of those named with prefix)
// that holds addr, or an error when none or several do.
func (r *Reader) SetHolding(prefix string, addr netip.Addr) (string, error) {
	sets, err := r.List(prefix)
	if err != nil {
		return "", err
	}
	var found []string
	for _, s := range sets {
		if slices.ContainsFunc(s.Members, func(p netip.Prefix) bool { return p.Contains(addr) }) {
			found = append(found, s.Name)
		}
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%s: %d ipsets %v hold %s, want exactly one", r.path, len(found), found, addr)
	}
	return found[0], nil
}
