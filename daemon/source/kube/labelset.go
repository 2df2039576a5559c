package kube

import (
	"encoding/binary"
	"maps"
	"runtime"
	"slices"
	"sync"
	"weak"
)

// podLabels interns the label maps of cached pods: the replicas of a
// workload have the same labels, and at 10k pods one map per pod was the
// largest single part of the pod cache (3.3 MB, measured by
// BenchmarkAPIServerMemory).
var podLabels = labelSets{sets: map[string]weak.Pointer[labelSet]{}}

// labelSet is an interned label map. It must not be modified.
type labelSet struct {
	labels map[string]string
}

// labelSets interns label maps by their content. It holds each set weakly:
// once no cachedPod uses a set the garbage collector frees it, and its
// entry goes with it.
type labelSets struct {
	mu   sync.Mutex
	sets map[string]weak.Pointer[labelSet] // by labelSetKey
}

// intern returns the set equal to labels: the one interned already, or
// labels itself, interned from then on (the caller must not modify it
// afterwards).
func (t *labelSets) intern(labels map[string]string) *labelSet {
	key := labelSetKey(labels)
	t.mu.Lock()
	defer t.mu.Unlock()
	if set := t.sets[key].Value(); set != nil {
		return set
	}
	set := &labelSet{labels: labels}
	t.sets[key] = weak.Make(set)
	runtime.AddCleanup(set, t.forget, key)
	return set
}

// forget drops the entry of a set the garbage collector freed, unless the
// key was interned again since.
func (t *labelSets) forget(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sets[key].Value() == nil {
		delete(t.sets, key)
	}
}

// len returns the number of entries (tests).
func (t *labelSets) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sets)
}

// labelSetKey encodes labels, sorted by key, as length-prefixed keys and
// values: two maps have the same key exactly when they are equal, whatever
// bytes their strings hold.
func labelSetKey(labels map[string]string) string {
	keys := slices.Sorted(maps.Keys(labels))
	var b []byte
	for _, k := range keys {
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		v := labels[k]
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return string(b)
}
