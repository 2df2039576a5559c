package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// nodeNetnsEnv is set in the environment of a command re-run inside its
// node netns.
const nodeNetnsEnv = "PODWALL_BENCH_NODE_NETNS"

// inNodeNetns re-runs this command (same arguments) inside a new network
// namespace, which then plays the node: its host side of every pod veth,
// its routes, its loopback (where the API server listens) and the
// addresses podwalld always admits belong to the benchmark alone. Other
// test beds on the machine come and go with their veths and addresses in
// the real host netns; podwalld reads the node's addresses and re-applies
// every pod when they change, so measured in the shared host netns the
// figures would depend on what else runs. It returns (false, nil) when the
// command already runs in its node netns.
func inNodeNetns(ctx context.Context, name string) (bool, error) {
	if os.Getenv(nodeNetnsEnv) != "" {
		return false, nil
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return true, fmt.Errorf("create the node netns %s: %w: %s", name, err, out)
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: delete the node netns %s: %v: %s\n", name, err, out)
		}
	}()
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return true, fmt.Errorf("bring up lo in %s: %w: %s", name, err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return true, err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", name, self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), nodeNetnsEnv+"="+name)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// Interrupted: the child cleans up (netns, routes, processes) itself.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Minute
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return true, fmt.Errorf("inside the node netns %s: %w", name, err)
	}
	return true, err
}
