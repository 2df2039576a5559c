package report

import (
	"math"
	"strconv"
)

func itoa(n int) string { return strconv.Itoa(n) }

// ms1 formats a number with one decimal (no decimals from 100 up).
func ms1(v float64) string {
	switch {
	case math.IsNaN(v):
		return "—"
	case math.IsInf(v, 1):
		return "∞"
	case math.Abs(v) >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// num formats a metric figure for the table.
func num(v *float64) string {
	if v == nil {
		return "—"
	}
	switch x := *v; {
	case math.IsInf(x, 1):
		return "∞"
	case math.Abs(x) >= 1000:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case math.Abs(x) >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'f', 3, 64)
	}
}

func pct(v float64) string { return strconv.FormatFloat(v*100, 'f', 1, 64) + " %" }

func ratio3(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) }
