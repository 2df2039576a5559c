package datapath

import (
	"os"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	out, err := os.ReadFile("testdata/wrk-close.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseWrk(string(out))
	if err != nil {
		t.Fatal(err)
	}
	want := WrkReport{Requests: 18764, QPS: 9337.64, P50: 506 * time.Microsecond, P99: 4610 * time.Microsecond, SocketErr: 5, Non2xx: 7}
	if got != want {
		t.Errorf("ParseWrk = %+v, want %+v", got, want)
	}
}

func TestParseWrkIncomplete(t *testing.T) {
	for _, tc := range []struct{ name, out string }{
		{"empty", ""},
		{"no latency", "Requests/sec:   9337.64\n"},
		{"no qps", "  Latency Distribution\n     50%  506.00us\n     99%    4.61ms\n"},
		{"connection refused", "unable to connect to 10.215.1.2:80 Connection refused\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseWrk(tc.out); err == nil {
				t.Error("ParseWrk did not fail")
			}
		})
	}
}

func TestWrkDurationUnits(t *testing.T) {
	for _, tc := range []struct {
		v, unit string
		want    time.Duration
	}{
		{"114.00", "us", 114 * time.Microsecond},
		{"3.73", "ms", 3730 * time.Microsecond},
		{"1.50", "s", 1500 * time.Millisecond},
	} {
		got, err := wrkDuration(tc.v, tc.unit)
		if err != nil || got != tc.want {
			t.Errorf("wrkDuration(%s%s) = %v, %v; want %v", tc.v, tc.unit, got, err, tc.want)
		}
	}
}
