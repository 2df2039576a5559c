package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	podwallv1 "github.com/podwall/podwall/proto/podwall/v1"
)

// daemonClient is the plugin's connection to podwalld's CNI service.
type daemonClient struct {
	socket string
	conn   *grpc.ClientConn
	cni    podwallv1.CNIClient

	mu        sync.Mutex
	dialErr   error // the last failed connect to the socket
	connected bool  // some connect to the socket succeeded
}

// dialDaemon prepares a client for the daemon at socket. It does not connect:
// the first RPC does, and without WaitForReady an absent daemon makes that RPC
// fail at once instead of waiting for the deadline.
func dialDaemon(socket string) (*daemonClient, error) {
	client := &daemonClient{socket: socket}
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(client.dialSocket),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errDaemonUnreachable, socket, err)
	}
	client.conn = conn
	client.cni = podwallv1.NewCNIClient(conn)
	return client, nil
}

// dialSocket connects to the socket and records the outcome, so that call can
// tell "nobody listens" (unreachable: failOpen applies) from an answer.
func (c *daemonClient) dialSocket(ctx context.Context, _ string) (net.Conn, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", c.socket)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.dialErr = err
	} else {
		c.connected = true
	}
	return conn, err
}

// classify returns the error of an RPC, wrapping errDaemonUnreachable when
// the RPC failed because the socket could not be connected to at all.
func (c *daemonClient) classify(err error) error {
	if err == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if code := status.Code(err); (code == codes.Unavailable || code == codes.DeadlineExceeded) &&
		c.dialErr != nil && !c.connected {
		return fmt.Errorf("%w at %s: %w", errDaemonUnreachable, c.socket, c.dialErr)
	}
	return err
}

// Close releases the connection.
func (c *daemonClient) Close() error {
	return c.conn.Close()
}

// call runs one RPC with its own deadline and classifies its error.
func call[Req, Resp any](c *daemonClient, timeout time.Duration, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := rpc(ctx, req)
	return resp, c.classify(err)
}
