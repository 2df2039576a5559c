package bed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces live (as with `ip netns`).
const netnsDir = "/run/netns"

// cleanupTimeout bounds the CNI DELs Close runs.
const cleanupTimeout = 60 * time.Second

// createNetns creates the named network namespace /run/netns/<name> (visible
// to `ip netns`), brings its loopback up, and returns its path.
func createNetns(name string) (string, error) {
	path := filepath.Join(netnsDir, name)
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it ends with this goroutine, so no
		// thread of the process stays in the new netns.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err != nil {
			errc <- err
			return
		}
		h.Close()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		if !errors.Is(err, fs.ErrExist) {
			// NewNamed leaves the mount point behind when the mount fails.
			os.Remove(path)
		}
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := withNetlinkAt(path, func(h *netlink.Handle) error {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		return h.LinkSetUp(lo)
	}); err != nil {
		return path, errors.Join(fmt.Errorf("bring up lo in netns %s: %w", name, err), deleteNetns(path))
	}
	return path, nil
}

// deleteNetns unmounts and removes a named netns; a missing one is not an
// error. The namespace itself goes away once nothing references it.
func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", path, err)
	}
	return nil
}

// deleteLinksIn deletes every link but lo inside the netns at path, which
// also deletes the host side of veth pairs right away (a dying netns would do
// it only eventually). A netns that is already gone is not an error.
func deleteLinksIn(path string) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return withNetlinkAt(path, func(h *netlink.Handle) error {
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		var errs []error
		for _, l := range links {
			if l.Attrs().Name == "lo" {
				continue
			}
			if err := h.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", l.Attrs().Name, err))
			}
		}
		return errors.Join(errs...)
	})
}

// withNetlinkAt runs fn with a netlink handle bound to the netns at path.
func withNetlinkAt(path string, fn func(*netlink.Handle) error) error {
	nsh, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return fmt.Errorf("netlink in netns %s: %w", path, err)
	}
	defer h.Close()
	return fn(h)
}

// inNetns runs fn on a thread inside the netns at path. Sockets fn opens stay
// in that netns and can be used from any goroutine afterwards.
func inNetns(path string, fn func() error) error {
	var fnErr error
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		fnErr = fn()
		return nil
	})
	if err != nil {
		return fmt.Errorf("enter netns %s: %w", path, err)
	}
	return fnErr
}
