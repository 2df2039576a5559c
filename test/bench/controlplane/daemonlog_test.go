package controlplane

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDaemonLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podwalld.log")
	write := func(s string) {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	write("time=2026-11-25T21:30:07.100+00:00 level=INFO msg=sync pods=3 applied=0 failed=0 touched=\"\" duration=2ms\n" +
		"time=2026-11-25T21:30:07.123+00:00 level=DEBUG msg=applied pod=ns-0000/t000 containerID=x ingressRules=2 duration=1.5ms\n" +
		"time=2026-11-25T21:30:07.150+00:00 level=DEBUG msg=applied pod=ns-0000/t001 containerID=y duration=20µs\n" +
		"time=2026-11-25T21:30:07.160+00:00 level=INFO msg=sync pods=3 applied=2 failed=0 touched=\"ns-0000/t000,ns-0000/t001\" duration=60ms\n" +
		"time=2026-11-25T21:30:07.2") // a line still being written
	l := newDaemonLog(path)
	if err := l.refresh(); err != nil {
		t.Fatal(err)
	}
	write("00+00:00 level=INFO msg=applied pod=ns-0000/t000 containerID=x\n")
	if err := l.refresh(); err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	pods := []string{"ns-0000/t000", "ns-0000/t001", "ns-0000/t002"}
	for _, tc := range []struct {
		name  string
		since time.Time
		want  map[string]time.Time
	}{
		{"all", at("2026-11-25T21:30:07.000Z"), map[string]time.Time{
			"ns-0000/t000": at("2026-11-25T21:30:07.123Z"), "ns-0000/t001": at("2026-11-25T21:30:07.150Z")}},
		// since is truncated to the log's millisecond resolution.
		{"same millisecond", at("2026-11-25T21:30:07.123900Z"), map[string]time.Time{
			"ns-0000/t000": at("2026-11-25T21:30:07.123Z"), "ns-0000/t001": at("2026-11-25T21:30:07.150Z")}},
		{"later", at("2026-11-25T21:30:07.160Z"), map[string]time.Time{"ns-0000/t000": at("2026-11-25T21:30:07.200Z")}},
		{"none", at("2026-11-25T21:31:00Z"), map[string]time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := l.firstApplied(tc.since, pods)
			if len(got) != len(tc.want) {
				t.Fatalf("firstApplied = %v, want %v", got, tc.want)
			}
			for p, w := range tc.want {
				if !got[p].At.Equal(w) {
					t.Errorf("%s: %v, want %v", p, got[p].At, w)
				}
			}
		})
	}
	if d := l.firstApplied(at("2026-11-25T21:30:07Z"), pods)["ns-0000/t000"].Duration; d != 1500*time.Microsecond {
		t.Errorf("apply duration = %v, want 1.5ms", d)
	}
	// The first sync that applied something ended at .160 after 60ms.
	if got, ok := l.firstSyncStart(at("2026-11-25T21:30:07.050Z")); !ok || !got.Equal(at("2026-11-25T21:30:07.100Z")) {
		t.Errorf("firstSyncStart = %v, %t; want 21:30:07.100", got, ok)
	}
	// One that started before since does not count.
	if _, ok := l.firstSyncStart(at("2026-11-25T21:30:07.120Z")); ok {
		t.Error("firstSyncStart returned a sync that started earlier")
	}
	if got, ok := l.lastSyncEnd(); !ok || !got.Equal(at("2026-11-25T21:30:07.160Z")) {
		t.Errorf("lastSyncEnd = %v, %t", got, ok)
	}
	if _, ok := l.firstSyncStart(at("2026-11-25T21:30:08Z")); ok {
		t.Error("firstSyncStart found a sync after the last one")
	}
}
