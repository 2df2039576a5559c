package metrics

import (
	"context"
	"time"

	"google.golang.org/grpc"
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
		r.cniRequests.WithLabelValues(verb, status.Code(err).String()).Inc()
		return resp, err
	}
}
