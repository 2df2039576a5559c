// Command podwall-demo is `make demo`: a few pods on network namespaces
// through the real CNI chain (ptp + host-local + podwall), podwalld on a
// manifests directory, and the seed's five example policies applied one after
// another. After each it prints the reachability matrix measured with real TCP
// connections next to what the policy intends. It cleans up after itself, also
// when interrupted, and exits non-zero if any probe disagrees with the intent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/examples"
	"github.com/podwall/podwall/test/harness"
)

const nodeName = "demo-node"

func main() {
	binDir := flag.String("bin", "bin", "directory holding podwalld and podwallctl")
	cniBin := flag.String("cni-bin", "bin/cni", "directory holding ptp, host-local and podwall")
	podCIDR := flag.String("pod-cidr", "10.90.0.0/24", "address range of the demo pods")
	within := flag.Duration("within", 10*time.Second, "how long to wait for a policy to be enforced before reporting a probe")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "podwall-demo: needs root (network namespaces, routes, iptables)")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Stdout, *binDir, *cniBin, *podCIDR, *within)
	if errors.Is(ctx.Err(), context.Canceled) {
		fmt.Fprintln(os.Stderr, "podwall-demo: interrupted; cleaned up")
		os.Exit(130)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "podwall-demo:", err)
		os.Exit(1)
	}
}

// endpoint is a probe target: a pod or the external host, on a TCP port.
type endpoint struct {
	ep  examples.Endpoint
	pod *bed.Pod
}

func run(ctx context.Context, out io.Writer, binDir, cniBin, podCIDR string, within time.Duration) (err error) {
	binDir, _ = filepath.Abs(binDir)
	cniBin, _ = filepath.Abs(cniBin)
	cidr, err := netip.ParsePrefix(podCIDR)
	if err != nil {
		return fmt.Errorf("--pod-cidr: %w", err)
	}
	dir, err := os.MkdirTemp("", "podwall-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// podwalld on a manifests directory describing the example cluster.
	d, err := harness.NewDaemon(binDir, dir, nodeName)
	if err != nil {
		return err
	}
	if err := d.WriteManifest("00-cluster.yaml", examples.ClusterManifest(nodeName)); err != nil {
		return err
	}
	fmt.Fprintf(out, "podwalld: --manifests %s --node-name %s --socket %s\n", d.ManifestsDir, nodeName, d.Socket)
	if err := d.Start(ctx); err != nil {
		return err
	}
	defer func() {
		if stopErr := d.Stop(); stopErr != nil && err == nil {
			err = stopErr
		}
	}()

	// The pods: network namespaces through ptp + host-local + podwall.
	b, err := bed.New(bed.Options{
		Name:           "demo",
		CNIBinDir:      cniBin,
		PodCIDRv4:      cidr,
		ExternalCIDRv4: netip.MustParsePrefix(examples.ExternalCIDR),
		Extra:          []map[string]any{{"type": "podwall", "socket": d.Socket, "timeout": "10s"}},
	})
	if err != nil {
		return err
	}
	defer func() {
		if closeErr := b.Close(); closeErr != nil && err == nil {
			err = closeErr
		}
	}()
	var servers []endpoint
	var clients []endpoint
	for _, p := range examples.Pods {
		pod, err := b.AddPod(ctx, p.Namespace, p.Name, bed.PodOptions{})
		if err != nil {
			return fmt.Errorf("CNI ADD %s: %w", p.Key(), err)
		}
		var ports []bed.ServePort
		for _, port := range p.Ports {
			ports = append(ports, bed.ServePort{Protocol: bed.TCP, Port: port})
		}
		if err := pod.Serve(ports...); err != nil {
			return err
		}
		e := endpoint{ep: examples.Endpoint{Namespace: p.Namespace, Name: p.Name}, pod: pod}
		servers, clients = append(servers, e), append(clients, e)
		fmt.Fprintf(out, "pod %-12s %-15s serves TCP %v\n", p.Key(), pod.IPv4(), p.Ports)
	}
	ext := b.External()
	var extPorts []bed.ServePort
	for _, port := range examples.ExternalPorts {
		extPorts = append(extPorts, bed.ServePort{Protocol: bed.TCP, Port: port})
	}
	if err := ext.Serve(extPorts...); err != nil {
		return err
	}
	extEP := endpoint{ep: examples.Endpoint{Name: examples.External}, pod: ext}
	servers, clients = append(servers, extEP), append(clients, extEP)
	fmt.Fprintf(out, "host %-11s %-15s serves TCP %v (outside the cluster)\n", examples.External, ext.IPv4(), examples.ExternalPorts)

	mismatches := 0
	show := func(title, manifest string, intends func(from, to examples.Endpoint, port int) bool) error {
		fmt.Fprintf(out, "\n=== %s\n", title)
		if manifest != "" {
			for _, line := range strings.Split(strings.TrimRight(manifest, "\n"), "\n") {
				fmt.Fprintln(out, "    "+line)
			}
		}
		n, err := measure(ctx, out, clients, servers, intends, within)
		mismatches += n
		return err
	}
	if err := show("no policy: every pod reaches every pod", "", func(_, _ examples.Endpoint, _ int) bool { return true }); err != nil {
		return err
	}
	prev := ""
	for _, ex := range examples.All() {
		if prev != "" {
			if err := d.RemoveManifest(prev); err != nil {
				return err
			}
		}
		prev = fmt.Sprintf("example-%d.yaml", ex.N)
		if err := d.WriteManifest(prev, ex.Manifest); err != nil {
			return err
		}
		if err := show(fmt.Sprintf("example %d: %s", ex.N, ex.Title), ex.Manifest, ex.Intends); err != nil {
			return err
		}
		if ex.N == 3 {
			pods, err := d.Ctl(ctx, "pods")
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "\n$ podwallctl pods\n%s", pods)
		}
	}
	if err := d.RemoveManifest(prev); err != nil {
		return err
	}
	if mismatches > 0 {
		return fmt.Errorf("%d probes disagreed with the policy's intent; podwalld log: %s", mismatches, d.LogPath)
	}
	fmt.Fprintln(out, "\nevery probe matched the policy's intent.")
	return nil
}

// cell is one (client, server, port) probe.
type cell struct {
	from, to endpoint
	port     int
	want     bool
	got      bool
	err      error
}

// measure probes every (client, server, port), waiting up to within for each
// probe to show the intended result (enforcement takes a moment after a
// manifest changes), and prints intended and measured matrices side by side.
// It returns the number of probes that never matched.
func measure(ctx context.Context, out io.Writer, clients, servers []endpoint, intends func(from, to examples.Endpoint, port int) bool, within time.Duration) (int, error) {
	ports := []int{80, 6379, 5978}
	var cells []*cell
	for _, port := range ports {
		for _, c := range clients {
			for _, s := range servers {
				if c.ep == s.ep || !serves(s, port) {
					continue
				}
				cells = append(cells, &cell{from: c, to: s, port: port, want: intends(c.ep, s.ep, port)})
			}
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, c := range cells {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.got, c.err = bed.ProbeUntil(ctx, c.from.pod, c.to.pod.IPv4(), c.port, bed.TCP, time.Second, c.want, within)
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, err
	}

	bad, allowed := 0, 0
	for _, port := range ports {
		var cols []endpoint
		for _, s := range servers {
			if serves(s, port) {
				cols = append(cols, s)
			}
		}
		fmt.Fprintf(out, "\n  TCP %d: rows are clients, columns servers; . connects, X blocked, ! differs from the intent\n", port)
		tw := tabwriter.NewWriter(out, 0, 2, 1, ' ', 0)
		header := "  intended\t"
		for _, s := range cols {
			header += s.ep.String() + "\t"
		}
		header += "|\tmeasured\t"
		for _, s := range cols {
			header += s.ep.String() + "\t"
		}
		fmt.Fprintln(tw, header)
		for _, c := range clients {
			want, got := "  "+c.ep.String()+"\t", c.ep.String()+"\t"
			for _, s := range cols {
				x := find(cells, c, s, port)
				if x == nil {
					want, got = want+"-\t", got+"-\t"
					continue
				}
				want += mark(x.want) + "\t"
				switch {
				case x.err != nil:
					got += "?\t"
					bad++
				case x.got != x.want:
					got += "!\t"
					bad++
				default:
					got += mark(x.got) + "\t"
				}
				if x.got {
					allowed++
				}
			}
			fmt.Fprintln(tw, want+"|\t"+got)
		}
		tw.Flush()
	}
	for _, c := range cells {
		if c.err != nil {
			fmt.Fprintf(out, "  probe %s -> %s:%d failed to run: %v\n", c.from.ep, c.to.ep, c.port, c.err)
		}
	}
	fmt.Fprintf(out, "\n  %d of %d probes as intended (%d connected, %d blocked)\n", len(cells)-bad, len(cells), allowed, len(cells)-allowed)
	return bad, nil
}

func serves(e endpoint, port int) bool {
	if e.ep.IsExternal() {
		return slices.Contains(examples.ExternalPorts, port)
	}
	for _, p := range examples.Pods {
		if p.Namespace == e.ep.Namespace && p.Name == e.ep.Name {
			return slices.Contains(p.Ports, port)
		}
	}
	return false
}

func find(cells []*cell, from, to endpoint, port int) *cell {
	for _, c := range cells {
		if c.from.ep == from.ep && c.to.ep == to.ep && c.port == port {
			return c
		}
	}
	return nil
}

func mark(ok bool) string {
	if ok {
		return "."
	}
	return "X"
}
