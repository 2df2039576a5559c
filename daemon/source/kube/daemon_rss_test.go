package kube

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDaemonRSS measures podwalld binaries side by side against the
// package's shared kube-apiserver: each is started with --kubeconfig, one
// after the other, first on the near-empty cluster (idle) and then, after
// loadMemoryCluster, on 10k pods, 1k namespaces, 1k policies and 1k
// Services; once it serves, its VmRSS, VmHWM, RssFile (mostly the
// binary's pages) and RssAnon (/proc/PID/status), CPU
// time (/proc/PID/stat) and Go heap (the MemStats of its
// /debug/pprof/heap?debug=1) are logged as a table.
//
// It is a measurement, not a check: it runs only when
// PODWALL_RSS_BINARIES names the binaries, as label=path pairs separated
// by commas (e.g. before=/tmp/podwalld-before,after=bin/podwalld), and
// asserts nothing about the numbers. PODWALL_RSS_GOMEMLIMITS, e.g.
// "default,off,32MiB", runs each binary on the loaded cluster once per
// GOMEMLIMIT ("default": unset, podwalld's own limit);
// PODWALL_RSS_RUNS repeats every run (default 1); PODWALL_RSS_SETTLE is how
// long each daemon runs after it serves before it is measured (default 5s;
// the CPU time and collections of that window are logged apart). It needs
// root and the kube binaries, like the other tests against the API server.
func TestDaemonRSS(t *testing.T) {
	spec := os.Getenv("PODWALL_RSS_BINARIES")
	if spec == "" {
		t.Skip("set PODWALL_RSS_BINARIES=label=path,... to measure podwalld binaries")
	}
	type binary struct{ label, path string }
	var bins []binary
	for _, pair := range strings.Split(spec, ",") {
		label, path, ok := strings.Cut(pair, "=")
		if !ok {
			t.Fatalf("PODWALL_RSS_BINARIES: %q is not label=path", pair)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			t.Fatal(err)
		}
		bins = append(bins, binary{label, abs})
	}
	limits := []string{"default"}
	if l := os.Getenv("PODWALL_RSS_GOMEMLIMITS"); l != "" {
		limits = strings.Split(l, ",")
	}
	runs := 1
	if r := os.Getenv("PODWALL_RSS_RUNS"); r != "" {
		var err error
		if runs, err = strconv.Atoi(r); err != nil || runs < 1 {
			t.Fatalf("PODWALL_RSS_RUNS=%q: want a positive number", r)
		}
	}
	settle := 5 * time.Second
	if s := os.Getenv("PODWALL_RSS_SETTLE"); s != "" {
		var err error
		if settle, err = time.ParseDuration(s); err != nil {
			t.Fatalf("PODWALL_RSS_SETTLE: %v", err)
		}
	}
	c := apiServer(t)
	var rows []string
	for range runs {
		for _, b := range bins {
			m := runDaemon(t, b.path, c.Kubeconfig(), "default", settle)
			rows = append(rows, fmt.Sprintf("%-8s %-8s %-7s %s", "idle", b.label, "default", m))
		}
	}
	start := time.Now()
	if err := loadMemoryCluster(context.Background(), c.RestConfig()); err != nil {
		t.Fatalf("load the cluster: %v", err)
	}
	t.Logf("cluster loaded in %v", time.Since(start).Round(time.Millisecond))
	for _, limit := range limits {
		for range runs {
			for _, b := range bins {
				m := runDaemon(t, b.path, c.Kubeconfig(), limit, settle)
				rows = append(rows, fmt.Sprintf("%-8s %-8s %-7s %s", "loaded", b.label, limit, m))
			}
		}
	}
	t.Logf("%-8s %-8s %-7s %s\n%s", "cluster", "binary", "limit", daemonMeasureHeader, strings.Join(rows, "\n"))
}

const daemonMeasureHeader = "sync-s  RSS-MiB HWM-MiB file-MiB anon-MiB heapAlloc-MiB heapInuse-MiB goSys-MiB numGC gcCPU%  cpu-s settleGC settleCPU-s"

// runDaemon starts the podwalld at path on kubeconfig for memNode, waits
// until it serves (its caches synced) and settle more, measures it and
// stops it. limit is its GOMEMLIMIT ("default": unset).
func runDaemon(t *testing.T, path, kubeconfig, limit string, settle time.Duration) string {
	t.Helper()
	dir := t.TempDir()
	pprofAddr := freeLoopbackAddr(t)
	cmd := exec.Command(path, "--kubeconfig", kubeconfig, "--node-name", memNode,
		"--socket", filepath.Join(dir, "podwall.sock"), "--state-dir", filepath.Join(dir, "state"),
		"--pprof-address", pprofAddr)
	cmd.Env = os.Environ()
	if limit != "default" {
		cmd.Env = append(cmd.Env, "GOMEMLIMIT="+limit)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	synced, serving := make(chan time.Duration, 1), make(chan struct{}, 1)
	var logTail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if logTail.Len() < 16<<10 {
				logTail.WriteString(line + "\n")
			}
			switch {
			case strings.Contains(line, "caches synced"):
				synced <- time.Since(start)
			case strings.Contains(line, "podwalld serving"):
				serving <- struct{}{}
			}
		}
		io.Copy(io.Discard, stderr)
		exited <- cmd.Wait()
	}()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	var syncTime time.Duration
	for done := false; !done; {
		select {
		case syncTime = <-synced:
		case <-serving:
			done = true
		case err := <-exited:
			t.Fatalf("%s exited before it served: %v; log:\n%s", path, err, logTail.String())
		case <-time.After(5 * time.Minute):
			stop()
			t.Fatalf("%s did not serve within 5 minutes", path)
		}
	}
	cpu0, heap0 := procCPUSeconds(t, cmd.Process.Pid), heapMemStats(t, pprofAddr)
	time.Sleep(settle) // let the first syncs and collections settle
	rss, hwm := procStatusKiB(t, cmd.Process.Pid, "VmRSS"), procStatusKiB(t, cmd.Process.Pid, "VmHWM")
	rssFile, rssAnon := procStatusKiB(t, cmd.Process.Pid, "RssFile"), procStatusKiB(t, cmd.Process.Pid, "RssAnon")
	cpu := procCPUSeconds(t, cmd.Process.Pid)
	heap := heapMemStats(t, pprofAddr)
	stop()
	mib := func(v float64) float64 { return v / (1 << 20) }
	gcCPU, _ := strconv.ParseFloat(heap["GCCPUFraction"], 64)
	num := func(k string) float64 { v, _ := strconv.ParseFloat(heap[k], 64); return v }
	gc0, _ := strconv.ParseFloat(heap0["NumGC"], 64)
	return fmt.Sprintf("%6.1f %8.1f %7.1f %8.1f %8.1f %13.1f %13.1f %9.1f %5.0f %6.2f %6.2f %8.0f %11.2f",
		syncTime.Seconds(), float64(rss)/1024, float64(hwm)/1024, float64(rssFile)/1024, float64(rssAnon)/1024, mib(num("HeapAlloc")), mib(num("HeapInuse")),
		mib(num("Sys")), num("NumGC"), gcCPU*100, cpu, num("NumGC")-gc0, cpu-cpu0)
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// procStatusKiB returns field (e.g. VmRSS) of /proc/pid/status, in KiB.
func procStatusKiB(t *testing.T, pid int, field string) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kib, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err != nil {
				t.Fatalf("%s in /proc/%d/status: %v", field, pid, err)
			}
			return kib
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// procCPUSeconds returns the user and system CPU time pid has used.
func procCPUSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command (which may hold spaces) start at ")".
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	utime, _ := strconv.Atoi(fields[11])
	stime, _ := strconv.Atoi(fields[12])
	return float64(utime+stime) / 100 // USER_HZ
}

// heapMemStats returns the "# Name = value" MemStats lines of the heap
// profile served at addr.
func heapMemStats(t *testing.T, addr string) map[string]string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "# "), " = "); ok && strings.HasPrefix(sc.Text(), "# ") {
			out[k] = v
		}
	}
	return out
}
