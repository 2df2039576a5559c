package controlplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ProcSample is one reading of podwalld's process from /proc/<pid>: CPU
// of the daemon and of the commands it ran and waited for, and RSS.
type ProcSample struct {
	// At is seconds since the benchmark started.
	At    float64 `json:"at"`
	Phase string  `json:"phase"`
	// RSSBytes is VmRSS, HWMBytes VmHWM (the peak RSS so far).
	RSSBytes float64 `json:"rssBytes"`
	HWMBytes float64 `json:"hwmBytes"`
	// CPUSeconds is the daemon's own user+system time; ChildCPUSeconds that
	// of its finished children (iptables-restore, ipset).
	CPUSeconds      float64 `json:"cpuSeconds"`
	ChildCPUSeconds float64 `json:"childCpuSeconds"`
}

// MetricsScrape is one read of podwalld's /metrics, taken at a phase
// boundary only: a scrape is not free at this scale (see DurationMs).
type MetricsScrape struct {
	Phase string `json:"phase"`
	// HeapBytes is go_memstats_heap_inuse_bytes.
	HeapBytes float64 `json:"heapBytes"`
	// AddSeconds and Adds are podwall_cni_request_duration_seconds' sum and
	// count for ADD.
	AddSeconds float64 `json:"addSeconds"`
	Adds       float64 `json:"adds"`
	// DurationMs is how long the scrape took; CPUSeconds the daemon's CPU
	// time (its own) meanwhile.
	DurationMs float64 `json:"durationMs"`
	CPUSeconds float64 `json:"cpuSeconds"`
}

// metricSetters are the series of /metrics a MetricsScrape reads.
var metricSetters = map[string]func(*MetricsScrape, float64){
	"go_memstats_heap_inuse_bytes":                           func(s *MetricsScrape, v float64) { s.HeapBytes = v },
	`podwall_cni_request_duration_seconds_sum{verb="ADD"}`:   func(s *MetricsScrape, v float64) { s.AddSeconds = v },
	`podwall_cni_request_duration_seconds_count{verb="ADD"}`: func(s *MetricsScrape, v float64) { s.Adds = v },
}

// parseMetrics reads the series of metricSetters from a Prometheus text
// exposition into s; the heap gauge must be there.
func parseMetrics(r io.Reader, s *MetricsScrape) error {
	heap := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		set, ok := metricSetters[name]
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return fmt.Errorf("metric %s: %w", name, err)
		}
		set(s, v)
		heap = heap || name == "go_memstats_heap_inuse_bytes"
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if !heap {
		return errors.New("no go_memstats_heap_inuse_bytes in /metrics")
	}
	return nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times (100 on
// Linux on every architecture Go supports).
const clockTicks = 100

// parseStat reads utime, stime, cutime and cstime (fields 14-17) of
// /proc/<pid>/stat, in seconds.
func parseStat(stat string, s *ProcSample) error {
	// The command (field 2) is in parentheses and may hold spaces.
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return errors.New("stat: no command")
	}
	f := strings.Fields(stat[end+1:]) // f[0] is field 3
	if len(f) < 15 {
		return errors.New("stat: too few fields")
	}
	var t [4]float64
	for i := range t {
		v, err := strconv.ParseFloat(f[11+i], 64)
		if err != nil {
			return fmt.Errorf("stat field %d: %w", 14+i, err)
		}
		t[i] = v / clockTicks
	}
	s.CPUSeconds, s.ChildCPUSeconds = t[0]+t[1], t[2]+t[3]
	return nil
}

// parseStatus reads VmRSS and VmHWM of /proc/<pid>/status, in bytes.
func parseStatus(status string, s *ProcSample) error {
	found := 0
	for line := range strings.Lines(status) {
		key, rest, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		if err != nil {
			return fmt.Errorf("status %s: %w", key, err)
		}
		if key == "VmRSS" {
			s.RSSBytes = kb * 1024
		} else {
			s.HWMBytes = kb * 1024
		}
		found++
	}
	if found != 2 {
		return errors.New("status: no VmRSS or VmHWM")
	}
	return nil
}

// findPid returns the pid of the podwalld serving socket (its command line
// names it).
func findPid(socket string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "podwalld" {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if args[i] == "--socket" && args[i+1] == socket {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no podwalld process serving %s", socket)
}

// sampler reads podwalld's /proc entry every interval until finished, and
// its /metrics when asked.
type sampler struct {
	pid   int
	url   string
	start time.Time

	mu      sync.Mutex
	phase   string
	samples []ProcSample
	scrapes []MetricsScrape
	errs    []string
	stop    chan struct{}
	done    chan struct{}
}

func startSampler(pid int, metricsAddr string, start time.Time, interval time.Duration) *sampler {
	s := &sampler{pid: pid, url: "http://" + metricsAddr + "/metrics", start: start, phase: "load",
		stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			s.sample()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// setPhase names the phase the next samples belong to.
func (s *sampler) setPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

func (s *sampler) problem(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) < 5 {
		s.errs = append(s.errs, err.Error())
	}
}

// sample takes one reading of /proc now and keeps it.
func (s *sampler) sample() {
	ps, err := s.read()
	if err != nil {
		s.problem(err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ps.Phase = s.phase
	s.samples = append(s.samples, ps)
}

func (s *sampler) read() (ProcSample, error) {
	ps := ProcSample{At: time.Since(s.start).Seconds()}
	dir := filepath.Join("/proc", strconv.Itoa(s.pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return ps, err
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		return ps, err
	}
	return ps, errors.Join(parseStat(string(stat), &ps), parseStatus(string(status), &ps))
}

// scrape reads /metrics once, labelled phase, with what it cost the daemon.
func (s *sampler) scrape(phase string) {
	before, err := s.read()
	if err != nil {
		s.problem(err)
		return
	}
	ms := MetricsScrape{Phase: phase}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.problem(fmt.Errorf("scrape /metrics: %w", err))
		return
	}
	err = parseMetrics(resp.Body, &ms)
	resp.Body.Close()
	if err != nil {
		s.problem(fmt.Errorf("scrape /metrics: %w", err))
		return
	}
	ms.DurationMs = float64(time.Since(start)) / float64(time.Millisecond)
	if after, err := s.read(); err == nil {
		ms.CPUSeconds = after.CPUSeconds - before.CPUSeconds
	}
	s.mu.Lock()
	s.scrapes = append(s.scrapes, ms)
	s.mu.Unlock()
}

// finish stops sampling and returns the samples, the scrapes and the first
// errors.
func (s *sampler) finish() ([]ProcSample, []MetricsScrape, []string) {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples, s.scrapes, s.errs
}

// fetchProfile GETs a pprof endpoint and writes the body to path.
func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("fetch %s: %s: %s", url, resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("fetch %s: %w", url, err)
	}
	return f.Close()
}
