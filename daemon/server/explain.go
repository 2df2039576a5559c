package server

import (
	"context"
	"errors"
	"net/netip"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/daemon/policy"
	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// Explain answers whether new connections from the request's source to its
// destination are allowed, and why, from the syncer's compiled state.
func (s *statusService) Explain(ctx context.Context, req *pb.ExplainRequest) (*pb.ExplainResponse, error) {
	x, err := s.sync.Explain(policy.ExplainQuery{
		Source:      req.GetSource(),
		Destination: req.GetDestination(),
		Protocol:    corev1.Protocol(req.GetProtocol()),
		Port:        req.GetPort(),
		PortName:    req.GetPortName(),
	})
	switch {
	case errors.Is(err, policy.ErrExplainInvalid):
		return nil, status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, policy.ErrExplainNotFound):
		return nil, status.Error(codes.NotFound, err.Error())
	case err != nil:
		return nil, status.Errorf(codes.Internal, "explain: %v", err)
	}
	return explainResponse(x, s.nodeName), nil
}

// explainResponse converts an explanation to its API form.
func explainResponse(x *policy.Explanation, node string) *pb.ExplainResponse {
	resp := &pb.ExplainResponse{
		Source:      explainEndpoint(x.Source),
		Destination: explainEndpoint(x.Destination),
		Protocol:    string(x.Protocol),
		Port:        x.Port,
		PortName:    x.PortName,
		Verdict:     string(x.Verdict),
		Flows:       []*pb.ExplainFlow{},
		NodeName:    node,
	}
	for _, f := range x.Flows {
		resp.Flows = append(resp.Flows, &pb.ExplainFlow{
			Source:       prefixString(f.Source),
			Destination:  prefixString(f.Destination),
			Egress:       explainDirection(f.Egress),
			Ingress:      explainDirection(f.Ingress),
			Verdict:      string(f.Verdict),
			AllowedPorts: f.AllowedPorts,
		})
	}
	return resp
}

func explainEndpoint(e policy.ExplainEndpoint) *pb.ExplainEndpoint {
	return &pb.ExplainEndpoint{
		Input:     e.Input,
		Kind:      e.Kind,
		Pod:       e.Pod,
		Local:     e.Local,
		Addresses: prefixStrings(e.Addresses),
		Note:      e.Note,
	}
}

func explainDirection(d policy.DirectionVerdict) *pb.ExplainDirection {
	out := &pb.ExplainDirection{
		Direction:    d.Direction,
		Pod:          d.Pod,
		Enforced:     d.Enforced,
		Isolated:     d.Isolated,
		Policies:     d.Policies,
		Verdict:      string(d.Verdict),
		Reason:       d.Reason,
		AllowedPorts: d.AllowedPorts,
		AllowedPeers: prefixStrings(d.AllowedPeers),
		Pending:      d.Pending,
	}
	for _, r := range d.AllowedBy {
		out.AllowedBy = append(out.AllowedBy, &pb.ExplainRule{
			Policy:    r.Policy,
			Direction: r.Direction,
			Index:     int32(r.Index),
			Ports:     r.Ports,
			Peers:     prefixStrings(r.Peers),
		})
	}
	return out
}

// prefixStrings renders prefixes with prefixString.
func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, prefixString(p))
	}
	return out
}

// prefixString renders a prefix, a single address without its length.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}
