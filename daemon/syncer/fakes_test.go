package syncer

import (
	"context"
	"fmt"
	"slices"
	gosync "sync"

	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

// dataplaneCall is one call the fake dataplane received.
type dataplaneCall struct {
	Verb  string // "apply", "remove", "check", "inspect", "forget"
	Netns string
	Spec  dataplane.Spec
	Err   error // what the fake returned
}

// fakeNetns is what the fake dataplane holds for one netns path.
type fakeNetns struct {
	spec    *dataplane.Spec // last successful Apply; nil after Remove
	lastOp  string          // "apply" or "remove": the last call that changed the netns
	applies int             // Apply calls, failed ones included
	removes int
}

// fakeDataplane records every call per netns and can be told to fail.
type fakeDataplane struct {
	mu       gosync.Mutex
	calls    []dataplaneCall
	netns    map[string]*fakeNetns
	applyErr map[string]error // netns -> error Apply returns
	checkErr map[string]error // netns -> error Check returns
	// beforeApply, when set, runs at the start of every Apply, outside the
	// fake's lock (tests use it to hold an apply in flight); beforeCheck
	// likewise for Check.
	beforeApply, beforeCheck func(netns string)
}

func newFakeDataplane() *fakeDataplane {
	return &fakeDataplane{
		netns:    map[string]*fakeNetns{},
		applyErr: map[string]error{},
		checkErr: map[string]error{},
	}
}

func (d *fakeDataplane) state(netns string) *fakeNetns {
	st, ok := d.netns[netns]
	if !ok {
		st = &fakeNetns{}
		d.netns[netns] = st
	}
	return st
}

func (d *fakeDataplane) Apply(_ context.Context, netns string, spec dataplane.Spec) error {
	d.mu.Lock()
	hook := d.beforeApply
	d.mu.Unlock()
	if hook != nil {
		hook(netns)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state(netns)
	st.applies++
	err := d.applyErr[netns]
	d.calls = append(d.calls, dataplaneCall{Verb: "apply", Netns: netns, Spec: spec, Err: err})
	if err != nil {
		return fmt.Errorf("apply firewall for %s in %s: %w", spec.Pod, netns, err)
	}
	st.spec = &spec
	st.lastOp = "apply"
	return nil
}

func (d *fakeDataplane) Remove(_ context.Context, netns string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.state(netns)
	st.removes++
	st.spec = nil
	st.lastOp = "remove"
	d.calls = append(d.calls, dataplaneCall{Verb: "remove", Netns: netns})
	return nil
}

func (d *fakeDataplane) Check(_ context.Context, netns string, spec dataplane.Spec) error {
	d.mu.Lock()
	hook := d.beforeCheck
	d.mu.Unlock()
	if hook != nil {
		hook(netns)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.checkErr[netns]
	d.calls = append(d.calls, dataplaneCall{Verb: "check", Netns: netns, Spec: spec, Err: err})
	return err
}

func (d *fakeDataplane) Inspect(_ context.Context, netns string) (*dataplane.Ruleset, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, dataplaneCall{Verb: "inspect", Netns: netns})
	st, ok := d.netns[netns]
	if !ok || st.spec == nil {
		return &dataplane.Ruleset{}, nil
	}
	return dataplane.Render(*st.spec, 1), nil
}

func (d *fakeDataplane) Forget(netns string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, dataplaneCall{Verb: "forget", Netns: netns})
}

// failApply makes Apply in netns return err (nil: succeed again).
func (d *fakeDataplane) failApply(netns string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		delete(d.applyErr, netns)
		return
	}
	d.applyErr[netns] = err
}

func (d *fakeDataplane) failCheck(netns string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.checkErr[netns] = err
}

func (d *fakeDataplane) setBeforeApply(fn func(netns string)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.beforeApply = fn
}

// applied returns the spec of the last successful Apply in netns, unless
// a Remove came after it.
func (d *fakeDataplane) applied(netns string) (dataplane.Spec, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, ok := d.netns[netns]
	if !ok || st.spec == nil {
		return dataplane.Spec{}, false
	}
	return *st.spec, true
}

// snapshot returns a copy of what the fake holds for netns.
func (d *fakeDataplane) snapshot(netns string) fakeNetns {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.netns[netns]; ok {
		return *st
	}
	return fakeNetns{}
}

// count returns how many calls of verb (in netns, or anywhere when netns is
// empty) the fake received.
func (d *fakeDataplane) count(verb, netns string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if c.Verb == verb && (netns == "" || c.Netns == netns) {
			n++
		}
	}
	return n
}

// totalApplies returns the number of Apply calls per netns.
func (d *fakeDataplane) totalApplies() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for path, st := range d.netns {
		out[path] = st.applies
	}
	return out
}

func (d *fakeDataplane) lastCall(verb, netns string) (dataplaneCall, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range slices.Backward(d.calls) {
		if c.Verb == verb && c.Netns == netns {
			return c, true
		}
	}
	return dataplaneCall{}, false
}

// fakeSource is a mutable policy source.
type fakeSource struct {
	mu    gosync.Mutex
	state *policy.State
	// lookupOnly are pods Pod finds although State does not have them yet
	// (an API lookup ahead of the informer cache).
	lookupOnly map[string]*policy.Pod
	lookupErr  error
	lookups    int
	errs       []source.Error
	// beforeState, when set, runs at the start of every State call.
	beforeState func()
}

func newFakeSource(state *policy.State) *fakeSource {
	return &fakeSource{state: state, lookupOnly: map[string]*policy.Pod{}}
}

func (s *fakeSource) Name() string { return "fake" }

func (s *fakeSource) State() *policy.State {
	s.mu.Lock()
	hook := s.beforeState
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *fakeSource) Pod(_ context.Context, namespace, name string) (*policy.Pod, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookups++
	if s.lookupErr != nil {
		return nil, s.lookupErr
	}
	for _, p := range s.state.Pods {
		if p.Namespace == namespace && p.Name == name {
			return p, nil
		}
	}
	return s.lookupOnly[namespace+"/"+name], nil
}

func (s *fakeSource) Errors() []source.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

// setState replaces the snapshot (the source's objects changed).
func (s *fakeSource) setState(state *policy.State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = state
}

func (s *fakeSource) setLookupErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookupErr = err
}

func (s *fakeSource) setBeforeState(fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeState = fn
}
