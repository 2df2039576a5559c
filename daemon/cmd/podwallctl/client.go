package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// client is a connection to podwalld's status API.
type client struct {
	socket string
	conn   *grpc.ClientConn
	status pb.StatusClient
}

// dial prepares a connection to the socket; nothing is sent until the
// first call.
func dial(socket string) (*client, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connect to podwalld at %s: %w", socket, err)
	}
	return &client{socket: socket, conn: conn, status: pb.NewStatusClient(conn)}, nil
}

func (c *client) close() { c.conn.Close() }

// unreachableHelp is what to check when the daemon cannot be reached.
const unreachableHelp = `  check: is podwalld running on this node? (kubectl -n kube-system get pods -o wide -l app.kubernetes.io/name=podwall, and its log)
         is this its socket? (pass --socket PATH; podwalld's --socket, default ` + defaultSocket + `)
         may you open it? (the socket is root-only, mode 0600: run podwallctl as root, e.g. with sudo or kubectl exec)`

// explainError turns an RPC error into podwallctl's message and exit
// status: the daemon unreachable (with what to check), a malformed argument
// (usage, 2), or the daemon's own error (1).
func (c *client) explainError(err error) error {
	st := status.Convert(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		if cause := c.probeSocket(); cause != "" {
			return fmt.Errorf("cannot reach podwalld at %s: %s\n%s", c.socket, cause, unreachableHelp)
		}
		if st.Code() == codes.DeadlineExceeded {
			return fmt.Errorf("podwalld at %s did not answer in time (--timeout): %s", c.socket, st.Message())
		}
		return fmt.Errorf("cannot reach podwalld at %s: %s\n%s", c.socket, st.Message(), unreachableHelp)
	case codes.InvalidArgument:
		return usageError{msg: st.Message()}
	case codes.Unimplemented:
		return fmt.Errorf("podwalld at %s does not know this request (an older podwalld?): %s", c.socket, st.Message())
	}
	return fmt.Errorf("%s (podwalld at %s): %s", st.Code(), c.socket, st.Message())
}

// probeSocket says why the socket cannot be used, "" when it accepts a
// connection.
func (c *client) probeSocket() string {
	fi, err := os.Stat(c.socket)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "the socket does not exist (podwalld is not running, or it uses another --socket)"
	case errors.Is(err, os.ErrPermission):
		return fmt.Sprintf("permission denied reaching the socket: %v", err)
	case err != nil:
		return err.Error()
	case fi.Mode()&os.ModeSocket == 0:
		return "the path exists but is not a socket"
	}
	conn, err := net.DialTimeout("unix", c.socket, 2*time.Second)
	switch {
	case err == nil:
		conn.Close()
		return ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: nothing listens there (a stale socket: podwalld has stopped)"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return "permission denied: the socket is root-only"
	}
	return strings.TrimPrefix(err.Error(), "dial unix "+c.socket+": ")
}
