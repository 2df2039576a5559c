package syncer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/podwall/podwall/daemon/checkpoint"
)

// TestSyncLogsOneLinePerSync: at info level a sync is one line, with the
// pods it touched and its duration; what was applied to each pod is logged
// at debug level only.
func TestSyncLogsOneLinePerSync(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			var buf bytes.Buffer
			store, err := checkpoint.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			state := shopState(t)
			src := newFakeSource(state)
			s := New(Options{
				NodeName: testNode, Source: src, Data: newFakeDataplane(), Store: store,
				Log:       slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level})),
				NodeAddrs: func() ([]netip.Addr, error) { return []netip.Addr{testNodeAddr}, nil },
			})
			for _, rec := range []checkpoint.Attachment{web, db, client} {
				if err := s.Add(t.Context(), rec); err != nil {
					t.Fatal(err)
				}
			}
			buf.Reset()
			next := shopState(t)
			next.Pods[0].Labels = map[string]string{"app": "other"} // db no longer allows web
			src.setState(next)
			s.SyncAll(t.Context())

			var syncs, applied int
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("not a JSON line: %q", line)
				}
				switch rec["msg"] {
				case "sync":
					syncs++
					if rec["level"] != "INFO" || rec["pods"] != float64(3) || rec["applied"] != float64(1) ||
						rec["touched"] != "shop/db" || rec["duration"] == nil {
						t.Errorf("sync line %v", rec)
					}
				case "applied":
					applied++
					if rec["level"] != "DEBUG" || rec["pod"] != "shop/db" || rec["containerID"] != "ctr-db" {
						t.Errorf("applied line %v", rec)
					}
				default:
					t.Errorf("unexpected line %v", rec)
				}
			}
			wantApplied := 0
			if level == slog.LevelDebug {
				wantApplied = 1
			}
			if syncs != 1 || applied != wantApplied {
				t.Errorf("%d sync lines and %d applied lines, want 1 and %d:\n%s", syncs, applied, wantApplied, buf.String())
			}
		})
	}
}

func TestTouchedPodsLogValue(t *testing.T) {
	var tp touchedPods
	for i := range 12 {
		tp.add(fmt.Sprintf("ns/p%d", i))
	}
	want := "ns/p0,ns/p1,ns/p2,ns/p3,ns/p4,ns/p5,ns/p6,ns/p7,ns/p8,ns/p9,... (+2 more)"
	if got := tp.LogValue().String(); got != want {
		t.Errorf("LogValue = %q, want %q", got, want)
	}
	if got := (touchedPods{}).LogValue().String(); got != "" {
		t.Errorf("empty LogValue = %q", got)
	}
}
