package controlplane

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// appliedEvent is one "applied" line of podwalld's log (--log-level
// debug): the moment the daemon finished installing a pod's firewall, by
// its own clock, and how long the install took.
type appliedEvent struct {
	At       time.Time
	Pod      string // namespace/name
	Duration time.Duration
}

// syncEvent is one "sync" line: the end of a sync of every local pod.
type syncEvent struct {
	At       time.Time
	Applied  int
	Duration time.Duration
}

// The structured (slog text) lines of podwalld this reads:
//
//	time=2026-11-25T21:30:07.123Z level=DEBUG msg=applied pod=ns-0000/t000 containerID=… duration=3.2ms
//	time=2026-11-25T21:30:07.130Z level=INFO msg=sync pods=111 applied=1 failed=0 touched=… duration=41ms
var (
	appliedRE  = regexp.MustCompile(`^time=(\S+) level=\S+ msg=applied pod=(\S+)`)
	syncRE     = regexp.MustCompile(`^time=(\S+) level=\S+ msg=sync .*\bapplied=(\d+)\b`)
	durationRE = regexp.MustCompile(`\bduration=(\S+)$`)
)

// daemonLog reads podwalld's log file incrementally and keeps its applied
// events.
type daemonLog struct {
	path string

	mu     sync.Mutex
	offset int64
	rest   string // an incomplete last line
	events []appliedEvent
	syncs  []syncEvent
}

func newDaemonLog(path string) *daemonLog { return &daemonLog{path: path} }

// refresh reads what was appended since the last call.
func (l *daemonLog) refresh() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	f, err := os.Open(l.path)
	if err != nil {
		return fmt.Errorf("podwalld log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return fmt.Errorf("podwalld log: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Errorf("podwalld log: %w", err)
	}
	l.offset += int64(len(data))
	text := l.rest + string(data)
	l.rest = ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var last string
	complete := len(text) > 0 && text[len(text)-1] == '\n'
	for sc.Scan() {
		if last != "" {
			l.parse(last)
		}
		last = sc.Text()
	}
	if last != "" {
		if complete {
			l.parse(last)
		} else {
			l.rest = last
		}
	}
	return sc.Err()
}

func (l *daemonLog) parse(line string) {
	var d time.Duration
	if m := durationRE.FindStringSubmatch(line); m != nil {
		d, _ = time.ParseDuration(m[1])
	}
	if m := appliedRE.FindStringSubmatch(line); m != nil {
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			l.events = append(l.events, appliedEvent{At: at, Pod: m[2], Duration: d})
		}
		return
	}
	if m := syncRE.FindStringSubmatch(line); m != nil {
		at, err := time.Parse(time.RFC3339Nano, m[1])
		applied, _ := strconv.Atoi(m[2])
		if err == nil {
			l.syncs = append(l.syncs, syncEvent{At: at, Applied: applied, Duration: d})
		}
	}
}

// firstSyncStart returns when the first sync that started at or after
// since and applied some pod's firewall started (its end less its
// duration).
func (l *daemonLog) firstSyncStart(since time.Time) (time.Time, bool) {
	since = since.Truncate(time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.syncs {
		// The duration has µs resolution, the time ms: allow 1 ms.
		if start := s.At.Add(-s.Duration); s.Applied > 0 && start.Add(time.Millisecond).After(since) {
			return start, true
		}
	}
	return time.Time{}, false
}

// lastSyncEnd returns when the last logged sync ended.
func (l *daemonLog) lastSyncEnd() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.syncs) == 0 {
		return time.Time{}, false
	}
	return l.syncs[len(l.syncs)-1].At, true
}

// firstApplied returns, for each of pods, the first apply at or after since
// (the log has millisecond resolution: since is truncated to it). Pods
// without one are missing from the map.
func (l *daemonLog) firstApplied(since time.Time, pods []string) map[string]appliedEvent {
	since = since.Truncate(time.Millisecond)
	want := make(map[string]bool, len(pods))
	for _, p := range pods {
		want[p] = true
	}
	out := make(map[string]appliedEvent, len(pods))
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if !want[e.Pod] || e.At.Before(since) {
			continue
		}
		if _, ok := out[e.Pod]; !ok {
			out[e.Pod] = e
		}
	}
	return out
}
