package controlplane

import (
	"os"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 2.4e+07
go_memstats_heap_inuse_bytes_other 1
podwall_cni_request_duration_seconds_sum{verb="ADD"} 1.5
podwall_cni_request_duration_seconds_count{verb="ADD"} 30
podwall_cni_request_duration_seconds_count{verb="DEL"} 7
`
	var got MetricsScrape
	if err := parseMetrics(strings.NewReader(text), &got); err != nil {
		t.Fatal(err)
	}
	if got.HeapBytes != 24e6 || got.AddSeconds != 1.5 || got.Adds != 30 {
		t.Errorf("parseMetrics = %+v", got)
	}
	for _, bad := range []string{"podwall_syncs_total 1\n", "go_memstats_heap_inuse_bytes x\n"} {
		if err := parseMetrics(strings.NewReader(bad), &MetricsScrape{}); err == nil {
			t.Errorf("parseMetrics(%q) did not fail", bad)
		}
	}
}

func TestParseStat(t *testing.T) {
	// Fields 14-17: utime 250, stime 50, cutime 1000, cstime 300 (ticks).
	stat := "4242 (pod walld) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 1000 300 20 0 12 0 100 123 456\n"
	var got ProcSample
	if err := parseStat(stat, &got); err != nil {
		t.Fatal(err)
	}
	if got.CPUSeconds != 3 || got.ChildCPUSeconds != 13 {
		t.Errorf("parseStat = %+v, want 3 s own and 13 s children", got)
	}
	if err := parseStat("4242 podwalld S 1", &got); err == nil {
		t.Error("a stat without the command in parentheses did not fail")
	}
}

func TestParseStatus(t *testing.T) {
	status := "Name:\tpodwalld\nVmHWM:\t   81920 kB\nVmRSS:\t   40960 kB\nThreads:\t12\n"
	var got ProcSample
	if err := parseStatus(status, &got); err != nil {
		t.Fatal(err)
	}
	if got.RSSBytes != 40960*1024 || got.HWMBytes != 81920*1024 {
		t.Errorf("parseStatus = %+v", got)
	}
	if err := parseStatus("Name:\tx\n", &got); err == nil {
		t.Error("a status without VmRSS did not fail")
	}
}

func TestOwnProcess(t *testing.T) {
	// The readers work on a real /proc entry: this test's own.
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip("no /proc")
	}
	status, _ := os.ReadFile("/proc/self/status")
	var s ProcSample
	if err := parseStat(string(stat), &s); err != nil {
		t.Fatal(err)
	}
	if err := parseStatus(string(status), &s); err != nil {
		t.Fatal(err)
	}
	if s.RSSBytes <= 0 || s.HWMBytes < s.RSSBytes {
		t.Errorf("own process: %+v", s)
	}
}
