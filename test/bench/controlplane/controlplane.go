// Package controlplane measures how fast podwall converges on a real
// Kubernetes control plane of a realistic size: kube-apiserver, etcd and
// kube-controller-manager (test/kube/cluster) holding 10k pods (nearly all
// "remote": objects on other nodes with status.podIPs), 1k namespaces, 1k
// NetworkPolicies and 1k Services, and one node of ours: podwalld
// (--kubeconfig) and 110 local pods on network namespaces plumbed through
// ptp + host-local + podwall by the kubelet stand-in (test/kube/kubelet).
//
// It measures, from just before each API write: policies created, changed
// and deleted until enforced in one and in all 110 selected pods (by
// probing with new TCP connections, and by podwalld's own log); a remote
// peer appearing, relabelled and disappearing until the ipsets of every
// affected local pod (1, 10, 50, 110) hold it, read over netlink; a
// namespace relabel likewise; the CNI ADD latency podwall adds over ptp +
// host-local (each plugin process timed, start-up included); podwalld's
// RSS and CPU (its /metrics) throughout, and a CPU and a heap profile
// during the churn (its --pprof-address).
//
// Run needs root, the Kubernetes binaries (make kube-bins), the podwall
// binaries and the reference plugins. It uses the bed bncp (10.215.16.0/20),
// the Service range 10.215.240.0/20 and remote addresses in 10.216.128.0/17
// (blackholed while it runs), none of which the datapath benchmark uses. It imports podwall only through its binaries and the
// test harnesses.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/bench/machine"
	"github.com/podwall/podwall/test/bench/remote"
	"github.com/podwall/podwall/test/harness"
	"github.com/podwall/podwall/test/kube/cluster"
	"github.com/podwall/podwall/test/kube/kubelet"
)

// The bed, node and ranges of this benchmark.
const (
	bedName  = "bncp"
	nodeName = "node-bncp"
	// NetnsGlob matches every netns this benchmark creates.
	NetnsGlob = "pw-bncp*"
)

var (
	podCIDR     = netip.MustParsePrefix("10.215.16.0/20")
	serviceCIDR = netip.MustParsePrefix("10.215.240.0/20")
)

// Scale is the size of the cluster.
type Scale struct {
	// Pods counts every pod: local ones (targets and the prober) and remote.
	Pods       int `json:"pods"`
	Namespaces int `json:"namespaces"`
	Policies   int `json:"policies"`
	Services   int `json:"services"`
	// LocalPods is the number of targets: local pods every measured policy
	// selects (the prober comes on top).
	LocalPods   int `json:"localPods"`
	RemoteNodes int `json:"remoteNodes"`
}

// DefaultScale is the cluster: 10k pods, 1k namespaces, 1k
// policies, 1k Services, 110 local pods.
var DefaultScale = Scale{Pods: 10_000, Namespaces: 1000, Policies: 1000, Services: 1000, LocalPods: 110, RemoteNodes: 50}

// Options configures Run; zero values take the defaults in brackets.
type Options struct {
	// BinDir holds podwall, podwalld and podwallctl; CNIBinDir ptp and
	// host-local; KubeBinDir the Kubernetes binaries [cluster.BinDir()].
	BinDir, CNIBinDir, KubeBinDir string
	// Scale [DefaultScale].
	Scale Scale
	// Rounds of each measurement: policy changes on one pod [5] and on all
	// targets [3]; peer changes per churn group [5]; namespace relabels [5].
	PolicyRounds, PolicyAllRounds, PeerRounds, NamespaceRounds int
	// AddSamples is the number of timed CNI ADDs [30].
	AddSamples int
	// ProfileSeconds is the length of podwalld's CPU profile, taken from
	// the start of the churn [60].
	ProfileSeconds int
	// ChangeTimeout bounds the wait for one change to show in every
	// affected pod [60s].
	ChangeTimeout time.Duration
	// Workers write to the API server at once while the cluster is built
	// [16].
	Workers int
	// OutDir receives the profiles (podwalld-cpu.pprof,
	// podwalld-heap.pprof) and a copy of podwalld's log.
	OutDir string
	// Logf reports progress [discarded].
	Logf func(format string, args ...any)
}

func (o *Options) defaults() error {
	if o.BinDir == "" || o.CNIBinDir == "" || o.OutDir == "" {
		return errors.New("BinDir, CNIBinDir and OutDir are required")
	}
	if o.Scale == (Scale{}) {
		o.Scale = DefaultScale
	}
	s := &o.Scale
	if s.LocalPods < 1 || s.Namespaces < specialNamespaces+2 || s.RemoteNodes < 1 {
		return fmt.Errorf("scale %+v: want at least 1 local pod, %d namespaces and 1 remote node", *s, specialNamespaces+2)
	}
	if remotes := s.Pods - s.LocalPods - 1 - nsPeerPods - 1; remotes < 10 {
		return fmt.Errorf("scale %+v: too few pods for %d local pods", *s, s.LocalPods)
	}
	// Churn pods (a few per round) take addresses after the others.
	if s.Pods+200 > maxRemotePods || s.RemoteNodes > remote.PerBlock {
		return fmt.Errorf("scale %+v: at most %d pods and %d remote nodes", *s, maxRemotePods-200, remote.PerBlock)
	}
	for _, p := range []*int{&o.PolicyRounds, &o.PeerRounds, &o.NamespaceRounds} {
		if *p <= 0 {
			*p = 5
		}
	}
	if o.PolicyAllRounds <= 0 {
		o.PolicyAllRounds = 3
	}
	if o.AddSamples <= 0 {
		o.AddSamples = 30
	}
	if o.ProfileSeconds <= 0 {
		o.ProfileSeconds = 60
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.ChangeTimeout <= 0 {
		o.ChangeTimeout = time.Minute
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// Rounds are how many rounds of each measurement a run made.
type Rounds struct {
	PolicyOne  int `json:"policyOne"`
	PolicyAll  int `json:"policyAll"`
	Peer       int `json:"peer"`
	Namespace  int `json:"namespace"`
	AddSamples int `json:"addSamples"`
}

// Phase is one step of building the cluster and how long it took.
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Result is what Run measured.
type Result struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Scale    Scale     `json:"scale"`
	// Groups are the churn groups: numbers of local pods a peer change
	// affects.
	Groups []int `json:"groups"`
	// Rounds are the options' rounds of each measurement, as run.
	Rounds  Rounds       `json:"rounds"`
	Phases  []Phase      `json:"phases"`
	Changes []Change     `json:"changes"`
	Add     []AddSample  `json:"add"`
	Process []ProcSample `json:"process"`
	// Scrapes are reads of podwalld's /metrics at phase boundaries:
	// steady (after the local pods), add-start and add-end (around the
	// timed ADDs).
	Scrapes []MetricsScrape `json:"scrapes"`
	// ChurnStart and ChurnEnd are seconds since Started.
	ChurnStart float64 `json:"churnStart"`
	ChurnEnd   float64 `json:"churnEnd"`
	// CPUProfile and HeapProfile are the files written (empty if none);
	// ProfileSeconds the CPU profile's length.
	CPUProfile     string `json:"cpuProfile,omitempty"`
	HeapProfile    string `json:"heapProfile,omitempty"`
	ProfileSeconds int    `json:"profileSeconds"`
	// Problems are what went wrong without stopping the run.
	Problems []string `json:"problems,omitempty"`
	// LoadStart and LoadEnd are the 1-minute load averages when the run
	// began and ended (the machine is shared).
	LoadStart string `json:"loadStart"`
	LoadEnd   string `json:"loadEnd"`
}

// Run builds the cluster, measures, and tears everything down, also on
// failure; the result holds what was measured before a failure.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	if err := opts.defaults(); err != nil {
		return nil, fmt.Errorf("control-plane bench: %w", err)
	}
	start := time.Now()
	res = &Result{Started: start, Scale: opts.Scale, ProfileSeconds: opts.ProfileSeconds, LoadStart: machine.LoadAverage(),
		Rounds: Rounds{PolicyOne: opts.PolicyRounds, PolicyAll: opts.PolicyAllRounds, Peer: opts.PeerRounds,
			Namespace: opts.NamespaceRounds, AddSamples: opts.AddSamples}}
	for _, k := range groups {
		if k <= opts.Scale.LocalPods {
			res.Groups = append(res.Groups, k)
		}
	}
	logf := opts.Logf
	td := &teardown{}
	defer func() {
		cerr := td.run(res)
		if left := harness.Leftovers(NetnsGlob, podCIDR, serviceCIDR, remoteRange); len(left) > 0 {
			cerr = errors.Join(cerr, fmt.Errorf("left behind: %s", strings.Join(left, ", ")))
		}
		if cerr != nil {
			err = errors.Join(err, fmt.Errorf("control-plane bench clean-up: %w", cerr))
		}
		res.Finished, res.LoadEnd = time.Now(), machine.LoadAverage()
	}()
	last := time.Now()
	phase := func(name string) {
		res.Phases = append(res.Phases, Phase{Name: name, Seconds: time.Since(last).Seconds()})
		logf("controlplane: %s: %.1fs", name, time.Since(last).Seconds())
		last = time.Now()
	}
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return res, err
	}

	if td.blackhole, err = remote.AddBlackhole(remoteRange); err != nil {
		return res, err
	}
	cl, err := cluster.Start(ctx, cluster.Options{BinDir: opts.KubeBinDir, ServiceCIDR: serviceCIDR})
	if err != nil {
		return res, err
	}
	td.cluster = cl
	cfg := cl.RestConfig()
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit: the API server is the bottleneck to measure
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return res, err
	}
	phase("start the control plane")

	// Nodes, namespaces, remote pods, Services, policies.
	s := opts.Scale
	generic := s.Namespaces - specialNamespaces
	localNodeIP := podCIDR.Addr().Next() // ptp's gateway on every pod veth
	if err := cl.CreateNode(ctx, nodeName, localNodeIP); err != nil {
		return res, err
	}
	nodeIPs := make([]netip.Addr, s.RemoteNodes)
	for i := range s.RemoteNodes {
		if nodeIPs[i], err = remote.Addr(remoteNodes, i); err != nil {
			return res, err
		}
		if err := cl.CreateNode(ctx, remoteNodeName(i), nodeIPs[i]); err != nil {
			return res, err
		}
	}
	if err := createNamespaces(ctx, client, generic, opts.Workers); err != nil {
		return res, err
	}
	phase(fmt.Sprintf("create %d nodes and %d namespaces", s.RemoteNodes+1, s.Namespaces))
	specs, err := remotePodSpecs(s.Pods-s.LocalPods-1-nsPeerPods-1, generic, s.RemoteNodes)
	if err != nil {
		return res, err
	}
	nodeIndex := func(node string) int {
		i, _ := strconv.Atoi(strings.TrimPrefix(node, "node-r"))
		return i
	}
	if err := parallel(ctx, len(specs), opts.Workers, func(ctx context.Context, i int) error {
		_, err := createRemotePod(ctx, client, specs[i], nodeIPs[nodeIndex(specs[i].Node)], false)
		return err
	}); err != nil {
		return res, err
	}
	phase(fmt.Sprintf("create %d remote pods with their status", len(specs)))
	if err := createServices(ctx, client, s.Services, generic, opts.Workers); err != nil {
		return res, err
	}
	if err := createPolicies(ctx, client, s.Policies, generic, opts.Workers); err != nil {
		return res, err
	}
	phase(fmt.Sprintf("create %d services and %d policies", s.Services, s.Policies))

	// podwalld, as the node's daemon.
	dir, err := os.MkdirTemp("", "pw-bncp-")
	if err != nil {
		return res, err
	}
	td.dirs = append(td.dirs, dir)
	d, err := harness.NewKubeDaemon(opts.BinDir, dir, nodeName, cl.Kubeconfig())
	if err != nil {
		return res, err
	}
	ports, err := freePorts(2)
	if err != nil {
		return res, err
	}
	metricsAddr, pprofAddr := "127.0.0.1:"+strconv.Itoa(ports[0]), "127.0.0.1:"+strconv.Itoa(ports[1])
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	// The harness runs podwalld at --log-level debug: one line per pod
	// applied, the daemon's own clock of each change.
	err = d.Start(startCtx, "--metrics-address", metricsAddr, "--pprof-address", pprofAddr)
	cancel()
	if err != nil {
		return res, fmt.Errorf("start podwalld: %w", err)
	}
	td.daemon, td.logCopy = d, filepath.Join(opts.OutDir, "podwalld.log")
	phase("start podwalld (caches synced)")
	pid, err := findPid(d.Socket)
	if err != nil {
		return res, err
	}
	smp := startSampler(pid, metricsAddr, start, 500*time.Millisecond)
	td.sampler = smp

	// The local pods.
	cniDir := opts.CNIBinDir
	b, err := bed.New(bed.Options{
		Name: bedName, CNIBinDir: opts.BinDir, CNIPath: []string{cniDir}, PodCIDRv4: podCIDR,
		Extra: []map[string]any{{"type": "podwall", "socket": d.Socket, "timeout": "30s"}},
	})
	if err != nil {
		return res, err
	}
	td.bed = b
	kl := kubelet.New(client, b, nodeName)
	smp.setPhase("local-pods")
	prober, err := kl.RunPod(ctx, localPodObject(probeNamespace, proberName, map[string]string{"app": "prober"}, 0))
	if err != nil {
		return res, err
	}
	targets := make([]*bed.Pod, s.LocalPods)
	if err := parallel(ctx, s.LocalPods, 4, func(ctx context.Context, i int) error {
		p, err := kl.RunPod(ctx, localPodObject(localNamespace, targetName(i), targetLabels(i), probePort))
		targets[i] = p
		return err
	}); err != nil {
		return res, err
	}
	phase(fmt.Sprintf("run %d local pods (CNI ADD through podwall)", s.LocalPods+1))
	smp.setPhase("steady")
	time.Sleep(5 * time.Second)
	smp.scrape("steady")

	watches, err := newWatches(targets)
	if err != nil {
		return res, err
	}
	defer closeWatches(watches)
	m := &measurer{
		client: client, log: newDaemonLog(d.LogPath), prober: prober, targets: targets, watches: watches,
		logf: logf, settle: 500 * time.Millisecond, timeout: opts.ChangeTimeout,
	}
	defer func() { res.Changes = m.changes }()

	// The churn, under a CPU profile.
	smp.setPhase("churn")
	res.ChurnStart = time.Since(start).Seconds()
	profCtx, profCancel := context.WithCancel(ctx)
	var profWG sync.WaitGroup
	var cpuErr error
	cpuPath := filepath.Join(opts.OutDir, "podwalld-cpu.pprof")
	profWG.Go(func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, opts.ProfileSeconds)
		cpuErr = fetchProfile(profCtx, url, cpuPath)
	})
	defer func() {
		if err != nil {
			profCancel() // a failed run does not wait for the profile
		}
		profWG.Wait()
		profCancel()
		if cpuErr != nil {
			res.Problems = append(res.Problems, "cpu profile: "+cpuErr.Error())
		} else {
			res.CPUProfile = cpuPath
		}
	}()
	if err := m.policyChanges(ctx, "policy-one", "bench-allow-one", selector("bench-id", targetName(0)), targets[:1], opts.PolicyRounds); err != nil {
		return res, err
	}
	if err := m.policyChanges(ctx, "policy-all", "bench-allow-all", selector("bench", "target"), targets, opts.PolicyAllRounds); err != nil {
		return res, err
	}
	nextIP := len(specs)
	next := func() (netip.Addr, error) {
		nextIP++
		return remote.Addr(remotePods, nextIP-1)
	}
	for _, k := range res.Groups {
		marker := firstWithLabel(specs, churnLabel(k))
		if !marker.IsValid() {
			return res, fmt.Errorf("no remote pod in churn group %d", k)
		}
		if err := m.peerChanges(ctx, k, marker, next, nodeIPs[0], opts.PeerRounds); err != nil {
			return res, err
		}
	}
	keep, member := podIP(specs, nsKeepNamespace), podIP(specs, nsPeerNamespace)
	if err := m.namespaceChanges(ctx, keep, member, opts.NamespaceRounds); err != nil {
		return res, err
	}
	res.ChurnEnd = time.Since(start).Seconds()
	phase("churn: policy, peer and namespace changes")
	heap := filepath.Join(opts.OutDir, "podwalld-heap.pprof")
	if err := fetchProfile(ctx, "http://"+pprofAddr+"/debug/pprof/heap?gc=1", heap); err != nil {
		res.Problems = append(res.Problems, "heap profile: "+err.Error())
	} else {
		res.HeapProfile = heap
	}

	// CNI ADD latency at this scale.
	smp.setPhase("add")
	smp.scrape("add-start")
	cache, err := os.MkdirTemp("", "pw-bncp-cache-")
	if err != nil {
		return res, err
	}
	td.dirs = append(td.dirs, cache)
	res.Add, err = addLatency(ctx, client, b.NetworkList(), []string{opts.BinDir, cniDir}, cache, bedName+"a",
		localNamespace, nodeName, map[string]string{"bench": "target"}, opts.AddSamples)
	if err != nil {
		return res, err
	}
	smp.scrape("add-end")
	phase(fmt.Sprintf("%d timed CNI ADDs", opts.AddSamples))
	smp.setPhase("done")
	return res, nil
}

// teardown is what Run built, taken down in an order that keeps it quick:
// podwalld stops first, so the beds' CNI DELs do not each wait for a sync
// of every other pod (DEL succeeds with the daemon gone).
type teardown struct {
	sampler   *sampler
	daemon    *harness.Daemon
	logCopy   string
	bed       *bed.Bed
	dirs      []string
	cluster   *cluster.Cluster
	blackhole *remote.Blackhole
}

func (t *teardown) run(res *Result) error {
	var errs []error
	if t.sampler != nil {
		var problems []string
		res.Process, res.Scrapes, problems = t.sampler.finish()
		for _, p := range problems {
			res.Problems = append(res.Problems, "process sample: "+p)
		}
	}
	if t.daemon != nil {
		errs = append(errs, t.daemon.Stop())
		// Keep the log next to the profiles for the report.
		if data, err := os.ReadFile(t.daemon.LogPath); err == nil {
			errs = append(errs, os.WriteFile(t.logCopy, data, 0o644))
		}
	}
	if t.bed != nil {
		errs = append(errs, t.bed.Close())
	}
	for _, d := range t.dirs {
		errs = append(errs, os.RemoveAll(d))
	}
	if t.cluster != nil {
		errs = append(errs, t.cluster.Stop())
	}
	errs = append(errs, t.blackhole.Remove())
	return errors.Join(errs...)
}

// firstWithLabel returns the address of the first remote pod with label=y.
func firstWithLabel(specs []remotePod, label string) netip.Addr {
	for _, p := range specs {
		if p.Labels[label] == "y" {
			return p.IP
		}
	}
	return netip.Addr{}
}

// podIP returns the address of the first remote pod of namespace ns.
func podIP(specs []remotePod, ns string) netip.Addr {
	for _, p := range specs {
		if p.Namespace == ns {
			return p.IP
		}
	}
	return netip.Addr{}
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
