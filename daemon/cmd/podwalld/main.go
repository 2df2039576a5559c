// Command podwalld is podwall's node daemon: it learns pods, namespaces and
// NetworkPolicies from a source, serves the CNI plugin and podwallctl over gRPC
// on a unix socket, and keeps every local pod's firewall, inside the pod's
// network namespace, equal to what the policies say.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/metrics"
	"github.com/podwall/podwall/daemon/nodeaddr"
	"github.com/podwall/podwall/daemon/server"
	"github.com/podwall/podwall/daemon/source/kube"
	"github.com/podwall/podwall/daemon/source/manifests"
	"github.com/podwall/podwall/daemon/syncer"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type config struct {
	socket         string
	stateDir       string
	nodeName       string
	kubeconfig     string
	manifests      string
	metricsAddress string
	pprofAddress   string
	resync         time.Duration
	logLevel       string
	logFormat      string
	serviceCIDRs   serviceCIDRFlag
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("podwalld", flag.ContinueOnError)
	c := &config{}
	host, _ := os.Hostname()
	if n := os.Getenv("NODE_NAME"); n != "" {
		host = n
	}
	fs.StringVar(&c.socket, "socket", "/run/podwall/podwall.sock", "unix socket to serve the CNI plugin and podwallctl on")
	fs.StringVar(&c.stateDir, "state-dir", "/var/lib/podwall", "directory for the attachment checkpoint")
	fs.StringVar(&c.nodeName, "node-name", host, "this node's name (pods with spec.nodeName equal to it are local); defaults to $NODE_NAME or the hostname")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "policy source: the Kubernetes API server this kubeconfig names")
	fs.StringVar(&c.manifests, "manifests", "", "policy source: a directory of Namespace, Pod and NetworkPolicy manifests")
	fs.StringVar(&c.metricsAddress, "metrics-address", "", "serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9960 (off unless given)")
	fs.StringVar(&c.pprofAddress, "pprof-address", "", "serve net/http/pprof's /debug/pprof/ on this address, e.g. 127.0.0.1:6060, for profiling (off unless given)")
	fs.DurationVar(&c.resync, "resync-period", time.Minute, "re-check every local pod this often")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text (key=value) or json (one object per line)")
	fs.Var(&c.serviceCIDRs, "service-cidr", "ranges ClusterIPs come from, added to the cluster's ServiceCIDR objects (for clusters where those cannot be read); repeatable or comma-separated, IPv4 and/or IPv6")
	fs.BoolFunc("version", "print the version and exit", func(string) error {
		fmt.Println("podwalld", version)
		os.Exit(0)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case c.kubeconfig != "" && c.manifests != "":
		return nil, errors.New("give one policy source: --kubeconfig or --manifests, not both")
	case c.kubeconfig == "" && c.manifests == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "":
		return nil, errors.New("no policy source: give --kubeconfig PATH (Kubernetes) or --manifests DIR (a directory of manifests), or run in a pod for the in-cluster config")
	}
	if c.nodeName == "" {
		return nil, errors.New("--node-name is empty and the hostname is unknown")
	}
	if c.resync <= 0 {
		return nil, errors.New("--resync-period must be positive")
	}
	return c, nil
}

func main() {
	// `podwalld install-cni` / `uninstall-cni` (cni.go).
	if code, ok := runCNICommand(os.Args[1:]); ok {
		os.Exit(code)
	}
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podwalld:", err)
		os.Exit(2)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		fmt.Fprintln(os.Stderr, "podwalld: --log-level:", err)
		os.Exit(2)
	}
	log, err := newLogger(os.Stderr, cfg.logFormat, level)
	if err != nil {
		fmt.Fprintln(os.Stderr, "podwalld:", err)
		os.Exit(2)
	}
	setMemoryLimit(log) // memlimit.go
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("podwalld failed", "err", err)
		os.Exit(1)
	}
}

// policySource is what podwalld needs of a source beyond the syncer's view.
type policySource interface {
	syncer.Source
	// Run watches the origin until ctx ends, calling changed after changes.
	Run(ctx context.Context, changed func())
}

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	data, err := dataplane.NewManager()
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	store, err := checkpoint.Open(cfg.stateDir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}

	// The node's own addresses are always allowed into local pods.
	nodeAddrs := nodeaddr.New(log)
	var src policySource
	ready := func() error { return nil }
	waitForSync := func(context.Context) error { return nil }
	if cfg.manifests != "" {
		m := manifests.New(cfg.manifests, log)
		m.SetServiceCIDRs(cfg.serviceCIDRs.prefixes)
		if err := m.Load(); err != nil {
			return fmt.Errorf("manifests: %w", err)
		}
		src = m
	} else {
		restCfg, err := kube.InClusterOrKubeconfig(cfg.kubeconfig)
		if err != nil {
			return fmt.Errorf("kubernetes: %w", err)
		}
		client, err := kube.NewClient(restCfg)
		if err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		k := kube.New(client, cfg.nodeName, log)
		k.SetServiceCIDRs(cfg.serviceCIDRs.prefixes)
		k.NotifyNodeAddrs(nodeAddrs.SetNodeObjectAddrs)
		src, ready, waitForSync = k, k.Ready, k.WaitForSync
		log.Info("policy source: Kubernetes", "host", restCfg.Host)
	}
	reg := metrics.New(version)
	dp := checkDataplane(ctx, data, log, reg.SetDataplaneUsable)
	health, err := serveHealth(ctx, cfg.metricsAddress, ready, reg.Handler(), log)
	if err != nil {
		return err
	}
	health.dataplane.Store(dp)
	if err := servePprof(ctx, cfg.pprofAddress, log); err != nil {
		return err
	}

	sync := syncer.New(syncer.Options{
		NodeName:  cfg.nodeName,
		Source:    src,
		Data:      data,
		Store:     store,
		Log:       log,
		NodeAddrs: nodeAddrs.Addrs,
		Observer:  reg,
	})
	if err := reg.CollectState(sync, src); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	go src.Run(ctx, sync.Trigger)
	go nodeAddrs.Run(ctx, sync.Trigger)
	// A firewall compiled before the source has synced would ignore every
	// policy: wait. Meanwhile the old rules stay in force in every pod, and
	// ADDs fail with "try again later" since the socket is not served yet.
	if err := waitForSync(ctx); err != nil {
		return fmt.Errorf("policy source: %w", err)
	}
	if err := sync.Restore(ctx); err != nil {
		return err
	}
	srv, err := server.Listen(server.Options{
		Socket:         cfg.socket,
		NodeName:       cfg.nodeName,
		Version:        version,
		Sync:           sync,
		Source:         src,
		Ready:          dp.gate(ready),
		CNIInterceptor: reg.CNIInterceptor(),
	})
	if err != nil {
		return err
	}
	srv.SetServing(true)
	health.serving.Store(true)
	go sync.Run(ctx, cfg.resync)
	log.Info("podwalld serving", "version", version, "socket", cfg.socket, "node", cfg.nodeName, "source", src.Name())
	err = srv.Serve(ctx)
	log.Info("podwalld stopped; pod firewalls stay in force")
	return err
}

// healthState is what /healthz and /readyz report.
type healthState struct {
	serving atomic.Bool
	// dataplane is the dataplane self-test, once it has run.
	dataplane atomic.Pointer[dataplaneCheck]
	// addr is where the listener is bound; nil when there is none.
	addr net.Addr
}

// healthHandler serves /metrics from metricsHandler, /healthz (the process
// answers) and /readyz (the source is synced, the dataplane self-test passed
// and the CNI socket is served).
func healthHandler(h *healthState, ready func() error, metricsHandler http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metricsHandler)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "source not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if dp := h.dataplane.Load(); dp != nil {
			if err := dp.usable(); err != nil {
				http.Error(w, "dataplane not usable: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		if !h.serving.Load() {
			http.Error(w, "CNI socket not served yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// serveHealth serves healthHandler on addr until ctx ends; addr "" serves
// nothing.
func serveHealth(ctx context.Context, addr string, ready func() error, metricsHandler http.Handler, log *slog.Logger) (*healthState, error) {
	h := &healthState{}
	if addr == "" {
		return h, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address: %w", err)
	}
	h.addr = lis.Addr()
	hs := &http.Server{Handler: healthHandler(h, ready, metricsHandler), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health listener", "err", err)
		}
	}()
	log.Info("serving /metrics, /healthz and /readyz", "address", h.addr.String())
	return h, nil
}
