package report

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
)

// microLineRE matches one result line of `go test -bench`:
//
//	BenchmarkCompileScale/pods=1000/local=1-2   	     100	  1234567 ns/op	  12 rules
var microLineRE = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

// parseMicro returns the ns/op of each benchmark of a `go test -bench
// -count N` output, every run's value, in order of first appearance.
func parseMicro(out string) (names []string, nsPerOp map[string][]float64) {
	nsPerOp = map[string][]float64{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		m := microLineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		if _, ok := nsPerOp[m[1]]; !ok {
			names = append(names, m[1])
		}
		nsPerOp[m[1]] = append(nsPerOp[m[1]], v)
	}
	return names, nsPerOp
}

// cumShares returns the cum% of each function of a `go tool pprof -top
// -cum` listing whose name ends with one of suffixes, by suffix.
func cumShares(listing string, suffixes []string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(listing))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// flat flat% sum% cum cum% name...
		if len(f) < 6 || !strings.HasSuffix(f[4], "%") {
			continue
		}
		name := strings.Join(f[5:], " ")
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[4], "%"), 64)
		if err != nil {
			continue
		}
		for _, s := range suffixes {
			if _, seen := out[s]; !seen && strings.HasSuffix(name, s) {
				out[s] = pct
			}
		}
	}
	return out
}
