package stats

import (
	"math"
	"testing"
)

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // 100..1, unsorted
	}
	for _, tc := range []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		{"single", []float64{7}, 99, 7},
		{"p50 of four", []float64{4, 1, 3, 2}, 50, 2},
		{"p99 of few is max", []float64{5, 1, 9, 3}, 99, 9},
		{"p99 of 100", hundred, 99, 99},
		{"p100", hundred, 100, 100},
		{"p1", hundred, 1, 1},
		{"tiny p clamps to min", []float64{3, 2, 1}, 0.001, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.xs, tc.p); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.xs, tc.p, got, tc.want)
			}
		})
	}
	if !math.IsNaN(Percentile(nil, 50)) {
		t.Error("Percentile of no samples is not NaN")
	}
}

func TestMedianAndSpread(t *testing.T) {
	for _, tc := range []struct {
		name         string
		xs           []float64
		median, sprd float64
	}{
		{"odd", []float64{3, 1, 2}, 2, 1},
		{"even", []float64{4, 1, 3, 2}, 2.5, 1.2},
		{"one", []float64{5}, 5, 0},
		{"zero median", []float64{0, 0, 0}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Median(tc.xs); got != tc.median {
				t.Errorf("Median = %v, want %v", got, tc.median)
			}
			if got := Spread(tc.xs); math.Abs(got-tc.sprd) > 1e-9 {
				t.Errorf("Spread = %v, want %v", got, tc.sprd)
			}
		})
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median of no samples is not NaN")
	}
}

func TestSummarize(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	got := Summarize(xs)
	want := Summary{N: 5, Min: 1, P50: 3, P90: 5, P99: 5, Max: 5, Mean: 3}
	if got != want {
		t.Errorf("Summarize = %+v, want %+v", got, want)
	}
	if xs[0] != 5 {
		t.Error("Summarize sorted its input")
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("Summarize(nil) is not the zero Summary")
	}
}
