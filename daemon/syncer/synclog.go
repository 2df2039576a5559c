package syncer

import (
	"fmt"
	"log/slog"
	"strings"
)

// maxLoggedPods is how many pods the sync line names; it counts the rest.
const maxLoggedPods = 10

// touchedPods are the pods one sync applied, as the sync's log line shows
// them: "ns/a,ns/b" or "ns/a,... (+12 more)". Per-pod details are logged at
// debug level.
type touchedPods struct {
	names []string
	more  int
}

func (t *touchedPods) add(pod string) {
	if len(t.names) < maxLoggedPods {
		t.names = append(t.names, pod)
		return
	}
	t.more++
}

// LogValue implements slog.LogValuer.
func (t touchedPods) LogValue() slog.Value {
	s := strings.Join(t.names, ",")
	if t.more > 0 {
		s += fmt.Sprintf(",... (+%d more)", t.more)
	}
	return slog.StringValue(s)
}
