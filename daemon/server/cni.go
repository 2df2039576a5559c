// Package server serves podwalld's gRPC API on a root-only unix socket: the CNI
// service the plugin calls, the status service podwallctl reads, gRPC health
// and reflection. It translates requests into syncer calls and syncer errors
// into gRPC status codes; it holds no state of its own.
package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/syncer"
	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// cniService implements pb.CNIServer.
type cniService struct {
	pb.UnimplementedCNIServer
	sync  *syncer.Syncer
	ready func() error
}

// cniOnly returns an interceptor that runs icpt around the CNI service's
// calls and lets every other call pass; a nil icpt runs nothing.
func cniOnly(icpt grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	prefix := "/" + pb.CNI_ServiceDesc.ServiceName + "/"
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if icpt == nil || !strings.HasPrefix(info.FullMethod, prefix) {
			return handler(ctx, req)
		}
		return icpt(ctx, req, info, handler)
	}
}

func attachmentKey(a *pb.Attachment) string {
	return checkpoint.Attachment{Network: a.GetNetwork(), ContainerID: a.GetContainerId(), IfName: a.GetIfName()}.Key()
}

func validAttachment(a *pb.Attachment) error {
	if a.GetNetwork() == "" || a.GetContainerId() == "" || a.GetIfName() == "" {
		return status.Error(codes.InvalidArgument, "attachment needs network, container ID and interface name")
	}
	return nil
}

func (c *cniService) Add(ctx context.Context, req *pb.AddRequest) (*pb.AddResponse, error) {
	if err := c.ready(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "podwalld not ready: %v", err)
	}
	if err := validAttachment(req.GetAttachment()); err != nil {
		return nil, err
	}
	pod := req.GetPod()
	if pod.GetNamespace() == "" || pod.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "ADD needs the pod namespace and name (K8S_POD_NAMESPACE, K8S_POD_NAME)")
	}
	if len(req.GetIps()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "ADD needs the pod's IPs from the prevResult")
	}
	for _, ip := range req.GetIps() {
		if _, err := netip.ParsePrefix(ip); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "pod IP %q: %v", ip, err)
		}
	}
	for _, gw := range req.GetGateways() {
		if _, err := netip.ParseAddr(gw); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "gateway %q: %v", gw, err)
		}
	}
	if err := dataplane.CheckNetns(req.GetNetns()); err != nil {
		return nil, status.Errorf(codes.NotFound, "netns %q: %v", req.GetNetns(), err)
	}
	rec := checkpoint.Attachment{
		Network:          req.GetAttachment().GetNetwork(),
		ContainerID:      req.GetAttachment().GetContainerId(),
		IfName:           req.GetAttachment().GetIfName(),
		Namespace:        pod.GetNamespace(),
		Name:             pod.GetName(),
		UID:              pod.GetUid(),
		InfraContainerID: pod.GetInfraContainerId(),
		Netns:            req.GetNetns(),
		IPs:              req.GetIps(),
		Gateways:         req.GetGateways(),
		Added:            time.Now().UTC(),
	}
	if err := c.sync.Add(ctx, rec); err != nil {
		return nil, toStatus("add", err)
	}
	return &pb.AddResponse{}, nil
}

func (c *cniService) Del(ctx context.Context, req *pb.DelRequest) (*pb.DelResponse, error) {
	if err := validAttachment(req.GetAttachment()); err != nil {
		return nil, err
	}
	if err := c.sync.Del(ctx, attachmentKey(req.GetAttachment()), req.GetNetns()); err != nil {
		return nil, toStatus("del", err)
	}
	return &pb.DelResponse{}, nil
}

func (c *cniService) Check(ctx context.Context, req *pb.CheckRequest) (*pb.CheckResponse, error) {
	if err := c.ready(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "podwalld not ready: %v", err)
	}
	if err := validAttachment(req.GetAttachment()); err != nil {
		return nil, err
	}
	if err := dataplane.CheckNetns(req.GetNetns()); err != nil {
		return nil, status.Errorf(codes.NotFound, "netns %q: %v", req.GetNetns(), err)
	}
	if err := c.sync.Check(ctx, attachmentKey(req.GetAttachment())); err != nil {
		return nil, toStatus("check", err)
	}
	return &pb.CheckResponse{}, nil
}

func (c *cniService) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if err := c.ready(); err != nil {
		return nil, status.Errorf(codes.Unavailable, "podwalld not ready: %v", err)
	}
	return &pb.StatusResponse{}, nil
}

func (c *cniService) GC(ctx context.Context, req *pb.GCRequest) (*pb.GCResponse, error) {
	if req.GetNetwork() == "" {
		return nil, status.Error(codes.InvalidArgument, "GC needs the network name")
	}
	valid := make(map[string]bool, len(req.GetValidAttachments()))
	for _, a := range req.GetValidAttachments() {
		valid[checkpoint.Attachment{Network: req.GetNetwork(), ContainerID: a.GetContainerId(), IfName: a.GetIfName()}.Key()] = true
	}
	removed, err := c.sync.GC(ctx, req.GetNetwork(), valid)
	resp := &pb.GCResponse{}
	for _, r := range removed {
		resp.Removed = append(resp.Removed, &pb.Attachment{Network: r.Network, ContainerId: r.ContainerID, IfName: r.IfName})
	}
	if err != nil {
		return nil, toStatus("gc", err)
	}
	return resp, nil
}

// toStatus maps syncer and dataplane errors to gRPC codes, the only thing the
// plugin reads from them.
func toStatus(verb string, err error) error {
	var drift *dataplane.DriftError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return status.Errorf(codes.DeadlineExceeded, "%s: %v", verb, err)
	case errors.Is(err, syncer.ErrInvalid):
		return status.Errorf(codes.InvalidArgument, "%s: %v", verb, err)
	case errors.Is(err, syncer.ErrNotFound), errors.Is(err, dataplane.ErrNetnsGone):
		return status.Errorf(codes.NotFound, "%s: %v", verb, err)
	case errors.Is(err, syncer.ErrUnavailable):
		return status.Errorf(codes.Unavailable, "%s: %v", verb, err)
	case errors.As(err, &drift):
		return status.Errorf(codes.FailedPrecondition, "%s: %v", verb, err)
	default:
		return status.Error(codes.Internal, fmt.Sprintf("%s: %v", verb, err))
	}
}
