package report

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/podwall/podwall/test/bench/datapath"
	"github.com/podwall/podwall/test/bench/stats"
)

// Plot draws QPSPlot and SyncPlot into dir with gnuplot (Debian's
// gnuplot-nox), for the parts that were measured, and returns the files it
// wrote.
func Plot(in Input, dir string) ([]string, error) {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return nil, fmt.Errorf("plots: gnuplot not on PATH (apt-get install gnuplot-nox): %w", err)
	}
	tmp, err := os.MkdirTemp("", "podwall-plot-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var written []string
	type plot struct {
		file   string
		script func(tmp, out string) (string, bool, error)
	}
	for _, p := range []plot{
		{QPSPlot, func(tmp, out string) (string, bool, error) { return qpsScript(in, tmp, out) }},
		{SyncPlot, func(tmp, out string) (string, bool, error) { return syncScript(in, tmp, out) }},
	} {
		out := filepath.Join(dir, p.file)
		script, ok, err := p.script(tmp, out)
		if err != nil {
			return written, err
		}
		if !ok {
			continue
		}
		cmd := exec.Command("gnuplot")
		cmd.Stdin = strings.NewReader(script)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			return written, fmt.Errorf("gnuplot %s: %w: %s", p.file, err, stderr.String())
		}
		written = append(written, out)
	}
	return written, nil
}

// qpsData writes, per selected-pods point, the median, min and max QPS of
// both beds for mode: "n bmed bmin bmax pmed pmin pmax".
func qpsData(r *datapath.Result, mode datapath.Mode) string {
	var b strings.Builder
	qps := func(w datapath.WrkRun) float64 { return w.QPS }
	for _, n := range r.Selected {
		base, pw := r.Samples(n, mode, false, qps), r.Samples(n, mode, true, qps)
		if len(base) == 0 || len(pw) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%d %.1f %.1f %.1f %.1f %.1f %.1f\n", n,
			stats.Median(base), slices.Min(base), slices.Max(base), stats.Median(pw), slices.Min(pw), slices.Max(pw))
	}
	return b.String()
}

func qpsScript(in Input, tmp, out string) (string, bool, error) {
	r := in.Datapath
	if r == nil || len(r.Runs) == 0 {
		return "", false, nil
	}
	files := map[datapath.Mode]string{}
	for _, mode := range datapath.Modes {
		f := filepath.Join(tmp, "qps-"+string(mode)+".dat")
		if err := os.WriteFile(f, []byte(qpsData(r, mode)), 0o644); err != nil {
			return "", false, err
		}
		files[mode] = f
	}
	var s strings.Builder
	fmt.Fprintf(&s, "set terminal pngcairo size 1100,480 font 'sans,10'\nset output '%s'\n", out)
	s.WriteString("set multiplot layout 1,2 title 'HTTP requests/s through a pod under a policy selecting all pods (median, min–max of the runs)'\n")
	s.WriteString("set xlabel 'pods selected by the policy (peers in its ipsets)'\nset ylabel 'requests/s'\nset grid\nset key bottom left\nset yrange [0:*]\nset xrange [-500:*]\n")
	for _, mode := range datapath.Modes {
		fmt.Fprintf(&s, "set title '%s'\n", mode)
		fmt.Fprintf(&s, "plot '%[1]s' using 1:2:3:4 with yerrorlines lw 2 title 'baseline (podwall absent)', '%[1]s' using 1:5:6:7 with yerrorlines lw 2 title 'podwall'\n", files[mode])
	}
	s.WriteString("unset multiplot\n")
	return s.String(), true, nil
}

func syncScript(in Input, tmp, out string) (string, bool, error) {
	r := in.Controlplane
	if r == nil || len(r.Groups) == 0 {
		return "", false, nil
	}
	var b strings.Builder
	for _, k := range r.Groups {
		obs, _ := changes(r, "peer", k, false)
		dmn, _ := changes(r, "peer", k, true)
		if len(obs) == 0 {
			continue
		}
		dp50, dp99 := "NaN", "NaN"
		if len(dmn) > 0 {
			dp50, dp99 = fmt.Sprintf("%.1f", stats.Median(dmn)), fmt.Sprintf("%.1f", stats.Percentile(dmn, 99))
		}
		fmt.Fprintf(&b, "%d %.1f %.1f %s %s\n", k, stats.Median(obs), stats.Percentile(obs, 99), dp50, dp99)
	}
	if b.Len() == 0 {
		return "", false, nil
	}
	f := filepath.Join(tmp, "sync.dat")
	if err := os.WriteFile(f, []byte(b.String()), 0o644); err != nil {
		return "", false, err
	}
	var s strings.Builder
	fmt.Fprintf(&s, "set terminal pngcairo size 800,480 font 'sans,10'\nset output '%s'\n", out)
	s.WriteString("set title 'A remote peer appears, disappears or is relabelled: until the ipsets of every affected local pod show it'\n")
	s.WriteString("set xlabel 'local pods the change affects'\nset ylabel 'ms from the API write (log scale)'\nset grid\nset key top left\nset logscale xy\nset xrange [0.8:150]\nset yrange [10:*]\n")
	fmt.Fprintf(&s, "plot '%[1]s' using 1:2 with linespoints lw 2 title 'p50, ipsets read', '%[1]s' using 1:3 with linespoints lw 2 title 'p99, ipsets read', "+
		"'%[1]s' using 1:4 with linespoints dt 2 title 'p50, podwalld log', '%[1]s' using 1:5 with linespoints dt 2 title 'p99, podwalld log', 100 with lines lc rgb 'red' dt 3 title 'target 100 ms'\n", f)
	return s.String(), true, nil
}
