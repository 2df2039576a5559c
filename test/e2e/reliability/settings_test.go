package reliability

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// SoakEnv names the environment variable that, set to 1, runs the long
// settings (`make soak`); unset, the tests run their CI size (`make test`).
const SoakEnv = "PODWALL_SOAK"

// settings size the long tests. Each field can also be set on its own with
// the environment variable named in its comment (an integer, or a Go
// duration for the outage).
type settings struct {
	kills     int           // PODWALL_SOAK_KILLS: SIGKILLs in TestCrashSoak
	soakPods  int           // PODWALL_SOAK_PODS: fewest churning pods in TestCrashSoak (plus 3 fixed)
	outage    time.Duration // PODWALL_SOAK_OUTAGE: how long the API server is down
	rounds    int           // PODWALL_SOAK_ROUNDS: add/delete rounds in TestParallelPods
	roundPods int           // PODWALL_SOAK_ROUND_PODS: pods per round
}

var (
	ciSettings   = settings{kills: 50, soakPods: 20, outage: 15 * time.Second, rounds: 3, roundPods: 110}
	soakSettings = settings{kills: 300, soakPods: 24, outage: 60 * time.Second, rounds: 10, roundPods: 110}
)

// currentSettings returns the soak or CI settings with the environment's
// overrides; a malformed override fails the test.
func currentSettings(t testing.TB) settings {
	t.Helper()
	s := ciSettings
	if os.Getenv(SoakEnv) == "1" {
		s = soakSettings
	}
	for _, o := range []struct {
		env string
		dst *int
	}{
		{"PODWALL_SOAK_KILLS", &s.kills},
		{"PODWALL_SOAK_PODS", &s.soakPods},
		{"PODWALL_SOAK_ROUNDS", &s.rounds},
		{"PODWALL_SOAK_ROUND_PODS", &s.roundPods},
	} {
		if v := os.Getenv(o.env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				t.Fatalf("$%s=%q: want a positive integer", o.env, v)
			}
			*o.dst = n
		}
	}
	if v := os.Getenv("PODWALL_SOAK_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("$PODWALL_SOAK_OUTAGE=%q: want a positive duration", v)
		}
		s.outage = d
	}
	return s
}
