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
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/server"
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
	resync         time.Duration
	logLevel       string
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
	fs.StringVar(&c.metricsAddress, "metrics-address", "", "serve /healthz and /readyz on this address (off unless given)")
	fs.DurationVar(&c.resync, "resync-period", time.Minute, "re-check every local pod this often")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
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
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("podwalld failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *config, log *slog.Logger) error {
	if cfg.manifests == "" {
		return errors.New("the Kubernetes source is not available in this build yet; use --manifests DIR")
	}
	data, err := dataplane.NewManager()
	if err != nil {
		return fmt.Errorf("dataplane: %w", err)
	}
	store, err := checkpoint.Open(cfg.stateDir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	src := manifests.New(cfg.manifests, log)
	if err := src.Load(); err != nil {
		return fmt.Errorf("manifests: %w", err)
	}
	sync := syncer.New(syncer.Options{
		NodeName:  cfg.nodeName,
		Source:    src,
		Data:      data,
		Store:     store,
		Log:       log,
		NodeAddrs: hostAddrs,
	})
	if err := sync.Restore(ctx); err != nil {
		return err
	}
	srv, err := server.Listen(server.Options{
		Socket:   cfg.socket,
		NodeName: cfg.nodeName,
		Version:  version,
		Sync:     sync,
		Source:   src,
	})
	if err != nil {
		return err
	}
	srv.SetServing(true)
	go src.Run(ctx, sync.Trigger)
	go sync.Run(ctx, cfg.resync)
	if cfg.metricsAddress != "" {
		if err := serveHealth(ctx, cfg.metricsAddress, log); err != nil {
			return err
		}
	}
	log.Info("podwalld serving", "version", version, "socket", cfg.socket, "node", cfg.nodeName, "source", src.Name())
	err = srv.Serve(ctx)
	log.Info("podwalld stopped; pod firewalls stay in force")
	return err
}

// hostAddrs returns every address on the host's interfaces: traffic from
// them (kubelet probes, the node itself) is always allowed into local pods.
func hostAddrs() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

// serveHealth serves /healthz and /readyz until ctx ends.
func serveHealth(ctx context.Context, addr string, log *slog.Logger) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-address: %w", err)
	}
	mux := http.NewServeMux()
	ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("health listener", "err", err)
		}
	}()
	return nil
}
