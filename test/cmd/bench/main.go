// Command bench runs podwall's performance benchmarks and writes
// docs/performance.md and docs/performance.json from what they measured
// (`make bench`, test/bench/bench.mk):
//
//	bench datapath     -out FILE.json   HTTP through pods, podwall vs. absent (test/bench/datapath)
//	bench controlplane -out FILE.json   convergence, ADD latency, RSS on a real API server (test/bench/controlplane)
//	bench report -in DIR -md FILE -json FILE -plots DIR   the documents, from DIR's results
//	bench serve -addr :80               the HTTP server the datapath benchmark runs in a pod
//
// The measuring commands need root; report only reads and writes files (and
// runs gnuplot for the plots).
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bench datapath|controlplane|report|serve [flags]")
		os.Exit(2)
	}
	// The netlink library logs each ipset attribute it does not decode;
	// nothing else of this program uses the standard logger.
	log.SetOutput(dropLines{w: os.Stderr, contains: "ipset"})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "datapath":
		err = runDatapath(ctx, args)
	case "controlplane":
		err = runControlplane(ctx, args)
	case "report":
		err = runReport(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// dropLines writes what it is given to w, except writes containing
// contains (one log line each).
type dropLines struct {
	w        io.Writer
	contains string
}

func (d dropLines) Write(p []byte) (int, error) {
	if strings.Contains(string(p), d.contains) {
		return len(p), nil
	}
	return d.w.Write(p)
}

// logf prints a progress line with the time since start.
func logger(start time.Time) func(string, ...any) {
	return func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
}
