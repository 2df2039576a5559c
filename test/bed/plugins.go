package bed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
)

// pluginsModule is the module the reference CNI plugins are built from, at the
// version podwall's go.mod requires.
const pluginsModule = "github.com/containernetworking/plugins"

// referencePlugins maps each binary BuildCNIPlugins produces to its package
// inside pluginsModule.
var referencePlugins = []struct{ name, pkg string }{
	{"ptp", "./plugins/main/ptp"},
	{"host-local", "./plugins/ipam/host-local"},
	{"loopback", "./plugins/main/loopback"},
}

// BuildCNIPlugins builds the reference plugins ptp, host-local and loopback
// into dir (created if missing), skipping binaries already there. They are
// built from the containernetworking/plugins module at the version go.mod
// requires, inside that module's own directory in the module cache, so its
// own go.sum applies and podwall's go.mod and go.sum are left alone. Each
// binary is written to a temporary name and renamed, so concurrent builds into
// one dir are safe. It needs the go command on PATH (and the module proxy, the
// first time).
func BuildCNIPlugins(dir string) error {
	if dir == "" {
		return fmt.Errorf("build cni plugins: empty directory")
	}
	// The build runs in the plugins module's directory: make dir absolute.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("build cni plugins: %w", err)
	}
	var missing []int
	for i, p := range referencePlugins {
		if !isExecutable(filepath.Join(dir, p.name)) {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("build cni plugins: %w", err)
	}
	version, err := pluginsVersion()
	if err != nil {
		return fmt.Errorf("build cni plugins: %w", err)
	}
	moduleDir, err := downloadModule(pluginsModule + "@" + version)
	if err != nil {
		return fmt.Errorf("build cni plugins: %w", err)
	}
	for _, i := range missing {
		p := referencePlugins[i]
		final := filepath.Join(dir, p.name)
		tmp := filepath.Join(dir, fmt.Sprintf(".%s.tmp-%d", p.name, os.Getpid()))
		ldflags := "-X " + pluginsModule + "/pkg/utils/buildversion.BuildVersion=" + version
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, p.pkg)
		cmd.Dir = moduleDir
		cmd.Env = goEnv()
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("build cni plugin %s %s@%s: %w: %s", p.name, pluginsModule, version, err, bytes.TrimSpace(out))
		}
		if err := os.Rename(tmp, final); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("build cni plugin %s: %w", p.name, err)
		}
	}
	return nil
}

// pluginsVersion is the version of pluginsModule this program was built
// against (podwall's go.mod requires it, and this package imports it).
func pluginsVersion() (string, error) {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path != pluginsModule {
				continue
			}
			if dep.Replace != nil && dep.Replace.Version != "" {
				return dep.Replace.Version, nil
			}
			if dep.Version != "" && dep.Version != "(devel)" {
				return dep.Version, nil
			}
		}
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Version}}", pluginsModule)
	cmd.Env = goEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("find the version of %s: %w", pluginsModule, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// downloadModule makes sure module@version is in the module cache and returns
// its directory there.
func downloadModule(moduleAtVersion string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", moduleAtVersion)
	cmd.Dir = os.TempDir() // outside any module: nothing's go.mod is consulted or changed
	cmd.Env = goEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w: %s", moduleAtVersion, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: decode output: %w", moduleAtVersion, err)
	}
	if info.Error != "" {
		return "", fmt.Errorf("go mod download %s: %s", moduleAtVersion, info.Error)
	}
	if info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no directory reported", moduleAtVersion)
	}
	return info.Dir, nil
}

// goEnv is the environment for go commands run on a foreign module: no
// workspace, no inherited -mod flag.
func goEnv() []string {
	return append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
