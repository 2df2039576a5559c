// Package machine describes the machine podwall's benchmarks run on — CPU,
// cores, memory, kernel, Go — and how loaded it is, from /proc and uname:
// figures measured on a shared VM mean little without it. It only reads,
// and must not import podwall's own packages.
package machine

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Info describes the machine.
type Info struct {
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	MemGiB int    `json:"memGiB"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
}

// Describe returns what it can read of the machine; unknown fields stay
// empty.
func Describe() Info {
	in := Info{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				in.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		in.MemGiB = memTotalGiB(string(b))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		in.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return in
}

// memTotalGiB reads MemTotal of /proc/meminfo, rounded to GiB.
func memTotalGiB(meminfo string) int {
	for line := range strings.Lines(meminfo) {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != "MemTotal" {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if err != nil {
			return 0
		}
		return int(kb/(1<<20) + 0.5)
	}
	return 0
}

// LoadAverage returns the 1-minute load average as /proc/loadavg has it
// ("" if unreadable).
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}
