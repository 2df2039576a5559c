package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// pluginCall is one plugin process libcni ran: which, for which verb, and
// how long it took from fork to exit (the plugin's start-up included).
type pluginCall struct {
	Plugin  string
	Command string
	D       time.Duration
}

// timingExec is libcni's plugin executor, timing every plugin it runs.
type timingExec struct {
	inner invoke.Exec

	mu    sync.Mutex
	calls []pluginCall
}

var _ invoke.Exec = (*timingExec)(nil)

func newTimingExec() *timingExec {
	return &timingExec{inner: &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}}
}

func (e *timingExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	start := time.Now()
	out, err := e.inner.ExecPlugin(ctx, pluginPath, stdin, environ)
	d := time.Since(start)
	cmd := ""
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			cmd = v
		}
	}
	e.mu.Lock()
	e.calls = append(e.calls, pluginCall{Plugin: filepath.Base(pluginPath), Command: cmd, D: d})
	e.mu.Unlock()
	return out, err
}

func (e *timingExec) FindInPath(plugin string, paths []string) (string, error) {
	return e.inner.FindInPath(plugin, paths)
}

func (e *timingExec) Decode(b []byte) (version.PluginInfo, error) { return e.inner.Decode(b) }

// take returns the calls recorded since the last take.
func (e *timingExec) take() []pluginCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.calls
	e.calls = nil
	return out
}

// AddSample is one CNI ADD (and the DEL after it) of a new pod, timed per
// plugin process, in milliseconds. Base is ptp (which runs host-local): the
// ENI stand-in alone.
type AddSample struct {
	BaseMs       float64 `json:"baseMs"`
	PodwallMs    float64 `json:"podwallMs"`
	ChainMs      float64 `json:"chainMs"`
	DelBaseMs    float64 `json:"delBaseMs"`
	DelPodwallMs float64 `json:"delPodwallMs"`
}

// addLatency runs n ADDs (each followed by its DEL) of new pods in namespace
// ns, one after the other, through the bed's conflist with a timing
// executor. Each pod's object exists (labels from labels) before its ADD,
// as kubelet's does; netns are named pw-<netnsPrefix>-<i>.
func addLatency(ctx context.Context, client kubernetes.Interface, list *libcni.NetworkConfigList, paths []string, cacheDir, netnsPrefix, ns, node string, labels map[string]string, n int) ([]AddSample, error) {
	exec := newTimingExec()
	cni := libcni.NewCNIConfigWithCacheDir(paths, cacheDir, exec)
	var out []AddSample
	for i := range n {
		s, err := addOne(ctx, client, cni, exec, list, fmt.Sprintf("pw-%s-%d", netnsPrefix, i), ns, fmt.Sprintf("add-%03d", i), node, labels)
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}

func addOne(ctx context.Context, client kubernetes.Interface, cni *libcni.CNIConfig, exec *timingExec, list *libcni.NetworkConfigList, netnsName, ns, name, node string, labels map[string]string) (AddSample, error) {
	var s AddSample
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{
			Name: "main", Image: "podwall-bench",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
		}}},
	}
	created, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return s, fmt.Errorf("add latency: create pod %s/%s: %w", ns, name, err)
	}
	zero := int64(0)
	defer client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	path, err := createNetns(netnsName)
	if err != nil {
		return s, err
	}
	defer deleteNetns(path)
	rt := &libcni.RuntimeConf{
		ContainerID: randomHex(32),
		NetNS:       path,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", ns},
			{"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", randomHex(32)},
			{"K8S_POD_UID", string(created.UID)},
		},
	}
	exec.take()
	start := time.Now()
	_, addErr := cni.AddNetworkList(ctx, list, rt)
	s.ChainMs = msSince(start)
	addCalls := exec.take()
	delErr := cni.DelNetworkList(ctx, list, rt)
	delCalls := exec.take()
	if err := errors.Join(addErr, delErr); err != nil {
		return s, fmt.Errorf("add latency: pod %s/%s: %w", ns, name, err)
	}
	for _, c := range addCalls {
		switch c.Plugin {
		case "ptp":
			s.BaseMs += ms(c.D)
		case "podwall":
			s.PodwallMs += ms(c.D)
		}
	}
	for _, c := range delCalls {
		switch c.Plugin {
		case "ptp":
			s.DelBaseMs += ms(c.D)
		case "podwall":
			s.DelPodwallMs += ms(c.D)
		}
	}
	return s, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func msSince(t time.Time) float64 { return ms(time.Since(t)) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// createNetns creates the named netns /run/netns/<name>, as `ip netns add`.
func createNetns(name string) (string, error) {
	path := filepath.Join("/run/netns", name)
	errc := make(chan error, 1)
	go func() {
		// The thread ends with this goroutine (never unlocked), so no
		// thread of the process stays in the new netns.
		runtime.LockOSThread()
		h, err := netns.NewNamed(name)
		if err == nil {
			h.Close()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		if !errors.Is(err, fs.ErrExist) {
			os.Remove(path)
		}
		return "", fmt.Errorf("create netns %s: %w", name, err)
	}
	return path, nil
}

// deleteNetns unmounts and removes a named netns; a missing one is fine.
func deleteNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", path, err)
	}
	return nil
}
