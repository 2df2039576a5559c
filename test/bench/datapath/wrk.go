package datapath

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// WrkReport is what one wrk run printed.
type WrkReport struct {
	Requests  int64
	QPS       float64
	P50, P99  time.Duration
	SocketErr int64 // connect, read, write and timeout errors
	Non2xx    int64
}

var (
	wrkRequestsRE = regexp.MustCompile(`^\s*(\d+) requests in `)
	wrkQPSRE      = regexp.MustCompile(`^Requests/sec:\s+([0-9.]+)`)
	wrkPctRE      = regexp.MustCompile(`^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkSocketRE   = regexp.MustCompile(`^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xxRE   = regexp.MustCompile(`^\s*Non-2xx or 3xx responses: (\d+)`)
)

// ParseWrk reads the report of `wrk --latency`.
func ParseWrk(out string) (WrkReport, error) {
	var r WrkReport
	var haveQPS, have50, have99 bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := wrkRequestsRE.FindStringSubmatch(line); m != nil {
			r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if m := wrkQPSRE.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: requests/sec %q: %w", m[1], err)
			}
			r.QPS, haveQPS = v, true
		}
		if m := wrkPctRE.FindStringSubmatch(line); m != nil {
			d, err := wrkDuration(m[2], m[3])
			if err != nil {
				return r, err
			}
			if m[1] == "50" {
				r.P50, have50 = d, true
			} else {
				r.P99, have99 = d, true
			}
		}
		if m := wrkSocketRE.FindStringSubmatch(line); m != nil {
			for _, s := range m[1:] {
				n, _ := strconv.ParseInt(s, 10, 64)
				r.SocketErr += n
			}
		}
		if m := wrkNon2xxRE.FindStringSubmatch(line); m != nil {
			r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	if !haveQPS || !have50 || !have99 {
		return r, fmt.Errorf("wrk: no Requests/sec or latency distribution in its output:\n%s", out)
	}
	return r, nil
}

func wrkDuration(value, unit string) (time.Duration, error) {
	v, err := strconv.ParseFloat(value, 64)
	if err != nil {
		return 0, fmt.Errorf("wrk: latency %q: %w", value+unit, err)
	}
	scale := map[string]float64{"us": float64(time.Microsecond), "ms": float64(time.Millisecond), "s": float64(time.Second)}[unit]
	return time.Duration(v * scale), nil
}
