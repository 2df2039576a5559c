package main

import (
	"fmt"
	"os"
	"syscall"
)

const (
	// nsfsMagic is NSFS_MAGIC, the statfs type of namespace files: both
	// /proc/PID/ns/net and the bind mounts runtimes keep under /run/netns.
	nsfsMagic = 0x6e736673
	// nsGetNSType is the NS_GET_NSTYPE ioctl (Linux 4.11+); it returns the
	// CLONE_NEW* flag of the namespace the file refers to.
	nsGetNSType = 0xb703
)

// checkNetNS returns nil when path refers to a network namespace other than
// the plugin's own, and otherwise an error wrapping errInvalidNetNS. It
// decides by what the file is (statfs NSFS_MAGIC, then NS_GET_NSTYPE), never
// by where it lives: a leftover file under /run/netns whose bind mount is gone
// is not a namespace, and /proc/self/ns/pid is a namespace but not a network
// one. The plugin's own namespace (the host's) is refused so the daemon never
// puts a pod's firewall on the node.
func checkNetNS(path string) error {
	if path == "" {
		return fmt.Errorf("%w: CNI_NETNS is empty", errInvalidNetNS)
	}
	// statfs the path before opening it: opening a FIFO would block.
	var fs syscall.Statfs_t
	if err := syscall.Statfs(path, &fs); err != nil {
		return fmt.Errorf("%w: statfs %s: %w", errInvalidNetNS, path, err)
	}
	if uint64(fs.Type) != nsfsMagic {
		return fmt.Errorf("%w: %s is not a namespace (filesystem type %#x, want nsfs)", errInvalidNetNS, path, fs.Type)
	}
	file, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w", errInvalidNetNS, err)
	}
	defer file.Close()
	kind, _, errno := syscall.Syscall(syscall.SYS_IOCTL, file.Fd(), nsGetNSType, 0)
	switch {
	case errno == syscall.ENOTTY || errno == syscall.EINVAL:
		// A kernel older than 4.11 cannot tell; nsfs is the best it offers.
	case errno != 0:
		return fmt.Errorf("%w: NS_GET_NSTYPE %s: %w", errInvalidNetNS, path, errno)
	case kind != syscall.CLONE_NEWNET:
		return fmt.Errorf("%w: %s is a namespace but not a network namespace", errInvalidNetNS, path)
	}

	var target, own syscall.Stat_t
	if err := syscall.Fstat(int(file.Fd()), &target); err != nil {
		return fmt.Errorf("%w: stat %s: %w", errInvalidNetNS, path, err)
	}
	if err := syscall.Stat("/proc/self/ns/net", &own); err != nil {
		return fmt.Errorf("%w: stat the plugin's own netns: %w", errInvalidNetNS, err)
	}
	if target.Dev == own.Dev && target.Ino == own.Ino {
		return fmt.Errorf("%w: %s is the plugin's own network namespace, not a pod's", errInvalidNetNS, path)
	}
	return nil
}
