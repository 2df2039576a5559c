package policy

import "testing"

func TestChangedWindow(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		old, now              []int
		start, oldEnd, newEnd int
	}{
		{"same", []int{1, 2, 3}, []int{1, 2, 3}, 3, 3, 3},
		{"both empty", nil, nil, 0, 0, 0},
		{"one replaced", []int{1, 2, 3}, []int{1, 9, 3}, 1, 2, 2},
		{"one inserted", []int{1, 2, 3}, []int{1, 2, 9, 3}, 2, 2, 3},
		{"one removed", []int{1, 2, 3}, []int{1, 3}, 1, 2, 1},
		{"appended", []int{1, 2}, []int{1, 2, 3, 4}, 2, 2, 4},
		{"all new", []int{1, 2}, []int{3, 4, 5}, 0, 2, 3},
		{"repeats stay inside both lists", []int{1, 1, 1}, []int{1, 1}, 2, 3, 2},
		{"two apart", []int{1, 2, 3, 4, 5}, []int{1, 9, 3, 8, 5}, 1, 4, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start, oldEnd, newEnd := ChangedWindow(tc.old, tc.now)
			if start != tc.start || oldEnd != tc.oldEnd || newEnd != tc.newEnd {
				t.Errorf("ChangedWindow(%v, %v) = %d, %d, %d; want %d, %d, %d", tc.old, tc.now, start, oldEnd, newEnd, tc.start, tc.oldEnd, tc.newEnd)
			}
		})
	}
}
