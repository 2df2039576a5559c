package server

import (
	"context"
	"net/netip"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/syncer"
	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// statusService implements pb.StatusServer.
type statusService struct {
	pb.UnimplementedStatusServer
	sync     *syncer.Syncer
	source   syncer.Source
	nodeName string
	version  string
	started  time.Time
	ready    func() error
}

func (s *statusService) GetStatus(ctx context.Context, _ *pb.GetStatusRequest) (*pb.DaemonStatus, error) {
	st := s.sync.Stats()
	state := s.source.State()
	out := &pb.DaemonStatus{
		Version:       s.version,
		NodeName:      s.nodeName,
		Source:        s.source.Name(),
		Ready:         s.ready() == nil,
		Pods:          int32(len(s.sync.Pods())),
		Policies:      int32(len(state.Policies)),
		Started:       timestamppb.New(s.started),
		Syncs:         st.Syncs,
		SyncErrors:    st.SyncErrors,
		LastSyncError: st.LastSyncError,
	}
	if !st.LastSync.IsZero() {
		out.LastSync = timestamppb.New(st.LastSync)
	}
	for _, e := range s.source.Errors() {
		out.SourceErrors = append(out.SourceErrors, &pb.SourceError{Object: e.Object, Error: e.Err.Error()})
	}
	for _, p := range st.Problems {
		out.SourceErrors = append(out.SourceErrors, &pb.SourceError{Object: "compiler", Error: p})
	}
	return out, nil
}

func podSummary(v syncer.PodView) *pb.PodSummary {
	a := v.Attachment
	ps := &pb.PodSummary{
		Namespace:   a.Namespace,
		Name:        a.Name,
		ContainerId: a.ContainerID,
		IfName:      a.IfName,
		Netns:       a.Netns,
		Network:     a.Network,
		Policies:    []string{},
	}
	for _, ip := range a.IPs {
		if p, err := netip.ParsePrefix(ip); err == nil {
			ps.Ips = append(ps.Ips, p.Addr().String())
		}
	}
	if fw := v.Firewall; fw != nil {
		ps.IngressIsolated = fw.Ingress.Isolated
		ps.EgressIsolated = fw.Egress.Isolated
		ps.IngressRules = int32(len(fw.Ingress.Rules))
		ps.EgressRules = int32(len(fw.Egress.Rules))
		seen := map[string]bool{}
		for _, p := range append(append([]string(nil), fw.Ingress.Policies...), fw.Egress.Policies...) {
			if !seen[p] {
				seen[p] = true
				ps.Policies = append(ps.Policies, p)
			}
		}
		sort.Strings(ps.Policies)
	}
	if v.Err != nil {
		ps.SyncError = v.Err.Error()
	}
	return ps
}

func (s *statusService) ListPods(ctx context.Context, _ *pb.ListPodsRequest) (*pb.ListPodsResponse, error) {
	resp := &pb.ListPodsResponse{Pods: []*pb.PodSummary{}}
	for _, v := range s.sync.Pods() {
		resp.Pods = append(resp.Pods, podSummary(v))
	}
	return resp, nil
}

func (s *statusService) GetPod(ctx context.Context, req *pb.GetPodRequest) (*pb.PodDetail, error) {
	for _, v := range s.sync.Pods() {
		if v.Attachment.Namespace != req.GetNamespace() || v.Attachment.Name != req.GetName() {
			continue
		}
		detail := &pb.PodDetail{Pod: podSummary(v)}
		rs, err := s.sync.Inspect(ctx, v.Attachment.Key())
		if err != nil {
			return nil, status.Errorf(codes.Internal, "inspect %s/%s: %v", req.GetNamespace(), req.GetName(), err)
		}
		detail.RulesV4, detail.RulesV6 = rs.V4, rs.V6
		for _, set := range rs.Sets {
			ipset := &pb.IPSet{Name: set.Name, Family: set.Family}
			for _, m := range set.Members {
				ipset.Members = append(ipset.Members, m.String())
			}
			detail.Ipsets = append(detail.Ipsets, ipset)
		}
		detail.Services = serviceVerdicts(v.Services)
		return detail, nil
	}
	return nil, status.Errorf(codes.NotFound, "pod %s/%s is not attached on this node", req.GetNamespace(), req.GetName())
}

func (s *statusService) ListPolicies(ctx context.Context, _ *pb.ListPoliciesRequest) (*pb.ListPoliciesResponse, error) {
	state, locals := s.sync.State()
	resp := &pb.ListPoliciesResponse{Policies: []*pb.PolicySummary{}}
	for _, np := range state.Policies {
		ps := &pb.PolicySummary{Namespace: np.Namespace, Name: np.Name, PolicyTypes: policyTypes(np), SelectedPods: []string{}}
		seen := map[string]bool{}
		for _, lp := range locals {
			if policy.Selects(np, lp.Pod) && !seen[lp.Pod.Key()] {
				seen[lp.Pod.Key()] = true
				ps.SelectedPods = append(ps.SelectedPods, lp.Pod.Key())
			}
		}
		sort.Strings(ps.SelectedPods)
		resp.Policies = append(resp.Policies, ps)
	}
	sort.Slice(resp.Policies, func(i, j int) bool {
		x, y := resp.Policies[i], resp.Policies[j]
		if x.Namespace != y.Namespace {
			return x.Namespace < y.Namespace
		}
		return x.Name < y.Name
	})
	return resp, nil
}

func policyTypes(np *networkingv1.NetworkPolicy) []string {
	c := np.DeepCopy()
	policy.ApplyDefaults(c)
	out := make([]string, 0, len(c.Spec.PolicyTypes))
	for _, t := range c.Spec.PolicyTypes {
		out = append(out, string(t))
	}
	return out
}
