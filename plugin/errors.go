package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The kinds of failure the plugin finds itself. Code wraps one of them with
// %w; cniError turns it into a CNI error code.
var (
	errDecode            = errors.New("cannot decode network config")
	errInvalidConfig     = errors.New("invalid network config")
	errInvalidEnv        = errors.New("invalid environment variable")
	errInvalidNetNS      = errors.New("invalid network namespace")
	errDaemonUnreachable = errors.New("podwall daemon unreachable")
	errIO                = errors.New("i/o failure")
)

// Plugin-specific CNI error codes (the spec leaves 100 and up to plugins).
// They are part of podwall's contract: keep their values.
const (
	// errCodeFirewallDrift: CHECK found that the rules inside the pod's netns
	// differ from its desired firewall (the daemon answered FailedPrecondition).
	errCodeFirewallDrift uint = 100
	// errCodeDaemonFailed: the daemon failed the request (Internal, Unknown or
	// another code podwall does not expect); the message is the daemon's. For
	// ADD the pod stays closed.
	errCodeDaemonFailed uint = 101
)

// codeForStatus is the CNI error code of a gRPC status code the daemon (or
// the gRPC client) answered with, for every verb but STATUS.
func codeForStatus(code codes.Code) uint {
	switch code {
	case codes.InvalidArgument:
		return types.ErrInvalidNetworkConfig
	case codes.NotFound:
		return types.ErrInvalidNetNS
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
		return types.ErrTryAgainLater
	case codes.FailedPrecondition:
		return errCodeFirewallDrift
	default: // Unknown, Internal, Unimplemented, PermissionDenied, Unauthenticated, AlreadyExists, OutOfRange, DataLoss
		return errCodeDaemonFailed
	}
}

// cniError chooses the CNI error for err returned by verb (ADD, DEL, CHECK,
// STATUS or GC). It is the only place that picks CNI error codes:
//
//	malformed JSON                                   6  decoding failure
//	bad config values, no prevResult                 7  invalid network config
//	bad CNI_ARGS, K8S_POD_NAMESPACE/NAME missing     4  invalid environment variables
//	CNI_NETNS not a network namespace                8  invalid netns
//	daemon unreachable                              11  try again later (50 for STATUS)
//	gRPC Unavailable, DeadlineExceeded,
//	     ResourceExhausted, Aborted, Canceled       11  try again later
//	gRPC InvalidArgument                             7
//	gRPC NotFound                                    8
//	gRPC FailedPrecondition                        100  firewall drift (CHECK)
//	gRPC Internal, Unknown and any other           101  daemon failed, with its message
//	STATUS: anything but a config error             50  plugin not available
//	anything else                                  999  internal
func cniError(verb string, err error) *types.Error {
	if err == nil {
		return nil
	}
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		return cniErr
	}
	switch {
	case errors.Is(err, errDecode):
		return types.NewError(types.ErrDecodingFailure, err.Error(), "")
	case errors.Is(err, errInvalidConfig):
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	case errors.Is(err, errInvalidEnv):
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	case errors.Is(err, errIO):
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	case verb == "STATUS":
		return types.NewError(types.ErrPluginNotAvailable, "podwall daemon cannot serve ADD", err.Error())
	case errors.Is(err, errInvalidNetNS):
		return types.NewError(types.ErrInvalidNetNS, err.Error(), "")
	case errors.Is(err, errDaemonUnreachable):
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	case errors.Is(err, context.DeadlineExceeded):
		return types.NewError(types.ErrTryAgainLater, "podwall daemon did not answer in time", err.Error())
	}
	st, ok := status.FromError(err)
	if !ok {
		return types.NewError(types.ErrInternal, err.Error(), "")
	}
	code := codeForStatus(st.Code())
	msg := fmt.Sprintf("podwall daemon: %s", st.Message())
	switch code {
	case types.ErrTryAgainLater:
		msg = fmt.Sprintf("podwall daemon busy or not ready, try again later: %s", st.Message())
	case errCodeFirewallDrift:
		msg = fmt.Sprintf("pod firewall differs from the desired one: %s", st.Message())
	}
	return types.NewError(code, msg, "grpc code "+st.Code().String())
}
