package main

// `podwalld install-cni` and `podwalld uninstall-cni`: put the podwall
// plugin into the node's CNI setup (the binary into the CNI bin dir, the
// entry into the conflist the runtime loads) and take it out again. The
// DaemonSet runs install-cni as an init container and `install-cni --watch`
// as a sidecar that puts the entry back when the ENI agent rewrites its
// conflist (install/daemonset.yaml).

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/podwall/podwall/daemon/cniconf"
)

// Exit codes of install-cni and uninstall-cni.
const (
	exitOK       = 0
	exitFailed   = 1 // I/O and other failures
	exitUsage    = 2
	exitRefused  = 3 // no configuration, or none podwall can chain into
	pluginBinary = "podwall"
)

// runCNICommand runs install-cni or uninstall-cni when args[0] names one;
// ok is false for any other arguments (the daemon then runs).
func runCNICommand(args []string) (code int, ok bool) {
	if len(args) == 0 {
		return 0, false
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	switch args[0] {
	case "install-cni":
		return installCNI(args[1:], log), true
	case "uninstall-cni":
		return uninstallCNI(args[1:], log), true
	}
	return 0, false
}

type cniFlags struct {
	confDir, binDir, file string
}

func (c *cniFlags) register(flags *flag.FlagSet) {
	flags.StringVar(&c.confDir, "cni-conf-dir", "/etc/cni/net.d", "the CNI configuration directory")
	flags.StringVar(&c.binDir, "cni-bin-dir", "/opt/cni/bin", "the CNI plugin directory")
	flags.StringVar(&c.file, "conflist", "", "the configuration file to change: a name in --cni-conf-dir or a path (default: the lexically first *.conf, *.conflist or *.json, the one the runtime loads)")
}

// parseCNIFlags parses args; done with a code when the command should exit
// (help, or a usage error already reported).
func parseCNIFlags(flags *flag.FlagSet, args []string) (code int, done bool) {
	flags.SetOutput(os.Stderr)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, true
		}
		return exitUsage, true
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "podwalld %s: unexpected arguments %v\n", flags.Name(), flags.Args())
		return exitUsage, true
	}
	return 0, false
}

func installCNI(args []string, log *slog.Logger) int {
	flags := flag.NewFlagSet("install-cni", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprint(flags.Output(), `Usage: podwalld install-cni [flags]

Copies the podwall plugin into the CNI bin dir and puts {"type": "podwall", ...}
right after the first plugin of the conflist the runtime loads; a single-plugin
.conf is converted to a .conflist. Idempotent; the original is kept beside the
file as <name>.podwall-orig. Exit status: 0 done, 1 failed, 2 usage,
3 no configuration podwall can chain into (nothing was changed).

Flags:
`)
		flags.PrintDefaults()
	}
	var c cniFlags
	c.register(flags)
	self, _ := os.Executable()
	plugin := flags.String("plugin", filepath.Join(filepath.Dir(self), pluginBinary), "the podwall plugin binary to install")
	socket := flags.String("socket", cniconf.DefaultSocket, `the entry's "socket": podwalld's socket`)
	failOpen := flags.Bool("fail-open", false, `the entry's "failOpen": let ADD succeed, the pod unprotected, when podwalld is unreachable`)
	timeout := flags.Duration("timeout", cniconf.DefaultTimeout, `the entry's "timeout" for each call to podwalld`)
	watch := flags.Bool("watch", false, "keep running, and put the entry back whenever the configuration directory changes")
	interval := flags.Duration("watch-interval", 30*time.Second, "with --watch, also check this often")
	wait := flags.Duration("wait", 0, "wait this long for a configuration to appear (the ENI agent writes it when it is ready)")
	if code, done := parseCNIFlags(flags, args); done {
		return code
	}
	if *timeout <= 0 || *interval <= 0 {
		fmt.Fprintln(os.Stderr, "podwalld install-cni: --timeout and --watch-interval must be positive")
		return exitUsage
	}
	opts := cniconf.Options{
		Dir:   c.confDir,
		File:  c.file,
		Entry: cniconf.Entry{Socket: *socket, FailOpen: *failOpen, Timeout: *timeout},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// The binary first: the runtime may call the plugin as soon as the
	// entry is there.
	changed, err := installPlugin(*plugin, c.binDir)
	if err != nil {
		log.Error("install the podwall plugin", "err", err)
		return exitFailed
	}
	if changed {
		log.Info("installed the podwall plugin", "path", filepath.Join(c.binDir, pluginBinary))
	}
	if *watch {
		var last string
		err := cniconf.Watch(ctx, opts, *interval, func(res cniconf.Result, err error) {
			switch {
			case err != nil:
				// Said once per distinct error: a refused file is re-checked every interval.
				if err.Error() != last {
					log.Error("CNI configuration", "err", err)
				}
				last = err.Error()
			case res.Action != cniconf.Unchanged:
				log.Info("CNI configuration "+res.String(), "action", res.Action, "path", res.Path)
				last = ""
			default:
				last = ""
			}
		})
		if err != nil {
			log.Error("watch", "err", err)
			return exitFailed
		}
		return exitOK
	}
	res, err := installWaiting(ctx, opts, *wait, log)
	if err != nil {
		log.Error("CNI configuration", "err", err)
		if errors.Is(err, cniconf.ErrNoConfig) || errors.Is(err, cniconf.ErrNotUnderstood) {
			return exitRefused
		}
		return exitFailed
	}
	log.Info("CNI configuration "+res.String(), "action", res.Action, "path", res.Path)
	return exitOK
}

// installWaiting is cniconf.Install, retried every second for up to wait
// while there is no configuration yet.
func installWaiting(ctx context.Context, opts cniconf.Options, wait time.Duration, log *slog.Logger) (cniconf.Result, error) {
	deadline := time.Now().Add(wait)
	said := false
	for {
		res, err := cniconf.Install(opts)
		if !errors.Is(err, cniconf.ErrNoConfig) || !time.Now().Before(deadline) {
			return res, err
		}
		if !said {
			log.Info("waiting for a CNI configuration", "dir", opts.Dir, "for", wait)
			said = true
		}
		select {
		case <-ctx.Done():
			return res, err
		case <-time.After(time.Second):
		}
	}
}

func uninstallCNI(args []string, log *slog.Logger) int {
	flags := flag.NewFlagSet("uninstall-cni", flag.ContinueOnError)
	flags.Usage = func() {
		fmt.Fprint(flags.Output(), `Usage: podwalld uninstall-cni [flags]

Takes podwall's entry out of the conflist: the original kept by install-cni
is put back byte for byte (a converted .conf included); if the file changed
since, only podwall's entry is cut out. The plugin binary stays in the CNI bin
dir unless --remove-binary (a runtime may still run DEL with a cached
configuration that names podwall; podwall's DEL always succeeds).
Exit status: 0 done, 1 failed, 2 usage, 3 a configuration it cannot read.

Flags:
`)
		flags.PrintDefaults()
	}
	var c cniFlags
	c.register(flags)
	removeBinary := flags.Bool("remove-binary", false, "also remove the podwall plugin from the CNI bin dir")
	if code, done := parseCNIFlags(flags, args); done {
		return code
	}
	res, err := cniconf.Uninstall(cniconf.Options{Dir: c.confDir, File: c.file})
	if err != nil {
		log.Error("CNI configuration", "err", err)
		if errors.Is(err, cniconf.ErrNoConfig) || errors.Is(err, cniconf.ErrNotUnderstood) {
			return exitRefused
		}
		return exitFailed
	}
	if res.Path == "" {
		log.Info("no CNI configuration: nothing to uninstall", "dir", c.confDir)
	} else {
		log.Info("CNI configuration "+res.String(), "action", res.Action, "path", res.Path)
	}
	if *removeBinary {
		path := filepath.Join(c.binDir, pluginBinary)
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Error("remove the podwall plugin", "err", err)
			return exitFailed
		}
		log.Info("removed the podwall plugin", "path", path)
	}
	return exitOK
}

// installPlugin copies the plugin binary at src to binDir/podwall unless
// it is there already: a temporary file in binDir, fsync, rename, so a
// runtime never executes a partly written binary (a running plugin keeps
// its old file). It reports whether it wrote anything.
func installPlugin(src, binDir string) (bool, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return false, fmt.Errorf("read the plugin: %w", err)
	}
	dst := filepath.Join(binDir, pluginBinary)
	if cur, err := os.ReadFile(dst); err == nil && bytes.Equal(cur, data) {
		if fi, err := os.Stat(dst); err == nil && fi.Mode().Perm() == 0o755 {
			return false, nil
		}
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(binDir, "."+pluginBinary+".tmp-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		return false, fmt.Errorf("write %s: %w", dst, err)
	}
	if d, err := os.Open(binDir); err == nil {
		d.Sync()
		d.Close()
	}
	return true, nil
}
