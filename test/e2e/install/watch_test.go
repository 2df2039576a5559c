package installe2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/podwall/podwall/test/harness"
)

// TestWatchThenUninstall runs the DaemonSet's sidecar, `podwalld
// install-cni --watch` (the interval an hour: only inotify can react), on
// a copy of the AWS configuration; rewrites 10-aws.conflist as aws-node does
// when it restarts (a new file renamed over it, without podwall); waits for
// the entry to be back; stops the watcher; and checks that `podwalld
// uninstall-cni` gives back aws-node's file byte for byte.
func TestWatchThenUninstall(t *testing.T) {
	binDir := bins.Dir(t)
	confDir := copyDir(t, filepath.Join(realWorld, "aws"))
	pluginDir := t.TempDir()
	path := filepath.Join(confDir, "10-aws.conflist")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	common := []string{"--cni-conf-dir", confDir, "--cni-bin-dir", pluginDir}

	var log bytes.Buffer
	watcher := exec.Command(filepath.Join(binDir, "podwalld"), append([]string{"install-cni", "--watch", "--watch-interval", "1h",
		"--plugin", filepath.Join(binDir, "podwall")}, common...)...)
	watcher.Stdout, watcher.Stderr = &log, &log
	if err := watcher.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- watcher.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		watcher.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("install-cni --watch exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			watcher.Process.Kill()
			t.Errorf("install-cni --watch did not stop on SIGTERM")
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("install-cni --watch log:\n%s", log.String())
		}
	})

	var patched []byte
	holdsPodwall := func() error {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !bytes.Contains(data, []byte(`"type": "podwall"`)) {
			return errNotPatched
		}
		patched = data
		return nil
	}
	if err := harness.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, holdsPodwall); err != nil {
		t.Fatalf("first patch: %v", err)
	}
	first := patched
	if fi, err := os.Stat(filepath.Join(pluginDir, "podwall")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("plugin not installed: %v", err)
	}

	// aws-node writes its file anew, without podwall.
	tmp := filepath.Join(confDir, ".aws-node-tmp")
	if err := os.WriteFile(tmp, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if err := harness.Poll(t.Context(), 30*time.Second, 100*time.Millisecond, holdsPodwall); err != nil {
		t.Fatalf("entry not put back after the rewrite: %v", err)
	}
	if !bytes.Equal(patched, first) {
		t.Errorf("re-patched file differs from the first patch:\n%s\nwant:\n%s", patched, first)
	}
	stop()

	runPodwalld(t, binDir, append([]string{"uninstall-cni"}, common...)...)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, orig) {
		t.Errorf("after uninstall-cni:\n%s\nwant byte for byte:\n%s", got, orig)
	}
	entries, _ := os.ReadDir(confDir)
	if len(entries) != 1 {
		t.Errorf("after uninstall-cni the directory holds %d files, want only 10-aws.conflist", len(entries))
	}
}

// errNotPatched: the conflist has no podwall entry (yet).
var errNotPatched = errors.New("the conflist has no podwall entry")
