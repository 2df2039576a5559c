package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kube-proxy on the host: a real kube-proxy in iptables mode (ip6tables for
// IPv6), in the host netns, programming the cluster's Services for traffic
// that arrives from pod veths. Its KUBE-* chains are host-wide and
// `kube-proxy --cleanup` removes all of them, so only one kube-proxy may run
// on the machine at a time, whatever process started it: StartProxy takes
// the host-wide lock ProxyLockPath (flock) and holds it until StopProxy has
// stopped kube-proxy and cleaned its rules up.

// ProxyLockPath is the host-wide lock held while a kube-proxy of this
// package programs the host.
const ProxyLockPath = "/run/lock/podwall-kube-proxy.lock"

// DefaultProxyLockTimeout bounds the wait for ProxyLockPath when
// ProxyOptions.LockTimeout is unset: another test process may hold it for
// its whole run.
const DefaultProxyLockTimeout = 20 * time.Minute

// proxyCleanupTimeout bounds one `kube-proxy --cleanup`.
const proxyCleanupTimeout = time.Minute

// ProxyOptions configures the cluster's kube-proxy.
type ProxyOptions struct {
	// NodeName is kube-proxy's --hostname-override. kube-proxy programs
	// nothing until a Node of that name has an InternalIP: StartProxy
	// creates the Node (with NodeIPs) when none exists.
	NodeName string
	// NodeIPs are the InternalIPs of the Node StartProxy creates, at most
	// one per family; required when the Node does not exist.
	NodeIPs []netip.Addr
	// ClusterCIDRs are the pod ranges, at most one per family
	// (--cluster-cidr, detect-local-mode ClusterCIDR): traffic from them to
	// a Service is not masqueraded, so the server sees the client pod's IP.
	// Traffic from elsewhere (the node itself) is.
	ClusterCIDRs []netip.Prefix
	// LockTimeout bounds the wait for the host-wide lock; default
	// DefaultProxyLockTimeout. The context passed to StartProxy bounds it
	// too.
	LockTimeout time.Duration
	// MinSyncPeriod is iptables.minSyncPeriod, the least time between two
	// syncs of the rules; default 1 s (upstream's default).
	MinSyncPeriod time.Duration
}

func (o *ProxyOptions) validate() error {
	if o.NodeName == "" {
		return errors.New("kube-proxy: no node name")
	}
	families := map[bool]bool{}
	for _, p := range o.ClusterCIDRs {
		if !p.IsValid() || p.Addr().Is4In6() {
			return fmt.Errorf("kube-proxy: invalid cluster range %s", p)
		}
		if families[p.Addr().Is4()] {
			return fmt.Errorf("kube-proxy: cluster ranges %v: at most one per family", o.ClusterCIDRs)
		}
		families[p.Addr().Is4()] = true
	}
	if o.MinSyncPeriod < 0 || o.LockTimeout < 0 {
		return errors.New("kube-proxy: negative duration")
	}
	return nil
}

// Proxy is a running kube-proxy of a cluster. Its methods are safe for
// concurrent use.
type Proxy struct {
	c          *Cluster
	opts       ProxyOptions
	path       string
	proc       *process
	lock       *os.File
	healthzURL string

	snapMu sync.Mutex // one iptables-save at a time; guards snaps
	snaps  map[ipFamily]ruleSnapshot
}

// ipFamily is an IP family of the host's rules.
type ipFamily int

// The families: iptables and ip6tables.
const (
	familyV4 ipFamily = 4
	familyV6 ipFamily = 6
)

func (f ipFamily) String() string {
	if f == familyV6 {
		return "IPv6"
	}
	return "IPv4"
}

func familyOf(a netip.Addr) ipFamily {
	if a.Unmap().Is4() {
		return familyV4
	}
	return familyV6
}

// ruleSnapshot is one family's iptables-save output, split into rules.
type ruleSnapshot struct {
	taken time.Time
	rules []rule
}

// snapshotMaxAge is how long a snapshot of the host's rules answers
// waiters before the next iptables-save: many tests wait at once.
const snapshotMaxAge = 300 * time.Millisecond

// StartProxy starts kube-proxy in iptables mode on the host for the
// cluster, as system:kube-proxy (the default system:node-proxier role), and
// waits until it has programmed the default kubernetes Service. It first
// takes the host-wide lock (waiting while another kube-proxy runs) and
// removes what an earlier kube-proxy left behind (`kube-proxy --cleanup`).
// Its metrics and healthz listen on free 127.0.0.1 ports. It leaves the
// host's conntrack sysctls and route_localnet alone (conntrack limits and
// timeouts 0, no localhost NodePorts). On failure nothing is left running
// and the lock is released. A cluster has at most one kube-proxy; Stop and
// StopProxy stop it.
func (c *Cluster) StartProxy(ctx context.Context, opts ProxyOptions) (*Proxy, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("start kube-proxy: %w", err)
	}
	path := filepath.Join(c.binDir(), "kube-proxy")
	if !isExecutable(path) {
		return nil, fmt.Errorf("start kube-proxy: %w: %s (build it with test/kube/build-bins.sh or make kube-bins)", ErrBinaryMissing, path)
	}
	if c.isStopped() {
		return nil, errors.New("start kube-proxy: cluster stopped")
	}
	c.proxyMu.Lock()
	if c.proxy != nil || c.proxyStarting {
		c.proxyMu.Unlock()
		return nil, errors.New("start kube-proxy: already running")
	}
	c.proxyStarting = true
	c.proxyMu.Unlock()
	defer func() {
		c.proxyMu.Lock()
		c.proxyStarting = false
		c.proxyMu.Unlock()
	}()
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultProxyLockTimeout
	}
	if opts.MinSyncPeriod == 0 {
		opts.MinSyncPeriod = time.Second
	}

	lockCtx, cancel := context.WithTimeout(ctx, opts.LockTimeout)
	lock, err := acquireProxyLock(lockCtx, c.dir, c.isStopped)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("start kube-proxy: %w", err)
	}
	p := &Proxy{c: c, opts: opts, path: path, lock: lock, snaps: map[ipFamily]ruleSnapshot{}}
	ctx, cancel = withDefaultTimeout(ctx, DefaultStartTimeout)
	defer cancel()
	if err := p.start(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("start kube-proxy: %w", err), p.stop())
	}
	c.proxyMu.Lock()
	defer c.proxyMu.Unlock()
	if c.isStopped() {
		return nil, errors.Join(errors.New("start kube-proxy: cluster stopped meanwhile"), p.stop())
	}
	c.proxy = p
	return p, nil
}

// binDir is the directory of the cluster's Kubernetes binaries.
func (c *Cluster) binDir() string {
	if c.opts.BinDir != "" {
		return c.opts.BinDir
	}
	return BinDir()
}

// acquireProxyLock takes ProxyLockPath exclusively, retrying until ctx
// ends or stopped returns true, and records the holder (pid, cluster dir)
// in it.
func acquireProxyLock(ctx context.Context, holder string, stopped func() bool) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(ProxyLockPath), 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", ProxyLockPath, err)
	}
	f, err := os.OpenFile(ProxyLockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", ProxyLockPath, err)
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", ProxyLockPath, err)
		}
		if stopped() {
			f.Close()
			return nil, errors.New("cluster stopped while waiting for the kube-proxy lock")
		}
		select {
		case <-ctx.Done():
			held, _ := os.ReadFile(ProxyLockPath)
			f.Close()
			return nil, fmt.Errorf("lock %s (another kube-proxy programs this host: %s): %w",
				ProxyLockPath, strings.TrimSpace(string(held)), ctx.Err())
		case <-tick.C:
		}
	}
	// Who holds it, for the error of whoever waits next.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(fmt.Sprintf("pid %d, cluster %s, since %s\n", os.Getpid(), holder, time.Now().Format(time.RFC3339))), 0)
	}
	return f, nil
}

func (p *Proxy) start(ctx context.Context) error {
	if err := p.cleanup(); err != nil {
		return fmt.Errorf("clean up an earlier kube-proxy's rules: %w", err)
	}
	if err := p.ensureNode(ctx); err != nil {
		return err
	}
	kubeconfig := filepath.Join(p.c.dir, "kube-proxy.kubeconfig")
	if err := writeKubeconfig(kubeconfig, p.c.apiURL, p.c.pki.caPEM, "system:kube-proxy", p.c.proxyToken); err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	healthz := "127.0.0.1:" + strconv.Itoa(ports[0])
	metrics := "127.0.0.1:" + strconv.Itoa(ports[1])
	p.healthzURL = "http://" + healthz + "/healthz"
	config := filepath.Join(p.c.dir, "kube-proxy.yaml")
	if err := os.WriteFile(config, []byte(renderProxyConfig(p.opts, kubeconfig, healthz, metrics)), 0o600); err != nil {
		return fmt.Errorf("write kube-proxy config: %w", err)
	}
	p.proc = &process{
		name:    "kube-proxy",
		path:    p.path,
		logPath: filepath.Join(p.c.dir, "kube-proxy.log"),
		args:    []string{"--config=" + config, "--v=1"},
	}
	if err := p.proc.start(); err != nil {
		return err
	}
	return p.waitSynced(ctx)
}

// renderProxyConfig returns kube-proxy's KubeProxyConfiguration.
func renderProxyConfig(opts ProxyOptions, kubeconfig, healthz, metrics string) string {
	var cidrs []string
	for _, p := range opts.ClusterCIDRs {
		cidrs = append(cidrs, p.Masked().String())
	}
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: %q
  qps: 50
  burst: 100
hostnameOverride: %q
clusterCIDR: %q
detectLocalMode: ClusterCIDR
healthzBindAddress: %q
metricsBindAddress: %q
# Leave the host alone: no conntrack table size or timeout changes, no
# route_localnet (localhost NodePorts), no OOM score.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
iptables:
  localhostNodePorts: false
  masqueradeAll: false
  minSyncPeriod: %s
  syncPeriod: 30s
oomScoreAdj: 0
`, kubeconfig, opts.NodeName, strings.Join(cidrs, ","), healthz, metrics, opts.MinSyncPeriod)
}

// ensureNode creates kube-proxy's Node unless it exists.
func (p *Proxy) ensureNode(ctx context.Context) error {
	_, err := p.c.client.CoreV1().Nodes().Get(ctx, p.opts.NodeName, metav1.GetOptions{})
	switch {
	case err == nil:
		return nil
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("node %s: %w", p.opts.NodeName, err)
	case len(p.opts.NodeIPs) == 0:
		return fmt.Errorf("node %s does not exist and no NodeIPs to create it with", p.opts.NodeName)
	}
	err = p.c.CreateNodeWithIPs(ctx, p.opts.NodeName, p.opts.NodeIPs...)
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// waitSynced waits until kube-proxy's /healthz answers 200 and the rules of
// the default kubernetes Service are in place.
func (p *Proxy) waitSynced(ctx context.Context) error {
	httpClient := &http.Client{Timeout: 2 * time.Second}
	healthy := func() bool {
		resp, err := httpClient.Get(p.healthzURL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode == http.StatusOK
	}
	var svc *corev1.Service
	return poll(ctx, p.proc, "kube-proxy's first sync", func() (bool, error) {
		if svc == nil {
			s, err := p.c.client.CoreV1().Services(metav1.NamespaceDefault).Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			svc = s
		}
		if !healthy() {
			return false, nil
		}
		missing, err := p.missing(svc, nil)
		return err == nil && len(missing) == 0, nil
	})
}

// Proxy returns the cluster's running kube-proxy, or nil.
func (c *Cluster) Proxy() *Proxy {
	c.proxyMu.Lock()
	defer c.proxyMu.Unlock()
	return c.proxy
}

func (c *Cluster) proxyProcess() *process {
	if p := c.Proxy(); p != nil {
		return p.proc
	}
	return nil
}

// StopProxy stops the cluster's kube-proxy (SIGTERM, then SIGKILL after
// 15 s), runs `kube-proxy --cleanup` to remove its rules from the host, and
// releases the host-wide lock. Without a kube-proxy it does nothing.
func (c *Cluster) StopProxy() error {
	c.proxyMu.Lock()
	defer c.proxyMu.Unlock()
	if c.proxy == nil {
		return nil
	}
	err := c.proxy.stop()
	c.proxy = nil
	if err != nil {
		return fmt.Errorf("stop kube-proxy: %w", err)
	}
	return nil
}

// stop stops the process, cleans up and releases the lock, going on past
// failures.
func (p *Proxy) stop() error {
	var errs []error
	if p.proc != nil {
		errs = append(errs, p.proc.stop())
	}
	errs = append(errs, p.cleanup())
	if p.lock != nil {
		errs = append(errs, p.lock.Close()) // releases the flock
		p.lock = nil
	}
	return errors.Join(errs...)
}

// cleanup runs `kube-proxy --cleanup`, which removes the KUBE-* chains and
// rules kube-proxy made in both families except KUBE-FIREWALL (a chain it
// shares with kubelet on a real node; no kubelet runs here), and then
// removes KUBE-FIREWALL and its jumps from INPUT and OUTPUT.
func (p *Proxy) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), proxyCleanupTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, p.path, "--cleanup").CombinedOutput()
	if err != nil {
		return fmt.Errorf("kube-proxy --cleanup: %w: %s", err, strings.TrimSpace(string(out)))
	}
	var errs []error
	for _, cmd := range []string{"iptables", "ip6tables"} {
		errs = append(errs, removeChain(ctx, cmd, "filter", firewallChain, "INPUT", "OUTPUT"))
	}
	return errors.Join(errs...)
}

// firewallChain is the chain `kube-proxy --cleanup` leaves behind.
const firewallChain = "KUBE-FIREWALL"

// removeChain deletes every jump to chain from the given chains of table,
// then flushes and deletes chain; a missing chain is not an error.
func removeChain(ctx context.Context, cmd, table, chain string, from ...string) error {
	run := func(args ...string) error {
		out, err := exec.CommandContext(ctx, cmd, append([]string{"-t", table}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s -t %s %s: %w: %s", cmd, table, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if run("-n", "-L", chain) != nil {
		return nil // no such chain
	}
	for _, f := range from {
		for range 10 { // a jump added more than once is deleted as often
			if run("-D", f, "-j", chain) != nil {
				break
			}
		}
	}
	if err := run("-F", chain); err != nil {
		return err
	}
	return run("-X", chain)
}

// HealthzURL returns the URL of kube-proxy's /healthz.
func (p *Proxy) HealthzURL() string { return p.healthzURL }

// LogTail returns the last n lines of kube-proxy's log.
func (p *Proxy) LogTail(n int) string { return p.proc.logTail(n) }

// WaitService waits until kube-proxy has programmed svc (as the API server
// returned it, ClusterIPs set): for every ClusterIP and every port, the
// jump from KUBE-SERVICES to the port's KUBE-SVC chain, and in that chain
// DNATs to exactly the endpoints of the ClusterIP's family among endpoints
// (any target port). With no endpoints given, it waits for any rule of every
// ClusterIP and port instead (a Service without endpoints gets a REJECT
// rule). On timeout the error says what is still missing.
func (p *Proxy) WaitService(ctx context.Context, svc *corev1.Service, endpoints ...netip.Addr) error {
	if svc == nil {
		return errors.New("wait for service: nil service")
	}
	key := svc.Namespace + "/" + svc.Name
	var missing []string
	err := poll(ctx, p.proc, "kube-proxy to program service "+key, func() (bool, error) {
		var err error
		missing, err = p.missing(svc, endpoints)
		if err != nil {
			return false, err
		}
		return len(missing) == 0, nil
	})
	if err != nil && len(missing) > 0 {
		return fmt.Errorf("%w; missing: %s", err, strings.Join(missing, "; "))
	}
	return err
}

// missing lists what of svc kube-proxy has not programmed yet.
func (p *Proxy) missing(svc *corev1.Service, endpoints []netip.Addr) ([]string, error) {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	if len(ips) == 0 || ips[0] == corev1.ClusterIPNone {
		return nil, fmt.Errorf("service %s/%s has no ClusterIP", svc.Namespace, svc.Name)
	}
	var out []string
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("service %s/%s: ClusterIP %q: %w", svc.Namespace, svc.Name, s, err)
		}
		f := familyOf(ip)
		snap, err := p.snapshot(f)
		if err != nil {
			return nil, err
		}
		var want []netip.Addr
		for _, e := range endpoints {
			if familyOf(e) == f {
				want = append(want, e.Unmap())
			}
		}
		for _, sp := range svc.Spec.Ports {
			proto := strings.ToLower(string(sp.Protocol))
			if proto == "" {
				proto = "tcp"
			}
			what := fmt.Sprintf("%s:%d/%s", ip, sp.Port, proto)
			if len(endpoints) == 0 {
				if !snap.mentions(ip, int(sp.Port), proto) {
					out = append(out, what+" has no rule")
				}
				continue
			}
			got, ok := snap.serviceEndpoints(ip, int(sp.Port), proto)
			if !ok {
				out = append(out, what+" is not in KUBE-SERVICES")
				continue
			}
			if !sameAddrs(got, want) {
				out = append(out, fmt.Sprintf("%s goes to %v, want %v", what, got, want))
			}
		}
	}
	return out, nil
}

// snapshot returns the family's rules, read at most snapshotMaxAge ago.
func (p *Proxy) snapshot(f ipFamily) (ruleSnapshot, error) {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	if s, ok := p.snaps[f]; ok && time.Since(s.taken) < snapshotMaxAge {
		return s, nil
	}
	cmd := "iptables-save"
	if f == familyV6 {
		cmd = "ip6tables-save"
	}
	out, err := exec.Command(cmd).Output()
	if err != nil {
		return ruleSnapshot{}, fmt.Errorf("%s: %w", cmd, err)
	}
	s := ruleSnapshot{taken: time.Now(), rules: parseRules(string(out))}
	p.snaps[f] = s
	return s, nil
}

// rule is one "-A CHAIN ..." line of iptables-save, in its table.
type rule struct {
	table, chain string
	args         []string // after the chain name
}

// arg returns the value after flag, or "".
func (r rule) arg(flag string) string {
	for i := 0; i+1 < len(r.args); i++ {
		if r.args[i] == flag {
			return r.args[i+1]
		}
	}
	return ""
}

// parseRules splits iptables-save output into rules. Quoted comments may
// hold spaces; no other argument kube-proxy writes does.
func parseRules(out string) []rule {
	var rules []rule
	table := ""
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, "-A "):
			fields := splitQuoted(line)
			if len(fields) >= 2 {
				rules = append(rules, rule{table: table, chain: fields[1], args: fields[2:]})
			}
		}
	}
	return rules
}

// splitQuoted splits s at spaces outside double quotes, dropping the quotes.
func splitQuoted(s string) []string {
	var out []string
	var b strings.Builder
	quoted, have := false, false
	for _, r := range s {
		switch {
		case r == '"':
			quoted, have = !quoted, true
		case r == ' ' && !quoted:
			if have {
				out = append(out, b.String())
				b.Reset()
				have = false
			}
		default:
			b.WriteRune(r)
			have = true
		}
	}
	if have {
		out = append(out, b.String())
	}
	return out
}

// matchesFrontend reports whether r matches traffic to ip:port/proto.
func (r rule) matchesFrontend(ip netip.Addr, port int, proto string) bool {
	return r.arg("-d") == netip.PrefixFrom(ip, ip.BitLen()).String() &&
		r.arg("-p") == proto && r.arg("--dport") == strconv.Itoa(port)
}

// mentions reports whether any rule matches traffic to ip:port/proto.
func (s ruleSnapshot) mentions(ip netip.Addr, port int, proto string) bool {
	for _, r := range s.rules {
		if r.matchesFrontend(ip, port, proto) {
			return true
		}
	}
	return false
}

// serviceEndpoints follows KUBE-SERVICES → KUBE-SVC-… → KUBE-SEP-… for
// ip:port/proto and returns the DNAT destinations' addresses; false when
// KUBE-SERVICES has no jump for it.
func (s ruleSnapshot) serviceEndpoints(ip netip.Addr, port int, proto string) ([]netip.Addr, bool) {
	svcChain := ""
	for _, r := range s.rules {
		if r.table == "nat" && r.chain == "KUBE-SERVICES" && r.matchesFrontend(ip, port, proto) {
			if j := r.arg("-j"); strings.HasPrefix(j, "KUBE-SVC-") {
				svcChain = j
				break
			}
		}
	}
	if svcChain == "" {
		return nil, false
	}
	seps := map[string]bool{}
	for _, r := range s.rules {
		if r.table == "nat" && r.chain == svcChain {
			if j := r.arg("-j"); strings.HasPrefix(j, "KUBE-SEP-") {
				seps[j] = true
			}
		}
	}
	var out []netip.Addr
	for _, r := range s.rules {
		if r.table != "nat" || !seps[r.chain] || r.arg("-j") != "DNAT" {
			continue
		}
		if ap, err := netip.ParseAddrPort(r.arg("--to-destination")); err == nil {
			out = append(out, ap.Addr().Unmap())
		}
	}
	return out, true
}

// sameAddrs reports whether a and b hold the same addresses (as sets).
func sameAddrs(a, b []netip.Addr) bool {
	in := func(x netip.Addr, set []netip.Addr) bool {
		for _, y := range set {
			if x == y {
				return true
			}
		}
		return false
	}
	for _, x := range a {
		if !in(x, b) {
			return false
		}
	}
	for _, y := range b {
		if !in(y, a) {
			return false
		}
	}
	return true
}
