package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The typed podwallctl queries of a Daemon, its diagnostics dump, and the
// polling the tests wait with. A nil *Daemon stands for a node that runs no
// daemon (enforcement off): Ctl and the queries return an error, Diagnose
// says so.

// CtlPod is one entry of `podwallctl pods -o json`.
type CtlPod struct {
	Namespace       string   `json:"namespace"`
	Name            string   `json:"name"`
	ContainerID     string   `json:"containerID"`
	IfName          string   `json:"ifName"`
	IPs             []string `json:"ips"`
	Policies        []string `json:"policies"`
	IngressIsolated bool     `json:"ingressIsolated"`
	EgressIsolated  bool     `json:"egressIsolated"`
	SyncError       string   `json:"syncError"`
}

// CtlPolicy is one entry of `podwallctl policies -o json`.
type CtlPolicy struct {
	Namespace    string   `json:"namespace"`
	Name         string   `json:"name"`
	PolicyTypes  []string `json:"policyTypes"`
	SelectedPods []string `json:"selectedPods"`
}

// Pods returns the attachments the daemon serves, with the firewall in
// force for each.
func (d *Daemon) Pods(ctx context.Context) ([]CtlPod, error) {
	var out struct {
		Pods []CtlPod `json:"pods"`
	}
	if err := d.ctlJSON(ctx, &out, "pods"); err != nil {
		return nil, err
	}
	return out.Pods, nil
}

// Policies returns the policies the daemon has read.
func (d *Daemon) Policies(ctx context.Context) ([]CtlPolicy, error) {
	var out struct {
		Policies []CtlPolicy `json:"policies"`
	}
	if err := d.ctlJSON(ctx, &out, "policies"); err != nil {
		return nil, err
	}
	return out.Policies, nil
}

func (d *Daemon) ctlJSON(ctx context.Context, v any, args ...string) error {
	out, err := d.Ctl(ctx, append(args, "-o", "json")...)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("podwallctl %s -o json: decode: %w", strings.Join(args, " "), err)
	}
	return nil
}

// Diagnose returns the daemon's view for a failed test: its status, the
// policies with the pods they select, every attachment, and the rules and
// ipsets in force in each of pods ("namespace/name"), as podwallctl prints
// them, errors included.
func (d *Daemon) Diagnose(ctx context.Context, pods ...string) string {
	if d == nil {
		return "no daemon (enforcement is off)"
	}
	var b strings.Builder
	cmds := [][]string{{"status"}, {"policies"}, {"pods"}}
	for _, p := range pods {
		cmds = append(cmds, []string{"pod", p})
	}
	for _, args := range cmds {
		out, err := d.Ctl(ctx, args...)
		fmt.Fprintf(&b, "$ podwallctl %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "error: %v\n", err)
		}
	}
	return b.String()
}

// Poll calls check every interval until it returns nil, and returns its last
// error if that does not happen within timeout.
func Poll(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(interval):
		}
	}
}

// LastLines returns the last n lines of s (a log).
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
