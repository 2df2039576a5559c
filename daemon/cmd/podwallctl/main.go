// Command podwallctl queries podwalld's status API over its unix socket: the
// daemon's state, the pods it serves, the policies, one pod's rules, and
// "explain": why a connection is allowed or denied.
//
//	podwallctl [--socket PATH] [--timeout D] COMMAND [ARGS] [-o table|wide|json|yaml]
//
// Exit status: 0 on success, 1 when the daemon cannot be reached or answers
// with an error (e.g. the pod is not attached on this node), 2 on bad usage
// (including an argument the daemon rejects as malformed). `podwallctl help`
// and `podwallctl COMMAND --help` print the manual.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit statuses scripts can rely on.
const (
	exitOK     = 0
	exitFailed = 1 // daemon unreachable, daemon error, not found
	exitUsage  = 2 // bad command line (or an argument the daemon rejects)
)

// run runs one podwallctl command line and returns its exit status.
func run(args []string, stdout, stderr io.Writer) int {
	inv, err := parseArgs(args)
	if err != nil {
		return fail(stderr, err)
	}
	if inv.help {
		printHelp(stdout, inv.command)
		return exitOK
	}
	cmd := commands[inv.command]
	if err := cmd.check(inv.args); err != nil {
		return fail(stderr, usageError{command: inv.command, msg: err.Error()})
	}
	client, err := dial(inv.socket)
	if err != nil {
		return fail(stderr, err)
	}
	defer client.close()
	ctx, cancel := context.WithTimeout(context.Background(), inv.timeout)
	defer cancel()
	res, err := cmd.run(ctx, client, inv.args)
	if err != nil {
		return fail(stderr, client.explainError(err))
	}
	if err := render(stdout, inv.output, res); err != nil {
		return fail(stderr, err)
	}
	return exitOK
}

// fail prints err and returns its exit status.
func fail(stderr io.Writer, err error) int {
	var u usageError
	if errors.As(err, &u) {
		fmt.Fprintf(stderr, "podwallctl: %s\n", u.msg)
		fmt.Fprintf(stderr, "usage: %s\n", usageLine(u.command))
		fmt.Fprintf(stderr, "Run 'podwallctl %shelp' for more.\n", helpHint(u.command))
		return exitUsage
	}
	fmt.Fprintf(stderr, "podwallctl: %v\n", err)
	return exitFailed
}

func helpHint(command string) string {
	if command == "" {
		return ""
	}
	return command + " --"
}

// usageError is a bad command line: exit status 2.
type usageError struct {
	command string // "" before the command is known
	msg     string
}

func (e usageError) Error() string { return e.msg }

// invocation is a parsed command line.
type invocation struct {
	socket  string
	timeout time.Duration
	output  string
	help    bool
	command string
	args    []string
}

const defaultSocket = "/run/podwall/podwall.sock"

// outputs are the values of -o.
var outputs = []string{"table", "wide", "json", "yaml"}

// parseArgs parses global flags and the command; flags may come before or
// after the command and its arguments.
func parseArgs(args []string) (*invocation, error) {
	inv := &invocation{socket: defaultSocket, timeout: 10 * time.Second, output: "table"}
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		needValue := func() (string, error) {
			if hasValue {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", usageError{command: commandOf(pos), msg: fmt.Sprintf("flag %s needs a value", a)}
			}
			i++
			return args[i], nil
		}
		switch name {
		case "h", "help":
			inv.help = true
		case "socket":
			v, err := needValue()
			if err != nil {
				return nil, err
			}
			if v == "" {
				return nil, usageError{command: commandOf(pos), msg: "--socket must not be empty"}
			}
			inv.socket = v
		case "timeout":
			v, err := needValue()
			if err != nil {
				return nil, err
			}
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return nil, usageError{command: commandOf(pos), msg: fmt.Sprintf("--timeout %q: want a positive duration such as 5s", v)}
			}
			inv.timeout = d
		case "o", "output":
			v, err := needValue()
			if err != nil {
				return nil, err
			}
			if !contains(outputs, v) {
				return nil, usageError{command: commandOf(pos), msg: fmt.Sprintf("-o %q: want one of %s", v, strings.Join(outputs, ", "))}
			}
			inv.output = v
		default:
			return nil, usageError{command: commandOf(pos), msg: fmt.Sprintf("unknown flag %s", a)}
		}
	}
	if len(pos) > 0 && pos[0] == "help" {
		inv.help = true
		pos = pos[1:]
		if len(pos) > 1 {
			return nil, usageError{msg: "help takes at most one command"}
		}
	}
	if len(pos) == 0 {
		if inv.help {
			return inv, nil
		}
		return nil, usageError{msg: "no command given"}
	}
	inv.command, inv.args = pos[0], pos[1:]
	if _, ok := commands[inv.command]; !ok {
		return nil, usageError{msg: fmt.Sprintf("unknown command %q (commands: %s)", inv.command, strings.Join(commandNames(), ", "))}
	}
	return inv, nil
}

// commandOf is the command among the positional arguments so far, if known.
func commandOf(pos []string) string {
	if len(pos) > 0 {
		if _, ok := commands[pos[0]]; ok {
			return pos[0]
		}
	}
	return ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// command is one podwallctl command.
type command struct {
	// check validates the arguments before anything is dialled.
	check func(args []string) error
	run   func(ctx context.Context, c *client, args []string) (result, error)
}

// commands are podwallctl's commands by name; help.go documents them.
var commands = map[string]command{
	"status": {
		check: noArgs,
		run: func(ctx context.Context, c *client, _ []string) (result, error) {
			st, err := c.status.GetStatus(ctx, &pb.GetStatusRequest{})
			if err != nil {
				return result{}, err
			}
			return result{msg: st, table: func(w io.Writer, _ bool) { printStatus(w, st) }}, nil
		},
	},
	"pods": {
		check: noArgs,
		run: func(ctx context.Context, c *client, _ []string) (result, error) {
			resp, err := c.status.ListPods(ctx, &pb.ListPodsRequest{})
			if err != nil {
				return result{}, err
			}
			return result{msg: resp, table: func(w io.Writer, wide bool) { printPods(w, resp.GetPods(), wide) }}, nil
		},
	},
	"pod": {
		check: func(args []string) error {
			if len(args) != 1 {
				return errors.New("pod takes one NAMESPACE/NAME")
			}
			if ns, name, ok := strings.Cut(args[0], "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
				return fmt.Errorf("%q is not NAMESPACE/NAME", args[0])
			}
			return nil
		},
		run: func(ctx context.Context, c *client, args []string) (result, error) {
			ns, name, _ := strings.Cut(args[0], "/")
			detail, err := c.status.GetPod(ctx, &pb.GetPodRequest{Namespace: ns, Name: name})
			if err != nil {
				return result{}, err
			}
			return result{msg: detail, table: func(w io.Writer, _ bool) { printPod(w, detail) }}, nil
		},
	},
	"policies": {
		check: noArgs,
		run: func(ctx context.Context, c *client, _ []string) (result, error) {
			resp, err := c.status.ListPolicies(ctx, &pb.ListPoliciesRequest{})
			if err != nil {
				return result{}, err
			}
			return result{msg: resp, table: func(w io.Writer, wide bool) { printPolicies(w, resp.GetPolicies(), wide) }}, nil
		},
	},
	"explain": {
		check: func(args []string) error {
			_, err := explainRequest(args)
			return err
		},
		run: func(ctx context.Context, c *client, args []string) (result, error) {
			req, _ := explainRequest(args)
			resp, err := c.status.Explain(ctx, req)
			if err != nil {
				return result{}, err
			}
			return result{msg: resp, table: func(w io.Writer, wide bool) { printExplain(w, resp, wide) }}, nil
		},
	},
}

func noArgs(args []string) error {
	if len(args) != 0 {
		return fmt.Errorf("unexpected arguments %q", args)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func list(items []string) string { return dash(strings.Join(items, ",")) }

func printStatus(w io.Writer, st *pb.DaemonStatus) {
	tw := newTable(w)
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

// printPods prints one row per attachment; wide adds the attachment's
// interface, network and netns and the whole container ID.
func printPods(w io.Writer, pods []*pb.PodSummary, wide bool) {
	tw := newTable(w)
	header := "NAMESPACE\tNAME\tIPS\tISOLATED(RULES)\tPOLICIES\tCONTAINER\tERROR"
	if wide {
		header += "\tIFNAME\tNETWORK\tNETNS"
	}
	fmt.Fprintln(tw, header)
	for _, p := range pods {
		cid := p.GetContainerId()
		if len(cid) > 12 && !wide {
			cid = cid[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s", p.GetNamespace(), p.GetName(), list(p.GetIps()),
			isolation(p), list(p.GetPolicies()), dash(cid), dash(p.GetSyncError()))
		if wide {
			fmt.Fprintf(tw, "\t%s\t%s\t%s", dash(p.GetIfName()), dash(p.GetNetwork()), dash(p.GetNetns()))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

func printPod(w io.Writer, d *pb.PodDetail) {
	p := d.GetPod()
	tw := newTable(w)
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
	printServices(w, d.GetServices())
}

// printPolicies prints one row per policy; wide adds how many local pods
// it selects.
func printPolicies(w io.Writer, pols []*pb.PolicySummary, wide bool) {
	tw := newTable(w)
	header := "NAMESPACE\tNAME\tTYPES\tSELECTED LOCAL PODS"
	if wide {
		header += "\tCOUNT"
	}
	fmt.Fprintln(tw, header)
	for _, p := range pols {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s", p.GetNamespace(), p.GetName(), list(p.GetPolicyTypes()), list(p.GetSelectedPods()))
		if wide {
			fmt.Fprintf(tw, "\t%d", len(p.GetSelectedPods()))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// newTable returns the tab writer every table and key/value list uses.
func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }
