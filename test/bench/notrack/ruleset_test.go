package notrack

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestRewrite rewrites a ruleset dataplane.Render produced for BenchSpec
// (testdata/render.v4 and render.v6, kept fixed so that a change of the
// renderer's text does not show here) into each variant and compares the
// result with the variant's golden file.
func TestRewrite(t *testing.T) {
	var input [2]string
	for f, name := range []string{"render.v4", "render.v6"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		input[f] = string(b)
	}
	for _, v := range Variants {
		if v == None {
			continue
		}
		t.Run(string(v), func(t *testing.T) {
			var got strings.Builder
			for f, family := range []string{"v4", "v6"} {
				out, err := rewrite(v, f, input[f])
				if err != nil {
					t.Fatal(err)
				}
				got.WriteString("# " + family + "\n" + out)
			}
			golden := filepath.Join("testdata", string(v)+".rules")
			if *update {
				if err := os.WriteFile(golden, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != string(want) {
				t.Errorf("%s differs from %s (go test -update rewrites it):\n%s", v, golden, got.String())
			}
		})
	}
}

// TestRenderVariantErrors checks RenderVariant on what dataplane.Render
// produces today: each variant has the rules it stands for in both chains,
// and input it cannot rewrite is an error.
func TestRenderVariantErrors(t *testing.T) {
	spec := SemanticSpec(netip.MustParseAddr("10.218.1.3"), netip.MustParseAddr("10.218.1.5"))
	if _, err := RenderVariant("stateless", spec, 1); err == nil || !strings.Contains(err.Error(), "unknown variant") {
		t.Errorf("unknown variant: err = %v", err)
	}
	// A renderer that no longer accepts RELATED,ESTABLISHED in its chains
	// cannot be rewritten: say so instead of producing a ruleset without the
	// stateless rules.
	if _, err := rewrite(NoTrack, 0, "*filter\n:PODWALL-INGRESS - [0:0]\n-A PODWALL-INGRESS -j DROP\nCOMMIT\n"); err == nil {
		t.Error("rewrite of a ruleset without the conntrack rule: no error")
	}
	for _, v := range Variants {
		rs, err := RenderVariant(v, spec, 1)
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		if v == None {
			if rs.V4 != "" || rs.V6 != "" || len(rs.Sets) != 0 {
				t.Errorf("none: %+v, want nothing", rs)
			}
			continue
		}
		// Both chains of the semantic spec are rewritten.
		for _, chain := range []string{"PODWALL-INGRESS", "PODWALL-EGRESS"} {
			syn := strings.Contains(rs.V4, "-A "+chain+" -p tcp ! --syn")
			if syn != (v != Podwall) {
				t.Errorf("%s: %s has a non-SYN accept: %t", v, chain, syn)
			}
		}
		if raw := strings.Contains(rs.V4, "*raw"); raw != (v != Podwall && v != NoConntrack) {
			t.Errorf("%s: raw table: %t", v, raw)
		}
		if ct := strings.Contains(rs.V4, "conntrack"); ct != (v != NoConntrack) {
			t.Errorf("%s: conntrack match: %t", v, ct)
		}
	}
}

func TestParseWrk(t *testing.T) {
	out, err := os.ReadFile("testdata/wrk-close.txt")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseWrk(string(out))
	if err != nil {
		t.Fatal(err)
	}
	want := WrkReport{Requests: 18764, QPS: 9337.64, P50: 506_000, P99: 4_610_000, Errors: 12}
	if r != want {
		t.Errorf("ParseWrk = %+v, want %+v", r, want)
	}
	if _, err := ParseWrk("Running 2s test\n"); err == nil {
		t.Error("ParseWrk of a report without figures: no error")
	}
}
