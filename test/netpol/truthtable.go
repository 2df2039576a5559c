package netpol

import (
	"fmt"
	"strings"
)

// TruthTable is an n×m table of booleans over ordered pairs (from, to), as
// upstream truthtable.go: rows are clients, columns are servers. A cell may be
// unset.
type TruthTable struct {
	Froms  []string
	Tos    []string
	toSet  map[string]bool
	Values map[string]map[string]bool
}

// NewTruthTableFromItems returns a square table over items, every cell set to
// *defaultValue, or unset when defaultValue is nil.
func NewTruthTableFromItems(items []string, defaultValue *bool) *TruthTable {
	return NewTruthTable(items, items, defaultValue)
}

// NewTruthTable returns a froms×tos table, every cell set to *defaultValue, or
// unset when defaultValue is nil.
func NewTruthTable(froms, tos []string, defaultValue *bool) *TruthTable {
	values := make(map[string]map[string]bool, len(froms))
	for _, from := range froms {
		values[from] = make(map[string]bool, len(tos))
		if defaultValue != nil {
			for _, to := range tos {
				values[from][to] = *defaultValue
			}
		}
	}
	toSet := make(map[string]bool, len(tos))
	for _, to := range tos {
		toSet[to] = true
	}
	return &TruthTable{Froms: froms, Tos: tos, toSet: toSet, Values: values}
}

// IsComplete reports whether every cell is set.
func (tt *TruthTable) IsComplete() bool {
	for _, from := range tt.Froms {
		for _, to := range tt.Tos {
			if _, ok := tt.Values[from][to]; !ok {
				return false
			}
		}
	}
	return true
}

// Set sets the cell from→to.
func (tt *TruthTable) Set(from, to string, value bool) error {
	dict, ok := tt.Values[from]
	if !ok {
		return fmt.Errorf("from-key %s not found", from)
	}
	if !tt.toSet[to] {
		return fmt.Errorf("to-key %s not found", to)
	}
	dict[to] = value
	return nil
}

// SetAllFrom sets the whole row of from.
func (tt *TruthTable) SetAllFrom(from string, value bool) error {
	dict, ok := tt.Values[from]
	if !ok {
		return fmt.Errorf("from-key %s not found", from)
	}
	for _, to := range tt.Tos {
		dict[to] = value
	}
	return nil
}

// SetAllTo sets the whole column of to.
func (tt *TruthTable) SetAllTo(to string, value bool) error {
	if !tt.toSet[to] {
		return fmt.Errorf("to-key %s not found", to)
	}
	for _, from := range tt.Froms {
		tt.Values[from][to] = value
	}
	return nil
}

// Get returns the cell from→to and whether it is set.
func (tt *TruthTable) Get(from, to string) (value, ok bool) {
	value, ok = tt.Values[from][to]
	return value, ok
}

// Compare returns a table of the same items whose cells are true where tt and
// other agree. A cell unset in either table stays unset.
func (tt *TruthTable) Compare(other *TruthTable) (*TruthTable, error) {
	if len(tt.Froms) != len(other.Froms) || len(tt.Tos) != len(other.Tos) {
		return nil, fmt.Errorf("cannot compare tables of different dimensions (%dx%d vs %dx%d)",
			len(tt.Froms), len(tt.Tos), len(other.Froms), len(other.Tos))
	}
	for i, from := range tt.Froms {
		if other.Froms[i] != from {
			return nil, fmt.Errorf("cannot compare: from keys at index %d do not match (%s vs %s)", i, other.Froms[i], from)
		}
	}
	for i, to := range tt.Tos {
		if other.Tos[i] != to {
			return nil, fmt.Errorf("cannot compare: to keys at index %d do not match (%s vs %s)", i, other.Tos[i], to)
		}
	}
	out := NewTruthTable(tt.Froms, tt.Tos, nil)
	for _, from := range tt.Froms {
		for _, to := range tt.Tos {
			a, aok := tt.Get(from, to)
			b, bok := other.Get(from, to)
			if aok && bok {
				out.Values[from][to] = a == b
			}
		}
	}
	return out, nil
}

// PrettyPrint renders the table as upstream does: a header row, then one row
// per from, tab-separated, "." for true (connected), "X" for false (blocked)
// and "?" for unset.
func (tt *TruthTable) PrettyPrint(indent string) string {
	var b strings.Builder
	b.WriteString(indent)
	b.WriteString(strings.Join(append([]string{"-"}, tt.Tos...), "\t"))
	for _, from := range tt.Froms {
		b.WriteString("\n")
		b.WriteString(indent)
		b.WriteString(from)
		for _, to := range tt.Tos {
			mark := "?"
			if val, ok := tt.Get(from, to); ok {
				mark = "X"
				if val {
					mark = "."
				}
			}
			b.WriteString("\t")
			b.WriteString(mark)
		}
	}
	return b.String()
}
