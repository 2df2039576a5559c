package metrics

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// cniVerbs maps the CNI service's methods to the CNI verbs they serve: the
// only values of the verb label.
var cniVerbs = map[string]string{
	pb.CNI_Add_FullMethodName:    "ADD",
	pb.CNI_Del_FullMethodName:    "DEL",
	pb.CNI_Check_FullMethodName:  "CHECK",
	pb.CNI_Status_FullMethodName: "STATUS",
	pb.CNI_GC_FullMethodName:     "GC",
}

// CNIInterceptor returns a gRPC unary server interceptor that counts every
// CNI request by verb and by the gRPC status code the daemon answers (its
// name, e.g. OK, Unavailable; the plugin maps these to CNI error codes), and
// observes its duration. Calls of other services pass uncounted.
func (r *Registry) CNIInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		verb, ok := cniVerbs[info.FullMethod]
		if !ok {
			return handler(ctx, req)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		r.cniDuration.WithLabelValues(verb).Observe(time.Since(start).Seconds())
		// status.Code says Unknown for an error without a status, as gRPC
		// itself answers.
		code := status.Code(err)
		r.cniRequests.WithLabelValues(verb, code.String()).Inc()
		if err != nil {
			r.cniErrors.WithLabelValues(verb, strconv.Itoa(int(cniCode(verb, code)))).Inc()
		}
		return resp, err
	}
}

// cniCode is the CNI error code the podwall plugin returns for a daemon's
// answer with gRPC code code, as plugin/errors.go chooses it (codeForStatus
// and cniError; the plugin cannot share code with the daemon): STATUS
// fails with 50 whatever the code; otherwise InvalidArgument is 7 (invalid
// network config), NotFound 8 (invalid netns), Unavailable and the other
// retryable codes 11 (try again later), FailedPrecondition 100 (firewall
// drift on CHECK), anything else 101 (the daemon failed).
func cniCode(verb string, code codes.Code) uint {
	if verb == "STATUS" {
		return 50
	}
	switch code {
	case codes.InvalidArgument:
		return 7
	case codes.NotFound:
		return 8
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Canceled:
		return 11
	case codes.FailedPrecondition:
		return 100
	}
	return 101
}
