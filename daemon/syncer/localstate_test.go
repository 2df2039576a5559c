package syncer

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/policy"
)

// mergedOf returns the local pod localState gives for each attachment key.
func mergedOf(locals []policy.LocalPod) map[string]*policy.Pod {
	out := make(map[string]*policy.Pod, len(locals))
	for _, lp := range locals {
		out[lp.Key] = lp.Pod
	}
	return out
}

// TestLocalStateReusesMergedPods changes one input of localState at a time
// and checks which merged local pods are new pointers: exactly those whose
// source pod, looked up pod, attachments or node name changed. A sync that
// changes nothing hands the compiler the same pods.
func TestLocalStateReusesMergedPods(t *testing.T) {
	second := attachmentFor("web", "10.1.0.11") // a second attachment of web
	second.ContainerID, second.IfName, second.Netns = "ctr-web", "net1", "/run/netns/pw-syncer-web"
	ghost := attachmentFor("ghost", "10.1.0.40") // unknown to the source
	late := attachmentFor("late", "10.1.0.50")   // only the lookup knows it
	lateLooked := sourcePod("late", map[string]string{"app": "db"})

	for _, tc := range []struct {
		name string
		// change changes one input; the attachments whose merged pod it
		// renews are fresh.
		change func(t *testing.T, tb *testBed)
		fresh  []checkpoint.Attachment
	}{
		{"nothing", func(*testing.T, *testBed) {}, nil},
		{"a remote pod relabelled", func(_ *testing.T, tb *testBed) {
			next := *tb.src.State()
			next.Pods = slices.Clone(next.Pods)
			next.Pods[2] = sourcePod("client", map[string]string{"app": "other"})
			tb.src.setState(&next)
		}, nil},
		{"the source republishes the local pod", func(_ *testing.T, tb *testBed) {
			next := *tb.src.State()
			next.Pods = slices.Clone(next.Pods)
			next.Pods[1] = sourcePod("db", map[string]string{"app": "db"}) // same content, new pointer
			tb.src.setState(&next)
		}, []checkpoint.Attachment{db}},
		{"an attachment replaced by an ADD with another address", func(t *testing.T, tb *testBed) {
			moved := db
			moved.IPs = []string{"10.1.0.21/32"}
			tb.add(t, moved)
		}, []checkpoint.Attachment{db}},
		{"an unknown pod re-added with the same address", func(t *testing.T, tb *testBed) {
			again := ghost
			again.UID, again.Added = "uid-ghost-2", addedAt.Add(time.Minute)
			tb.add(t, again)
		}, []checkpoint.Attachment{ghost}},
		{"a second attachment of a pod goes", func(t *testing.T, tb *testBed) {
			if err := tb.sync.Del(t.Context(), second.Key(), second.Netns); err != nil {
				t.Fatal(err)
			}
		}, []checkpoint.Attachment{web}},
		{"the snapshot catches up with a looked up pod", func(_ *testing.T, tb *testBed) {
			next := *tb.src.State()
			next.Pods = append(slices.Clone(next.Pods), lateLooked)
			tb.src.setState(&next)
		}, []checkpoint.Attachment{late}},
		{"the node name", func(_ *testing.T, tb *testBed) { tb.sync.opts.NodeName = "node-b" },
			[]checkpoint.Attachment{web, second, db, ghost, late}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTestBed(t, shopState(t))
			tb.src.lookupOnly["shop/late"] = lateLooked
			tb.add(t, web, second, db, ghost, late)
			st1, locals1 := tb.sync.State()
			st2, locals2 := tb.sync.State()
			if !slices.Equal(st1.Pods, st2.Pods) || !maps.Equal(mergedOf(locals1), mergedOf(locals2)) {
				t.Fatalf("a second call with nothing changed gave other pods:\n%s\n%s", describePods(st1.Pods), describePods(st2.Pods))
			}
			if unsafe.SliceData(st1.Pods) != unsafe.SliceData(st2.Pods) {
				t.Error("a second call with nothing changed built the pods list again")
			}
			before := mergedOf(locals1)
			if before[web.Key()] != before[second.Key()] {
				t.Fatal("the two attachments of web have different merged pods")
			}
			tc.change(t, tb)
			st, locals := tb.sync.State()
			if same := unsafe.SliceData(st.Pods) == unsafe.SliceData(st2.Pods); same != (tc.name == "nothing") {
				t.Errorf("the pods list is the last call's: %v, want %v", same, tc.name == "nothing")
			}
			after := mergedOf(locals)
			for _, rec := range []checkpoint.Attachment{web, second, db, ghost, late} {
				got, ok := after[rec.Key()]
				if !ok {
					continue // detached
				}
				if renewed, want := got != before[rec.Key()], slices.ContainsFunc(tc.fresh, func(f checkpoint.Attachment) bool {
					return f.Key() == rec.Key()
				}); renewed != want {
					t.Errorf("%s: merged pod renewed = %v, want %v", rec.Key(), renewed, want)
				}
				if !slices.Contains(st.Pods, got) {
					t.Errorf("%s: the merged pod is not in the state's pods", rec.Key())
				}
			}
			checkMerged(t, tb.sync, st, locals)
		})
	}
}

// checkMerged checks the merged local pods against their inputs, read
// afresh: the source's pod (else the looked up pod, else a pod with no
// labels) with every attachment's addresses in key order, running on the
// node.
func checkMerged(t *testing.T, s *Syncer, st *policy.State, locals []policy.LocalPod) {
	t.Helper()
	src := s.opts.Source.State()
	s.mu.Lock()
	atts := make([]*attachment, 0, len(s.atts))
	for _, a := range s.atts {
		atts = append(atts, a)
	}
	s.mu.Unlock()
	slices.SortFunc(atts, func(x, y *attachment) int { return cmp.Compare(x.rec.Key(), y.rec.Key()) })
	merged := mergedOf(locals)
	for _, a := range atts {
		var want policy.Pod
		var fromSource *policy.Pod
		for _, p := range src.Pods {
			if p != nil && p.Namespace == a.rec.Namespace && p.Name == a.rec.Name {
				fromSource = p
			}
		}
		var ips []netip.Addr
		first := true
		for _, b := range atts {
			if b.rec.Namespace != a.rec.Namespace || b.rec.Name != a.rec.Name {
				continue
			}
			if first {
				first = false
				switch {
				case fromSource != nil:
					want = *fromSource
				case b.looked != nil:
					want = *b.looked
				default:
					want = policy.Pod{Namespace: b.rec.Namespace, Name: b.rec.Name, UID: b.rec.UID, Created: metav1.NewTime(b.rec.Added)}
				}
			}
			ips = appendUnique(ips, b.ips...)
		}
		want.IPs, want.NodeName, want.Phase, want.Deleting = ips, s.opts.NodeName, corev1.PodRunning, false
		got := merged[a.rec.Key()]
		if got == nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("%s: merged pod\n got %+v\nwant %+v", a.rec.Key(), got, want)
		}
	}
}

func describePods(pods []*policy.Pod) string {
	s := ""
	for _, p := range pods {
		if p == nil {
			s += " nil"
			continue
		}
		s += fmt.Sprintf(" %s@%p", p.Key(), p)
	}
	return s
}

// TestLocalStateOrder: the state's pods are the source's in its order, each
// local pod in the place of the source's (last) pod of its name, nil
// entries dropped, then the local pods the source does not know, by
// attachment key.
func TestLocalStateOrder(t *testing.T) {
	client := sourcePod("client", map[string]string{"app": "client"})
	webOld := sourcePod("web", map[string]string{"app": "old"})
	webNew := sourcePod("web", map[string]string{"app": "web"})
	other := &policy.Pod{Namespace: "other", Name: "web", UID: "uid-other-web"}
	tb := newTestBed(t, &policy.State{})
	zed, ghost := attachmentFor("zed", "10.1.0.60"), attachmentFor("ghost", "10.1.0.40")
	tb.add(t, web, zed, ghost)
	tb.src.setState(&policy.State{Pods: []*policy.Pod{webOld, nil, client, webNew, other, nil}})
	st, locals := tb.sync.State()
	merged := mergedOf(locals)
	want := []*policy.Pod{client, merged[web.Key()], other, merged[ghost.Key()], merged[zed.Key()]}
	if !slices.Equal(st.Pods, want) {
		t.Fatalf("pods\n got%s\nwant%s", describePods(st.Pods), describePods(want))
	}
	if got := merged[web.Key()].Labels["app"]; got != "web" {
		t.Errorf("web merged from the pod labelled app=%s, want the last one the source lists (app=web)", got)
	}
}

// TestLocalStateFollowsSource is a differential test of where localState
// finds the local pods: random changes to the source's pods (inserted,
// removed, moved, replaced, listed twice, nil entries, the slice modified
// in place) and to the attachments, each checked against the pods
// computed from scratch, and a merged pod whose inputs did not change must
// be the same pointer as before.
func TestLocalStateFollowsSource(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for seed := range 40 {
		rng := rand.New(rand.NewPCG(uint64(seed), 7))
		n := 0
		newPod := func() *policy.Pod {
			n++
			name := names[rng.IntN(len(names))]
			return sourcePod(name, map[string]string{"app": fmt.Sprint(n)})
		}
		var pods []*policy.Pod
		for range rng.IntN(12) {
			pods = append(pods, newPod())
		}
		tb := newTestBed(t, &policy.State{Pods: pods})
		type inputs struct {
			source *policy.Pod
			keys   string
		}
		prev := map[string]inputs{}
		prevPod := map[string]*policy.Pod{}
		for step := range 80 {
			pods := slices.Clone(tb.src.State().Pods)
			var what string
			switch op := rng.IntN(10); op {
			case 9:
				// Two changes far apart: a pod replaced, another
				// inserted or removed.
				if len(pods) > 2 {
					i, j := rng.IntN(len(pods)/2), len(pods)/2+rng.IntN(len(pods)-len(pods)/2)
					pods[i] = newPod()
					if rng.IntN(2) == 0 {
						pods = slices.Insert(pods, j, newPod())
					} else {
						pods = slices.Delete(pods, j, j+1)
					}
					what = fmt.Sprintf("replace %d, insert or delete at %d", i, j)
				}
			case 0:
				i := rng.IntN(len(pods) + 1)
				pods = slices.Insert(pods, i, newPod())
				what = fmt.Sprintf("insert at %d", i)
			case 1:
				if len(pods) > 0 {
					i := rng.IntN(len(pods))
					j := min(len(pods), i+1+rng.IntN(3))
					pods = slices.Delete(pods, i, j)
					what = fmt.Sprintf("delete %d..%d", i, j)
				}
			case 2:
				if len(pods) > 1 {
					i, j := rng.IntN(len(pods)), rng.IntN(len(pods))
					p := pods[i]
					pods = slices.Insert(slices.Delete(pods, i, i+1), j, p)
					what = fmt.Sprintf("move %d to %d", i, j)
				}
			case 3:
				if len(pods) > 0 {
					i := rng.IntN(len(pods))
					pods[i] = newPod()
					what = fmt.Sprintf("replace %d", i)
				}
			case 4:
				if len(pods) > 0 {
					i := rng.IntN(len(pods) + 1)
					pods = slices.Insert(pods, i, pods[rng.IntN(len(pods))])
					what = fmt.Sprintf("list a pod twice at %d", i)
				}
			case 5:
				i := rng.IntN(len(pods) + 1)
				pods = slices.Insert(pods, i, nil)
				what = fmt.Sprintf("nil at %d", i)
			case 6:
				// The source's own slice changed in place.
				shared := tb.src.State().Pods
				if len(shared) > 1 {
					i, j := rng.IntN(len(shared)), rng.IntN(len(shared))
					shared[i], shared[j] = shared[j], shared[i]
					what = fmt.Sprintf("swap %d and %d in place", i, j)
				}
				pods = shared
			case 7:
				name := names[rng.IntN(len(names))]
				rec := attachmentFor(name, fmt.Sprintf("10.1.1.%d", rng.IntN(4)))
				if rng.IntN(2) == 0 {
					rec.IfName = "net1"
				}
				// (The fake source's lookup does not expect nil entries.)
				tb.src.setState(&policy.State{Pods: slices.DeleteFunc(slices.Clone(pods), func(p *policy.Pod) bool { return p == nil })})
				tb.add(t, rec)
				what = "attach " + rec.Key()
			case 8:
				tb.sync.mu.Lock()
				var keys []string
				for key := range tb.sync.atts {
					keys = append(keys, key)
				}
				tb.sync.mu.Unlock()
				if len(keys) > 0 {
					slices.Sort(keys)
					key := keys[rng.IntN(len(keys))]
					if err := tb.sync.Del(t.Context(), key, ""); err != nil {
						t.Fatal(err)
					}
					what = "detach " + key
				}
			}
			tb.src.setState(&policy.State{Pods: pods})
			st, locals := tb.sync.State()
			checkMerged(t, tb.sync, st, locals)
			if want := wantLocalPods(tb.sync, pods, locals); !slices.Equal(st.Pods, want) {
				t.Fatalf("seed %d, step %d (%s): pods\n got%s\nwant%s", seed, step, what, describePods(st.Pods), describePods(want))
			}
			// Same inputs, same pointer.
			now := map[string]inputs{}
			nowPod := map[string]*policy.Pod{}
			byKey := slices.SortedFunc(slices.Values(locals), func(x, y policy.LocalPod) int { return cmp.Compare(x.Key, y.Key) })
			for _, lp := range byKey {
				name := lp.Pod.Namespace + "/" + lp.Pod.Name
				var source *policy.Pod
				for _, p := range pods {
					if p != nil && p.Key() == name {
						source = p
					}
				}
				in := now[name]
				tb.sync.mu.Lock()
				att := tb.sync.atts[lp.Key]
				tb.sync.mu.Unlock()
				in.source, in.keys = source, in.keys+fmt.Sprintf("%s@%p ", lp.Key, att)
				now[name], nowPod[name] = in, lp.Pod
			}
			for name, in := range now {
				if old, ok := prev[name]; ok && old.source == in.source && old.keys == in.keys && prevPod[name] != nowPod[name] {
					t.Fatalf("seed %d, step %d (%s): %s merged again although its inputs did not change", seed, step, what, name)
				}
			}
			prev, prevPod = now, nowPod
			if t.Failed() {
				t.Fatalf("seed %d, step %d (%s)", seed, step, what)
			}
		}
	}
}

// wantLocalPods is what localState's pods should be, computed from scratch:
// the source's pods without nil entries, each local pod in the place of the
// last pod of its name, then the local pods the source does not list, by
// attachment key.
func wantLocalPods(s *Syncer, pods []*policy.Pod, locals []policy.LocalPod) []*policy.Pod {
	byName := map[string]*policy.Pod{}
	var keys []string
	for _, lp := range locals {
		name := lp.Pod.Namespace + "/" + lp.Pod.Name
		byName[name] = lp.Pod
		keys = append(keys, lp.Key)
	}
	last := map[string]int{}
	for i, p := range pods {
		if p != nil {
			last[p.Key()] = i
		}
	}
	var out []*policy.Pod
	for i, p := range pods {
		switch {
		case p == nil:
		case byName[p.Key()] == nil:
			out = append(out, p)
		case last[p.Key()] == i:
			out = append(out, byName[p.Key()])
		}
	}
	slices.Sort(keys)
	done := map[string]bool{}
	for _, key := range keys {
		for _, lp := range locals {
			name := lp.Pod.Namespace + "/" + lp.Pod.Name
			if lp.Key != key || done[name] {
				continue
			}
			done[name] = true
			if _, listed := last[name]; !listed {
				out = append(out, lp.Pod)
			}
		}
	}
	return out
}
