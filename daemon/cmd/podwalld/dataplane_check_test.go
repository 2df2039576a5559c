package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/podwall/podwall/daemon/dataplane"
)

// TestDataplaneSelfTest runs the self-test with the real dataplane: it
// passes on a machine with iptables-nft and ipset, twice in a row (nothing
// is left behind), and the scratch network namespace is gone afterwards.
func TestDataplaneSelfTest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, iptables, ipset")
	}
	data, err := dataplane.NewManager()
	if err != nil {
		t.Fatal(err)
	}
	var reports []bool
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	c := checkDataplane(t.Context(), data, log, func(ok bool) { reports = append(reports, ok) })
	if err := c.usable(); err != nil {
		t.Fatalf("self-test failed: %v", err)
	}
	if err := selfTest(t.Context(), data); err != nil {
		t.Fatalf("second self-test failed: %v", err)
	}
	if len(reports) != 1 || !reports[0] {
		t.Errorf("reports %v, want one success", reports)
	}

	// The netns ends with its thread: its path is gone once released.
	path, release, err := scratchNetns()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("scratch netns %s: %v", path, err)
	}
	out, err := exec.Command("nsenter", "--net="+path, "ip", "-o", "link").CombinedOutput()
	if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 || !strings.Contains(string(out), "lo") {
		t.Errorf("the scratch netns should hold only lo: %v\n%s", err, out)
	}
	release()
	waitGone(t, path)
}

func waitGone(t *testing.T, path string) {
	t.Helper()
	for range 100 {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s still exists after release", path)
}

// TestReadyzDataplane: /readyz answers 503 with the self-test's error
// while the dataplane is not usable, and CNI readiness (gate) fails too.
func TestReadyzDataplane(t *testing.T) {
	h := &healthState{}
	h.serving.Store(true)
	c := &dataplaneCheck{err: errors.New("iptables-nft-restore: exit status 1: can't initialize iptables table `filter'")}
	h.dataplane.Store(c)
	srv := httptest.NewServer(healthHandler(h, func() error { return nil }, http.NotFoundHandler()))
	defer srv.Close()
	get := func() (int, string) {
		resp, err := http.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "dataplane not usable: iptables-nft-restore") {
		t.Errorf("readyz = %d %q", code, body)
	}
	if err := c.gate(func() error { return nil })(); err == nil || !strings.Contains(err.Error(), "dataplane not usable") {
		t.Errorf("gate = %v", err)
	}
	c.mu.Lock()
	c.err = nil
	c.mu.Unlock()
	if code, body := get(); code != http.StatusOK || body != "ok" {
		t.Errorf("readyz after the self-test passed = %d %q", code, body)
	}
	srcErr := errors.New("informers not synced")
	if err := c.gate(func() error { return srcErr })(); !errors.Is(err, srcErr) {
		t.Errorf("gate = %v, want the source's error", err)
	}
}

// TestLogFormats: text and json lines carry the same keys; client-go's
// klog messages come out in the same format; an unknown format is an error.
func TestLogFormats(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "json", slog.LevelInfo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { newLogger(io.Discard, "text", slog.LevelInfo) })
	log.Info("sync", "pods", 3, "applied", 1)
	log.Debug("hidden")
	var line map[string]any
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("not one JSON line: %v\n%s", err, buf.String())
	}
	if line["msg"] != "sync" || line["pods"] != float64(3) || line["level"] != "INFO" {
		t.Errorf("json line %v", line)
	}
	buf.Reset()
	if _, err := newLogger(&buf, "text", slog.LevelDebug); err != nil {
		t.Fatal(err)
	}
	klog.InfoS("from client-go")
	klog.Flush()
	if s := buf.String(); !strings.Contains(s, "component=client-go") || !strings.Contains(s, `msg="from client-go"`) {
		t.Errorf("klog line not routed to slog text: %q", s)
	}
	if _, err := newLogger(&buf, "xml", slog.LevelInfo); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("log format xml: %v", err)
	}
}
