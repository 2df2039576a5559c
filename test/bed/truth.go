package bed

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
)

// cell is one entry of a Truth.
type cell uint8

const (
	unset     cell = iota // never set or not probed
	connected             // .
	blocked               // X
	mixed                 // ! observed: the address families disagreed
)

func cellOf(connectedValue bool) cell {
	if connectedValue {
		return connected
	}
	return blocked
}

func (c cell) mark() string {
	switch c {
	case connected:
		return "."
	case blocked:
		return "X"
	case mixed:
		return "!"
	}
	return "?"
}

// Truth is a reachability truth table over pods named "namespace/name", as in
// upstream's netpol e2e tests: rows are clients (from), columns are servers
// (to). Mutators apply in order, later calls win. A name the table does not
// know is recorded as an error (see Err) and makes every comparison fail,
// rather than being silently ignored. Its methods are safe for concurrent use.
type Truth struct {
	Items []string

	mu    sync.Mutex
	index map[string]bool
	cells map[string]map[string]cell
	errs  []error
}

// Peer selects pods of a Truth by namespace and pod name; an empty field
// matches everything.
type Peer struct {
	Namespace string
	Pod       string
}

func (p Peer) matches(item string) bool {
	ns, pod, _ := strings.Cut(item, "/")
	return (p.Namespace == "" || p.Namespace == ns) && (p.Pod == "" || p.Pod == pod)
}

// NewTruth returns a table over items with every cell (loopback included)
// set to connected.
func NewTruth(items []string, connectedValue bool) *Truth {
	t := newTruth(items)
	for _, from := range t.Items {
		for _, to := range t.Items {
			t.cells[from][to] = cellOf(connectedValue)
		}
	}
	return t
}

// newTruth returns a table over items with every cell unset.
func newTruth(items []string) *Truth {
	t := &Truth{
		Items: append([]string(nil), items...),
		index: map[string]bool{},
		cells: map[string]map[string]cell{},
	}
	for _, it := range items {
		if t.index[it] {
			t.errs = append(t.errs, fmt.Errorf("truth table: duplicate item %q", it))
		}
		t.index[it] = true
		t.cells[it] = map[string]cell{}
	}
	return t
}

func (t *Truth) known(op, item string) bool {
	if t.index[item] {
		return true
	}
	t.errs = append(t.errs, fmt.Errorf("truth table %s: unknown item %q", op, item))
	return false
}

// Expect sets one cell.
func (t *Truth) Expect(from, to string, connectedValue bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.known("Expect", from) && t.known("Expect", to) {
		t.cells[from][to] = cellOf(connectedValue)
	}
}

// ExpectAllIngress sets the column of to: everything into to.
func (t *Truth) ExpectAllIngress(to string, connectedValue bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.known("ExpectAllIngress", to) {
		return
	}
	for _, from := range t.Items {
		t.cells[from][to] = cellOf(connectedValue)
	}
}

// ExpectAllEgress sets the row of from: everything out of from.
func (t *Truth) ExpectAllEgress(from string, connectedValue bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.known("ExpectAllEgress", from) {
		return
	}
	for _, to := range t.Items {
		t.cells[from][to] = cellOf(connectedValue)
	}
}

// ExpectPeer sets every cell whose client matches from and whose server
// matches to, e.g. ExpectPeer(Peer{}, Peer{Namespace: "x"}, false) means
// everything into namespace x is blocked.
func (t *Truth) ExpectPeer(from, to Peer, connectedValue bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.Items {
		for _, d := range t.Items {
			if from.matches(f) && to.matches(d) {
				t.cells[f][d] = cellOf(connectedValue)
			}
		}
	}
}

// AllowLoopback sets the diagonal to connected.
func (t *Truth) AllowLoopback() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, it := range t.Items {
		t.cells[it][it] = connected
	}
}

// Get returns a cell: whether it is connected, and whether it is set to a
// single value (false for unknown, unset and mixed cells).
func (t *Truth) Get(from, to string) (connectedValue, set bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch t.cells[from][to] {
	case connected:
		return true, true
	case blocked:
		return false, true
	}
	return false, false
}

// Mark returns the cell's mark: "." connected, "X" blocked, "?" not set or not
// probed, "!" observed with the address families disagreeing.
func (t *Truth) Mark(from, to string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cells[from][to].mark()
}

func (t *Truth) set(from, to string, c cell) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cells[from][to] = c
}

func (t *Truth) addErr(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.errs = append(t.errs, err)
}

// Err returns the table's errors joined: unknown or duplicate items, and for
// observed tables, probes that could not be run.
func (t *Truth) Err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return errors.Join(t.errs...)
}

// PrettyPrint renders the table as upstream does: a header row of servers,
// then one row per client, "." connected, "X" blocked, "?" not set (and "!"
// where an observation's address families disagreed), tab-aligned.
func (t *Truth) PrettyPrint() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var sb strings.Builder
	w := tabwriter.NewWriter(&sb, 0, 0, 1, ' ', 0)
	fmt.Fprintf(w, "-\t%s\t\n", strings.Join(t.Items, "\t"))
	for _, from := range t.Items {
		marks := make([]string, len(t.Items))
		for i, to := range t.Items {
			marks[i] = t.cells[from][to].mark()
		}
		fmt.Fprintf(w, "%s\t%s\t\n", from, strings.Join(marks, "\t"))
	}
	w.Flush()
	lines := strings.Split(sb.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// Compare returns a table over t's items whose cells are connected (".")
// where t and other agree and blocked ("X") where they differ. Loopback cells
// are ignored (always "."); a cell unset or mixed on either side differs.
func (t *Truth) Compare(other *Truth) *Truth {
	out := newTruth(t.Items)
	if other == nil {
		other = newTruth(nil)
	}
	for _, from := range t.Items {
		for _, to := range t.Items {
			if from == to {
				out.cells[from][to] = connected
				continue
			}
			out.cells[from][to] = cellOf(agree(t.cellAt(from, to), other.cellAt(from, to)))
		}
	}
	return out
}

func agree(a, b cell) bool {
	return a == b && (a == connected || a == blocked)
}

func (t *Truth) cellAt(from, to string) cell {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cells[from][to]
}

// Mismatches lists, for t as the expectation, every non-loopback cell where
// observed differs ("x/a -> y/b: expected X, observed ."), followed by the
// errors of both tables. Empty means they agree.
func (t *Truth) Mismatches(observed *Truth) []string {
	if observed == nil {
		return []string{"no observed table"}
	}
	var out []string
	for _, from := range t.Items {
		for _, to := range t.Items {
			if from == to {
				continue
			}
			want, got := t.cellAt(from, to), observed.cellAt(from, to)
			if !agree(want, got) {
				out = append(out, fmt.Sprintf("%s -> %s: expected %s, observed %s", from, to, want.mark(), got.mark()))
			}
		}
	}
	for _, tt := range []*Truth{t, observed} {
		if err := tt.Err(); err != nil {
			out = append(out, err.Error())
		}
	}
	return out
}
