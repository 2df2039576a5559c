package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// explainRequest parses `explain SRC DST [PORT[/PROTO]]`.
func explainRequest(args []string) (*pb.ExplainRequest, error) {
	if len(args) < 2 || len(args) > 3 {
		return nil, errors.New("explain takes SRC DST [PORT[/PROTO]]")
	}
	for _, a := range args[:2] {
		if err := checkEndpoint(a); err != nil {
			return nil, err
		}
	}
	req := &pb.ExplainRequest{Source: args[0], Destination: args[1]}
	if len(args) == 3 {
		port, proto, hasProto := strings.Cut(args[2], "/")
		if hasProto {
			switch p := strings.ToUpper(proto); p {
			case "TCP", "UDP", "SCTP":
				req.Protocol = p
			default:
				return nil, fmt.Errorf("protocol %q: want TCP, UDP or SCTP", proto)
			}
		}
		switch n, err := strconv.Atoi(port); {
		case port == "":
			return nil, fmt.Errorf("%q: no port before the protocol", args[2])
		case err == nil && (n < 1 || n > 65535):
			return nil, fmt.Errorf("port %d is out of range 1-65535", n)
		case err == nil:
			req.Port = int32(n)
		case !validPortName(port):
			return nil, fmt.Errorf("port %q is neither a number nor a container port name", port)
		default:
			req.PortName = port
		}
	}
	return req, nil
}

// checkEndpoint accepts NAMESPACE/NAME, an IP address or a CIDR.
func checkEndpoint(s string) error {
	if _, err := netip.ParseAddr(s); err == nil {
		return nil
	}
	if _, err := netip.ParsePrefix(s); err == nil {
		return nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if ok && ns != "" && name != "" && !strings.Contains(name, "/") {
		return nil
	}
	return fmt.Errorf("%q is not NAMESPACE/NAME, an IP address or a CIDR", s)
}

// validPortName is the shape of a container port name (an IANA service
// name: letters, digits and dashes, at most 15).
func validPortName(s string) bool {
	if s == "" || len(s) > 15 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// printExplain prints the verdict, the two endpoints and one row per flow
// and direction. wide adds the isolating policies and the allowed ports and
// peers of each direction.
func printExplain(w io.Writer, x *pb.ExplainResponse, wide bool) {
	tw := newTable(w)
	fmt.Fprintf(tw, "verdict:\t%s\n", strings.ToUpper(x.GetVerdict()))
	fmt.Fprintf(tw, "source:\t%s\n", endpointLine(x.GetSource()))
	fmt.Fprintf(tw, "destination:\t%s\n", endpointLine(x.GetDestination()))
	fmt.Fprintf(tw, "port:\t%s\n", portLine(x))
	fmt.Fprintf(tw, "node:\t%s\n", dash(x.GetNodeName()))
	tw.Flush()
	fmt.Fprintln(w)

	tw = newTable(w)
	header := "FLOW\tVERDICT\tDIRECTION\tPOD\tENFORCED\tRESULT\tWHY"
	if wide {
		header += "\tISOLATED BY\tALLOWED PORTS\tALLOWED PEERS"
	}
	fmt.Fprintln(tw, header)
	for _, f := range x.GetFlows() {
		flow := f.GetSource() + " -> " + f.GetDestination()
		verdict := f.GetVerdict()
		if len(f.GetAllowedPorts()) > 0 && f.GetVerdict() == "partial" {
			verdict += " (" + strings.Join(f.GetAllowedPorts(), ",") + ")"
		}
		for i, d := range []*pb.ExplainDirection{f.GetEgress(), f.GetIngress()} {
			if i == 1 {
				flow, verdict = "", ""
			}
			why := d.GetReason()
			if d.GetPending() != "" {
				why += " [pending: " + d.GetPending() + "]"
			}
			// The flow and its verdict head its first row only.
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", flow, verdict, d.GetDirection(), dash(d.GetPod()),
				enforcedBy(d), d.GetVerdict(), why)
			if wide {
				fmt.Fprintf(tw, "\t%s\t%s\t%s", list(d.GetPolicies()), list(d.GetAllowedPorts()), list(d.GetAllowedPeers()))
			}
			fmt.Fprintln(tw)
		}
	}
	tw.Flush()
}

// enforcedBy says where a direction is enforced.
func enforcedBy(d *pb.ExplainDirection) string {
	switch {
	case d.GetPod() == "":
		return "-"
	case d.GetEnforced():
		return "this node"
	}
	return "elsewhere"
}

func endpointLine(e *pb.ExplainEndpoint) string {
	var parts []string
	switch {
	case e.GetKind() == "pod":
		where := "on this node"
		if !e.GetLocal() {
			where = "not on this node"
		}
		parts = append(parts, fmt.Sprintf("pod %s (%s)", e.GetPod(), where))
	case e.GetPod() != "":
		where := "on this node"
		if !e.GetLocal() {
			where = "not on this node"
		}
		parts = append(parts, fmt.Sprintf("%s %s, address of pod %s (%s)", e.GetKind(), e.GetInput(), e.GetPod(), where))
	default:
		parts = append(parts, e.GetKind()+" "+e.GetInput())
	}
	if e.GetKind() == "pod" {
		parts = append(parts, list(e.GetAddresses()))
	}
	if e.GetNote() != "" {
		parts = append(parts, e.GetNote())
	}
	return strings.Join(parts, "; ")
}

func portLine(x *pb.ExplainResponse) string {
	var s string
	switch {
	case x.GetPort() == 0 && x.GetProtocol() == "":
		s = "any"
	case x.GetPort() == 0:
		s = "any " + x.GetProtocol()
	default:
		s = fmt.Sprintf("%s/%d", x.GetProtocol(), x.GetPort())
	}
	if x.GetPortName() != "" {
		s += fmt.Sprintf(" (container port %q of the destination)", x.GetPortName())
	}
	return s
}
