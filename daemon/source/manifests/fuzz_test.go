package manifests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/podwall/podwall/daemon/policy"
)

// FuzzParseFile feeds arbitrary bytes to the manifest parser: it must never
// panic, every object it accepts must have a name, and every policy it
// accepts must pass validation and compile.
func FuzzParseFile(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/seed/*.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}]}`))
	f.Add([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: 80, name: web}]}]}\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objects, errs := parseFile("fuzz.yaml", data)
		if len(errs) > 0 && len(objects) > 0 {
			t.Fatalf("a broken file must contribute nothing, got %d objects and %d errors", len(objects), len(errs))
		}
		state := &policy.State{}
		for _, o := range objects {
			switch {
			case o.ns != nil:
				if o.ns.Name == "" {
					t.Fatal("accepted a namespace without a name")
				}
				state.Namespaces = append(state.Namespaces, o.ns)
			case o.pod != nil:
				if o.pod.Name == "" {
					t.Fatal("accepted a pod without a name")
				}
				state.Pods = append(state.Pods, o.pod)
			case o.np != nil:
				if err := policy.Validate(o.np); err != nil {
					t.Fatalf("accepted an invalid policy: %v", err)
				}
				state.Policies = append(state.Policies, o.np)
			}
		}
		var local []policy.LocalPod
		for _, p := range state.Pods {
			local = append(local, policy.LocalPod{Key: p.Key(), Pod: p})
		}
		res := policy.Compile(state, local)
		if len(res.Problems) > 0 {
			t.Fatalf("validated policies compiled with problems: %v", res.Problems)
		}
	})
}
