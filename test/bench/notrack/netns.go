package notrack

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"
)

// The address plan of every bed: the pods' range, blackholed on the host,
// and the gateway every host side of a pod's veth holds (as ptp does).
var (
	Range   = netip.MustParsePrefix("10.218.0.0/16")
	Gateway = netip.MustParseAddr("10.218.0.1")
)

// NetnsPrefix starts the name of every network namespace and host veth this
// package creates.
const NetnsPrefix = "pwt-"

// podNameRE keeps "pwt-<name>" within the 15 characters of an interface name.
var podNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,10}$`)

// Bed is a set of pods: network namespaces linked to the host by veths, with
// routed /32s. It is not safe for concurrent use.
type Bed struct {
	pods      []*Pod
	blackhole bool
}

// Pod is one network namespace of a bed.
type Pod struct {
	// Name is the bed's name for the pod; Netns (pwt-<Name>) names both the
	// network namespace and the host side of its veth.
	Name, Netns string
	Addr        netip.Addr
}

// Path is the pod's netns path, /run/netns/<Netns>.
func (p *Pod) Path() string { return filepath.Join("/run/netns", p.Netns) }

func (p *Pod) String() string { return p.Netns + " (" + p.Addr.String() + ")" }

// Do runs f on a thread inside the pod's netns: sockets f creates belong to
// it.
func (p *Pod) Do(f func() error) error {
	var ferr error
	if err := ns.WithNetNSPath(p.Path(), func(ns.NetNS) error {
		ferr = f()
		return nil
	}); err != nil {
		return fmt.Errorf("enter %s: %w", p.Netns, err)
	}
	return ferr
}

// Exec runs a command inside the pod's netns and returns its combined output.
func (p *Pod) Exec(stdin string, name string, args ...string) (string, error) {
	return run(stdin, "ip", append([]string{"netns", "exec", p.Netns, name}, args...)...)
}

// NewBed enables IPv4 forwarding and blackholes Range on the host.
func NewBed() (*Bed, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("new bed: needs root (network namespaces, host routes)")
	}
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return nil, fmt.Errorf("new bed: enable forwarding: %w", err)
	}
	if _, err := run("", "ip", "route", "replace", "blackhole", Range.String(), "metric", "4242"); err != nil {
		return nil, fmt.Errorf("new bed: %w", err)
	}
	return &Bed{blackhole: true}, nil
}

// AddPod creates netns pwt-<name> holding addr, linked to the host. A netns
// of that name left behind by an earlier run is deleted first.
func (b *Bed) AddPod(name string, addr netip.Addr) (*Pod, error) {
	if !podNameRE.MatchString(name) {
		return nil, fmt.Errorf("add pod %q: want 1-11 of [a-z0-9-]", name)
	}
	if !Range.Contains(addr) || addr == Gateway {
		return nil, fmt.Errorf("add pod %s: address %s not in %s or the gateway", name, addr, Range)
	}
	p := &Pod{Name: name, Netns: NetnsPrefix + name, Addr: addr}
	// Leftovers of a run that died: this package's names only.
	if _, err := os.Stat("/sys/class/net/" + p.Netns); err == nil {
		if _, err := run("", "ip", "link", "del", p.Netns); err != nil {
			return nil, fmt.Errorf("add pod %s: remove the leftover veth: %w", name, err)
		}
	}
	if _, err := os.Stat(p.Path()); err == nil {
		if _, err := run("", "ip", "netns", "del", p.Netns); err != nil {
			return nil, fmt.Errorf("add pod %s: remove the leftover netns: %w", name, err)
		}
	}
	if _, err := run("", "ip", "netns", "add", p.Netns); err != nil {
		return nil, fmt.Errorf("add pod %s: %w", name, err)
	}
	b.pods = append(b.pods, p)
	host := p.Netns
	gw := Gateway.String()
	steps := [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", p.Netns},
		{"addr", "add", gw + "/32", "dev", host},
		{"link", "set", host, "up"},
		{"-n", p.Netns, "link", "set", "lo", "up"},
		{"-n", p.Netns, "addr", "add", addr.String() + "/32", "dev", "eth0"},
		{"-n", p.Netns, "link", "set", "eth0", "up"},
		{"-n", p.Netns, "route", "add", gw + "/32", "dev", "eth0", "scope", "link"},
		{"-n", p.Netns, "route", "add", "default", "via", gw, "dev", "eth0"},
		{"route", "add", addr.String() + "/32", "dev", host, "scope", "link", "src", gw},
	}
	for _, s := range steps {
		if _, err := run("", "ip", s...); err != nil {
			return nil, fmt.Errorf("add pod %s: %w", name, err)
		}
	}
	return p, nil
}

// SetHostMTU sets the MTU of the host side of p's veth: packets the host
// forwards to p larger than that get "fragmentation needed" back.
func (b *Bed) SetHostMTU(p *Pod, mtu int) error {
	_, err := run("", "ip", "link", "set", p.Netns, "mtu", fmt.Sprint(mtu))
	return err
}

// Close deletes every pod (its veth and host route go with it) and the
// blackhole route.
func (b *Bed) Close() error {
	var errs []error
	for _, p := range b.pods {
		// Deleting the host side first removes the pair at once; a dying
		// netns would release it only eventually.
		if _, err := os.Stat("/sys/class/net/" + p.Netns); err == nil {
			if _, err := run("", "ip", "link", "del", p.Netns); err != nil {
				errs = append(errs, err)
			}
		}
		if _, err := run("", "ip", "netns", "del", p.Netns); err != nil {
			errs = append(errs, err)
		}
	}
	b.pods = nil
	if b.blackhole {
		if _, err := run("", "ip", "route", "del", "blackhole", Range.String(), "metric", "4242"); err != nil {
			errs = append(errs, err)
		}
		b.blackhole = false
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close bed: %w", err)
	}
	return nil
}

// run runs a command with stdin and returns its combined output; the error
// carries the command and its output.
func run(stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
