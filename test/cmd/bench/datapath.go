package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/podwall/podwall/test/bench/datapath"
)

// runDatapath is `bench datapath`: it runs test/bench/datapath and writes its
// result as JSON.
func runDatapath(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("datapath", flag.ContinueOnError)
	out := fs.String("out", "bin/bench/datapath.json", "write the result here")
	binDir := fs.String("bin", "bin", "directory of podwall, podwalld and podwallctl")
	cniDir := fs.String("cni-bin", "bin/cni", "directory of the reference CNI plugins")
	selected := fs.String("selected", "0,2000,6000,8000", "numbers of selected pods to sweep; the last is the main comparison")
	rounds := fs.Int("rounds", 5, "rounds of the main comparison")
	sweepRounds := fs.Int("sweep-rounds", 3, "rounds of the other points")
	duration := fs.Duration("duration", 5*time.Second, "duration of one wrk run")
	connections := fs.Int("connections", 16, "connections wrk keeps open")
	services := fs.Int("services", 1000, "Services in the state")
	sharedHost := fs.Bool("shared-host", false, "run in the current netns instead of a node netns of its own")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*sharedHost {
		if done, err := inNodeNetns(ctx, "pw-bnnode-dp"); done {
			return err
		}
	}
	var sel []int
	for _, s := range strings.Split(*selected, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-selected %q: %w", *selected, err)
		}
		sel = append(sel, n)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	cni, err := filepath.Abs(*cniDir)
	if err != nil {
		return err
	}
	res, err := datapath.Run(ctx, datapath.Options{
		BinDir: bin, CNIBinDir: cni, ServerCommand: []string{self, "serve"},
		Selected: sel, Rounds: *rounds, SweepRounds: *sweepRounds, Duration: *duration,
		Connections: *connections, Services: *services, Logf: logger(time.Now()),
	})
	if err != nil {
		return err
	}
	return writeJSON(*out, res)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
