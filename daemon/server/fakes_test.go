package server_test

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

// fakeDataplane records what the syncer asks of it, per netns.
type fakeDataplane struct {
	mu       sync.Mutex
	applied  map[string]dataplane.Spec
	calls    []string // "verb netns"
	applyErr error
	checkErr error
}

func newFakeDataplane() *fakeDataplane {
	return &fakeDataplane{applied: map[string]dataplane.Spec{}}
}

func (d *fakeDataplane) record(verb, netns string) {
	d.calls = append(d.calls, verb+" "+netns)
}

func (d *fakeDataplane) Apply(_ context.Context, netns string, spec dataplane.Spec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("apply", netns)
	if d.applyErr != nil {
		return fmt.Errorf("apply firewall for %s in %s: %w", spec.Pod, netns, d.applyErr)
	}
	d.applied[netns] = spec
	return nil
}

func (d *fakeDataplane) Remove(_ context.Context, netns string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("remove", netns)
	delete(d.applied, netns)
	return nil
}

func (d *fakeDataplane) Check(_ context.Context, netns string, _ dataplane.Spec) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("check", netns)
	return d.checkErr
}

func (d *fakeDataplane) Inspect(_ context.Context, netns string) (*dataplane.Ruleset, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("inspect", netns)
	spec, ok := d.applied[netns]
	if !ok {
		return &dataplane.Ruleset{}, nil
	}
	return dataplane.Render(spec, 1), nil
}

func (d *fakeDataplane) Forget(netns string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.record("forget", netns)
}

func (d *fakeDataplane) spec(netns string) (dataplane.Spec, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.applied[netns]
	return s, ok
}

// count returns how many calls of verb (anywhere) the fake received.
func (d *fakeDataplane) count(verb string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		if len(c) > len(verb) && c[:len(verb)+1] == verb+" " {
			n++
		}
	}
	return n
}

func (d *fakeDataplane) called(call string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Contains(d.calls, call)
}

func (d *fakeDataplane) setApplyErr(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applyErr = err
}

func (d *fakeDataplane) setCheckErr(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.checkErr = err
}

// fakeSource is a fixed policy source.
type fakeSource struct {
	mu        sync.Mutex
	state     *policy.State
	lookupErr error
	errs      []source.Error
}

func (s *fakeSource) Name() string { return "manifests:/fake" }

func (s *fakeSource) State() *policy.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *fakeSource) Pod(_ context.Context, namespace, name string) (*policy.Pod, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookupErr != nil {
		return nil, s.lookupErr
	}
	for _, p := range s.state.Pods {
		if p.Namespace == namespace && p.Name == name {
			return p, nil
		}
	}
	return nil, nil
}

func (s *fakeSource) Errors() []source.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

func (s *fakeSource) setLookupErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lookupErr = err
}
