package notrack

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchEnv set to 1 runs TestBench; CI leaves it unset.
const BenchEnv = "PODWALL_NOTRACK_BENCH"

// TestBench runs the side-by-side datapath comparison (about 7 minutes at
// the defaults). PODWALL_NOTRACK_ROUNDS, PODWALL_NOTRACK_SECONDS and
// PODWALL_NOTRACK_REMOTE override rounds, seconds per wrk run and remote
// peers; PODWALL_NOTRACK_OUT names a directory that receives result.json
// and result.md.
func TestBench(t *testing.T) {
	if os.Getenv(BenchEnv) != "1" {
		t.Skip(BenchEnv + "=1 runs the benchmark")
	}
	requireRoot(t)
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk not on PATH (apt-get install wrk)")
	}
	env := func(name string) int {
		v := os.Getenv(name)
		if v == "" {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			t.Fatalf("%s=%q: want a number", name, v)
		}
		return n
	}
	opts := BenchOptions{
		Rounds: env("PODWALL_NOTRACK_ROUNDS"), Remote: env("PODWALL_NOTRACK_REMOTE"),
		Duration: time.Duration(env("PODWALL_NOTRACK_SECONDS")) * time.Second, Logf: t.Logf,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	res, err := Bench(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.Checks {
		t.Log(c)
	}
	md := res.Markdown() + "\n```\n" + res.Rules[NoTrack] + "```\n"
	t.Log("\n" + md)
	if dir := os.Getenv("PODWALL_NOTRACK_OUT"); dir != "" {
		js, err := json.MarshalIndent(res, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "result.json"), js, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "result.md"), []byte(md), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
