package installe2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/test/kube/cluster"
)

// installDir holds the manifests.
var installDir = filepath.Join(repoRoot, "install")

// manifestFiles are install/'s manifests applied one by one (the
// kustomization aside).
func manifestFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(installDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return filepath.Base(f) == "kustomization.yaml" })
	if len(files) < 3 {
		t.Fatalf("install/ has %d manifests besides the kustomization: %v", len(files), files)
	}
	return files
}

// TestManifestsDryRunServer applies install/ with kubectl v1.34.4 against a
// real kube-apiserver, server side and dry-run (admission, defaulting and
// strict field validation run, nothing is stored): the kustomization with
// kubectl's built-in kustomize, then each file with -f.
func TestManifestsDryRunServer(t *testing.T) {
	cluster.RequireBinaries(t, cluster.Options{ServiceCIDR: serviceCIDR})
	kubectl := kubectlForTest(t)
	c := cluster.StartForTest(t, cluster.Options{ServiceCIDR: serviceCIDR})
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
		defer cancel()
		args = append([]string{"--kubeconfig", c.Kubeconfig()}, args...)
		out, err := exec.CommandContext(ctx, kubectl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	out := run("apply", "--dry-run=server", "--validate=strict", "-k", installDir)
	for _, want := range []string{
		"serviceaccount/podwall created (server dry run)",
		"clusterrole.rbac.authorization.k8s.io/podwall created (server dry run)",
		"clusterrolebinding.rbac.authorization.k8s.io/podwall created (server dry run)",
		"daemonset.apps/podwall created (server dry run)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("apply -k: no %q in:\n%s", want, out)
		}
	}
	for _, f := range manifestFiles(t) {
		out := run("apply", "--dry-run=server", "--validate=strict", "-f", f)
		if !strings.Contains(out, "(server dry run)") || strings.Contains(out, "Warning") {
			t.Errorf("apply -f %s:\n%s", filepath.Base(f), out)
		}
	}
	// Nothing was stored.
	if _, err := c.Client().AppsV1().DaemonSets("kube-system").Get(t.Context(), "podwall", metav1.GetOptions{}); err == nil {
		t.Error("the dry run stored the DaemonSet")
	}

	rendered := run("kustomize", installDir)
	if !strings.Contains(rendered, "image: registry.example.com/podwall:dev") {
		t.Errorf("kustomize did not set the image:\n%s", rendered)
	}
}

// readObjects decodes the YAML documents of a manifest file into kind →
// raw JSON documents.
func readObjects(t *testing.T, path string) map[string][][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][][]byte{}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(f))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(js, &meta); err != nil || meta.Kind == "" {
			continue // comments only
		}
		out[meta.Kind] = append(out[meta.Kind], js)
	}
}

// readDaemonSet decodes the one DaemonSet of a manifest file, rejecting
// unknown fields.
func readDaemonSet(t *testing.T, path string) *appsv1.DaemonSet {
	t.Helper()
	docs := readObjects(t, path)["DaemonSet"]
	if len(docs) != 1 {
		t.Fatalf("%s: %d DaemonSets, want 1", path, len(docs))
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(docs[0], &ds); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &ds
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no container %s", name)
	}
	return cs[i]
}

// flagValue returns the value of --name=value among args.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// TestDaemonSetShape checks what the issue asks of the DaemonSet, in the
// manifest itself: host network and PID, the host paths and the netns
// mount's propagation, the probes on the loopback metrics address, the
// install-cni init container and watcher with the same entry flags, the
// daemon in-cluster with its node name from the downward API, priority,
// tolerations and rolling updates.
func TestDaemonSetShape(t *testing.T) {
	ds := readDaemonSet(t, filepath.Join(installDir, "daemonset.yaml"))
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID {
		t.Error("not hostNetwork and hostPID")
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName %q", spec.PriorityClassName)
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tol corev1.Toleration) bool {
		return tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == ""
	}) {
		t.Errorf("no toleration of every taint: %+v", spec.Tolerations)
	}
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
		t.Errorf("updateStrategy %q", ds.Spec.UpdateStrategy.Type)
	}
	if spec.ServiceAccountName != "podwall" {
		t.Errorf("serviceAccountName %q, want rbac.yaml's podwall", spec.ServiceAccountName)
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}

	daemon := container(t, spec.Containers, "podwalld")
	if daemon.Command[0] != "podwalld" || !slices.Contains(daemon.Command, "--kubeconfig=") {
		t.Errorf("daemon command %q: want podwalld --kubeconfig= (in-cluster)", daemon.Command)
	}
	if v, _ := flagValue(daemon.Command, "node-name"); v != "$(NODE_NAME)" ||
		!slices.ContainsFunc(daemon.Env, func(e corev1.EnvVar) bool {
			return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}) {
		t.Errorf("--node-name is not spec.nodeName from the downward API: %q %+v", daemon.Command, daemon.Env)
	}
	metrics, _ := flagValue(daemon.Command, "metrics-address")
	for path, probe := range map[string]*corev1.Probe{"/healthz": daemon.LivenessProbe, "/readyz": daemon.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil {
			t.Errorf("no httpGet probe for %s", path)
			continue
		}
		g := probe.HTTPGet
		if g.Host+":"+g.Port.String() != metrics || g.Path != path || g.Host != "127.0.0.1" {
			t.Errorf("probe %s:%s%s, want 127.0.0.1 on --metrics-address %s", g.Host, g.Port.String(), path, metrics)
		}
	}
	if sc := daemon.SecurityContext; sc == nil || sc.Capabilities == nil ||
		!slices.Contains(sc.Capabilities.Add, "SYS_ADMIN") || !slices.Contains(sc.Capabilities.Add, "NET_ADMIN") ||
		sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Error("podwalld lacks SYS_ADMIN (setns), NET_ADMIN (iptables, ipset) or an unconfined AppArmor profile")
	}
	socket, _ := flagValue(daemon.Command, "socket")
	stateDir, _ := flagValue(daemon.Command, "state-dir")
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range daemon.VolumeMounts {
		mounts[m.MountPath] = m
	}
	for _, path := range []string{filepath.Dir(socket), stateDir, "/var/run/netns"} {
		m, ok := mounts[path]
		if !ok || hostPaths[m.Name] != path {
			t.Errorf("podwalld has no host path %s mounted at the same place", path)
		}
	}
	if m := mounts["/var/run/netns"]; m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Error("/var/run/netns is not mounted with HostToContainer propagation")
	}

	install := container(t, spec.InitContainers, "install-cni")
	watch := container(t, spec.Containers, "install-cni-watch")
	if !slices.Equal(install.Command[:2], []string{"podwalld", "install-cni"}) || !slices.Equal(watch.Command[:3], []string{"podwalld", "install-cni", "--watch"}) {
		t.Errorf("commands %q and %q", install.Command, watch.Command)
	}
	for _, flag := range []string{"socket", "fail-open", "timeout", "cni-conf-dir", "cni-bin-dir", "conflist"} {
		a, aok := flagValue(install.Command, flag)
		b, bok := flagValue(watch.Command, flag)
		if a != b || aok != bok {
			t.Errorf("--%s differs between install-cni (%q) and install-cni-watch (%q)", flag, a, b)
		}
	}
	if v, _ := flagValue(install.Command, "socket"); v != socket {
		t.Errorf("the entry's socket %q is not podwalld's %q", v, socket)
	}
	for _, c := range []corev1.Container{install, watch} {
		confDir, _ := flagValue(c.Command, "cni-conf-dir")
		binDir, _ := flagValue(c.Command, "cni-bin-dir")
		for _, path := range []string{confDir, binDir} {
			if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == path && hostPaths[m.Name] == path }) {
				t.Errorf("%s has no host path %s mounted", c.Name, path)
			}
		}
	}

	// The uninstall DaemonSet runs the image the kustomization sets.
	un := readDaemonSet(t, filepath.Join(installDir, "uninstall.yaml"))
	kust, err := os.ReadFile(filepath.Join(installDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Images []struct{ Name, NewName, NewTag string }
	}
	if err := yaml.Unmarshal(kust, &k); err != nil || len(k.Images) != 1 {
		t.Fatalf("kustomization images: %v %+v", err, k)
	}
	image := k.Images[0].NewName + ":" + k.Images[0].NewTag
	for _, c := range append(un.Spec.Template.Spec.InitContainers, un.Spec.Template.Spec.Containers...) {
		if c.Image != image {
			t.Errorf("uninstall.yaml container %s runs %s, the kustomization sets %s", c.Name, c.Image, image)
		}
	}
	if uc := container(t, un.Spec.Template.Spec.InitContainers, "uninstall-cni"); !slices.Equal(uc.Command[:2], []string{"podwalld", "uninstall-cni"}) {
		t.Errorf("uninstall command %q", uc.Command)
	}
}

// TestManifestCommandsParse runs every podwalld command of the manifests
// with the real binary and -h appended: each flag before it must be one
// podwalld knows (exit 0; an unknown flag exits 2).
func TestManifestCommandsParse(t *testing.T) {
	binDir := bins.Dir(t)
	for _, f := range []string{"daemonset.yaml", "uninstall.yaml"} {
		ds := readDaemonSet(t, filepath.Join(installDir, f))
		spec := ds.Spec.Template.Spec
		for _, c := range append(spec.InitContainers, spec.Containers...) {
			if c.Command[0] != "podwalld" {
				continue
			}
			args := append(slices.Clone(c.Command[1:]), "-h")
			cmd := exec.Command(filepath.Join(binDir, "podwalld"), args...)
			cmd.Env = append(os.Environ(), "KUBERNETES_SERVICE_HOST=10.206.240.1") // in a pod
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s %s: podwalld %s: %v\n%s", f, c.Name, strings.Join(args, " "), err, out)
			}
		}
	}
	// The check works: a flag podwalld does not know fails.
	if err := exec.Command(filepath.Join(binDir, "podwalld"), "install-cni", "--no-such-flag", "-h").Run(); err == nil {
		t.Error("an unknown flag passed")
	}
}

// TestDockerfile checks what can be checked of the image without a Docker
// engine (there is none on the test machines): it builds with the Go of
// go.mod and `make build`, ships the three binaries that target produces,
// static, on Debian slim with iptables and ipset.
func TestDockerfile(t *testing.T) {
	df, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("no go directive in go.mod")
	}
	for _, want := range []string{
		"FROM golang:" + string(goVersion[1]),
		"CGO_ENABLED=0",
		"RUN make build",
		"FROM debian:",
		"-slim",
		"apt-get install -y --no-install-recommends iptables ipset",
	} {
		if !bytes.Contains(df, []byte(want)) {
			t.Errorf("Dockerfile has no %q", want)
		}
	}
	copyLine := regexp.MustCompile(`(?m)^COPY --from=build (.*) /usr/local/bin/$`).FindSubmatch(df)
	if copyLine == nil {
		t.Fatal("Dockerfile copies no binaries to /usr/local/bin/")
	}
	for _, bin := range []string{"podwall", "podwalld", "podwallctl"} {
		if !slices.Contains(strings.Fields(string(copyLine[1])), "/src/bin/"+bin) {
			t.Errorf("Dockerfile does not ship bin/%s", bin)
		}
		if !bytes.Contains(makefile, []byte("-o $(BIN)/"+bin+" ")) {
			t.Errorf("make build does not produce bin/%s", bin)
		}
	}
	ignore, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(ignore), "\n") {
		line = strings.TrimSpace(line)
		for _, needed := range []string{"go.mod", "go.sum", "Makefile", "plugin", "daemon", "proto"} {
			if line == needed || line == "*" {
				t.Errorf(".dockerignore excludes %s, which the build needs", needed)
			}
		}
	}
}
