package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/podwall/podwall/daemon/syncer"
	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// Options configure the gRPC server.
type Options struct {
	Socket   string
	NodeName string
	Version  string
	Sync     *syncer.Syncer
	Source   syncer.Source
	// Ready reports whether ADD can be served (nil error = ready).
	Ready func() error
	// CNIInterceptor, when set, runs around every call of the CNI service
	// (not the status, health or reflection services), e.g. for metrics.
	CNIInterceptor grpc.UnaryServerInterceptor
}

// Server is podwalld's gRPC server on a unix socket.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	lis    net.Listener
	socket string
}

// Listen prepares the socket: its directory is created (or chmodded) 0700, a
// stale socket left by a dead daemon is replaced, a socket another live
// daemon answers on is an error, and the new socket is 0600.
func Listen(opts Options) (*Server, error) {
	if opts.Ready == nil {
		opts.Ready = func() error { return nil }
	}
	dir := filepath.Dir(opts.Socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chmod socket directory: %w", err)
	}
	if err := removeStaleSocket(opts.Socket); err != nil {
		return nil, err
	}
	lis, err := net.Listen("unix", opts.Socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", opts.Socket, err)
	}
	if err := os.Chmod(opts.Socket, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}

	g := grpc.NewServer(grpc.UnaryInterceptor(cniOnly(opts.CNIInterceptor)))
	pb.RegisterCNIServer(g, &cniService{sync: opts.Sync, ready: opts.Ready})
	pb.RegisterStatusServer(g, &statusService{
		sync: opts.Sync, source: opts.Source, nodeName: opts.NodeName,
		version: opts.Version, started: time.Now(), ready: opts.Ready,
	})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	reflection.Register(g)
	return &Server{grpc: g, health: hs, lis: lis, socket: opts.Socket}, nil
}

// removeStaleSocket removes path if it is a socket nobody answers on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another process is serving on %s", path)
	}
	// Only a refused connection proves nobody listens: a busy daemon's full
	// backlog (EAGAIN) or a timeout must not cost it its socket.
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether %s is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// SetServing marks the gRPC health service SERVING or NOT_SERVING.
func (s *Server) SetServing(ok bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(pb.CNI_ServiceDesc.ServiceName, st)
}

// Serve serves until ctx ends, then stops gracefully (bounded) and removes
// the socket.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(s.lis) }()
	select {
	case err := <-errc:
		s.health.Shutdown()
		os.Remove(s.socket)
		return err
	case <-ctx.Done():
	}
	s.SetServing(false)
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.grpc.Stop()
	}
	os.Remove(s.socket)
	return nil
}
