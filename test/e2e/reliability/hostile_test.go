package reliability

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/test/bed"
	"github.com/podwall/podwall/test/harness"
)

// TestMalformedManifest writes broken manifests next to good ones: a file
// whose second document is a NetworkPolicy the API would reject, one with a
// YAML syntax error, one with a field the API does not know, and binary
// garbage. Each is reported in the daemon's log on a line naming the file
// and the object (or the document, when no object could be read), and in
// podwallctl status; nothing of a broken file is applied, not even its good
// documents (the probe pair shows it); the daemon keeps running; fixing the
// file applies it.
func TestMalformedManifest(t *testing.T) {
	t.Parallel()
	m := newModel()
	m.namespaces["rl-b"] = map[string]string{}
	for _, p := range []struct{ name, role string }{{"server", "server"}, {"client", "client"}} {
		m.pods[podKey("rl-b", p.name)] = &modelPod{namespace: "rl-b", name: p.name, labels: labelsOf("role", p.role), ports: []int32{80}}
	}
	n := newNode(t, nodeOptions{name: "rlbad", subnet: 8, cluster: m})
	ctx := t.Context()
	names := sortedKeys(m.pods)
	pods, err := n.bed.AddPods(ctx, names, bed.ServePort{Protocol: bed.TCP, Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range names {
		m.pods[k].attached = pods[i]
	}
	client, server := pods[0], pods[1]
	waitExact(t, n, m)
	pid := n.daemon.PID()

	denyAll := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: rl-b}
spec: {podSelector: {}}
`
	tests := []struct {
		name, file, content string
		// logged must all appear on one WARN line of the log.
		logged []string
	}{
		{"invalid policy", "np-rl-b.yaml", denyAll + `---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: broken-cidr, namespace: rl-b}
spec:
  podSelector: {}
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/33}}]}]
`, []string{"np-rl-b.yaml", "NetworkPolicy rl-b/broken-cidr"}},
		{"syntax error", "np-syntax.yaml", denyAll + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: [oops\n", []string{"np-syntax.yaml", "document 2"}},
		{"unknown field", "np-field.yaml", denyAll + "---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: rl-b}\nspec: {containerz: []}\n", []string{"np-field.yaml", "document 2", "containerz"}},
		{"binary garbage", "np-garbage.json", "\x00\x01\x02\xff{{{\x7f", []string{"np-garbage.json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := n.daemon.WriteManifest(tc.file, tc.content); err != nil {
				t.Fatal(err)
			}
			err := harness.Poll(ctx, 10*time.Second, 200*time.Millisecond, func() error {
				for line := range strings.Lines(n.daemon.Log()) {
					if !strings.Contains(line, "level=WARN") {
						continue
					}
					all := true
					for _, w := range tc.logged {
						all = all && strings.Contains(line, w)
					}
					if all {
						return nil
					}
				}
				return fmt.Errorf("no warning naming %q", tc.logged)
			})
			if err != nil {
				t.Errorf("%v; warnings:\n%s", err, n.logExcerpt("WARN", 10))
			}
			if out, err := n.daemon.Ctl(ctx, "status"); err != nil || !strings.Contains(out, tc.file) {
				t.Errorf("podwallctl status does not name %s (%v):\n%s", tc.file, err, out)
			}
			// The file's good deny-all document is not applied.
			expectProbe(t, client, server, true)
			waitExact(t, n, m)
			if err := n.daemon.RemoveManifest(tc.file); err != nil {
				t.Fatal(err)
			}
		})
	}
	// Fixing the file applies it: now the deny-all is in force.
	if err := n.daemon.WriteManifest("np-rl-b.yaml", denyAll); err != nil {
		t.Fatal(err)
	}
	m.policies["rl-b"] = []*networkingv1.NetworkPolicy{ingressPolicy("rl-b", "deny-all", selector(), nil)}
	waitExact(t, n, m)
	expectProbe(t, client, server, false)
	if got := n.daemon.PID(); got != pid {
		t.Errorf("podwalld restarted (PID %d, was %d)", got, pid)
	}
	if e := n.logLines("ERROR"); e > 0 {
		t.Errorf("%d ERROR lines in the daemon's log:\n%s", e, n.logExcerpt("ERROR", 10))
	}
}

// TestFuzzSeedCorpora: every Go fuzz target in the module has a seed corpus
// (f.Add calls or a testdata/fuzz/<Target> directory), so `go test` replays
// it on every run; inputs a fuzzing run found live in testdata/fuzz and are
// replayed the same way. test/fuzz.sh runs each target for a bounded time
// in `make test`.
func TestFuzzSeedCorpora(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("git", "-C", root, "ls-files", "*_test.go").Output()
	if err != nil {
		t.Skipf("git ls-files: %v", err)
	}
	targets := 0
	for _, file := range strings.Fields(string(out)) {
		path := filepath.Join(root, file)
		src, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(src), "func Fuzz") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, src, 0)
		if err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || !strings.HasPrefix(fn.Name.Name, "Fuzz") || fn.Recv != nil {
				continue
			}
			targets++
			seeds := 0
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				if call, ok := n.(*ast.CallExpr); ok {
					if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Add" {
						seeds++
					}
				}
				return true
			})
			corpus := filepath.Join(filepath.Dir(path), "testdata", "fuzz", fn.Name.Name)
			found, _ := os.ReadDir(corpus)
			if seeds == 0 && len(found) == 0 {
				t.Errorf("%s: %s has no seed corpus (no f.Add, nothing in %s)", file, fn.Name.Name, corpus)
			}
			t.Logf("%s %s: %d f.Add calls, %d committed inputs in testdata/fuzz", file, fn.Name.Name, seeds, len(found))
		}
	}
	if targets == 0 {
		t.Error("no fuzz targets found")
	}
}
