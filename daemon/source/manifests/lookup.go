package manifests

import (
	"context"

	"github.com/podwall/podwall/daemon/policy"
)

// Name describes the source for status output: "manifests:<dir>".
func (s *Source) Name() string { return "manifests:" + s.dir }

// Pod returns the pod namespace/name as the directory describes it. A pod the
// last read did not have makes the source re-read the directory first (the
// manifest may have been written just before the runtime called ADD).
// (nil, nil) means the directory does not describe the pod.
func (s *Source) Pod(ctx context.Context, namespace, name string) (*policy.Pod, error) {
	if p := findPod(s.State(), namespace, name); p != nil {
		return p, nil
	}
	if err := s.Load(); err != nil {
		return nil, err
	}
	return findPod(s.State(), namespace, name), nil
}

func findPod(state *policy.State, namespace, name string) *policy.Pod {
	for _, p := range state.Pods {
		if p.Namespace == namespace && p.Name == name {
			return p
		}
	}
	return nil
}
