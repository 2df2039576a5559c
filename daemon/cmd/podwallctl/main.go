// Command podwallctl queries podwalld's status API over its unix socket.
//
//	podwallctl [--socket PATH] status|pods|policies [-o json]
//	podwallctl [--socket PATH] pod NAMESPACE/NAME [-o json]
//
// Exit status: 0 on success, 1 when the daemon cannot be reached or answers
// with an error (e.g. the pod is not attached on this node), 2 on bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

const usage = `usage: podwallctl [--socket PATH] [--timeout DURATION] COMMAND [-o table|json]

commands:
  status          the daemon's state: source, readiness, sync counters, source errors
  pods            the attachments the daemon serves, with the policies selecting them
  pod NS/NAME     one pod: its policies and the rules and ipsets in force in its netns
  policies        the policies and the local pods each selects
`

var errUsage = errors.New("usage")

func main() {
	err := run(os.Args[1:], os.Stdout)
	switch {
	case err == nil:
	case errors.Is(err, errUsage):
		fmt.Fprint(os.Stderr, usage)
		if msg := strings.TrimPrefix(err.Error(), "usage"); msg != "" {
			fmt.Fprintln(os.Stderr, "podwallctl:"+strings.TrimPrefix(msg, ":"))
		}
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "podwallctl:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("podwallctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socket", "/run/podwall/podwall.sock", "podwalld's unix socket")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline for the request")
	output := fs.String("o", "table", "output format: table or json")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return errUsage
	}
	cmd, rest := rest[0], rest[1:]
	// Allow "-o json" after the command too.
	sub := flag.NewFlagSet(cmd, flag.ContinueOnError)
	sub.SetOutput(io.Discard)
	sub.StringVar(output, "o", *output, "output format")
	var pos []string
	for len(rest) > 0 {
		if err := sub.Parse(rest); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		rest = sub.Args()
		if len(rest) > 0 {
			pos, rest = append(pos, rest[0]), rest[1:]
		}
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("%w: -o must be table or json", errUsage)
	}

	conn, err := grpc.NewClient("unix://"+*socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *socket, err)
	}
	defer conn.Close()
	client := pb.NewStatusClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var msg proto.Message
	var table func(io.Writer)
	switch cmd {
	case "status":
		if len(pos) != 0 {
			return fmt.Errorf("%w: status takes no arguments", errUsage)
		}
		st, err := client.GetStatus(ctx, &pb.GetStatusRequest{})
		if err != nil {
			return rpcError(*socket, err)
		}
		msg, table = st, func(w io.Writer) { printStatus(w, st) }
	case "pods":
		if len(pos) != 0 {
			return fmt.Errorf("%w: pods takes no arguments", errUsage)
		}
		resp, err := client.ListPods(ctx, &pb.ListPodsRequest{})
		if err != nil {
			return rpcError(*socket, err)
		}
		msg, table = resp, func(w io.Writer) { printPods(w, resp.GetPods()) }
	case "pod":
		if len(pos) != 1 || strings.Count(pos[0], "/") != 1 {
			return fmt.Errorf("%w: pod takes one NAMESPACE/NAME", errUsage)
		}
		ns, name, _ := strings.Cut(pos[0], "/")
		detail, err := client.GetPod(ctx, &pb.GetPodRequest{Namespace: ns, Name: name})
		if err != nil {
			return rpcError(*socket, err)
		}
		msg, table = detail, func(w io.Writer) { printPod(w, detail) }
	case "policies":
		if len(pos) != 0 {
			return fmt.Errorf("%w: policies takes no arguments", errUsage)
		}
		resp, err := client.ListPolicies(ctx, &pb.ListPoliciesRequest{})
		if err != nil {
			return rpcError(*socket, err)
		}
		msg, table = resp, func(w io.Writer) { printPolicies(w, resp.GetPolicies()) }
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	if *output == "json" {
		b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(msg)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintln(out, string(b))
		return err
	}
	table(out)
	return nil
}

func rpcError(socket string, err error) error {
	st := status.Convert(err)
	return fmt.Errorf("%s (podwalld at %s): %s", st.Code(), socket, st.Message())
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func list(items []string) string { return dash(strings.Join(items, ",")) }

func printStatus(w io.Writer, st *pb.DaemonStatus) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "version:\t%s\n", st.GetVersion())
	fmt.Fprintf(tw, "node:\t%s\n", st.GetNodeName())
	fmt.Fprintf(tw, "source:\t%s\n", st.GetSource())
	fmt.Fprintf(tw, "ready:\t%v\n", st.GetReady())
	fmt.Fprintf(tw, "pods:\t%d\n", st.GetPods())
	fmt.Fprintf(tw, "policies:\t%d\n", st.GetPolicies())
	fmt.Fprintf(tw, "started:\t%s\n", st.GetStarted().AsTime().Format(time.RFC3339))
	last := "-"
	if st.GetLastSync() != nil {
		last = st.GetLastSync().AsTime().Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "last sync:\t%s\n", last)
	fmt.Fprintf(tw, "syncs:\t%d (%d with errors)\n", st.GetSyncs(), st.GetSyncErrors())
	if st.GetLastSyncError() != "" {
		fmt.Fprintf(tw, "last sync error:\t%s\n", st.GetLastSyncError())
	}
	tw.Flush()
	if len(st.GetSourceErrors()) > 0 {
		fmt.Fprintln(w, "source errors:")
		for _, e := range st.GetSourceErrors() {
			fmt.Fprintf(w, "  %s: %s\n", e.GetObject(), e.GetError())
		}
	}
}

func isolation(p *pb.PodSummary) string {
	var dirs []string
	if p.GetIngressIsolated() {
		dirs = append(dirs, fmt.Sprintf("ingress(%d)", p.GetIngressRules()))
	}
	if p.GetEgressIsolated() {
		dirs = append(dirs, fmt.Sprintf("egress(%d)", p.GetEgressRules()))
	}
	return list(dirs)
}

func printPods(w io.Writer, pods []*pb.PodSummary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tIPS\tISOLATED(RULES)\tPOLICIES\tCONTAINER\tERROR")
	for _, p := range pods {
		cid := p.GetContainerId()
		if len(cid) > 12 {
			cid = cid[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.GetNamespace(), p.GetName(), list(p.GetIps()),
			isolation(p), list(p.GetPolicies()), cid, dash(p.GetSyncError()))
	}
	tw.Flush()
}

func printPod(w io.Writer, d *pb.PodDetail) {
	p := d.GetPod()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "pod:\t%s/%s\n", p.GetNamespace(), p.GetName())
	fmt.Fprintf(tw, "attachment:\t%s/%s/%s\n", p.GetNetwork(), p.GetContainerId(), p.GetIfName())
	fmt.Fprintf(tw, "netns:\t%s\n", p.GetNetns())
	fmt.Fprintf(tw, "ips:\t%s\n", list(p.GetIps()))
	fmt.Fprintf(tw, "isolated:\t%s\n", isolation(p))
	fmt.Fprintf(tw, "policies:\t%s\n", list(p.GetPolicies()))
	if p.GetSyncError() != "" {
		fmt.Fprintf(tw, "sync error:\t%s\n", p.GetSyncError())
	}
	tw.Flush()
	for _, r := range []struct{ name, text string }{{"IPv4 rules", d.GetRulesV4()}, {"IPv6 rules", d.GetRulesV6()}} {
		fmt.Fprintf(w, "\n%s:\n", r.name)
		if strings.TrimSpace(r.text) == "" {
			fmt.Fprintln(w, "  (none)")
			continue
		}
		for _, line := range strings.Split(strings.TrimRight(r.text, "\n"), "\n") {
			fmt.Fprintln(w, "  "+line)
		}
	}
	if len(d.GetIpsets()) > 0 {
		fmt.Fprintln(w, "\nipsets:")
		for _, s := range d.GetIpsets() {
			fmt.Fprintf(w, "  %s (%s): %s\n", s.GetName(), s.GetFamily(), list(s.GetMembers()))
		}
	}
}

func printPolicies(w io.Writer, pols []*pb.PolicySummary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tTYPES\tSELECTED LOCAL PODS")
	for _, p := range pols {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.GetNamespace(), p.GetName(), list(p.GetPolicyTypes()), list(p.GetSelectedPods()))
	}
	tw.Flush()
}
