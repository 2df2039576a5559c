package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/podwall/podwall/daemon/metrics"
)

// TestHealthListener starts the --metrics-address listener on a loopback
// port and GETs /metrics, /healthz and /readyz over real connections as
// the daemon comes up: /readyz turns 200 only once the source is synced
// and the CNI socket is served.
func TestHealthListener(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var sourceSynced atomic.Bool
	ready := func() error {
		if !sourceSynced.Load() {
			return errors.New("informers not synced")
		}
		return nil
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h, err := serveHealth(ctx, "127.0.0.1:0", ready, metrics.New("v1.2.3-test").Handler(), log)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + h.addr.String()
	client := &http.Client{Timeout: 5 * time.Second}
	get := func(t *testing.T, path string) (int, http.Header, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return resp.StatusCode, resp.Header, string(body)
	}

	steps := []struct {
		name     string
		do       func()
		path     string
		wantCode int
		wantBody string
	}{
		{"healthz while starting", nil, "/healthz", http.StatusOK, "ok"},
		{"readyz before the source synced", nil, "/readyz", http.StatusServiceUnavailable, "source not ready: informers not synced"},
		{"readyz before the socket is served", func() { sourceSynced.Store(true) }, "/readyz", http.StatusServiceUnavailable, "CNI socket not served yet"},
		{"readyz once serving", func() { h.serving.Store(true) }, "/readyz", http.StatusOK, "ok"},
		{"healthz once serving", nil, "/healthz", http.StatusOK, "ok"},
		{"unknown path", nil, "/debug/pprof/", http.StatusNotFound, "404 page not found"},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			if step.do != nil {
				step.do()
			}
			code, _, body := get(t, step.path)
			if code != step.wantCode || strings.TrimSpace(body) != step.wantBody {
				t.Errorf("GET %s = %d %q, want %d %q", step.path, code, body, step.wantCode, step.wantBody)
			}
		})
	}

	t.Run("metrics", func(t *testing.T) {
		code, header, body := get(t, "/metrics")
		if code != http.StatusOK {
			t.Fatalf("GET /metrics = %d %q", code, body)
		}
		if ct := header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("Content-Type %q, want the text exposition format", ct)
		}
		parser := expfmt.NewTextParser(model.LegacyValidation)
		families, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("exposition does not parse: %v\n%s", err, body)
		}
		info, ok := families["podwall_build_info"]
		if !ok || len(info.GetMetric()) != 1 || info.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Fatalf("podwall_build_info missing or not 1: %v", info)
		}
		labels := map[string]string{}
		for _, l := range info.GetMetric()[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["version"] != "v1.2.3-test" || !strings.HasPrefix(labels["goversion"], "go") {
			t.Errorf("podwall_build_info labels %v", labels)
		}
		for _, name := range []string{"podwall_syncs_total", "podwall_cni_requests_total"} {
			if _, ok := families[name]; !ok {
				t.Errorf("%s missing", name)
			}
		}
	})

	t.Run("closed when ctx ends", func(t *testing.T) {
		cancel()
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := client.Get(base + "/healthz")
			if err != nil {
				return
			}
			resp.Body.Close()
			if time.Now().After(deadline) {
				t.Fatal("listener still answers after ctx ended")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestHealthListenerAddress: no address serves nothing; an address that
// cannot be bound is an error naming the flag.
func TestHealthListenerAddress(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ready := func() error { return nil }
	tests := []struct {
		name    string
		addr    string
		wantErr string
	}{
		{"off", "", ""},
		{"not an address", "no-such-host-or-port", "--metrics-address"},
		{"port out of range", "127.0.0.1:70000", "--metrics-address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h, err := serveHealth(ctx, tt.addr, ready, http.NotFoundHandler(), log)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("serveHealth(%q) = %v, want an error with %q", tt.addr, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.addr != nil {
				t.Errorf("serveHealth(%q) listens on %v", tt.addr, h.addr)
			}
		})
	}
}
