// Package harness runs the real podwalld binary for the demo and the
// end-to-end tests: on a manifests directory it owns, with its own socket and
// state directory, and lets a test write, replace and remove manifests, kill
// and restart the daemon, and call podwallctl (typed queries and a
// diagnostics dump in ctl.go). Bins finds or builds the binaries.
package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Daemon is one podwalld process (restartable) and its directories.
type Daemon struct {
	BinDir       string // holds podwalld and podwallctl
	Dir          string // root of the daemon's files
	Socket       string
	StateDir     string
	ManifestsDir string
	NodeName     string
	LogPath      string
	// Kubeconfig, when set, makes Kubernetes the daemon's policy source:
	// Start passes --kubeconfig Kubeconfig instead of --manifests (see
	// NewKubeDaemon); ManifestsDir is then unused.
	Kubeconfig string

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
	// exited is closed when the current process exits.
	exited chan struct{}
}

// NewDaemon prepares directories under dir; Start runs the process.
func NewDaemon(binDir, dir, nodeName string) (*Daemon, error) {
	d := &Daemon{
		BinDir:       binDir,
		Dir:          dir,
		Socket:       filepath.Join(dir, "run", "podwall.sock"),
		StateDir:     filepath.Join(dir, "state"),
		ManifestsDir: filepath.Join(dir, "manifests"),
		NodeName:     nodeName,
		LogPath:      filepath.Join(dir, "podwalld.log"),
	}
	if err := os.MkdirAll(d.ManifestsDir, 0o755); err != nil {
		return nil, err
	}
	return d, nil
}

// NewKubeDaemon is NewDaemon for a daemon that reads the Kubernetes API
// server kubeconfig names instead of a manifests directory.
func NewKubeDaemon(binDir, dir, nodeName, kubeconfig string) (*Daemon, error) {
	if kubeconfig == "" {
		return nil, errors.New("new podwalld: empty kubeconfig path")
	}
	d, err := NewDaemon(binDir, dir, nodeName)
	if err != nil {
		return nil, err
	}
	d.Kubeconfig = kubeconfig
	return d, nil
}

// Start runs podwalld and waits until its socket answers (with Kubeconfig,
// the daemon serves it once its caches have synced).
func (d *Daemon) Start(ctx context.Context, extraArgs ...string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return errors.New("podwalld already running")
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	source := []string{"--manifests", d.ManifestsDir}
	if d.Kubeconfig != "" {
		source = []string{"--kubeconfig", d.Kubeconfig}
	}
	args := append(append([]string{
		"--socket", d.Socket,
		"--state-dir", d.StateDir,
		"--node-name", d.NodeName,
	}, source...), append([]string{"--log-level", "debug"}, extraArgs...)...)
	cmd := exec.Command(filepath.Join(d.BinDir, "podwalld"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// No Pdeathsig: it fires when the forking *thread* exits, and threads
	// that switched network namespaces are thrown away by design. Callers
	// stop the daemon themselves (defer / t.Cleanup).
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start podwalld: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	d.cmd, d.log, d.exited = cmd, logf, exited

	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.DialTimeout("unix", d.Socket, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			d.cmd = nil
			logf.Close()
			return fmt.Errorf("podwalld exited during start-up; log %s:\n%s", d.LogPath, d.Log())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("podwalld socket %s did not answer within 30s", d.Socket)
		}
	}
}

// Kill sends SIGKILL (a crash) and waits for the process to exit.
func (d *Daemon) Kill() error { return d.signal(syscall.SIGKILL) }

// Stop sends SIGTERM (a clean stop) and waits for the process to exit.
func (d *Daemon) Stop() error { return d.signal(syscall.SIGTERM) }

func (d *Daemon) signal(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return nil
	}
	if err := d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
	d.log.Close()
	return nil
}

// Running reports whether the process is alive.
func (d *Daemon) Running() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// Log returns the daemon's log so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// WriteManifest writes DIR/name atomically (temp file + rename), as an
// operator's tooling would.
func (d *Daemon) WriteManifest(name, content string) error {
	tmp := filepath.Join(d.ManifestsDir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(d.ManifestsDir, name))
}

// RemoveManifest removes DIR/name; a missing file is not an error.
func (d *Daemon) RemoveManifest(name string) error {
	if name == "" || filepath.Base(name) != name {
		return fmt.Errorf("manifest name %q is not a file name", name)
	}
	err := os.Remove(filepath.Join(d.ManifestsDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Ctl runs podwallctl against this daemon and returns its stdout; err
// carries the exit status and stderr. On a nil Daemon (no daemon runs) it
// returns an error.
func (d *Daemon) Ctl(ctx context.Context, args ...string) (string, error) {
	if d == nil {
		return "", errors.New("podwallctl: no daemon (enforcement is off)")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(d.BinDir, "podwallctl"), append([]string{"--socket", d.Socket}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("podwallctl %v: %w: %s", args, err, stderr.String())
	}
	return stdout.String(), nil
}
