package harness

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// What /proc and /metrics say about a running process: the reliability
// tests measure a daemon's file descriptors, network namespace handles,
// threads, goroutines and sockets before and after a fault, and list the
// sockets it listens on.

// PID returns the process ID of the running podwalld, 0 if none runs.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	select {
	case <-d.exited:
		return 0
	default:
		return d.cmd.Process.Pid
	}
}

// ProcessSnapshot is what /proc/<pid> shows of a process at one moment.
type ProcessSnapshot struct {
	PID int
	// FDs is the number of open file descriptors.
	FDs int
	// NetnsFDs counts the descriptors that are network namespaces
	// (links to "net:[inode]").
	NetnsFDs int
	// Threads is the number of OS threads.
	Threads int
	// TCPListeners are the process's TCP sockets in LISTEN state, IPv4 and
	// IPv6, from its network namespace's /proc/<pid>/net/tcp{,6}.
	TCPListeners []netip.AddrPort
	// UDPSockets are its bound UDP sockets (/proc/<pid>/net/udp{,6}).
	UDPSockets []netip.AddrPort
	// UnixListeners are the paths of its listening unix sockets ("@name"
	// for abstract ones, "" for unnamed ones).
	UnixListeners []string
}

// SnapshotProcess reads /proc for pid.
func SnapshotProcess(pid int) (*ProcessSnapshot, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("snapshot process: invalid pid %d", pid)
	}
	base := filepath.Join("/proc", strconv.Itoa(pid))
	snap := &ProcessSnapshot{PID: pid}
	entries, err := os.ReadDir(filepath.Join(base, "fd"))
	if err != nil {
		return nil, fmt.Errorf("snapshot process %d: %w", pid, err)
	}
	sockets := map[string]bool{} // inode
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(base, "fd", e.Name()))
		if errors.Is(err, os.ErrNotExist) {
			continue // closed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("snapshot process %d: %w", pid, err)
		}
		snap.FDs++
		switch {
		case strings.HasPrefix(target, "net:["):
			snap.NetnsFDs++
		case strings.HasPrefix(target, "socket:["):
			sockets[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	tasks, err := os.ReadDir(filepath.Join(base, "task"))
	if err != nil {
		return nil, fmt.Errorf("snapshot process %d: %w", pid, err)
	}
	snap.Threads = len(tasks)
	// Sockets belong to network namespaces, and /proc/<pid>/net shows the
	// namespace of the main thread only, which may be lent to a goroutine
	// inside a pod's netns at that moment: read every thread's view.
	seen := map[string]bool{}
	for _, task := range tasks {
		taskNet := filepath.Join(base, "task", task.Name(), "net")
		for _, table := range []struct {
			file   string
			listen bool
			dst    *[]netip.AddrPort
		}{
			{"tcp", true, &snap.TCPListeners},
			{"tcp6", true, &snap.TCPListeners},
			{"udp", false, &snap.UDPSockets},
			{"udp6", false, &snap.UDPSockets},
		} {
			found, err := readInetSockets(filepath.Join(taskNet, table.file), sockets, table.listen, seen)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue // the thread exited meanwhile
				}
				return nil, fmt.Errorf("snapshot process %d: %w", pid, err)
			}
			*table.dst = append(*table.dst, found...)
		}
		found, err := readUnixListeners(filepath.Join(taskNet, "unix"), sockets, seen)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("snapshot process %d: %w", pid, err)
		}
		snap.UnixListeners = append(snap.UnixListeners, found...)
	}
	return snap, nil
}

// tcpListen is the st column of a socket in LISTEN state.
const tcpListen = "0A"

// readInetSockets returns the local addresses of the sockets in a
// /proc/net/{tcp,udp}{,6} table whose inode is in inodes and not yet in
// seen (only those in LISTEN state when listen is set), adding them to
// seen.
func readInetSockets(path string, inodes map[string]bool, listen bool, seen map[string]bool) ([]netip.AddrPort, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.AddrPort
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || !inodes[fields[9]] || seen[fields[9]] {
			continue
		}
		if listen && fields[3] != tcpListen {
			continue
		}
		seen[fields[9]] = true
		ap, err := parseProcAddrPort(fields[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, ap)
	}
	return out, sc.Err()
}

// parseProcAddrPort parses "0100007F:1F90" (IPv4) or the 32-digit IPv6
// form: the address in host byte order per 32-bit word, the port in hex.
func parseProcAddrPort(s string) (netip.AddrPort, error) {
	addrHex, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad socket address %q", s)
	}
	raw, err := hex.DecodeString(addrHex)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad socket address %q", s)
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad socket port %q", s)
	}
	// Each 32-bit word is printed as a little-endian number.
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// unixListening is the flag of a listening unix socket (__SO_ACCEPTCON).
const unixListening = "00010000"

// readUnixListeners returns the paths of the listening unix sockets in
// /proc/net/unix whose inode is in inodes and not yet in seen, adding them
// to seen.
func readUnixListeners(path string, inodes map[string]bool, seen map[string]bool) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode [Path]
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || !inodes[fields[6]] || seen[fields[6]] || fields[3] != unixListening {
			continue
		}
		seen[fields[6]] = true
		p := ""
		if len(fields) > 7 {
			p = fields[7]
		}
		out = append(out, p)
	}
	return out, sc.Err()
}

// FreeLoopbackAddr returns 127.0.0.1:<port> with a port that was free a
// moment ago, for a --metrics-address.
func FreeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// ScrapeMetric returns the value of the unlabelled sample name (e.g.
// go_goroutines) from the Prometheus text served at http://addr/metrics.
func ScrapeMetric(ctx context.Context, addr, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("scrape %s: %s", addr, resp.Status)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("scrape %s: %w", addr, err)
	}
	for line := range strings.Lines(string(body)) {
		value, ok := strings.CutPrefix(strings.TrimSpace(line), name+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			return 0, fmt.Errorf("scrape %s: %s: %w", addr, name, err)
		}
		return v, nil
	}
	return 0, fmt.Errorf("scrape %s: no sample %s", addr, name)
}
