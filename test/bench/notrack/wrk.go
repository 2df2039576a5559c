package notrack

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"time"

	"github.com/podwall/podwall/test/bench/datapath"
)

// Mode is how wrk uses connections.
type Mode string

// The modes of a round, in the order it runs them.
const (
	KeepAlive     Mode = "keep-alive"
	NewConnection Mode = "new-connection" // wrk -H "Connection: close"
)

// Modes lists the modes in the order a round runs them.
var Modes = []Mode{KeepAlive, NewConnection}

// WrkReport is what one `wrk --latency` run printed.
type WrkReport struct {
	Requests int64
	QPS      float64
	P50, P99 time.Duration
	// Errors counts socket errors (connect, read, write, timeout) and
	// non-2xx answers.
	Errors int64
	// CPU is the user and system time wrk used (RunWrk only), network
	// processing done in its context (softirqs it ran) included.
	CPU time.Duration
}

// ParseWrk reads the report of `wrk --latency` (with test/bench/datapath's
// parser).
func ParseWrk(out string) (WrkReport, error) {
	r, err := datapath.ParseWrk(out)
	return WrkReport{Requests: r.Requests, QPS: r.QPS, P50: r.P50, P99: r.P99, Errors: r.SocketErr + r.Non2xx}, err
}

// RunWrk runs `wrk -t1 -c<connections> -d<d> --latency` inside client's netns
// against http://server/, with -H 'Connection: close' in NewConnection mode.
func RunWrk(ctx context.Context, client *Pod, server netip.AddrPort, mode Mode, connections int, d time.Duration) (WrkReport, error) {
	args := []string{"netns", "exec", client.Netns, "wrk", "-t1",
		"-c" + strconv.Itoa(connections), "-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency"}
	if mode == NewConnection {
		args = append(args, "-H", "Connection: close")
	}
	args = append(args, "http://"+server.String()+"/")
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return WrkReport{}, fmt.Errorf("wrk in %s (%s): %w: %s", client.Netns, mode, err, out)
	}
	rep, err := ParseWrk(string(out))
	if err != nil {
		return rep, fmt.Errorf("wrk in %s (%s): %w", client.Netns, mode, err)
	}
	if rep.Requests == 0 {
		return rep, fmt.Errorf("wrk in %s (%s): no request completed:\n%s", client.Netns, mode, out)
	}
	// `ip netns exec` execs wrk: the child's usage is wrk's.
	rep.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return rep, nil
}
