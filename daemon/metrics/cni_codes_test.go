package metrics

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// TestCNIErrorsByCNICode: a failed CNI request is counted under the CNI
// error code the plugin returns for the daemon's answer (the table of
// plugin/errors.go and docs/design.md), a successful one not at all.
func TestCNIErrorsByCNICode(t *testing.T) {
	tests := []struct {
		method     string
		err        error
		verb, code string // the error series that counts; "" for none
	}{
		{pb.CNI_Add_FullMethodName, nil, "", ""},
		{pb.CNI_Add_FullMethodName, status.Error(codes.InvalidArgument, "bad ip"), "ADD", "7"},
		{pb.CNI_Add_FullMethodName, status.Error(codes.NotFound, "no netns"), "ADD", "8"},
		{pb.CNI_Add_FullMethodName, status.Error(codes.Unavailable, "not ready"), "ADD", "11"},
		{pb.CNI_Add_FullMethodName, status.Error(codes.DeadlineExceeded, "slow"), "ADD", "11"},
		{pb.CNI_Add_FullMethodName, status.Error(codes.Internal, "iptables"), "ADD", "101"},
		{pb.CNI_Check_FullMethodName, status.Error(codes.FailedPrecondition, "drift"), "CHECK", "100"},
		{pb.CNI_Status_FullMethodName, status.Error(codes.Unavailable, "not ready"), "STATUS", "50"},
		{pb.CNI_Del_FullMethodName, status.Error(codes.Internal, "checkpoint"), "DEL", "101"},
		{pb.CNI_GC_FullMethodName, status.Error(codes.Unknown, "boom"), "GC", "101"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+status.Code(tt.err).String(), func(t *testing.T) {
			r := New("test")
			_, _ = r.CNIInterceptor()(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: tt.method},
				func(context.Context, any) (any, error) { return nil, tt.err })
			got := testutil.CollectAndCount(r.cniErrors)
			if tt.verb == "" {
				if got != 0 {
					t.Errorf("%d error series after a success", got)
				}
				return
			}
			if got != 1 {
				t.Fatalf("%d error series, want 1", got)
			}
			if v := testutil.ToFloat64(r.cniErrors.WithLabelValues(tt.verb, tt.code)); v != 1 {
				t.Errorf("podwall_cni_errors_total{verb=%q,cni_code=%q} = %v, want 1", tt.verb, tt.code, v)
			}
		})
	}
}

// TestDistribution: values land in every bucket whose bound they do not
// exceed (cumulative), with count and sum.
func TestDistribution(t *testing.T) {
	d := newDistribution([]float64{0, 1, 10})
	for _, v := range []int{0, 1, 5, 10, 11} {
		d.observe(v)
	}
	want := map[float64]uint64{0: 1, 1: 2, 10: 4}
	for b, n := range want {
		if d.counts[b] != n {
			t.Errorf("bucket le=%v: %d, want %d", b, d.counts[b], n)
		}
	}
	if d.count != 5 || d.sum != 27 {
		t.Errorf("count %d sum %v, want 5 and 27", d.count, d.sum)
	}
}
