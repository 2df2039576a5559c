package bed

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// checkGolden compares got with testdata/<name>, or rewrites it with -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs:\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

var xyz = []string{"x/a", "x/b", "y/a", "y/b"}

func TestTruthPrettyPrint(t *testing.T) {
	tt := NewTruth(xyz, true)
	tt.ExpectPeer(Peer{}, Peer{Namespace: "y"}, false) // everything into y blocked
	tt.Expect("y/b", "y/a", true)
	tt.set("x/b", "x/a", unset)
	tt.set("x/a", "y/b", mixed)
	checkGolden(t, "truth.golden", tt.PrettyPrint())
}

func TestTruthMutators(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Truth)
		want []string // the rows' marks, in Items order
	}{
		{
			name: "all connected",
			edit: func(*Truth) {},
			want: []string{"....", "....", "....", "...."},
		},
		{
			name: "one cell",
			edit: func(t *Truth) { t.Expect("x/a", "y/b", false) },
			want: []string{"...X", "....", "....", "...."},
		},
		{
			name: "ingress column",
			edit: func(t *Truth) { t.ExpectAllIngress("x/b", false) },
			want: []string{".X..", ".X..", ".X..", ".X.."},
		},
		{
			name: "egress row",
			edit: func(t *Truth) { t.ExpectAllEgress("y/a", false) },
			want: []string{"....", "....", "XXXX", "...."},
		},
		{
			name: "later calls win",
			edit: func(t *Truth) {
				t.ExpectAllEgress("y/a", false)
				t.ExpectAllIngress("y/a", true)
			},
			want: []string{"....", "....", "XX.X", "...."},
		},
		{
			name: "peer wildcards",
			edit: func(t *Truth) {
				t.ExpectPeer(Peer{Namespace: "x"}, Peer{Pod: "b"}, false)
			},
			want: []string{".X.X", ".X.X", "....", "...."},
		},
		{
			name: "deny all then loopback",
			edit: func(t *Truth) {
				t.ExpectPeer(Peer{}, Peer{}, false)
				t.AllowLoopback()
			},
			want: []string{".XXX", "X.XX", "XX.X", "XXX."},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tt := NewTruth(xyz, true)
			tc.edit(tt)
			var got []string
			for _, from := range xyz {
				var row strings.Builder
				for _, to := range xyz {
					row.WriteString(tt.Mark(from, to))
				}
				got = append(got, row.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("rows %q, want %q", got, tc.want)
			}
			if err := tt.Err(); err != nil {
				t.Errorf("Err: %v", err)
			}
		})
	}
}

func TestTruthCompare(t *testing.T) {
	want := NewTruth(xyz, true)
	want.ExpectAllIngress("y/a", false)

	observed := newTruth(xyz)
	for _, from := range xyz {
		for _, to := range xyz {
			if from == to {
				continue // loopback is not probed
			}
			observed.set(from, to, cellOf(to != "y/a"))
		}
	}
	if m := want.Mismatches(observed); len(m) != 0 {
		t.Errorf("Mismatches of equal tables: %q", m)
	}
	if got := want.Compare(observed).PrettyPrint(); strings.Contains(got, "X") {
		t.Errorf("Compare of equal tables has X:\n%s", got)
	}

	observed.set("x/a", "y/a", connected) // a leak
	observed.set("x/b", "y/b", mixed)     // families disagree
	observed.set("y/b", "x/a", unset)     // not probed
	m := want.Mismatches(observed)
	wantM := []string{
		"x/a -> y/a: expected X, observed .",
		"x/b -> y/b: expected ., observed !",
		"y/b -> x/a: expected ., observed ?",
	}
	if !slices.Equal(m, wantM) {
		t.Errorf("Mismatches = %q, want %q", m, wantM)
	}
	cmp := want.Compare(observed)
	for _, c := range [][2]string{{"x/a", "y/a"}, {"x/b", "y/b"}, {"y/b", "x/a"}} {
		if got := cmp.Mark(c[0], c[1]); got != "X" {
			t.Errorf("Compare %s -> %s = %s, want X", c[0], c[1], got)
		}
	}
	if got := cmp.Mark("x/b", "x/a"); got != "." {
		t.Errorf("Compare x/b -> x/a = %s, want .", got)
	}
	if m := want.Mismatches(nil); len(m) != 1 {
		t.Errorf("Mismatches(nil) = %q, want one entry", m)
	}
}

func TestTruthUnknownItems(t *testing.T) {
	tt := NewTruth(xyz, true)
	tt.Expect("x/a", "z/a", false)
	tt.ExpectAllIngress("z/z", false)
	tt.ExpectAllEgress("", false)
	err := tt.Err()
	if err == nil {
		t.Fatal("no error for unknown items")
	}
	for _, name := range []string{`"z/a"`, `"z/z"`, `""`} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	// An expectation with a typo can never pass.
	if m := tt.Mismatches(NewTruth(xyz, true)); len(m) == 0 {
		t.Error("Mismatches empty although the expectation has errors")
	}
	if err := NewTruth([]string{"x/a", "x/a"}, true).Err(); err == nil {
		t.Error("no error for a duplicate item")
	}
}
