package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/podwall/podwall/test/bench/controlplane"
	"github.com/podwall/podwall/test/bench/datapath"
	"github.com/podwall/podwall/test/bench/machine"
	"github.com/podwall/podwall/test/bench/report"
)

// The files `bench report` reads from its -in directory (bench.mk writes
// them).
const (
	datapathFile     = "datapath.json"
	controlplaneFile = "controlplane.json"
	microFile        = "micro.txt"
	benchstatFile    = "micro-benchstat.txt"
	cpuTopFile       = "cpu-top.txt"
	cpuCumFile       = "cpu-cum.txt"
	heapTopFile      = "heap-top.txt"
	startedFile      = "started"
	finishedFile     = "finished"
)

// runReport is `bench report`: docs/performance.{md,json} and the plots
// from the results in -in. It writes what it can and then fails if a part
// was not measured, naming it.
func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	in := fs.String("in", "bin/bench", "directory of the benchmarks' results")
	md := fs.String("md", "docs/performance.md", "write the document here")
	js := fs.String("json", "docs/performance.json", "write the figures here")
	plots := fs.String("plots", "docs", "write the PNG plots into this directory")
	version := fs.String("podwall-version", "dev", "the podwall version measured")
	if err := fs.Parse(args); err != nil {
		return err
	}
	input := report.Input{Date: time.Now()}
	m := machine.Describe()
	input.Machine = report.Machine{CPU: m.CPU, Cores: m.Cores, MemGiB: m.MemGiB, Kernel: m.Kernel, Go: m.Go, Podwall: *version, Load: machine.LoadAverage()}

	var missing []string
	input.Datapath = &datapath.Result{}
	if err := readJSON(filepath.Join(*in, datapathFile), input.Datapath); err != nil {
		input.Datapath, missing = nil, append(missing, err.Error())
	}
	input.Controlplane = &controlplane.Result{}
	if err := readJSON(filepath.Join(*in, controlplaneFile), input.Controlplane); err != nil {
		input.Controlplane, missing = nil, append(missing, err.Error())
	}
	text := func(name string, required bool) string {
		b, err := os.ReadFile(filepath.Join(*in, name))
		if err != nil && required {
			missing = append(missing, err.Error())
		}
		return string(b)
	}
	input.Micro = text(microFile, true)
	input.Benchstat = text(benchstatFile, true)
	input.CPUTop = text(cpuTopFile, false)
	input.CPUCum = text(cpuCumFile, false)
	input.HeapTop = text(heapTopFile, false)
	// `make bench` stamps its start and the end of its measurements.
	started, err1 := strconv.ParseInt(strings.TrimSpace(text(startedFile, false)), 10, 64)
	finished, err2 := strconv.ParseInt(strings.TrimSpace(text(finishedFile, false)), 10, 64)
	if err1 == nil && err2 == nil && finished >= started {
		input.Seconds = float64(finished - started)
	}

	metrics := report.Metrics(input)
	doc := report.Document{Machine: input.Machine, Date: input.Date.UTC().Format(time.RFC3339), Metrics: metrics}
	if err := writeJSON(*js, doc); err != nil {
		return err
	}
	if err := os.WriteFile(*md, []byte(report.Markdown(input, metrics)), 0o644); err != nil {
		return err
	}
	written, err := report.Plot(input, *plots)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s, %s and %s\n", *md, *js, strings.Join(written, ", "))
	if len(missing) > 0 {
		return fmt.Errorf("not measured (see the step that should have written it): %s", strings.Join(missing, "; "))
	}
	return nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s missing", path)
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
