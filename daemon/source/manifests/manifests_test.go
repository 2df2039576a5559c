package manifests

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/daemon/policy"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// summarize renders a state as one line per object, for comparisons.
func summarize(st *policy.State) []string {
	var out []string
	for _, ns := range st.Namespaces {
		out = append(out, "namespace "+ns.Name+" "+labelString(ns.Labels))
	}
	for _, p := range st.Pods {
		var ports, ips []string
		for _, cp := range p.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s/%d", cp.Name, cp.Protocol, cp.Port))
		}
		for _, ip := range p.IPs {
			ips = append(ips, ip.String())
		}
		out = append(out, fmt.Sprintf("pod %s labels=%s ports=%s ips=%s",
			p.Key(), labelString(p.Labels), strings.Join(ports, ","), strings.Join(ips, ",")))
	}
	for _, np := range st.Policies {
		var types, ports []string
		for _, pt := range np.Spec.PolicyTypes {
			types = append(types, string(pt))
		}
		portStrings := func(pp []networkingv1.NetworkPolicyPort) {
			for _, p := range pp {
				s := "nil"
				if p.Protocol != nil {
					s = string(*p.Protocol)
				}
				if p.Port != nil {
					s += "/" + p.Port.String()
				}
				ports = append(ports, s)
			}
		}
		for _, r := range np.Spec.Ingress {
			portStrings(r.Ports)
		}
		for _, r := range np.Spec.Egress {
			portStrings(r.Ports)
		}
		out = append(out, fmt.Sprintf("policy %s/%s types=%s ingress=%d egress=%d ports=%s",
			np.Namespace, np.Name, strings.Join(types, ","), len(np.Spec.Ingress), len(np.Spec.Egress), strings.Join(ports, ",")))
	}
	return out
}

func labelString(labels map[string]string) string {
	var kv []string
	for k, v := range labels {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustLoad(t *testing.T, s *Source) {
	t.Helper()
	if err := s.Load(); err != nil {
		t.Fatalf("Load: %v", err)
	}
}

func errorStrings(s *Source) []string {
	var out []string
	for _, e := range s.Errors() {
		out = append(out, e.Error())
	}
	return out
}

// checkErrors checks that each of want is a substring of a different
// reported error, and that there are no others.
func checkErrors(t *testing.T, s *Source, want ...string) {
	t.Helper()
	got := errorStrings(s)
	if len(got) != len(want) {
		t.Fatalf("errors = %q, want %d matching %q", got, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(got[i], w) {
			t.Errorf("error %d = %q, want it to contain %q", i, got[i], w)
		}
	}
}

func checkState(t *testing.T, s *Source, want ...string) {
	t.Helper()
	if got := summarize(s.State()); !slices.Equal(got, want) {
		t.Errorf("state:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

const (
	nsaLine     = "namespace nsa kubernetes.io/metadata.name=nsa"
	defaultLine = "namespace default kubernetes.io/metadata.name=default"
)

func TestLoad(t *testing.T) {
	tests := []struct {
		name      string
		files     map[string]string
		want      []string
		wantErrs  []string // substrings, in Errors() order
		wantDirty bool
	}{
		{
			name: "multi-document yaml with defaults",
			files: map[string]string{"all.yaml": `
apiVersion: v1
kind: Namespace
metadata:
  name: nsb
  labels: {app: nsb}
---
# a comment-only document is skipped
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: nsa, labels: {app: web}}
spec:
  containers:
  - name: web
    image: nginx
    ports: [{name: http, containerPort: 80}, {containerPort: 53, protocol: UDP}]
status:
  podIPs: [{ip: 10.1.0.5}, {ip: "fd10::5"}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: both, namespace: nsa}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 80}]}]
  egress: [{ports: [{port: 53, protocol: UDP}]}]
---
`},
			want: []string{
				nsaLine,
				"namespace nsb app=nsb,kubernetes.io/metadata.name=nsb",
				"pod nsa/web labels=app=web ports=http/TCP/80,/UDP/53 ips=10.1.0.5,fd10::5",
				"policy nsa/both types=Ingress,Egress ingress=1 egress=1 ports=TCP/80,UDP/53",
			},
		},
		{
			name: "json stream and default namespace",
			files: map[string]string{"objs.json": `
{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "status": {"podIP": "10.1.0.1"}}
{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny"}, "spec": {"podSelector": {}}}
`},
			want: []string{
				defaultLine,
				"pod default/a labels= ports= ips=10.1.0.1",
				"policy default/deny types=Ingress ingress=0 egress=0 ports=",
			},
		},
		{
			name: "list kinds",
			files: map[string]string{
				"list.json": `{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nsa", "labels": {"team": "a"}}},
  {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1", "namespace": "nsa"}}]}`,
				"pods.yml": `
apiVersion: v1
kind: PodList
items:
- metadata: {name: p2, namespace: nsc}
- kind: Pod
  apiVersion: v1
  metadata: {name: p3, namespace: nsc}
---
apiVersion: v1
kind: NamespaceList
items:
- metadata: {name: nsd}
`,
				"policies.yaml": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicyList
items:
- metadata: {name: np1, namespace: nsa}
  spec: {podSelector: {}, policyTypes: [Egress]}
`,
			},
			want: []string{
				"namespace nsa kubernetes.io/metadata.name=nsa,team=a",
				"namespace nsc kubernetes.io/metadata.name=nsc",
				"namespace nsd kubernetes.io/metadata.name=nsd",
				"pod nsa/p1 labels= ports= ips=",
				"pod nsc/p2 labels= ports= ips=",
				"pod nsc/p3 labels= ports= ips=",
				"policy nsa/np1 types=Egress ingress=0 egress=0 ports=",
			},
		},
		{
			name: "ignored files",
			files: map[string]string{
				"ok.yaml":             "apiVersion: v1\nkind: Namespace\nmetadata: {name: nsa}\n",
				".hidden.yaml":        "apiVersion: v1\nkind: Namespace\nmetadata: {name: hidden}\n",
				"x.yaml~":             "apiVersion: v1\nkind: Namespace\nmetadata: {name: backup}\n",
				".#x.yaml":            "garbage: [",
				"#x.yaml#":            "garbage: [",
				".x.yaml.swp":         "garbage: [",
				"x.yaml.swp":          "garbage: [",
				"notes.txt":           "garbage: [",
				"sub/y.yaml":          "apiVersion: v1\nkind: Namespace\nmetadata: {name: sub}\n",
				"dir.yaml/inner.yaml": "garbage: [",
			},
			want: []string{nsaLine},
		},
		{
			name: "syntax error",
			files: map[string]string{"bad.yaml": `
apiVersion: v1
kind: Namespace
metadata: {name: nsa}
---
kind: [unclosed
`},
			wantErrs: []string{"bad.yaml: document 2: parse:"},
		},
		{
			name: "unknown kind and wrong apiVersion",
			files: map[string]string{"bad.yaml": `
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
---
apiVersion: v1
kind: NetworkPolicy
metadata: {name: np}
---
metadata: {name: nokind}
`},
			wantErrs: []string{
				`bad.yaml: document 1: unsupported kind "Deployment" of apiVersion "apps/v1"`,
				`bad.yaml: document 2: unsupported kind "NetworkPolicy" of apiVersion "v1"`,
				"bad.yaml: document 3: missing kind",
			},
		},
		{
			name: "objects without names",
			files: map[string]string{"bad.yaml": `
apiVersion: v1
kind: Pod
metadata: {namespace: nsa}
---
apiVersion: v1
kind: PodList
items:
- metadata: {name: fine}
- metadata: {}
`},
			wantErrs: []string{
				"bad.yaml: document 1: Pod: missing metadata.name",
				"bad.yaml: document 2 item 1: Pod: missing metadata.name",
			},
		},
		{
			name: "invalid policy names the object",
			files: map[string]string{"bad.yaml": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken, namespace: nsa}
spec:
  podSelector: {}
  ingress: [{ports: [{port: 80, protocol: ICMP}]}]
`},
			wantErrs: []string{`bad.yaml: NetworkPolicy nsa/broken: invalid: spec.ingress[0].ports[0]: protocol: unsupported value "ICMP"`},
		},
		{
			name: "unknown field",
			files: map[string]string{"bad.yaml": `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: typo}
spec:
  podSelecter: {}
`},
			wantErrs: []string{`bad.yaml: document 1: decode: unknown field "spec.podSelecter"`},
		},
		{
			name: "not an object and nested list",
			files: map[string]string{
				"scalar.yaml": "just a string\n",
				"nested.json": `{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "List", "items": []}]}`,
			},
			wantErrs: []string{
				"nested.json: document 1 item 0: a List inside a List is not supported",
				"scalar.yaml: document 1: not a Kubernetes object",
			},
		},
		{
			name: "duplicates: first file in sorted order wins",
			files: map[string]string{
				"a.yaml": "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: nsa, labels: {from: a}}\n",
				"b.yaml": `
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: nsa, labels: {from: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: nsa}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: nsa, labels: {second: "yes"}}
`,
			},
			want: []string{
				nsaLine,
				"pod nsa/other labels= ports= ips=",
				"pod nsa/web labels=from=a ports= ips=",
			},
			wantErrs: []string{
				"b.yaml: Pod nsa/web: already defined in a.yaml",
				"b.yaml: Pod nsa/other: already defined in b.yaml",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, dir, name, content)
			}
			s := New(dir, nil)
			mustLoad(t, s)
			checkState(t, s, tt.want...)
			checkErrors(t, s, tt.wantErrs...)
			for _, e := range s.Errors() {
				if !strings.HasPrefix(e.Object, dir+string(filepath.Separator)) {
					t.Errorf("error %q does not name its file", e)
				}
			}
		})
	}
}

// TestSeedExamples checks the five example policies of the seed against a
// golden rendering of the state they produce (run with -update to rewrite).
func TestSeedExamples(t *testing.T) {
	s := New(filepath.Join("testdata", "seed"), nil)
	mustLoad(t, s)
	checkErrors(t, s)
	checkState(t, s,
		defaultLine,
		nsaLine,
		"policy default/ingress-ipblock-http types=Ingress ingress=1 egress=0 ports=TCP/80",
		"policy nsa/allow-nsb-redis types=Ingress ingress=1 egress=0 ports=TCP/6379",
		"policy nsa/allow-same-namespace types=Ingress ingress=1 egress=0 ports=",
		"policy nsa/deny-all-ingress types=Ingress ingress=0 egress=0 ports=",
		"policy nsa/egress-ipblock types=Egress ingress=0 egress=1 ports=TCP/5978",
	)
	got, err := json.MarshalIndent(s.State(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "seed.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("state differs from %s (run with -update after checking):\n%s", golden, got)
	}
}

const (
	podA = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: nsa}\n"
	podB = "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: nsa}\n"
	podC = "apiVersion: v1\nkind: Pod\nmetadata: {name: c, namespace: nsa}\n"
)

func podLine(name string) string { return "pod nsa/" + name + " labels= ports= ips=" }

// TestChanges walks one directory through a sequence of edits, checking the
// state and errors after each synchronous Load.
func TestChanges(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	s := New(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	path := func(name string) string { return filepath.Join(dir, name) }

	steps := []struct {
		name     string
		do       func(t *testing.T)
		want     []string
		wantErrs []string
	}{
		{"two files",
			func(t *testing.T) {
				writeFile(t, dir, "a.yaml", podA+"---\n"+podB)
				writeFile(t, dir, "c.yaml", podC)
			},
			[]string{nsaLine, podLine("a"), podLine("b"), podLine("c")}, nil},
		{"document removed from a file",
			func(t *testing.T) { writeFile(t, dir, "a.yaml", podA) },
			[]string{nsaLine, podLine("a"), podLine("c")}, nil},
		{"file removed",
			func(t *testing.T) {
				if err := os.Remove(path("c.yaml")); err != nil {
					t.Fatal(err)
				}
			},
			[]string{nsaLine, podLine("a")}, nil},
		{"edited in place, same size",
			func(t *testing.T) {
				f, err := os.OpenFile(path("a.yaml"), os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteString(strings.Replace(podA, "name: a", "name: z", 1)); err != nil {
					t.Fatal(err)
				}
			},
			[]string{nsaLine, podLine("z")}, nil},
		{"renamed in",
			func(t *testing.T) {
				writeFile(t, dir, "x.yaml.tmp", podB)
				if err := os.Rename(path("x.yaml.tmp"), path("x.yaml")); err != nil {
					t.Fatal(err)
				}
			},
			[]string{nsaLine, podLine("b"), podLine("z")}, nil},
		{"broken file keeps its last good content",
			func(t *testing.T) { writeFile(t, dir, "x.yaml", podC+"---\nkind: [") },
			[]string{nsaLine, podLine("b"), podLine("z")},
			[]string{"x.yaml: document 2: parse:"}},
		{"broken from the start contributes nothing",
			func(t *testing.T) {
				writeFile(t, dir, "y.yaml", podC+"---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
			},
			[]string{nsaLine, podLine("b"), podLine("z")},
			[]string{"x.yaml: document 2: parse:", `y.yaml: document 2: unsupported kind "Deployment"`}},
		{"fixed file clears its error",
			func(t *testing.T) { writeFile(t, dir, "x.yaml", podC) },
			[]string{nsaLine, podLine("c"), podLine("z")},
			[]string{`y.yaml: document 2: unsupported kind "Deployment"`}},
		{"broken file removed",
			func(t *testing.T) {
				if err := os.Remove(path("y.yaml")); err != nil {
					t.Fatal(err)
				}
			},
			[]string{nsaLine, podLine("c"), podLine("z")}, nil},
		{"duplicate across files",
			func(t *testing.T) { writeFile(t, dir, "zz.yaml", podC) },
			[]string{nsaLine, podLine("c"), podLine("z")},
			[]string{"zz.yaml: Pod nsa/c: already defined in x.yaml"}},
		{"emptied directory",
			func(t *testing.T) {
				for _, name := range []string{"a.yaml", "x.yaml", "zz.yaml"} {
					if err := os.Remove(path(name)); err != nil {
						t.Fatal(err)
					}
				}
			},
			nil, nil},
	}
	for _, step := range steps {
		step.do(t)
		mustLoad(t, s)
		t.Run(step.name, func(t *testing.T) {
			checkState(t, s, step.want...)
			checkErrors(t, s, step.wantErrs...)
		})
	}

	// Each broken version of a file is logged once, however often the
	// directory is read.
	n := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "rejected") && strings.Contains(line, "file=x.yaml") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the broken x.yaml was logged %d times, want 1:\n%s", n, logs.String())
	}
}

// TestConfigMapVolume checks the layout kubelet gives a ConfigMap volume:
// x.yaml -> ..data/x.yaml, ..data -> ..<timestamp>, updated by swapping the
// ..data symlink.
func TestConfigMapVolume(t *testing.T) {
	dir := t.TempDir()
	publish := func(version, content string) {
		writeFile(t, dir, filepath.Join(version, "x.yaml"), content)
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish("..2025_01_01", podA)
	if err := os.Symlink(filepath.Join("..data", "x.yaml"), filepath.Join(dir, "x.yaml")); err != nil {
		t.Fatal(err)
	}
	s := New(dir, nil)
	mustLoad(t, s)
	checkState(t, s, nsaLine, podLine("a"))

	publish("..2025_01_02", podB)
	mustLoad(t, s)
	checkState(t, s, nsaLine, podLine("b"))
	checkErrors(t, s)
}

func TestLoadUnreadableDirectoryKeepsState(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", podA)
	s := New(dir, nil)
	mustLoad(t, s)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Load(); err == nil {
		t.Error("Load of a missing directory succeeded")
	}
	checkState(t, s, nsaLine, podLine("a"))

	if err := New(filepath.Join(dir, "nope"), nil).Load(); err == nil {
		t.Error("Load of a directory that never existed succeeded")
	}
}

// waitFor polls cond until it holds or 2 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 2 s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", podA)
	s := New(dir, nil)
	mustLoad(t, s)

	var calls, inFlight, overlapped atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, func() {
			if inFlight.Add(1) > 1 {
				overlapped.Store(1)
			}
			time.Sleep(50 * time.Millisecond)
			calls.Add(1)
			inFlight.Add(-1)
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	has := func(name string) func() bool {
		return func() bool { return slices.Contains(summarize(s.State()), podLine(name)) }
	}
	writeFile(t, dir, "b.yaml", podB)
	waitFor(t, "changed() after a new file", func() bool { return calls.Load() >= 1 && has("b")() })

	// A change picked up by someone else's Load is still announced.
	before := calls.Load()
	writeFile(t, dir, "c.yaml", podC)
	mustLoad(t, s)
	waitFor(t, "changed() after a change another Load saw", func() bool { return calls.Load() > before })

	// A burst of changes ends with the last one reflected and announced.
	for i := range 5 {
		writeFile(t, dir, fmt.Sprintf("burst-%d.yaml", i),
			fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: burst-%d, namespace: nsa}\n", i))
	}
	waitFor(t, "burst reflected", has("burst-4"))
	if err := os.Remove(filepath.Join(dir, "burst-0.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "removed file reflected", func() bool { return !has("burst-0")() })
	if overlapped.Load() != 0 {
		t.Error("changed() was called concurrently")
	}

	// A rewrite that leaves the state as it was announces nothing.
	time.Sleep(time.Second) // let pending announcements settle
	before = calls.Load()
	writeFile(t, dir, "b2.yaml", podB) // duplicate: reported, state unchanged
	waitFor(t, "duplicate reported", func() bool { return len(s.Errors()) == 1 })
	time.Sleep(time.Second)
	if got := calls.Load(); got != before {
		t.Errorf("changed() called %d times for a change that left the state alone", got-before)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2 s of ctx cancel")
	}
}
