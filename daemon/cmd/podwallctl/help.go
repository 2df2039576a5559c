package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// commandHelp documents one command: its usage line, what it does and
// examples.
type commandHelp struct {
	usage    string
	summary  string
	details  string
	examples []string
}

var helps = map[string]commandHelp{
	"status": {
		usage:   "podwallctl status [-o table|wide|json|yaml]",
		summary: "the daemon's state: source, readiness, sync counters, source errors",
		details: `Prints the daemon's version, node, policy source (kubernetes or manifests:<dir>),
whether it is ready to serve CNI ADD, how many pods it manages and policies it
has read, when it last synced, and every input it could not use (a broken
manifest, a policy the compiler could only partly use). -o wide prints the same
as the table.`,
		examples: []string{
			"podwallctl status",
			"podwallctl status -o json | jq .ready",
		},
	},
	"pods": {
		usage:   "podwallctl pods [-o table|wide|json|yaml]",
		summary: "the attachments the daemon serves, with the policies selecting them",
		details: `One row per CNI attachment on this node: NAMESPACE NAME IPS, the isolated
directions with their rule counts, the selecting policies, the container ID
(12 characters; all of it with -o wide) and the last error applying the pod's
firewall. -o wide adds IFNAME NETWORK NETNS.`,
		examples: []string{
			"podwallctl pods",
			"podwallctl pods -o wide",
			`podwallctl pods -o json | jq -r '.pods[] | select(.syncError != "") | .name'`,
		},
	},
	"pod": {
		usage:   "podwallctl pod NAMESPACE/NAME [-o table|wide|json|yaml]",
		summary: "one pod: its policies and the rules and ipsets in force in its netns",
		details: `Reads the rules and ipsets in force inside the pod's network namespace (what
iptables-nft-save and ipset save print there) and shows them with the pod's
attachment, addresses and policies. Exit status 1 when the pod is not attached
on this node. -o wide prints the same as the table.`,
		examples: []string{
			"podwallctl pod shop/web-0",
			"podwallctl pod shop/web-0 -o yaml",
		},
	},
	"policies": {
		usage:   "podwallctl policies [-o table|wide|json|yaml]",
		summary: "the policies and the local pods each selects",
		details: `One row per NetworkPolicy the daemon has read: NAMESPACE NAME TYPES and the
pods on this node it selects. -o wide adds their COUNT.`,
		examples: []string{
			"podwallctl policies",
			"podwallctl policies -o json | jq '.policies[] | select(.selectedPods == [])'",
		},
	},
	"explain": {
		usage:   "podwallctl explain SRC DST [PORT[/PROTO]] [-o table|wide|json|yaml]",
		summary: "whether SRC may open a connection to DST, and which policies and rules decide it",
		details: `SRC and DST are each NAMESPACE/NAME of a pod, an IP address or a CIDR. PORT is a
number or a container port name of DST (e.g. http); PROTO is TCP (the default),
UDP or SCTP. Without PORT every port is considered and the allowed ones listed.

The daemon answers from the state it enforces, with the same compiler: for each
address pair (a dual-stack pod has one per family) the source's EGRESS and the
destination's INGRESS, each with its verdict (allowed, denied, or partial: some
ports, or part of a CIDR), the policies that isolate it, and the rules that
allow it (policy, direction, index of the rule in spec.ingress/spec.egress), or
that none does. Traffic from the node's own addresses into a pod (kubelet
probes), loopback and replies of established connections are always allowed.

A pod on another node is evaluated with the same policies but marked ENFORCED
"elsewhere": this node does not enforce its firewall, the podwalld of its node
does (ask that one). A side that is not a pod (an external address, a node)
has no NetworkPolicy. [pending: ...] means the firewall in force still gives
another verdict (the next sync changes it, or applying it failed).

Exit status 0 whatever the verdict (read it from the output, e.g. -o json
| jq -r .verdict).`,
		examples: []string{
			"podwallctl explain shop/frontend shop/db 5432",
			"podwallctl explain shop/frontend shop/db postgres/TCP",
			"podwallctl explain 10.0.3.17 shop/web-0 8080",
			"podwallctl explain shop/web-0 0.0.0.0/0 443 -o wide",
			"podwallctl explain shop/web-0 kube-system/coredns-5d78c9869d-abcde 53/UDP",
			"podwallctl explain shop/web-0 shop/db -o json | jq -r .verdict",
		},
	},
}

// globalFlags documents the flags every command takes.
const globalFlags = `flags (before or after the command):
  --socket PATH      podwalld's unix socket (default ` + defaultSocket + `)
  --timeout D        deadline of the request (default 10s)
  -o, --output FMT   table (default), wide (more columns), json, or yaml
  -h, --help         this help; 'podwallctl COMMAND --help' for one command`

// exitStatuses documents the exit statuses.
const exitStatuses = `exit status:
  0  success (for explain: whatever the verdict)
  1  podwalld unreachable (the socket it tried and what to check are printed),
     podwalld answered with an error, or the object was not found
  2  bad usage: unknown command or flag, wrong arguments, or an argument
     podwalld rejects as malformed`

func commandNames() []string {
	names := make([]string, 0, len(helps))
	for name := range helps {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// usageLine is the usage of command, or of podwallctl for "".
func usageLine(command string) string {
	if h, ok := helps[command]; ok {
		return h.usage
	}
	return "podwallctl [--socket PATH] [--timeout D] COMMAND [ARGS] [-o table|wide|json|yaml]"
}

// printHelp prints the help of command, or podwallctl's for "".
func printHelp(w io.Writer, command string) {
	h, ok := helps[command]
	if !ok {
		fmt.Fprintf(w, "podwallctl reads podwalld's status API on its unix socket.\n\nusage: %s\n\ncommands:\n", usageLine(""))
		tw := newTable(w)
		for _, name := range []string{"status", "pods", "pod", "policies", "explain"} {
			fmt.Fprintf(tw, "  %s\t%s\n", name, helps[name].summary)
		}
		tw.Flush()
		fmt.Fprintf(w, "\n%s\n\n%s\n\nexamples:\n", globalFlags, exitStatuses)
		for _, name := range []string{"status", "pods", "explain"} {
			fmt.Fprintf(w, "  %s\n", helps[name].examples[0])
		}
		fmt.Fprintln(w, "\nRun 'podwallctl COMMAND --help' for the columns and examples of a command.")
		return
	}
	fmt.Fprintf(w, "%s: %s\n\nusage: %s\n\n%s\n\n%s\n\n%s\n\nexamples:\n", command, h.summary, h.usage,
		strings.TrimSpace(h.details), globalFlags, exitStatuses)
	for _, ex := range h.examples {
		fmt.Fprintf(w, "  %s\n", ex)
	}
}
