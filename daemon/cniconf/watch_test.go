package cniconf

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// watchTimeout bounds each wait for the watcher: generous, the machine is
// shared; nothing here asserts how fast it is.
const watchTimeout = 30 * time.Second

// startWatch runs Watch until the test ends and returns its outcomes.
func startWatch(t *testing.T, o Options, interval time.Duration) <-chan Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan Result, 100)
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, o, interval, func(res Result, err error) {
			if err != nil {
				t.Logf("watch: %v", err)
				return
			}
			results <- res
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	return results
}

// waitFor waits for an outcome with the action, or fails the test.
func waitFor(t *testing.T, results <-chan Result, want Action) Result {
	t.Helper()
	deadline := time.After(watchTimeout)
	for {
		select {
		case res := <-results:
			if res.Action == want {
				return res
			}
		case <-deadline:
			t.Fatalf("no %s outcome within %s", want, watchTimeout)
		}
	}
}

// TestWatchReappliesAfterRewrite: the agent rewrites its conflist, in place
// and by rename, and the watcher (inotify only: the interval is an hour)
// puts podwall's entry back, keeping the agent's change.
func TestWatchReappliesAfterRewrite(t *testing.T) {
	dir := copyCase(t, "aws")
	path := filepath.Join(dir, "10-aws.conflist")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	results := startWatch(t, Options{Dir: dir}, time.Hour)
	waitFor(t, results, Patched)

	rewrites := []struct {
		name  string
		mtu   string
		write func(data []byte) error
	}{
		{"in place", `"1500"`, func(data []byte) error { return os.WriteFile(path, data, 0o644) }},
		{"rename", `"8000"`, func(data []byte) error {
			tmp := filepath.Join(dir, "aws.tmp")
			if err := os.WriteFile(tmp, data, 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, path)
		}},
	}
	for _, rw := range rewrites {
		data := bytes.ReplaceAll(orig, []byte(`"9001"`), []byte(rw.mtu))
		if err := rw.write(data); err != nil {
			t.Fatal(err)
		}
		waitFor(t, results, Patched)
		got, _ := os.ReadFile(path)
		if want, _ := Patch(data, Entry{}); !bytes.Equal(got, want) {
			t.Errorf("%s: after the rewrite the file is\n%s\nwant\n%s", rw.name, got, want)
		}
		if backup, _ := os.ReadFile(path + BackupSuffix); !bytes.Equal(backup, data) {
			t.Errorf("%s: the backup is not the agent's latest content", rw.name)
		}
	}
}

// TestWatchDirectoryAppearsLater: the configuration directory does not
// exist when the watcher starts (the ENI agent has not run yet); the
// interval check finds it once it is there.
func TestWatchDirectoryAppearsLater(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	results := startWatch(t, Options{Dir: dir}, 100*time.Millisecond)
	time.Sleep(300 * time.Millisecond) // a few failed checks first
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(realWorld, "tke", "10-tke-route-eni.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-tke-route-eni.conflist"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	res := waitFor(t, results, Patched)
	if res.Path != filepath.Join(dir, "10-tke-route-eni.conflist") {
		t.Errorf("patched %s", res.Path)
	}
}
