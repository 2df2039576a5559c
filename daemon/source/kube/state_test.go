package kube

import (
	"slices"
	"testing"

	"github.com/podwall/podwall/daemon/policy"
)

func TestObjectSetKeepsOrder(t *testing.T) {
	pod := func(ns, name, label string) *policy.Pod {
		return &policy.Pod{Namespace: ns, Name: name, Labels: map[string]string{"v": label}}
	}
	type op struct {
		put    *policy.Pod // nil: remove
		remove string
	}
	cases := []struct {
		name string
		ops  []op
		want []string // namespace/name=label, in order
	}{
		{"inserts in any order", []op{
			{put: pod("nsb", "a", "1")}, {put: pod("nsa", "b", "1")}, {put: pod("nsa", "a", "1")}, {put: pod("nsa-x", "a", "1")},
		}, []string{"nsa/a=1", "nsa/b=1", "nsa-x/a=1", "nsb/a=1"}},
		{"replace keeps the position", []op{
			{put: pod("nsa", "a", "1")}, {put: pod("nsa", "b", "1")}, {put: pod("nsa", "a", "2")},
		}, []string{"nsa/a=2", "nsa/b=1"}},
		{"remove", []op{
			{put: pod("nsa", "a", "1")}, {put: pod("nsa", "b", "1")}, {put: pod("nsa", "c", "1")},
			{remove: "nsa/b"}, {remove: "nsa/unknown"},
		}, []string{"nsa/a=1", "nsa/c=1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			set := newObjectSet(comparePods)
			var published [][]*policy.Pod
			for _, o := range c.ops {
				if o.put != nil {
					set.put(o.put.Key(), o.put)
				} else {
					set.remove(o.remove)
				}
				published = append(published, set.publish())
			}
			var got []string
			for _, p := range published[len(published)-1] {
				got = append(got, p.Key()+"="+p.Labels["v"])
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
			if len(set.byKey) != len(c.want) {
				t.Errorf("%d objects by key, want %d", len(set.byKey), len(c.want))
			}
			// Earlier publications are not changed by later operations.
			if len(published) > 1 && len(published[0]) != 1 {
				t.Errorf("first publication changed: %d objects", len(published[0]))
			}
		})
	}
}
