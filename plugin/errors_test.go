package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestCNIErrorForEveryGRPCCode pins the CNI code of every gRPC code, for the
// verbs that map them normally and for STATUS, where all of them mean 50.
func TestCNIErrorForEveryGRPCCode(t *testing.T) {
	tests := []struct {
		code       codes.Code
		want       uint
		wantStatus uint
	}{
		{codes.Canceled, types.ErrTryAgainLater, types.ErrPluginNotAvailable},
		{codes.Unknown, errCodeDaemonFailed, types.ErrPluginNotAvailable},
		{codes.InvalidArgument, types.ErrInvalidNetworkConfig, types.ErrPluginNotAvailable},
		{codes.DeadlineExceeded, types.ErrTryAgainLater, types.ErrPluginNotAvailable},
		{codes.NotFound, types.ErrInvalidNetNS, types.ErrPluginNotAvailable},
		{codes.AlreadyExists, errCodeDaemonFailed, types.ErrPluginNotAvailable},
		{codes.PermissionDenied, errCodeDaemonFailed, types.ErrPluginNotAvailable},
		{codes.ResourceExhausted, types.ErrTryAgainLater, types.ErrPluginNotAvailable},
		{codes.FailedPrecondition, errCodeFirewallDrift, types.ErrPluginNotAvailable},
		{codes.Aborted, types.ErrTryAgainLater, types.ErrPluginNotAvailable},
		{codes.OutOfRange, errCodeDaemonFailed, types.ErrPluginNotAvailable},
		{codes.Unimplemented, errCodeDaemonFailed, types.ErrPluginNotAvailable},
		{codes.Internal, errCodeDaemonFailed, types.ErrPluginNotAvailable},
		{codes.Unavailable, types.ErrTryAgainLater, types.ErrPluginNotAvailable},
		{codes.DataLoss, errCodeDaemonFailed, types.ErrPluginNotAvailable},
		{codes.Unauthenticated, errCodeDaemonFailed, types.ErrPluginNotAvailable},
	}
	if len(tests) != 16 {
		t.Fatalf("the table must cover all 16 non-OK gRPC codes, has %d", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			err := fmt.Errorf("add pod: %w", status.Error(tt.code, "daemon says no"))
			for _, verb := range []string{"ADD", "DEL", "CHECK", "GC"} {
				got := cniError(verb, err)
				if got.Code != tt.want {
					t.Errorf("cniError(%s, %v).Code = %d, want %d", verb, tt.code, got.Code, tt.want)
				}
				if !strings.Contains(got.Msg, "daemon says no") {
					t.Errorf("cniError(%s, %v).Msg = %q, want the daemon's message", verb, tt.code, got.Msg)
				}
			}
			if got := cniError("STATUS", err); got.Code != tt.wantStatus {
				t.Errorf("cniError(STATUS, %v).Code = %d, want %d", tt.code, got.Code, tt.wantStatus)
			}
		})
	}
	if cniError("ADD", status.Error(codes.OK, "")) != nil {
		t.Error("a nil status error must not become a CNI error")
	}
}

func TestCNIErrorForPluginErrors(t *testing.T) {
	unreachable := fmt.Errorf("%w at /run/x.sock: connect: no such file or directory", errDaemonUnreachable)
	tests := []struct {
		name       string
		err        error
		want       uint
		wantStatus uint
	}{
		{"decode", fmt.Errorf("%w: unexpected end", errDecode), types.ErrDecodingFailure, types.ErrDecodingFailure},
		{"invalid config", fmt.Errorf("%w: timeout", errInvalidConfig), types.ErrInvalidNetworkConfig, types.ErrInvalidNetworkConfig},
		{"invalid env", fmt.Errorf("%w: CNI_ARGS", errInvalidEnv), types.ErrInvalidEnvironmentVariables, types.ErrInvalidEnvironmentVariables},
		{"invalid netns", fmt.Errorf("%w: /tmp/f", errInvalidNetNS), types.ErrInvalidNetNS, types.ErrPluginNotAvailable},
		{"unreachable", unreachable, types.ErrTryAgainLater, types.ErrPluginNotAvailable},
		{"deadline", fmt.Errorf("call: %w", context.DeadlineExceeded), types.ErrTryAgainLater, types.ErrPluginNotAvailable},
		{"print", fmt.Errorf("%w: broken pipe", errIO), types.ErrIOFailure, types.ErrIOFailure},
		{"already a CNI error", types.NewError(types.ErrUnsupportedField, "x", ""), types.ErrUnsupportedField, types.ErrUnsupportedField},
		{"anything else", errors.New("surprise"), types.ErrInternal, types.ErrPluginNotAvailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cniError("ADD", tt.err); got.Code != tt.want {
				t.Errorf("cniError(ADD, %v).Code = %d, want %d", tt.err, got.Code, tt.want)
			}
			if got := cniError("STATUS", tt.err); got.Code != tt.wantStatus {
				t.Errorf("cniError(STATUS, %v).Code = %d, want %d", tt.err, got.Code, tt.wantStatus)
			}
		})
	}
	if cniError("ADD", nil) != nil {
		t.Error("cniError(nil) must be nil")
	}
}
