package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	pb "github.com/podwall/podwall/proto/podwall/v1"
)

// maxListedEndpoints is how many endpoints of each kind a table row lists;
// -o json lists them all.
const maxListedEndpoints = 6

// printServices prints a pod's Service verdicts: one row per Service port
// and IP family, with the endpoints that are and are not allowed.
func printServices(w io.Writer, verdicts []*pb.ServiceVerdict) {
	if len(verdicts) == 0 {
		return
	}
	fmt.Fprintln(w, "\nservices (egress):")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERVICE\tPORT\tFRONTENDS\tVERDICT\tALLOWED ENDPOINTS\tDENIED ENDPOINTS\tREASON")
	for _, v := range verdicts {
		port := fmt.Sprintf("%d/%s", v.GetPort(), v.GetProtocol())
		if v.GetPortName() != "" {
			port += " (" + v.GetPortName() + ")"
		}
		verdict := "closed"
		if v.GetAllowed() {
			verdict = "open"
		}
		fmt.Fprintf(tw, "  %s/%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.GetNamespace(), v.GetName(), port, list(v.GetFrontends()),
			verdict, shortList(v.GetAllowedEndpoints()), shortList(v.GetDeniedEndpoints()), dash(v.GetReason()))
	}
	tw.Flush()
}

// shortList lists at most maxListedEndpoints items and counts the rest.
func shortList(items []string) string {
	if len(items) <= maxListedEndpoints {
		return list(items)
	}
	return strings.Join(items[:maxListedEndpoints], ",") + fmt.Sprintf(",... (%d more)", len(items)-maxListedEndpoints)
}
