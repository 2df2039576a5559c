package netpol

import (
	"strings"
	"testing"
)

var (
	xa, xb, ya, yb = Ref("x", "a"), Ref("x", "b"), Ref("y", "a"), Ref("y", "b")
	fourPods       = []PodRef{xa, xb, ya, yb}
)

func TestReachabilityExpectations(t *testing.T) {
	tests := []struct {
		name  string
		apply func(r *Reachability)
		// want is the expected table, one row per client, "." connected
		// and "X" blocked, columns in fourPods order.
		want []string
	}{
		{
			name:  "all allowed by default",
			apply: func(*Reachability) {},
			want:  []string{"....", "....", "....", "...."},
		},
		{
			name:  "everything into namespace x denied",
			apply: func(r *Reachability) { r.ExpectPeer(&Peer{}, &Peer{Namespace: "x"}, false) },
			want:  []string{"XX..", "XX..", "XX..", "XX.."},
		},
		{
			name:  "everything out of namespace x denied",
			apply: func(r *Reachability) { r.ExpectPeer(&Peer{Namespace: "x"}, &Peer{}, false) },
			want:  []string{"XXXX", "XXXX", "....", "...."},
		},
		{
			name:  "pod wildcard across namespaces",
			apply: func(r *Reachability) { r.ExpectPeer(&Peer{}, &Peer{Pod: "a"}, false) },
			want:  []string{"X.X.", "X.X.", "X.X.", "X.X."},
		},
		{
			name: "ingress column, then one cell back: later calls win",
			apply: func(r *Reachability) {
				r.ExpectAllIngress(xa, false)
				r.Expect(xb, xa, true)
			},
			want: []string{"X...", "....", "X...", "X..."},
		},
		{
			name: "egress row, then the whole row back",
			apply: func(r *Reachability) {
				r.ExpectAllEgress(ya, false)
				r.ExpectPeer(&Peer{Namespace: "y", Pod: "a"}, &Peer{Namespace: "x"}, true)
			},
			want: []string{"....", "....", "..XX", "...."},
		},
		{
			name: "allow loopback after deny all",
			apply: func(r *Reachability) {
				r.ExpectPeer(&Peer{}, &Peer{}, false)
				r.AllowLoopback()
			},
			want: []string{".XXX", "X.XX", "XX.X", "XXX."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReachability(fourPods, true)
			tt.apply(r)
			if err := r.Err(); err != nil {
				t.Fatal(err)
			}
			for i, from := range fourPods {
				var row strings.Builder
				for _, to := range fourPods {
					v, ok := r.Expected.Get(from.String(), to.String())
					switch {
					case !ok:
						row.WriteString("?")
					case v:
						row.WriteString(".")
					default:
						row.WriteString("X")
					}
				}
				if row.String() != tt.want[i] {
					t.Errorf("row %s = %s, want %s", from, row.String(), tt.want[i])
				}
			}
		})
	}
}

func TestReachabilityUnknownPodIsAnError(t *testing.T) {
	tests := []struct {
		name  string
		apply func(r *Reachability)
	}{
		{"expect from", func(r *Reachability) { r.Expect(Ref("q", "a"), xa, false) }},
		{"expect to", func(r *Reachability) { r.Expect(xa, Ref("q", "a"), false) }},
		{"all ingress", func(r *Reachability) { r.ExpectAllIngress(Ref("x", "q"), false) }},
		{"all egress", func(r *Reachability) { r.ExpectAllEgress(Ref("x", "q"), false) }},
		{"observe", func(r *Reachability) { r.Observe(xa, Ref("x", "q"), false) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReachability(fourPods, true)
			tt.apply(r)
			if r.Err() == nil {
				t.Fatal("no error for a pod outside the matrix")
			}
			// A Peer that matches nothing is not an error: it sets nothing.
			r2 := NewReachability(fourPods, true)
			r2.ExpectPeer(&Peer{Namespace: "q"}, &Peer{}, false)
			if r2.Err() != nil {
				t.Fatal(r2.Err())
			}
		})
	}
}

func TestSummaryIgnoresLoopbackOnly(t *testing.T) {
	r := NewReachability([]PodRef{xa, xb}, true)
	r.Expect(xa, xb, false)
	r.Observe(xa, xb, false) // right
	r.Observe(xb, xa, false) // wrong
	// loopback cells not observed: ignored, not wrong.
	right, wrong, ignored, comparison, err := r.Summary(true)
	if err != nil {
		t.Fatal(err)
	}
	if right != 1 || wrong != 1 || ignored != 2 {
		t.Errorf("Summary = right %d, wrong %d, ignored %d; want 1, 1, 2", right, wrong, ignored)
	}
	want := "-\tx/a\tx/b\nx/a\t?\t.\nx/b\tX\t?"
	if got := comparison.PrettyPrint(""); got != want {
		t.Errorf("comparison:\n%s\nwant:\n%s", got, want)
	}
	// Without ignoring loopback, unobserved loopback cells count as wrong.
	if _, wrong, _, _, _ := r.Summary(false); wrong != 3 {
		t.Errorf("Summary(false) wrong = %d, want 3", wrong)
	}
}

func TestPrettyPrint(t *testing.T) {
	yes, no := true, false
	tt := NewTruthTable([]string{"x/a", "x/b"}, []string{"y/a", "y/b", "y/c"}, &yes)
	if err := tt.Set("x/b", "y/c", no); err != nil {
		t.Fatal(err)
	}
	delete(tt.Values["x/a"], "y/b")
	want := "  -\ty/a\ty/b\ty/c\n  x/a\t.\t?\t.\n  x/b\t.\t.\tX"
	if got := tt.PrettyPrint("  "); got != want {
		t.Errorf("PrettyPrint:\n%q\nwant\n%q", got, want)
	}
	if tt.IsComplete() {
		t.Error("IsComplete with an unset cell")
	}
}

func TestCompareRejectsDifferentItems(t *testing.T) {
	yes := true
	a := NewTruthTableFromItems([]string{"x/a", "x/b"}, &yes)
	for _, other := range []*TruthTable{
		NewTruthTableFromItems([]string{"x/a"}, &yes),
		NewTruthTableFromItems([]string{"x/a", "x/c"}, &yes),
		NewTruthTable([]string{"x/b", "x/a"}, []string{"x/a", "x/b"}, &yes),
	} {
		if _, err := a.Compare(other); err == nil {
			t.Errorf("Compare with %v: no error", other.Froms)
		}
	}
}
