package main

import (
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
)

func TestUseDefaultMemoryLimit(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, true},
		{map[string]string{"GOMEMLIMIT": ""}, true},
		{map[string]string{"GOMEMLIMIT": "128MiB"}, false},
		{map[string]string{"GOMEMLIMIT": "off"}, false},
	} {
		if got := useDefaultMemoryLimit(func(k string) string { return tc.env[k] }); got != tc.want {
			t.Errorf("useDefaultMemoryLimit(%v) = %v, want %v", tc.env, got, tc.want)
		}
	}
}

// TestSetMemoryLimit: without GOMEMLIMIT the runtime gets the default; with
// it, the runtime's limit is left as it is.
func TestSetMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	log := slog.New(slog.DiscardHandler)

	t.Setenv("GOMEMLIMIT", "")
	debug.SetMemoryLimit(math.MaxInt64)
	setMemoryLimit(log)
	if got := debug.SetMemoryLimit(-1); got != defaultMemoryLimit {
		t.Errorf("without GOMEMLIMIT the limit is %d, want %d", got, defaultMemoryLimit)
	}

	t.Setenv("GOMEMLIMIT", "off")
	debug.SetMemoryLimit(math.MaxInt64) // what the runtime made of "off" at start
	setMemoryLimit(log)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT=off the limit is %d, want none", got)
	}
}
