package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// KubeVersion is the Kubernetes release the binaries are built from.
const KubeVersion = "v1.34.4"

// BinDirEnv names the environment variable pointing at the directory that
// holds kube-apiserver, kube-controller-manager and kube-proxy.
const BinDirEnv = "PODWALL_KUBE_BIN_DIR"

// DefaultServiceCIDR is the Service range when Options.ServiceCIDR is unset.
// It lies in 10.212.0.0/16, the range reserved for the cluster test bed.
var DefaultServiceCIDR = netip.MustParsePrefix("10.212.128.0/20")

// ServiceAccountIssuer is the issuer of the cluster's service-account tokens.
const ServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// DefaultStartTimeout bounds Start and StartAPIServer when their context has
// no earlier deadline.
const DefaultStartTimeout = 2 * time.Minute

// Options configures a Cluster. The zero value is a working cluster.
type Options struct {
	// BinDir holds kube-apiserver and kube-controller-manager; default
	// $PODWALL_KUBE_BIN_DIR, else DefaultBinDir().
	BinDir string
	// EtcdPath is the etcd binary; default etcd on PATH (Debian's
	// etcd-server package).
	EtcdPath string
	// ServiceCIDR is --service-cluster-ip-range, the primary Service range
	// (IPv4 /12../28 or IPv6 /108../124); default DefaultServiceCIDR. It
	// gets a host blackhole route: use it for one cluster at a time.
	ServiceCIDR netip.Prefix
	// SecondaryServiceCIDR, when set, makes the cluster dual-stack: the
	// second range of --service-cluster-ip-range, of the other family than
	// ServiceCIDR (same sizes). It gets a host blackhole route too.
	SecondaryServiceCIDR netip.Prefix
	// Proxy, when set, makes Start also start kube-proxy (see StartProxy).
	Proxy *ProxyOptions
	// Dir, when set, holds the cluster's files (it is created if missing and
	// left in place by Stop, except etcd's data); default a temporary
	// directory that Stop removes.
	Dir string
}

// Cluster is a running control plane: etcd, kube-apiserver and
// kube-controller-manager on loopback. Its methods are safe for concurrent
// use.
type Cluster struct {
	opts       Options
	dir        string
	removeDir  bool
	pki        *pki
	adminToken string
	apiURL     string
	kubeconfig string
	restConfig *rest.Config
	client     kubernetes.Interface
	routes     []*blackhole
	// proxyToken authenticates kube-proxy as system:kube-proxy (bound to
	// the default system:node-proxier role).
	proxyToken string

	etcd, apiServer, controllerManager *process

	mu      sync.Mutex // serializes Stop, StopAPIServer, StartAPIServer
	stopped bool

	proxyMu       sync.Mutex // guards proxy and proxyStarting; never held with mu
	proxy         *Proxy
	proxyStarting bool
}

// isStopped reports whether Stop was called.
func (c *Cluster) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// DefaultBinDir returns ~/.cache/podwall/k8s-<KubeVersion>, where
// test/kube/build-bins.sh puts the binaries by default.
func DefaultBinDir() string {
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "podwall", "k8s-"+KubeVersion)
}

// BinDir returns the directory the binaries are taken from when
// Options.BinDir is empty: $PODWALL_KUBE_BIN_DIR, else DefaultBinDir().
func BinDir() string {
	if dir := os.Getenv(BinDirEnv); dir != "" {
		return dir
	}
	return DefaultBinDir()
}

// ErrBinaryMissing is wrapped by the errors of Start and FindBinaries when a
// binary is not there.
var ErrBinaryMissing = errors.New("binary missing")

// Binaries are the paths of the programs a cluster runs.
type Binaries struct {
	Etcd, APIServer, ControllerManager, Proxy string
}

// FindBinaries locates the binaries for opts (see Options). A missing one is
// an error wrapping ErrBinaryMissing that says how to build or install it.
func FindBinaries(opts Options) (Binaries, error) {
	dir := opts.BinDir
	if dir == "" {
		dir = BinDir()
	}
	bins := Binaries{
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Proxy:             filepath.Join(dir, "kube-proxy"),
	}
	var errs []error
	for _, path := range []string{bins.APIServer, bins.ControllerManager} {
		if !isExecutable(path) {
			errs = append(errs, fmt.Errorf("%w: %s (build it with test/kube/build-bins.sh or make kube-bins; 5-15 min cold)", ErrBinaryMissing, path))
		}
	}
	bins.Etcd = opts.EtcdPath
	if bins.Etcd == "" {
		path, err := exec.LookPath("etcd")
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: etcd not on PATH (apt-get install etcd-server, or test/kube/build-bins.sh)", ErrBinaryMissing))
		}
		bins.Etcd = path
	} else if !isExecutable(bins.Etcd) {
		errs = append(errs, fmt.Errorf("%w: etcd %s", ErrBinaryMissing, bins.Etcd))
	}
	return bins, errors.Join(errs...)
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start starts etcd, kube-apiserver and kube-controller-manager and waits
// until the API server is ready and the default ServiceAccount exists in the
// default namespace. It needs root (the Service range's blackhole route). On
// failure it stops what it started and the error carries the failing
// process's last log lines.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if err := validateOptions(&opts); err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	bins, err := FindBinaries(opts)
	if err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("start cluster: needs root (host blackhole route for the service range %s)", opts.ServiceCIDR)
	}
	setUpCtx, cancel := withDefaultTimeout(ctx, DefaultStartTimeout)
	defer cancel()

	c := &Cluster{opts: opts}
	if err := c.setUp(setUpCtx, bins); err != nil {
		return nil, errors.Join(fmt.Errorf("start cluster: %w", err), c.Stop())
	}
	if opts.Proxy != nil {
		// The caller's context: StartProxy may wait long for the host-wide
		// kube-proxy lock, and bounds the rest itself.
		if _, err := c.StartProxy(ctx, *opts.Proxy); err != nil {
			return nil, errors.Join(fmt.Errorf("start cluster: %w", err), c.Stop())
		}
	}
	return c, nil
}

func validateOptions(o *Options) error {
	if !o.ServiceCIDR.IsValid() {
		o.ServiceCIDR = DefaultServiceCIDR
	}
	p, err := validServiceCIDR(o.ServiceCIDR)
	if err != nil {
		return err
	}
	o.ServiceCIDR = p
	if o.SecondaryServiceCIDR.IsValid() {
		s, err := validServiceCIDR(o.SecondaryServiceCIDR)
		if err != nil {
			return fmt.Errorf("secondary %w", err)
		}
		if s.Addr().Is4() == p.Addr().Is4() {
			return fmt.Errorf("service ranges %s and %s: want one IPv4 and one IPv6 range", p, s)
		}
		o.SecondaryServiceCIDR = s
	}
	if o.Proxy != nil {
		if err := o.Proxy.validate(); err != nil {
			return err
		}
	}
	return nil
}

// validServiceCIDR checks a Service range's size and returns it masked.
func validServiceCIDR(p netip.Prefix) (netip.Prefix, error) {
	switch {
	case p.Addr().Is4():
		if p.Bits() < 12 || p.Bits() > 28 {
			return netip.Prefix{}, fmt.Errorf("service range %s: want an IPv4 prefix between /12 and /28", p)
		}
	case p.Addr().Is4In6():
		return netip.Prefix{}, fmt.Errorf("service range %s: want an IPv4 or IPv6 prefix, not an IPv4-mapped one", p)
	default:
		if p.Bits() < 108 || p.Bits() > 124 {
			return netip.Prefix{}, fmt.Errorf("service range %s: want an IPv6 prefix between /108 and /124", p)
		}
	}
	return p.Masked(), nil
}

// serviceCIDRs returns the Service ranges, primary first.
func (o *Options) serviceCIDRs() []netip.Prefix {
	out := []netip.Prefix{o.ServiceCIDR}
	if o.SecondaryServiceCIDR.IsValid() {
		out = append(out, o.SecondaryServiceCIDR)
	}
	return out
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

func (c *Cluster) setUp(ctx context.Context, bins Binaries) error {
	var ranges []string
	for _, p := range c.opts.serviceCIDRs() {
		route, err := addBlackhole(p)
		if err != nil {
			return err
		}
		c.routes = append(c.routes, route)
		ranges = append(ranges, p.String())
	}

	if c.opts.Dir != "" {
		if err := os.MkdirAll(c.opts.Dir, 0o700); err != nil {
			return err
		}
		c.dir = c.opts.Dir
	} else {
		dir, err := os.MkdirTemp("", "podwall-kube-")
		if err != nil {
			return err
		}
		c.dir, c.removeDir = dir, true
	}
	for _, sub := range []string{"certs", "etcd"} {
		if err := os.MkdirAll(filepath.Join(c.dir, sub), 0o700); err != nil {
			return err
		}
	}
	// The kubernetes Service takes the range's first address.
	serviceIP := c.opts.ServiceCIDR.Addr().Next()
	var err error
	c.pki, err = writePKI(c.dir, net.IP(serviceIP.AsSlice()))
	if err != nil {
		return err
	}
	c.adminToken = randomHex(24)
	c.proxyToken = randomHex(24)
	tokens := filepath.Join(c.dir, "tokens.csv")
	// token,user,uid,"group1,group2"
	lines := fmt.Sprintf("%s,podwall-admin,podwall-admin,\"system:masters\"\n", c.adminToken) +
		fmt.Sprintf("%s,system:kube-proxy,system:kube-proxy\n", c.proxyToken)
	if err := os.WriteFile(tokens, []byte(lines), 0o600); err != nil {
		return err
	}
	// The API server's address must be of the primary Service family (it
	// is the kubernetes Service's endpoint); clients use 127.0.0.1 anyway.
	advertise := "127.0.0.1"
	if c.opts.ServiceCIDR.Addr().Is6() {
		advertise = "::1"
	}

	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	c.apiURL = "https://127.0.0.1:" + strconv.Itoa(apiPort)

	c.etcd = &process{
		name:    "etcd",
		path:    bins.Etcd,
		logPath: filepath.Join(c.dir, "etcd.log"),
		args: []string{
			"--name", "podwall",
			"--data-dir", filepath.Join(c.dir, "etcd", "data"),
			"--listen-client-urls", etcdURL,
			"--advertise-client-urls", etcdURL,
			"--listen-peer-urls", peerURL,
			"--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "podwall=" + peerURL,
			"--initial-cluster-state", "new",
			"--logger", "zap",
			"--log-outputs", "stderr",
		},
	}
	c.apiServer = &process{
		name:    "kube-apiserver",
		path:    bins.APIServer,
		logPath: filepath.Join(c.dir, "kube-apiserver.log"),
		args: []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--advertise-address=" + advertise,
			"--secure-port=" + strconv.Itoa(apiPort),
			"--cert-dir=" + filepath.Join(c.dir, "certs"),
			"--tls-cert-file=" + c.pki.ServingCert,
			"--tls-private-key-file=" + c.pki.ServingKey,
			"--token-auth-file=" + tokens,
			"--authorization-mode=RBAC",
			"--service-account-issuer=" + ServiceAccountIssuer,
			"--service-account-key-file=" + c.pki.SAPub,
			"--service-account-signing-key-file=" + c.pki.SAKey,
			"--service-cluster-ip-range=" + strings.Join(ranges, ","),
			"--profiling=false",
			"--shutdown-watch-termination-grace-period=2s",
			"--v=1",
		},
	}
	c.kubeconfig = filepath.Join(c.dir, "admin.kubeconfig")
	c.controllerManager = &process{
		name:    "kube-controller-manager",
		path:    bins.ControllerManager,
		logPath: filepath.Join(c.dir, "kube-controller-manager.log"),
		args: []string{
			"--kubeconfig=" + c.kubeconfig,
			"--controllers=serviceaccount,serviceaccount-token,endpointslice,namespace",
			"--leader-elect=false",
			"--secure-port=0",
			"--service-account-private-key-file=" + c.pki.SAKey,
			"--root-ca-file=" + c.pki.CACert,
			"--use-service-account-credentials=false",
			"--v=1",
		},
	}

	if err := c.etcd.start(); err != nil {
		return err
	}
	if err := waitEtcd(ctx, c.etcd, etcdURL); err != nil {
		return err
	}

	c.restConfig = &rest.Config{
		Host:            c.apiURL,
		BearerToken:     c.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.pki.caPEM},
		QPS:             100,
		Burst:           200,
	}
	if err := writeKubeconfig(c.kubeconfig, c.apiURL, c.pki.caPEM, "podwall-admin", c.adminToken); err != nil {
		return err
	}
	c.client, err = kubernetes.NewForConfig(c.restConfig)
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}

	if err := c.apiServer.start(); err != nil {
		return err
	}
	if err := c.waitAPIServerReady(ctx); err != nil {
		return err
	}
	if err := c.controllerManager.start(); err != nil {
		return err
	}
	return c.waitDefaultServiceAccount(ctx)
}

// waitEtcd waits until etcd's /health answers.
func waitEtcd(ctx context.Context, p *process, url string) error {
	httpClient := &http.Client{Timeout: 2 * time.Second}
	return poll(ctx, p, "etcd health", func() (bool, error) {
		resp, err := httpClient.Get(url + "/health")
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"true"`), nil
	})
}

// waitAPIServerReady waits until kube-apiserver's /readyz is ok.
func (c *Cluster) waitAPIServerReady(ctx context.Context) error {
	return poll(ctx, c.apiServer, "kube-apiserver /readyz", func() (bool, error) {
		body, err := c.client.Discovery().RESTClient().Get().AbsPath("/readyz").Timeout(5 * time.Second).DoRaw(ctx)
		return err == nil && string(body) == "ok", nil
	})
}

// waitDefaultServiceAccount waits until the controller manager has created
// the default ServiceAccount in the default namespace: without it the
// ServiceAccount admission plugin rejects pods.
func (c *Cluster) waitDefaultServiceAccount(ctx context.Context) error {
	return poll(ctx, c.controllerManager, "default ServiceAccount", func() (bool, error) {
		_, err := c.client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, nil
	})
}

// poll calls done every 200 ms until it returns true, an error, the process
// p exits (an error with its log's tail) or ctx ends.
func poll(ctx context.Context, p *process, what string, done func() (bool, error)) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := done()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if running, exitErr := p.running(); !running {
			return fmt.Errorf("wait for %s: %s exited (%v); its log ends:\n%s", what, p.name, exitErr, p.logTail(30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w; %s's log ends:\n%s", what, ctx.Err(), p.name, p.logTail(30))
		case <-tick.C:
		}
	}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	buf := make([]byte, n)
	rand.Read(buf)
	return hex.EncodeToString(buf)
}

// Kubeconfig returns the path of the admin kubeconfig (a system:masters
// token).
func (c *Cluster) Kubeconfig() string { return c.kubeconfig }

// RestConfig returns a copy of the admin client configuration.
func (c *Cluster) RestConfig() *rest.Config { return rest.CopyConfig(c.restConfig) }

// Client returns the admin client.
func (c *Cluster) Client() kubernetes.Interface { return c.client }

// URL returns the API server's URL, https://127.0.0.1:<port>.
func (c *Cluster) URL() string { return c.apiURL }

// ServiceCIDR returns the (primary) Service range.
func (c *Cluster) ServiceCIDR() netip.Prefix { return c.opts.ServiceCIDR }

// ServiceCIDRs returns the Service ranges, primary first: one, or one per
// family on a dual-stack cluster.
func (c *Cluster) ServiceCIDRs() []netip.Prefix { return c.opts.serviceCIDRs() }

// Dir returns the directory holding the cluster's files and logs
// (etcd.log, kube-apiserver.log, kube-controller-manager.log).
func (c *Cluster) Dir() string { return c.dir }

// CACertFile returns the path of the cluster's root CA certificate (PEM).
func (c *Cluster) CACertFile() string { return c.pki.CACert }

// LogTail returns the last n lines of the log of "etcd", "kube-apiserver",
// "kube-controller-manager" or "kube-proxy".
func (c *Cluster) LogTail(component string, n int) string {
	for _, p := range c.processes() {
		if p.name == component {
			return p.logTail(n)
		}
	}
	return fmt.Sprintf("(no component %q)", component)
}

func (c *Cluster) processes() []*process {
	var out []*process
	for _, p := range []*process{c.etcd, c.apiServer, c.controllerManager, c.proxyProcess()} {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// StopAPIServer stops kube-apiserver (SIGTERM, then SIGKILL after 15 s):
// requests fail until StartAPIServer. etcd and the controller manager keep
// running.
func (c *Cluster) StopAPIServer() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("stop kube-apiserver: cluster stopped")
	}
	return c.apiServer.stop()
}

// StartAPIServer starts kube-apiserver again, on the same port and with the
// same data, and waits until it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("start kube-apiserver: cluster stopped")
	}
	ctx, cancel := withDefaultTimeout(ctx, DefaultStartTimeout)
	defer cancel()
	if err := c.apiServer.start(); err != nil {
		return err
	}
	if err := c.waitAPIServerReady(ctx); err != nil {
		return fmt.Errorf("start kube-apiserver: %w", err)
	}
	return nil
}

// Stop stops kube-proxy (removing its rules: see StopProxy), the
// controller manager, the API server and etcd, removes the Service ranges'
// blackhole routes and the cluster's temporary directory (or, with
// Options.Dir, etcd's data in it). It goes on past failures, returns them
// joined, and is safe to call twice.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	c.mu.Unlock()
	// Not under mu: StartProxy, which may be waiting for the host-wide
	// lock, checks stopped under it.
	var errs []error
	errs = append(errs, c.StopProxy())
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range []*process{c.controllerManager, c.apiServer, c.etcd} {
		if p != nil {
			errs = append(errs, p.stop())
		}
	}
	for _, r := range c.routes {
		errs = append(errs, r.remove())
	}
	if c.dir != "" {
		target := c.dir
		if !c.removeDir {
			target = filepath.Join(c.dir, "etcd")
		}
		if err := os.RemoveAll(target); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop cluster: %w", err)
	}
	return nil
}
