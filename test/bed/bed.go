package bed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// CNIVersion is the cniVersion of the conflist the bed writes.
const CNIVersion = "1.1.0"

// blackholeMetric is the metric of the host blackhole routes the bed adds: high,
// so that a real route with the same prefix (the external host's connected
// route) wins while it exists.
const blackholeMetric = 4242

// Options configures a Bed.
type Options struct {
	// Name is short (1–10 of [a-z0-9]) and unique among the beds running on the
	// machine: it names the network (pw-<Name>), the netns (pw-<Name>-<n>,
	// pw-<Name>-ext) and the external host's veth (pw-<Name>-x).
	Name string
	// CNIBinDir holds ptp, host-local and, when Extra has it, podwall.
	CNIBinDir string
	// CNIPath lists more directories searched for plugins after CNIBinDir
	// (e.g. the one holding a freshly built podwall).
	CNIPath []string
	// PodCIDRv4 and PodCIDRv6 are host-local's ranges; at least one is set.
	// Both set means dual-stack pods. Each gets a host blackhole route, so they
	// must be used by this bed only.
	PodCIDRv4, PodCIDRv6 netip.Prefix
	// Extra plugin configurations appended to the chain after ptp, e.g.
	// {"type": "podwall", "socket": "/run/x.sock", "timeout": "5s"}.
	Extra []map[string]any
	// ExternalCIDRv4, when set, adds an external host netns (pw-<Name>-ext)
	// holding the .10 address of the range, linked to the host by a veth whose
	// host side holds .1.
	ExternalCIDRv4 netip.Prefix
}

// Bed is a set of pods (network namespaces plumbed through a CNI chain) on
// this machine, with an optional external host. Its methods are safe for
// concurrent use.
type Bed struct {
	opts       Options
	network    string
	dir        string
	confList   []byte
	netList    *libcni.NetworkConfigList
	cni        *libcni.CNIConfig
	blackholes []netip.Prefix // host blackhole routes added by New
	sctp       sctpWaiters

	mu       sync.Mutex
	closed   bool
	next     int
	pods     map[*Pod]struct{}
	external *Pod
}

var bedNameRE = regexp.MustCompile(`^[a-z0-9]{1,10}$`)

// New validates opts, writes the conflist (cniVersion 1.1.0, name pw-<Name>)
// and host-local's data dir in a temporary directory, enables IPv4 (and IPv6)
// forwarding, adds host blackhole routes for every pod range and the external
// range, and creates the external host. On failure it undoes what it did.
func New(opts Options) (*Bed, error) {
	if err := validateOptions(&opts); err != nil {
		return nil, fmt.Errorf("new bed: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("new bed %s: needs root (network namespaces, host routes)", opts.Name)
	}
	if err := checkNoLeftovers(opts.Name); err != nil {
		return nil, fmt.Errorf("new bed %s: %w", opts.Name, err)
	}
	b := &Bed{
		opts:    opts,
		network: "pw-" + opts.Name,
		pods:    map[*Pod]struct{}{},
	}
	b.sctp.init()
	if err := b.setUp(); err != nil {
		return nil, errors.Join(fmt.Errorf("new bed %s: %w", opts.Name, err), b.Close())
	}
	return b, nil
}

func (b *Bed) setUp() error {
	dir, err := os.MkdirTemp("", "podwall-bed-"+b.opts.Name+"-")
	if err != nil {
		return err
	}
	b.dir = dir
	for _, sub := range []string{"ipam", "cache"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	confList, err := renderConfList(b.network, b.opts, filepath.Join(dir, "ipam"))
	if err != nil {
		return err
	}
	b.confList = confList
	if err := os.WriteFile(filepath.Join(dir, b.network+".conflist"), confList, 0o600); err != nil {
		return err
	}
	b.netList, err = libcni.NetworkConfFromBytes(confList)
	if err != nil {
		return fmt.Errorf("parse conflist: %w", err)
	}
	// An explicit exec: libcni would otherwise set its default lazily, racing
	// when pods are added concurrently.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	b.cni = libcni.NewCNIConfigWithCacheDir(append([]string{b.opts.CNIBinDir}, b.opts.CNIPath...), filepath.Join(dir, "cache"), exec)

	if err := enableForwarding(b.opts.PodCIDRv6.IsValid()); err != nil {
		return err
	}
	for _, p := range []netip.Prefix{b.opts.PodCIDRv4, b.opts.PodCIDRv6, b.opts.ExternalCIDRv4} {
		if !p.IsValid() {
			continue
		}
		if err := netlink.RouteReplace(blackholeRoute(p)); err != nil {
			return fmt.Errorf("add host blackhole route %s: %w", p, err)
		}
		b.blackholes = append(b.blackholes, p)
	}
	if err := runSetUpHook("blackholes"); err != nil {
		return err
	}
	if b.opts.ExternalCIDRv4.IsValid() {
		ext, err := b.createExternal()
		if ext != nil {
			b.external = ext
		}
		if err != nil {
			return err
		}
	}
	return runSetUpHook("external")
}

// setUpHook, when set (by tests), runs after each stage of New's set-up and
// makes New fail there if it returns an error.
var setUpHook func(stage string) error

func runSetUpHook(stage string) error {
	if setUpHook == nil {
		return nil
	}
	return setUpHook(stage)
}

func validateOptions(o *Options) error {
	if !bedNameRE.MatchString(o.Name) {
		return fmt.Errorf("name %q: want 1-10 of [a-z0-9]", o.Name)
	}
	if o.CNIBinDir == "" {
		return fmt.Errorf("no CNIBinDir")
	}
	if !o.PodCIDRv4.IsValid() && !o.PodCIDRv6.IsValid() {
		return fmt.Errorf("no pod range: set PodCIDRv4, PodCIDRv6 or both")
	}
	if p := o.PodCIDRv4; p.IsValid() {
		if !p.Addr().Is4() || p.Bits() > 30 {
			return fmt.Errorf("PodCIDRv4 %s: want an IPv4 prefix of /30 or wider", p)
		}
		o.PodCIDRv4 = p.Masked()
	}
	if p := o.PodCIDRv6; p.IsValid() {
		if !p.Addr().Is6() || p.Addr().Is4In6() || p.Bits() > 126 {
			return fmt.Errorf("PodCIDRv6 %s: want an IPv6 prefix of /126 or wider", p)
		}
		o.PodCIDRv6 = p.Masked()
	}
	if p := o.ExternalCIDRv4; p.IsValid() {
		if !p.Addr().Is4() || p.Bits() > 28 {
			return fmt.Errorf("ExternalCIDRv4 %s: want an IPv4 prefix of /28 or wider", p)
		}
		o.ExternalCIDRv4 = p.Masked()
		if o.PodCIDRv4.IsValid() && o.PodCIDRv4.Overlaps(p) {
			return fmt.Errorf("ExternalCIDRv4 %s overlaps PodCIDRv4 %s", p, o.PodCIDRv4)
		}
	}
	dirs := append([]string{o.CNIBinDir}, o.CNIPath...)
	required := []string{"ptp", "host-local"}
	for i, extra := range o.Extra {
		typ, ok := extra["type"].(string)
		if !ok || typ == "" {
			return fmt.Errorf("Extra[%d]: no \"type\" string", i)
		}
		if typ == "podwall" {
			required = append(required, typ)
		}
	}
	for _, name := range required {
		if !slices.ContainsFunc(dirs, func(d string) bool { return isExecutable(filepath.Join(d, name)) }) {
			return fmt.Errorf("cni plugin %s not found in %v", name, dirs)
		}
	}
	return nil
}

// checkNoLeftovers refuses a name whose netns or veth already exist: either
// another bed of that name is running, or an earlier run leaked them.
func checkNoLeftovers(name string) error {
	matches, _ := filepath.Glob(filepath.Join(netnsDir, "pw-"+name+"-*"))
	if len(matches) > 0 {
		return fmt.Errorf("netns %v already exist (another bed named %q is running, or a previous run leaked them: ip netns del NAME)", matches, name)
	}
	if _, err := netlink.LinkByName(externalVethName(name)); err == nil {
		return fmt.Errorf("link %s already exists (another bed named %q is running, or a previous run leaked it)", externalVethName(name), name)
	}
	return nil
}

// renderConfList renders the bed's conflist: ptp with host-local (one range
// per family, default routes), then opts.Extra.
func renderConfList(network string, opts Options, ipamDir string) ([]byte, error) {
	var ranges [][]map[string]string
	var routes []map[string]string
	if opts.PodCIDRv4.IsValid() {
		ranges = append(ranges, []map[string]string{{"subnet": opts.PodCIDRv4.String()}})
		routes = append(routes, map[string]string{"dst": "0.0.0.0/0"})
	}
	if opts.PodCIDRv6.IsValid() {
		ranges = append(ranges, []map[string]string{{"subnet": opts.PodCIDRv6.String()}})
		routes = append(routes, map[string]string{"dst": "::/0"})
	}
	plugins := []any{map[string]any{
		"type":   "ptp",
		"ipMasq": false,
		"ipam": map[string]any{
			"type":    "host-local",
			"dataDir": ipamDir,
			"ranges":  ranges,
			"routes":  routes,
		},
	}}
	for _, extra := range opts.Extra {
		plugins = append(plugins, extra)
	}
	return json.MarshalIndent(map[string]any{
		"cniVersion": CNIVersion,
		"name":       network,
		"plugins":    plugins,
	}, "", "  ")
}

// ConfList returns the conflist the bed runs (a copy).
func (b *Bed) ConfList() []byte { return slices.Clone(b.confList) }

// Name returns the bed's name.
func (b *Bed) Name() string { return b.opts.Name }

// Network returns the CNI network name, pw-<Name>.
func (b *Bed) Network() string { return b.network }

// CNI returns the libcni client the bed uses (plugin path and result cache),
// so tests can run DEL, CHECK, GC and STATUS themselves with NetworkList and
// Pod.RuntimeConf.
func (b *Bed) CNI() *libcni.CNIConfig { return b.cni }

// NetworkList returns the parsed conflist, for use with CNI.
func (b *Bed) NetworkList() *libcni.NetworkConfigList { return b.netList }

// Attachments returns the attachments of the bed's live pods, the valid
// attachments of a CNI GC.
func (b *Bed) Attachments() []types.GCAttachment {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []types.GCAttachment
	for p := range b.pods {
		out = append(out, types.GCAttachment{ContainerID: p.ContainerID, IfName: p.IfName})
	}
	slices.SortFunc(out, func(a, c types.GCAttachment) int { return strings.Compare(a.ContainerID, c.ContainerID) })
	return out
}

// Pods returns the bed's live pods (not the external host), sorted by
// namespace/name.
func (b *Bed) Pods() []*Pod {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*Pod, 0, len(b.pods))
	for p := range b.pods {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, c *Pod) int { return strings.Compare(a.String(), c.String()) })
	return out
}

// External returns the external host, or nil when Options.ExternalCIDRv4 was
// not set.
func (b *Bed) External() *Pod {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.external
}

// Close deletes every pod (CNI DEL, then the netns), the external host, the
// host blackhole routes and the temporary directory. It goes on past failures,
// returns them joined, and is safe to call twice and after a failed New.
// Forwarding stays enabled (other beds may run).
func (b *Bed) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	pods := make([]*Pod, 0, len(b.pods))
	for p := range b.pods {
		pods = append(pods, p)
	}
	ext := b.external
	b.mu.Unlock()

	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for _, p := range pods {
		errs = append(errs, b.DelPod(ctx, p))
	}
	if ext != nil {
		errs = append(errs, b.deleteExternal(ext))
	}
	for _, p := range b.blackholes {
		if err := netlink.RouteDel(blackholeRoute(p)); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete host blackhole route %s: %w", p, err))
		}
	}
	b.blackholes = nil
	if b.dir != "" {
		if err := os.RemoveAll(b.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close bed %s: %w", b.opts.Name, err)
	}
	return nil
}

func blackholeRoute(p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		Dst:      prefixToIPNet(p),
		Type:     unix.RTN_BLACKHOLE,
		Priority: blackholeMetric,
		Table:    unix.RT_TABLE_MAIN,
	}
}

func enableForwarding(v6 bool) error {
	files := []string{"/proc/sys/net/ipv4/ip_forward"}
	if v6 {
		files = append(files, "/proc/sys/net/ipv6/conf/all/forwarding")
	}
	for _, f := range files {
		if err := os.WriteFile(f, []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
