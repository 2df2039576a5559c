package notrack

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podwall/podwall/test/bench/machine"
	"github.com/podwall/podwall/test/bench/stats"
)

// BenchOptions configures Bench. Zero values take the defaults in brackets.
type BenchOptions struct {
	// Variants compared, one server/client pair each [None Podwall NoTrack
	// NoConntrack NoTrackSocket]. The first is the baseline of the ratios.
	Variants []Variant
	// Remote is the number of remote peers in the policy's sets [8000].
	Remote int
	// Rounds [7]; each runs every mode once on every pair, the pairs in an
	// order rotated by one per round.
	Rounds int
	// Duration of one wrk run [5s]; Connections wrk keeps open [16].
	Duration    time.Duration
	Connections int
	// Logf reports progress [discarded].
	Logf func(format string, args ...any)
}

func (o *BenchOptions) defaults() error {
	if len(o.Variants) == 0 {
		o.Variants = []Variant{None, Podwall, NoTrack, NoConntrack, NoTrackSocket}
	}
	for _, v := range o.Variants {
		if !slices.Contains(Variants, v) {
			return fmt.Errorf("unknown variant %q", v)
		}
	}
	if o.Remote == 0 {
		o.Remote = 8000
	}
	if o.Remote < 0 || o.Remote > MaxRemote {
		return fmt.Errorf("remote peers %d: want 0..%d", o.Remote, MaxRemote)
	}
	if o.Rounds <= 0 {
		o.Rounds = 7
	}
	if o.Duration <= 0 {
		o.Duration = 5 * time.Second
	}
	if o.Connections <= 0 {
		o.Connections = 16
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return nil
}

// BenchRun is one wrk run.
type BenchRun struct {
	Variant  Variant `json:"variant"`
	Round    int     `json:"round"`
	Mode     Mode    `json:"mode"`
	QPS      float64 `json:"qps"`
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	// Load is the 1-minute load average when the run started.
	Load string `json:"load"`
	// CPUPerRequestUs is the CPU time wrk and this process (the HTTP
	// servers) used during the run, per request, in microseconds: the
	// network path between the pods runs mostly in their contexts (softirqs
	// raised by their own sends), so this moves less with the other load
	// on the machine than the request rate does. Softirq work the kernel
	// deferred to ksoftirqd is not in it.
	CPUPerRequestUs float64 `json:"cpuPerRequestUs"`
}

// BenchResult is what Bench measured.
type BenchResult struct {
	Options  BenchOptions `json:"-"`
	Started  time.Time    `json:"started"`
	Finished time.Time    `json:"finished"`
	Runs     []BenchRun   `json:"runs"`
	// Checks are the probes run before the rounds: on every pair the
	// client reaches its server, and the intruder (in no set) does not,
	// except on None.
	Checks []string `json:"checks"`
	// Rules is iptables-save of each variant's server netns, after the
	// rounds; Conntrack the number of conntrack entries there then.
	Rules     map[Variant]string `json:"rules"`
	Conntrack map[Variant]string `json:"conntrack"`
}

// benchPair is one variant's server and client.
type benchPair struct {
	variant        Variant
	server, client *Pod
	http           *HTTPServer
}

func (p *benchPair) url() netip.AddrPort { return netip.AddrPortFrom(p.server.Addr, 80) }

// Bench builds a pair of pods per variant, installs the variant's firewall
// of BenchSpec in both, checks enforcement, and runs wrk round-robin. It
// cleans up after itself, also on failure.
func Bench(ctx context.Context, opts BenchOptions) (res *BenchResult, err error) {
	if err := opts.defaults(); err != nil {
		return nil, fmt.Errorf("notrack bench: %w", err)
	}
	bed, err := NewBed()
	if err != nil {
		return nil, fmt.Errorf("notrack bench: %w", err)
	}
	var pairs []*benchPair
	defer func() {
		var errs []error
		for _, p := range pairs {
			if p.http != nil {
				errs = append(errs, p.http.Close())
			}
		}
		errs = append(errs, bed.Close())
		if cerr := errors.Join(errs...); cerr != nil {
			err = errors.Join(err, fmt.Errorf("notrack bench clean-up: %w", cerr))
		}
	}()
	res = &BenchResult{Options: opts, Started: time.Now(), Rules: map[Variant]string{}, Conntrack: map[Variant]string{}}

	intruder, err := bed.AddPod("b-intr", netip.MustParseAddr("10.218.9.9"))
	if err != nil {
		return nil, err
	}
	for i, v := range opts.Variants {
		p := &benchPair{variant: v}
		pairs = append(pairs, p)
		if p.server, err = bed.AddPod(fmt.Sprintf("b-srv-%d", i), netip.AddrFrom4([4]byte{10, 218, byte(10 + i), 2})); err != nil {
			return nil, err
		}
		if p.client, err = bed.AddPod(fmt.Sprintf("b-cli-%d", i), netip.AddrFrom4([4]byte{10, 218, byte(10 + i), 3})); err != nil {
			return nil, err
		}
		// Both are pods of the namespace the policy selects whole.
		for _, pod := range []*Pod{p.server, p.client} {
			spec, err := BenchSpec("bench/"+pod.Name, p.server.Addr, p.client.Addr, opts.Remote)
			if err != nil {
				return nil, err
			}
			rs, err := RenderVariant(v, spec, 1)
			if err != nil {
				return nil, err
			}
			if err := rs.Install(pod); err != nil {
				return nil, err
			}
		}
		if p.http, err = ServeHTTP(p.server, 80); err != nil {
			return nil, err
		}
	}
	for _, p := range pairs {
		if err := HTTPGet(ctx, p.client, p.url(), 5*time.Second); err != nil {
			return nil, fmt.Errorf("%s: the client does not reach its server: %w", p.variant, err)
		}
		res.Checks = append(res.Checks, fmt.Sprintf("%s: client -> server:80 allowed", p.variant))
		err := HTTPGet(ctx, intruder, p.url(), 500*time.Millisecond)
		if (err == nil) != (p.variant == None) {
			return nil, fmt.Errorf("%s: intruder -> server:80 allowed=%t (%v)", p.variant, err == nil, err)
		}
		res.Checks = append(res.Checks, fmt.Sprintf("%s: intruder (in no set) -> server:80 allowed=%t", p.variant, err == nil))
	}
	for _, p := range pairs { // warm-up
		if _, err := RunWrk(ctx, p.client, p.url(), KeepAlive, opts.Connections, time.Second); err != nil {
			return nil, err
		}
	}
	for r := range opts.Rounds {
		order := slices.Concat(pairs[r%len(pairs):], pairs[:r%len(pairs)])
		for _, mode := range Modes {
			for _, p := range order {
				load := machine.LoadAverage()
				before, err := selfCPU()
				if err != nil {
					return nil, err
				}
				rep, err := RunWrk(ctx, p.client, p.url(), mode, opts.Connections, opts.Duration)
				if err != nil {
					return nil, err
				}
				after, err := selfCPU()
				if err != nil {
					return nil, err
				}
				run := BenchRun{
					Variant: p.variant, Round: r, Mode: mode, QPS: rep.QPS, P50Ms: ms(rep.P50), P99Ms: ms(rep.P99),
					Requests: rep.Requests, Errors: rep.Errors, Load: load,
					CPUPerRequestUs: float64(rep.CPU+after-before) / float64(time.Microsecond) / float64(rep.Requests),
				}
				res.Runs = append(res.Runs, run)
				opts.Logf("notrack: round %d %s %s: %.0f req/s, p99 %.2f ms, %.1f µs CPU/request, %d errors, load %s",
					r, mode, p.variant, run.QPS, run.P99Ms, run.CPUPerRequestUs, run.Errors, load)
			}
		}
	}
	for _, p := range pairs {
		if res.Rules[p.variant], err = Save(p.server); err != nil {
			return nil, err
		}
		if res.Conntrack[p.variant], err = ConntrackCount(p.server); err != nil {
			return nil, err
		}
	}
	res.Finished = time.Now()
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// selfCPU returns the user and system time this process used so far.
func selfCPU() (time.Duration, error) {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// Row holds one variant's samples in one mode, each sorted.
type Row struct {
	Variant Variant
	Mode    Mode
	// QPS and P99 (ms), one per round.
	QPS, P99 []float64
	// CPU is CPU µs per request, one per round.
	CPU []float64
	// QPSRatio, P99Ratio and CPURatio are this variant's run divided by
	// the baseline's of the same round and mode.
	QPSRatio, P99Ratio, CPURatio []float64
	Errors                       int64
}

// Rows returns r's samples, variant by variant, keep-alive first.
func (r *BenchResult) Rows() []Row {
	var rows []Row
	base := r.Options.Variants[0]
	for _, mode := range Modes {
		for _, v := range r.Options.Variants {
			row := Row{Variant: v, Mode: mode}
			for _, run := range r.Runs {
				if run.Variant != v || run.Mode != mode {
					continue
				}
				row.QPS, row.P99, row.CPU = append(row.QPS, run.QPS), append(row.P99, run.P99Ms), append(row.CPU, run.CPUPerRequestUs)
				row.Errors += run.Errors
				for _, b := range r.Runs {
					if b.Variant == base && b.Mode == mode && b.Round == run.Round {
						row.QPSRatio, row.P99Ratio = append(row.QPSRatio, run.QPS/b.QPS), append(row.P99Ratio, run.P99Ms/b.P99Ms)
						row.CPURatio = append(row.CPURatio, run.CPUPerRequestUs/b.CPUPerRequestUs)
					}
				}
			}
			for _, s := range [][]float64{row.QPS, row.P99, row.CPU, row.QPSRatio, row.P99Ratio, row.CPURatio} {
				slices.Sort(s)
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// Loads returns the minimum, median and maximum of the load averages the
// runs started at.
func (r *BenchResult) Loads() (lo, med, hi float64) {
	var l []float64
	for _, run := range r.Runs {
		if v, err := strconv.ParseFloat(run.Load, 64); err == nil {
			l = append(l, v)
		}
	}
	if len(l) == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	return slices.Min(l), stats.Median(l), slices.Max(l)
}

// Markdown renders the summary as a table, ratios against the first
// variant.
func (r *BenchResult) Markdown() string {
	var b strings.Builder
	lo, med, hi := r.Loads()
	fmt.Fprintf(&b, "%d rounds of wrk -t1 -c%d -d%s --latency, %d remote peers in the sets, %s → %s; 1-minute load average at the runs' starts: min %.2f, median %.2f, max %.2f\n\n",
		r.Options.Rounds, r.Options.Connections, r.Options.Duration, r.Options.Remote,
		r.Started.UTC().Format("2006-01-02 15:04"), r.Finished.UTC().Format("15:04 MST"), lo, med, hi)
	b.WriteString("| mode | variant | req/s median (min–max) | spread | ratio vs " + string(r.Options.Variants[0]) +
		" paired median (min–max) | p99 ms median (min–max) | p99 ratio paired median (min–max) | CPU µs/request median (min–max) | CPU ratio paired median (min–max) | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows() {
		fmt.Fprintf(&b, "| %s | %s | %s | %.1f %% | %s | %s | %s | %s | %s | %d |\n", row.Mode, row.Variant,
			span(row.QPS, "%.0f"), 100*stats.Spread(row.QPS), span(row.QPSRatio, "%.3f"),
			span(row.P99, "%.2f"), span(row.P99Ratio, "%.3f"), span(row.CPU, "%.1f"), span(row.CPURatio, "%.3f"), row.Errors)
	}
	b.WriteString("\nConntrack entries in each server netns after the rounds: ")
	for i, v := range r.Options.Variants {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", v, r.Conntrack[v])
	}
	b.WriteString("\n")
	return b.String()
}

// span formats the median of sorted samples and their range.
func span(sorted []float64, format string) string {
	if len(sorted) == 0 {
		return "—"
	}
	return fmt.Sprintf(format+" ("+format+"–"+format+")", stats.Median(sorted), sorted[0], sorted[len(sorted)-1])
}
