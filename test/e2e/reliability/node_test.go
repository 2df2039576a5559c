package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// nodeName is the node every manifests-mode daemon of this package plays.
const nodeName = "rl-node"

// nodeOptions configure newNode.
type nodeOptions struct {
	// name names the bed ("rl…", unique among the beds running at once).
	name string
	// subnet is the third octet of the bed's 10.214.<subnet>.0/24.
	subnet int
	// resync is --resync-period (0: the daemon's default).
	resync time.Duration
	// metrics serves /metrics on a free loopback port.
	metrics bool
	// cluster, when set, is written as manifests before the daemon starts.
	cluster *model
	// podwall are extra keys of the podwall plugin's configuration.
	podwall map[string]any
	// beforeStart, when set, runs after the daemon's directories are
	// chosen and before it starts.
	beforeStart func(*harness.Daemon)
}

// node is podwalld on a manifests directory and a bed whose chain ends with
// podwall talking to it.
type node struct {
	t       *testing.T
	daemon  *harness.Daemon
	bed     *bed.Bed
	binDir  string
	metrics string // --metrics-address, "" when not served
	// args are the extra podwalld flags Start passes (restart with them).
	args []string
	// inspect reads what is in force in a pod's netns, from outside the
	// daemon.
	inspect *dataplane.Manager
}

// newNode starts podwalld and the bed; both are stopped when the test ends
// (the daemon's log is printed if the test failed).
func newNode(t *testing.T, o nodeOptions) *node {
	t.Helper()
	bed.RequireRoot(t)
	if !strings.HasPrefix(o.name, bedPrefix) {
		t.Fatalf("bed name %q: want the prefix %q", o.name, bedPrefix)
	}
	binDir := bins.Dir(t)
	d, err := harness.NewDaemon(binDir, t.TempDir(), nodeName)
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, daemon: d, binDir: binDir}
	if n.inspect, err = dataplane.NewManager(); err != nil {
		t.Fatal(err)
	}
	if o.resync > 0 {
		n.args = append(n.args, "--resync-period", o.resync.String())
	}
	if o.metrics {
		if n.metrics, err = harness.FreeLoopbackAddr(); err != nil {
			t.Fatal(err)
		}
		n.args = append(n.args, "--metrics-address", n.metrics)
	}
	if o.cluster != nil {
		if err := o.cluster.writeAll(d); err != nil {
			t.Fatal(err)
		}
	}
	if o.beforeStart != nil {
		o.beforeStart(d)
	}
	if err := d.Start(t.Context(), n.args...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop podwalld: %v", err)
		}
		if t.Failed() {
			t.Logf("podwalld log (last 200 lines):\n%s", harness.LastLines(d.Log(), 200))
		}
	})
	pw := map[string]any{"type": "podwall", "socket": d.Socket, "timeout": "10s"}
	for k, v := range o.podwall {
		pw[k] = v
	}
	n.bed = bed.NewForTest(t, bed.Options{
		Name: o.name,
		// The built podwall comes first, so a stale one next to the
		// reference plugins is never run.
		CNIBinDir: binDir,
		CNIPath:   []string{bed.CNIBinDirForTest(t)},
		PodCIDRv4: netip.MustParsePrefix(fmt.Sprintf("10.214.%d.0/24", o.subnet)),
		Extra:     []map[string]any{pw},
	})
	return n
}

// restart starts the daemon again (after Kill or Stop) with its flags.
func (n *node) restart(ctx context.Context) error {
	return n.daemon.Start(ctx, n.args...)
}

// network is the CNI network name of the node's attachments.
func (n *node) network() string { return n.bed.Network() }

// attachmentKey is the daemon's key of p's attachment.
func (n *node) attachmentKey(p *bed.Pod) string {
	return n.network() + "/" + p.ContainerID + "/" + p.IfName
}

// logLines counts the lines of the daemon's log at level (e.g. "ERROR")
// that contain every one of words.
func (n *node) logLines(level string, words ...string) int {
	count := 0
	for line := range strings.Lines(n.daemon.Log()) {
		if level != "" && !strings.Contains(line, "level="+level) {
			continue
		}
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			count++
		}
	}
	return count
}

// logExcerpt returns up to max lines of the daemon's log at level.
func (n *node) logExcerpt(level string, max int) string {
	var out []string
	for line := range strings.Lines(n.daemon.Log()) {
		if strings.Contains(line, "level="+level) && len(out) < max {
			out = append(out, strings.TrimSpace(line))
		}
	}
	return strings.Join(out, "\n")
}

// logSummary counts the daemon's log lines at level by message.
func (n *node) logSummary(level string) string {
	counts := map[string]int{}
	for line := range strings.Lines(n.daemon.Log()) {
		if !strings.Contains(line, "level="+level) {
			continue
		}
		_, msg, _ := strings.Cut(line, " msg=")
		if strings.HasPrefix(msg, `"`) {
			if end := strings.Index(msg[1:], `"`); end >= 0 {
				msg = msg[:end+2]
			}
		} else {
			msg, _, _ = strings.Cut(msg, " ")
		}
		counts[msg]++
	}
	var out []string
	for _, msg := range sortedKeys(counts) {
		out = append(out, fmt.Sprintf("%6d %s", counts[msg], msg))
	}
	return strings.Join(out, "\n")
}

// pluginRun is one run of the podwall binary, as a runtime execs it.
type pluginRun struct {
	stdout, stderr string
	// code is the CNI error code (0: success).
	code uint
	msg  string
}

// pluginCall is one exec of the podwall plugin for a pod of the bed.
type pluginCall struct {
	verb string
	pod  *bed.Pod
	// containerID and netns replace the pod's own when not empty.
	containerID, netns string
	// extra are keys added to the network configuration.
	extra map[string]any
}

// runPlugin execs the podwall plugin once, like the last plugin of the
// bed's chain: the network configuration is the bed's podwall entry with
// its name and cniVersion (plus c.extra), ADD and CHECK get the pod's CNI
// result as prevResult, CNI_ARGS name the pod as kubelet does.
func (n *node) runPlugin(ctx context.Context, c pluginCall) (pluginRun, error) {
	verb, p, netns, extra := c.verb, c.pod, c.netns, c.extra
	containerID := c.containerID
	if containerID == "" {
		containerID = p.ContainerID
	}
	conf := map[string]any{
		"cniVersion": bed.CNIVersion, "name": n.network(), "type": "podwall",
		"socket": n.daemon.Socket, "timeout": "10s",
	}
	for k, v := range extra {
		conf[k] = v
	}
	if (verb == "ADD" || verb == "CHECK") && p.Result != nil {
		conf["prevResult"] = p.Result
	}
	stdin, err := json.Marshal(conf)
	if err != nil {
		return pluginRun{}, err
	}
	if netns == "" {
		netns = p.NetnsPath
	}
	cmd := exec.CommandContext(ctx, filepath.Join(n.binDir, "podwall"))
	cmd.Stdin = bytes.NewReader(stdin)
	args := fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=%s;K8S_POD_INFRA_CONTAINER_ID=%s;K8S_POD_UID=%s",
		p.Namespace, p.Name, containerID, p.UID)
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+verb, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+netns,
		"CNI_IFNAME="+p.IfName, "CNI_PATH="+n.binDir, "CNI_ARGS="+args)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	run := pluginRun{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	if errors.As(runErr, &exitErr) {
		var cniErr types.Error
		if err := json.Unmarshal(stdout.Bytes(), &cniErr); err != nil || cniErr.Code == 0 {
			return run, fmt.Errorf("podwall %s exited %d without a CNI error on stdout: %q (stderr %q)", verb, exitErr.ExitCode(), run.stdout, run.stderr)
		}
		run.code, run.msg = cniErr.Code, cniErr.Msg
		return run, nil
	}
	return run, runErr
}

// cniCode returns the CNI error code err carries (0 for none).
func cniCode(err error) uint {
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return cniErr.Code
	}
	return 0
}

// gateways returns the gateways of p's CNI result.
func gateways(p *bed.Pod) []netip.Addr {
	var out []netip.Addr
	if p.Result == nil {
		return nil
	}
	for _, ipc := range p.Result.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Gateway); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// netnsExec runs a command inside a pod's netns and returns its output.
func netnsExec(netnsName string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", netnsName}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip netns exec %s %s: %w: %s", netnsName, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// runCmd runs a command and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// mustJSON returns v as JSON.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
