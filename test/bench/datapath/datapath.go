// Package datapath is the seed's datapath experiment on podwall's test bed:
// an HTTP server pod and a wrk client pod on network namespaces plumbed by
// the real CNI chain, twice side by side — once on a bed whose chain ends
// with podwall (podwalld on a manifests directory, a policy selecting every
// pod with the seed's three ipBlock rules and selector rules whose peer sets
// hold thousands of remote pods), once on a bed with ptp + host-local only
// (podwall absent: no rules, no conntrack). wrk runs alternate between the
// two in every round, with keep-alive connections and with a new connection
// per request, and the number of remote pods the policy selects is swept.
//
// Run needs root, wrk on PATH, the podwall binaries and the reference
// plugins. It uses the beds bndpb (10.215.0.0/24) and bndpp (10.215.1.0/24)
// and remote addresses in 10.216.0.0/17 (blackholed while it runs). It
// imports podwall only through its binaries and the test bed.
package datapath

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/bench/ipsets"
	"github.com/podwall/podwall/test/bench/machine"
	"github.com/podwall/podwall/test/bench/remote"
	"github.com/podwall/podwall/test/harness"
)

// Mode is how wrk uses connections.
type Mode string

// The modes of a run.
const (
	KeepAlive     Mode = "keep-alive"
	NewConnection Mode = "new-connection" // wrk -H "Connection: close"
)

// Modes lists the modes in the order a round runs them.
var Modes = []Mode{KeepAlive, NewConnection}

// The beds and the node of this benchmark.
const (
	baselineBed = "bndpb"
	podwallBed  = "bndpp"
	nodeName    = "node-bndp"
	// NetnsGlob matches every netns this benchmark creates.
	NetnsGlob = "pw-bndp*"
)

var (
	baselineCIDR = netip.MustParsePrefix("10.215.0.0/24")
	podwallCIDR  = netip.MustParsePrefix("10.215.1.0/24")
)

// Options configures Run. Zero values take the defaults in brackets.
type Options struct {
	// BinDir holds podwall, podwalld and podwallctl; CNIBinDir ptp and
	// host-local.
	BinDir, CNIBinDir string
	// ServerCommand starts the HTTP server; Run appends "-addr :80" and runs
	// it inside the server pods' netns.
	ServerCommand []string
	// Selected are the numbers of remote pods in the policy's namespace
	// (selected by it, and peers of its selector rules), swept in order
	// [0 2000 6000 8000]. The last is the main comparison.
	Selected []int
	// Rounds is the number of rounds of the main comparison [5]; SweepRounds
	// of the other points [3]. A round runs each mode once on each bed.
	Rounds, SweepRounds int
	// Duration of one wrk run [5s]; Connections wrk keeps open [16].
	Duration    time.Duration
	Connections int
	// Services in the state [1000], if the manifests source reads them.
	Services int
	// Logf reports progress [discarded].
	Logf func(format string, args ...any)
}

func (o *Options) defaults() error {
	if o.BinDir == "" || o.CNIBinDir == "" || len(o.ServerCommand) == 0 {
		return errors.New("BinDir, CNIBinDir and ServerCommand are required")
	}
	if len(o.Selected) == 0 {
		o.Selected = []int{0, 2000, 6000, 8000}
	}
	for _, n := range o.Selected {
		if n < 0 || n > 64*remote.PerBlock {
			return fmt.Errorf("selected pods %d: want 0..%d", n, 64*remote.PerBlock)
		}
	}
	if o.Rounds <= 0 {
		o.Rounds = 5
	}
	if o.SweepRounds <= 0 {
		o.SweepRounds = 3
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Connections <= 0 {
		o.Connections = 16
	}
	if o.Services < 0 {
		return fmt.Errorf("services %d: negative", o.Services)
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// WrkRun is one wrk run.
type WrkRun struct {
	Selected int     `json:"selected"`
	Round    int     `json:"round"`
	Mode     Mode    `json:"mode"`
	Podwall  bool    `json:"podwall"`
	QPS      float64 `json:"qps"`
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
	Requests int64   `json:"requests"`
	// Errors counts socket errors and non-2xx answers.
	Errors int64 `json:"errors"`
}

// Point is what was verified at one number of selected pods before its runs.
type Point struct {
	Selected int `json:"selected"`
	// LargestSet is the number of addresses the largest podwall ipset in
	// the server pod's netns covers, ipBlocks aside (the policy's peers: selected pods + 2),
	// and LargestSetMembers the entries it holds.
	LargestSet        int `json:"largestSet"`
	LargestSetMembers int `json:"largestSetMembers"`
	// Sets is the number of podwall IPv4 ipsets there.
	Sets int `json:"sets"`
	// Checks are the probes that show enforcement: each allowed one next to
	// a denied twin.
	Checks []string `json:"checks"`
}

// Result is what Run measured.
type Result struct {
	Started     time.Time `json:"started"`
	Finished    time.Time `json:"finished"`
	Selected    []int     `json:"selected"`
	Main        int       `json:"main"`
	Rounds      int       `json:"rounds"`
	SweepRounds int       `json:"sweepRounds"`
	DurationSec float64   `json:"durationSec"`
	Connections int       `json:"connections"`
	// Services is the number of Services in the state podwalld read (0 when
	// its manifests source does not read them; ServicesNote says why).
	Services     int      `json:"services"`
	ServicesNote string   `json:"servicesNote,omitempty"`
	Points       []Point  `json:"points"`
	Runs         []WrkRun `json:"runs"`
	// LoadStart and LoadEnd are the 1-minute load averages when the run
	// began and ended (the machine is shared).
	LoadStart string `json:"loadStart"`
	LoadEnd   string `json:"loadEnd"`
}

// pair is a server and a client pod of one bed, with the server's process.
type pair struct {
	name           string
	bed            *bed.Bed
	server, client *bed.Pod
	serverProc     *exec.Cmd
}

// Run runs the benchmark and returns what it measured; it cleans up after
// itself, also on failure.
func Run(ctx context.Context, opts Options) (res *Result, err error) {
	if err := opts.defaults(); err != nil {
		return nil, fmt.Errorf("datapath bench: %w", err)
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return nil, fmt.Errorf("datapath bench: wrk not on PATH (apt-get install wrk): %w", err)
	}
	var cleanups []func() error
	defer func() {
		var errs []error
		for i := len(cleanups) - 1; i >= 0; i-- {
			errs = append(errs, cleanups[i]())
		}
		if left := harness.Leftovers(NetnsGlob, baselineCIDR, podwallCIDR, remoteRange); len(left) > 0 {
			errs = append(errs, fmt.Errorf("left behind: %s", strings.Join(left, ", ")))
		}
		if cerr := errors.Join(errs...); cerr != nil {
			err = errors.Join(err, fmt.Errorf("datapath bench clean-up: %w", cerr))
		}
	}()

	res = &Result{
		Started: time.Now(), Selected: opts.Selected, Main: opts.Selected[len(opts.Selected)-1],
		Rounds: opts.Rounds, SweepRounds: opts.SweepRounds, DurationSec: opts.Duration.Seconds(),
		Connections: opts.Connections, LoadStart: machine.LoadAverage(),
	}
	bh, err := remote.AddBlackhole(remoteRange)
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, bh.Remove)

	// podwalld on a manifests directory holding the first point's state.
	dir, err := os.MkdirTemp("", "pw-bndp-")
	if err != nil {
		return nil, err
	}
	cleanups = append(cleanups, func() error { return os.RemoveAll(dir) })
	d, err := harness.NewDaemon(opts.BinDir, dir, nodeName)
	if err != nil {
		return nil, err
	}
	if err := writeState(d, opts.Selected[0], opts.Services); err != nil {
		return nil, err
	}
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = d.Start(startCtx, "--log-level", "info")
	cancel()
	if err != nil {
		return nil, fmt.Errorf("start podwalld: %w", err)
	}
	cleanups = append(cleanups, d.Stop)
	res.Services, res.ServicesNote, err = checkServices(ctx, d, opts.Services)
	if err != nil {
		return nil, err
	}

	base, err := newPair(ctx, "baseline", bed.Options{Name: baselineBed, CNIBinDir: opts.CNIBinDir, PodCIDRv4: baselineCIDR}, opts, false)
	if base != nil {
		cleanups = append(cleanups, base.close)
	}
	if err != nil {
		return nil, err
	}
	pw, err := newPair(ctx, "podwall", bed.Options{
		Name: podwallBed, CNIBinDir: opts.BinDir, CNIPath: []string{opts.CNIBinDir}, PodCIDRv4: podwallCIDR,
		Extra: []map[string]any{{"type": "podwall", "socket": d.Socket, "timeout": "10s"}},
	}, opts, true)
	if pw != nil {
		cleanups = append(cleanups, pw.close)
	}
	if err != nil {
		return nil, err
	}
	intruder, err := pw.bed.AddPod(ctx, otherNamespace, intruderName, bed.PodOptions{})
	if err != nil {
		return nil, err
	}

	for i, n := range opts.Selected {
		rounds := opts.SweepRounds
		if i == len(opts.Selected)-1 {
			rounds = opts.Rounds
		}
		if i > 0 {
			if err := d.WriteManifest(remoteFile, mustRender(renderRemote(n))); err != nil {
				return nil, err
			}
		}
		pt, err := verifyPoint(ctx, n, base, pw, intruder, d)
		if err != nil {
			return nil, err
		}
		res.Points = append(res.Points, pt)
		opts.Logf("datapath: %d selected pods: largest set %d members in %d sets; %d rounds", n, pt.LargestSet, pt.Sets, rounds)
		// Warm-up: caches, conntrack tables, the server's goroutines.
		for _, p := range []*pair{base, pw} {
			if _, err := runWrk(ctx, p, KeepAlive, opts.Connections, time.Second); err != nil {
				return nil, err
			}
		}
		for r := range rounds {
			for _, mode := range Modes {
				order := []*pair{base, pw}
				if r%2 == 1 {
					order = []*pair{pw, base}
				}
				for _, p := range order {
					rep, err := runWrk(ctx, p, mode, opts.Connections, opts.Duration)
					if err != nil {
						return nil, err
					}
					run := WrkRun{
						Selected: n, Round: r, Mode: mode, Podwall: p == pw, QPS: rep.QPS,
						P50Ms: ms(rep.P50), P99Ms: ms(rep.P99), Requests: rep.Requests, Errors: rep.SocketErr + rep.Non2xx,
					}
					res.Runs = append(res.Runs, run)
					opts.Logf("datapath: selected=%d round=%d %s %s: %.0f req/s, p99 %.2f ms, %d errors",
						n, r, mode, p.name, run.QPS, run.P99Ms, run.Errors)
				}
			}
		}
	}
	res.Finished, res.LoadEnd = time.Now(), machine.LoadAverage()
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func mustRender(s string, err error) string {
	if err != nil {
		panic(err) // the renderers fail only on an address range too small, checked by defaults
	}
	return s
}

// writeState writes the whole manifests directory for n selected remote pods.
func writeState(d *harness.Daemon, n, services int) error {
	files := []struct {
		name string
		text func() (string, error)
	}{
		{namespacesFile, renderNamespaces},
		{localFile, func() (string, error) { return renderLocal(nodeName) }},
		{remoteFile, func() (string, error) { return renderRemote(n) }},
		{policyFile, renderPolicy},
	}
	if services > 0 {
		files = append(files, struct {
			name string
			text func() (string, error)
		}{servicesFile, func() (string, error) { return renderServices(services) }})
	}
	for _, f := range files {
		text, err := f.text()
		if err != nil {
			return fmt.Errorf("render %s: %w", f.name, err)
		}
		if err := d.WriteManifest(f.name, text); err != nil {
			return err
		}
	}
	return nil
}

// checkServices reports how many Services podwalld's state holds: when its
// manifests source reports services.json as unusable (a source that does not
// read Services yet), the file is removed so the rest of the state applies.
func checkServices(ctx context.Context, d *harness.Daemon, services int) (int, string, error) {
	if services == 0 {
		return 0, "", nil
	}
	out, err := d.Ctl(ctx, "status", "-o", "json")
	if err != nil {
		return 0, "", err
	}
	var st struct {
		SourceErrors []struct{ Object, Error string } `json:"sourceErrors"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return 0, "", fmt.Errorf("podwallctl status -o json: %w", err)
	}
	for _, e := range st.SourceErrors {
		if strings.Contains(e.Object, servicesFile) {
			if err := d.RemoveManifest(servicesFile); err != nil {
				return 0, "", err
			}
			return 0, fmt.Sprintf("this podwalld's manifests source does not read Services (%s), so the state holds pods and the policy only", e.Error), nil
		}
	}
	return services, "", nil
}

// newPair adds a server and a client pod in namespace bench to a new bed and
// starts the HTTP server in the server pod.
func newPair(ctx context.Context, name string, bo bed.Options, opts Options, podwall bool) (*pair, error) {
	b, err := bed.New(bo)
	if err != nil {
		return nil, err
	}
	p := &pair{name: name, bed: b}
	if p.server, err = b.AddPod(ctx, benchNamespace, serverName, bed.PodOptions{}); err != nil {
		return p, err
	}
	if p.client, err = b.AddPod(ctx, benchNamespace, clientName, bed.PodOptions{}); err != nil {
		return p, err
	}
	args := append(append([]string{"netns", "exec", p.server.NetnsName}, opts.ServerCommand...), "-addr", ":"+strconv.Itoa(httpPort))
	p.serverProc = exec.Command("ip", args...)
	p.serverProc.Stdout, p.serverProc.Stderr = os.Stderr, os.Stderr
	if err := p.serverProc.Start(); err != nil {
		p.serverProc = nil
		return p, fmt.Errorf("start the http server in %s: %w", p.server.NetnsName, err)
	}
	// The podwall pair's policy is in force before its pods' ADD returns:
	// the client is admitted (selector rules) from the start.
	if err := harness.Poll(ctx, 20*time.Second, 100*time.Millisecond, func() error {
		return httpGet(ctx, p.client, p.serverURL(), time.Second)
	}); err != nil {
		return p, fmt.Errorf("%s: the client does not reach the server: %w", name, err)
	}
	return p, nil
}

func (p *pair) serverURL() string {
	return "http://" + netip.AddrPortFrom(p.server.IPv4(), httpPort).String() + "/"
}

func (p *pair) close() error {
	var errs []error
	if p.serverProc != nil {
		p.serverProc.Process.Kill()
		p.serverProc.Wait()
	}
	errs = append(errs, p.bed.Close())
	return errors.Join(errs...)
}

// verifyPoint waits until the server pod's firewall holds n selected pods
// (the largest set holds n+2 members: the remote pods, server and client)
// and checks enforcement: the podwall client reaches the server, the
// intruder does not; the baseline client reaches its server.
func verifyPoint(ctx context.Context, n int, base, pw *pair, intruder *bed.Pod, d *harness.Daemon) (Point, error) {
	pt := Point{Selected: n}
	r, err := ipsets.Open(pw.server.NetnsPath)
	if err != nil {
		return pt, err
	}
	defer r.Close()
	err = harness.Poll(ctx, 90*time.Second, 250*time.Millisecond, func() error {
		sets, err := r.List("pw4-")
		if err != nil {
			return err
		}
		pt.Sets, pt.LargestSet, pt.LargestSetMembers = len(sets), 0, 0
		for _, s := range sets {
			if strings.HasPrefix(s.Name, "pw4-node-") {
				continue
			}
			if a := addresses(s.Members); a > pt.LargestSet {
				pt.LargestSet, pt.LargestSetMembers = a, len(s.Members)
			}
		}
		if pt.LargestSet != n+2 {
			return fmt.Errorf("largest podwall peer set in %s covers %d addresses, want %d", pw.server, pt.LargestSet, n+2)
		}
		return nil
	})
	if err != nil {
		return pt, fmt.Errorf("%w\n%s", err, harness.LastLines(d.Diagnose(ctx, benchNamespace+"/"+serverName), 60))
	}
	checks := []struct {
		from  *bed.Pod
		p     *pair
		allow bool
		what  string
	}{
		{pw.client, pw, true, "podwall client -> server:80 (selector rules)"},
		{intruder, pw, false, "podwall intruder (other namespace) -> server:80"},
		{base.client, base, true, "baseline client -> server:80 (no podwall)"},
	}
	for _, c := range checks {
		err := httpGet(ctx, c.from, c.p.serverURL(), 500*time.Millisecond)
		if (err == nil) != c.allow {
			return pt, fmt.Errorf("%s: allowed=%t, want %t (%v)", c.what, err == nil, c.allow, err)
		}
		verdict := "denied"
		if c.allow {
			verdict = "allowed"
		}
		pt.Checks = append(pt.Checks, c.what+": "+verdict)
	}
	return pt, nil
}

// addresses counts the addresses of the IPv4 prefixes of /24 or narrower
// (pod addresses, merged or not; the ipBlocks' /16s are left out).
func addresses(ps []netip.Prefix) int {
	n := 0
	for _, p := range ps {
		if p.Addr().Is4() && p.Bits() >= 24 {
			n += 1 << (32 - p.Bits())
		}
	}
	return n
}

// httpGet fetches url from inside from's netns, with a new connection.
func httpGet(ctx context.Context, from *bed.Pod, url string, timeout time.Duration) error {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var c net.Conn
			var dialErr error
			err := ns.WithNetNSPath(from.NetnsPath, func(ns.NetNS) error {
				c, dialErr = (&net.Dialer{}).DialContext(ctx, network, addr)
				return nil
			})
			if err != nil {
				return nil, err
			}
			return c, dialErr
		},
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// runWrk runs wrk in the pair's client netns against its server.
func runWrk(ctx context.Context, p *pair, mode Mode, connections int, d time.Duration) (WrkReport, error) {
	args := []string{"netns", "exec", p.client.NetnsName, "wrk", "-t1",
		"-c" + strconv.Itoa(connections), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency"}
	if mode == NewConnection {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, p.serverURL())
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return WrkReport{}, fmt.Errorf("wrk on %s (%s): %w: %s", p.name, mode, err, out)
	}
	rep, err := ParseWrk(string(out))
	if err != nil {
		return rep, fmt.Errorf("%s (%s): %w", p.name, mode, err)
	}
	if rep.Requests == 0 {
		return rep, fmt.Errorf("wrk on %s (%s): no request completed:\n%s", p.name, mode, out)
	}
	return rep, nil
}

// Samples returns value of every run at selected pods in mode, on the
// podwall bed or the baseline one, sorted.
func (r *Result) Samples(selected int, mode Mode, podwall bool, value func(WrkRun) float64) []float64 {
	var out []float64
	for _, run := range r.Runs {
		if run.Selected == selected && run.Mode == mode && run.Podwall == podwall {
			out = append(out, value(run))
		}
	}
	slices.Sort(out)
	return out
}
