package datapath

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// serveEnv makes the test binary the benchmark's HTTP server (see TestMain).
const serveEnv = "PODWALL_BENCH_TEST_SERVE"

var bins = &harness.Bins{TempPrefix: "podwall-bndp-bin-"}

func TestMain(m *testing.M) {
	if addr := os.Getenv(serveEnv); addr != "" {
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
		fmt.Fprintln(os.Stderr, http.ListenAndServe(addr, nil))
		os.Exit(1)
	}
	// The netlink library logs each ipset attribute it does not decode.
	log.SetOutput(io.Discard)
	code := m.Run()
	bins.Remove()
	os.Exit(code)
}

// TestRunSmall runs the benchmark at a tiny scale: 0 and 50 selected pods,
// one round of one-second runs. Run itself checks enforcement at each point
// (the client admitted, the intruder denied) and fails otherwise.
func TestRunSmall(t *testing.T) {
	bed.RequireRoot(t)
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Skip("wrk not installed (make bench-prereqs)")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The server: this binary, in the server pod's netns; Run appends
	// "-addr :80", which the test flags ignore after --.
	res, err := Run(ctx, Options{
		BinDir: bins.Dir(t), CNIBinDir: bed.CNIBinDirForTest(t),
		ServerCommand: []string{"env", serveEnv + "=:80", self, "-test.run=^$", "--"},
		Selected:      []int{0, 50}, Rounds: 1, SweepRounds: 1, Duration: time.Second, Services: 10,
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Points) != 2 || res.Points[1].LargestSet != 52 {
		t.Errorf("points = %+v, want 2 with the largest set covering 52 addresses at 50 selected pods", res.Points)
	}
	if n := len(res.Runs); n != 2*len(Modes)*2 {
		t.Errorf("%d runs, want %d", n, 2*len(Modes)*2)
	}
	for _, r := range res.Runs {
		if r.QPS <= 0 || r.Requests == 0 {
			t.Errorf("run %+v measured nothing", r)
		}
	}
}
