// Command podwall is the podwall CNI plugin: a thin chained plugin that runs
// after the IP-assigning plugin (a VPC/ENI plugin) and asks the node daemon,
// podwalld, over gRPC on a unix socket to install, check and remove the pod's
// NetworkPolicy firewall. It passes the prevResult on unchanged. It does no
// firewall work itself and must not import anything under daemon/; it imports
// only the generated API in proto/, the CNI libraries and gRPC.
//
// Verbs: ADD, DEL and VERSION for cniVersion 0.3.0 and 0.3.1 (still written by
// some ENI plugins' conflists), plus CHECK for 0.4.0 and 1.0.0, plus STATUS and
// GC for 1.1.0. Logs go to stderr, or to the file the config's
// logFile names, never to stdout: stdout carries the CNI result or error. CNI error codes are chosen in one place, cniError.
package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	podwallv1 "github.com/podwall/podwall/proto/podwall/v1"
)

// delTimeout caps the deadline of DEL: a wedged daemon must not stall pod
// teardown, and what DEL leaves behind is GC's to remove.
const delTimeout = 3 * time.Second

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    withCNIError("ADD", cmdAdd),
		Del:    withCNIError("DEL", cmdDel),
		Check:  withCNIError("CHECK", cmdCheck),
		Status: withCNIError("STATUS", cmdStatus),
		GC:     withCNIError("GC", cmdGC),
	}, version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"),
		"podwall: Kubernetes NetworkPolicy for chained pod networks (talks to podwalld)")
}

// withCNIError turns the errors of a verb into CNI errors, through cniError.
func withCNIError(verb string, run func(*skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		if err := run(args); err != nil {
			return cniError(verb, err)
		}
		return nil
	}
}

// newLogger logs to conf's logFile, or to stderr when there is none (conf
// may be nil); never to stdout, which carries the CNI result.
func newLogger(conf *pluginConfig, verb string, args *skel.CmdArgs) *slog.Logger {
	var w io.Writer = os.Stderr
	if conf != nil && conf.LogFile != "" {
		w = &logFile{path: conf.LogFile}
	}
	return slog.New(slog.NewTextHandler(w, nil)).With(
		"plugin", "podwall", "verb", verb, "containerID", args.ContainerID, "ifName", args.IfName)
}

func cmdAdd(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prevResult, err := parsePrevResult(conf, "ADD")
	if err != nil {
		return err
	}
	pod, err := parsePodArgs(args.Args)
	if err != nil {
		return err
	}
	if err := pod.requireIdentity(); err != nil {
		return err
	}
	if err := checkNetNS(args.Netns); err != nil {
		return err
	}
	ips, gateways, err := sandboxAddresses(prevResult)
	if err != nil {
		return err
	}

	log := newLogger(conf, "ADD", args).With("pod", pod.String())
	client, err := dialDaemon(conf.Socket)
	if err == nil {
		defer client.Close()
		_, err = call(client, conf.Timeout, client.cni.Add, &podwallv1.AddRequest{
			Attachment: attachment(conf, args),
			Pod:        pod.identity(),
			Netns:      args.Netns,
			Ips:        ips,
			Gateways:   gateways,
			CniVersion: conf.CNIVersion,
		})
	}
	if err != nil {
		if !conf.FailOpen || !errors.Is(err, errDaemonUnreachable) {
			return err
		}
		log.Warn("failOpen: the pod starts WITHOUT its NetworkPolicy firewall because the daemon is unreachable",
			"error", err)
	}
	return printPrevResult(conf)
}

func cmdDel(args *skel.CmdArgs) error {
	// DEL always succeeds: a failing DEL leaves the pod stuck terminating,
	// and whatever it cannot remove now the daemon removes on GC.
	conf, err := parseConfig(args.StdinData)
	log := newLogger(conf, "DEL", args)
	if err != nil {
		if conf == nil {
			log.Warn("DEL: cannot read the config; nothing to do", "error", err)
			return nil
		}
		log.Warn("DEL: using defaults for the bad config values", "error", err)
	}
	pod, err := parsePodArgs(args.Args)
	if err != nil {
		log.Warn("DEL: ignoring CNI_ARGS", "error", err)
	}
	log = log.With("pod", pod.String())
	netns := args.Netns
	if netns != "" {
		if err := checkNetNS(netns); err != nil {
			// The daemon only forgets the attachment; it must not enter
			// whatever is at that path now.
			log.Info("DEL: the netns is gone; the daemon forgets the attachment only", "netns", netns, "reason", err)
			netns = ""
		}
	}
	client, err := dialDaemon(conf.Socket)
	if err == nil {
		defer client.Close()
		_, err = call(client, min(conf.Timeout, delTimeout), client.cni.Del, &podwallv1.DelRequest{
			Attachment: attachment(conf, args),
			Pod:        pod.identity(),
			Netns:      netns,
		})
	}
	switch {
	case status.Code(err) == codes.DeadlineExceeded:
		// The daemon finishes a DEL it has started even when the plugin
		// stops waiting; GC catches what it could not do.
		log.Warn("DEL: podwalld did not answer in time; it finishes the removal on its own, or GC will", "error", err)
	case err != nil:
		log.Warn("DEL: podwalld did not remove the attachment; GC will", "error", err)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	prevResult, err := parsePrevResult(conf, "CHECK")
	if err != nil {
		return err
	}
	// CHECK sends the identity when the runtime gives it; the daemon knows
	// the attachment by its key.
	pod, err := parsePodArgs(args.Args)
	if err != nil {
		return err
	}
	if err := checkNetNS(args.Netns); err != nil {
		return err
	}
	ips, _, err := sandboxAddresses(prevResult)
	if err != nil {
		return err
	}
	client, err := dialDaemon(conf.Socket)
	if err != nil {
		return err
	}
	defer client.Close()
	_, err = call(client, conf.Timeout, client.cni.Check, &podwallv1.CheckRequest{
		Attachment: attachment(conf, args),
		Pod:        pod.identity(),
		Netns:      args.Netns,
		Ips:        ips,
	})
	return err
}

func cmdStatus(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	client, err := dialDaemon(conf.Socket)
	if err == nil {
		defer client.Close()
		_, err = call(client, conf.Timeout, client.cni.Status, &podwallv1.StatusRequest{})
	}
	// A failing STATUS makes containerd 2.x report the node's network not
	// ready: kubelet marks the node NotReady, and after the default 300 s
	// not-ready toleration its pods are evicted. failOpen, which already
	// chose availability over isolation for ADD, keeps STATUS green too.
	if err != nil && conf.FailOpen && errors.Is(err, errDaemonUnreachable) {
		newLogger(conf, "STATUS", args).Warn("failOpen: reporting ready although the daemon is unreachable", "error", err)
		return nil
	}
	return err
}

func cmdGC(args *skel.CmdArgs) error {
	conf, err := parseConfig(args.StdinData)
	if err != nil {
		return err
	}
	valid := make([]*podwallv1.Attachment, 0, len(conf.ValidAttachments))
	for _, a := range conf.ValidAttachments {
		valid = append(valid, &podwallv1.Attachment{Network: conf.Name, ContainerId: a.ContainerID, IfName: a.IfName})
	}
	client, err := dialDaemon(conf.Socket)
	if err != nil {
		return err
	}
	defer client.Close()
	resp, err := call(client, conf.Timeout, client.cni.GC, &podwallv1.GCRequest{
		Network:          conf.Name,
		ValidAttachments: valid,
	})
	if err != nil {
		return err
	}
	if removed := resp.GetRemoved(); len(removed) > 0 {
		log := newLogger(conf, "GC", args)
		for _, a := range removed {
			log.Info("GC: removed attachment", "network", a.GetNetwork(),
				"removedContainerID", a.GetContainerId(), "removedIfName", a.GetIfName())
		}
	}
	return nil
}

// parsePrevResult returns the prevResult as a current result, for reading
// addresses. podwall must be chained, so a missing prevResult is an error.
func parsePrevResult(conf *pluginConfig, verb string) (*current.Result, error) {
	if conf.RawPrevResult == nil {
		return nil, fmt.Errorf("%w: %s without prevResult: podwall must follow an IP-assigning plugin in a conflist",
			errInvalidConfig, verb)
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidConfig, err)
	}
	result, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("%w: convert prevResult: %w", errInvalidConfig, err)
	}
	return result, nil
}

// printPrevResult prints the prevResult unchanged, in the config's version.
func printPrevResult(conf *pluginConfig) error {
	if err := types.PrintResult(conf.PrevResult, conf.CNIVersion); err != nil {
		return fmt.Errorf("%w: print result: %w", errIO, err)
	}
	return nil
}

// sandboxAddresses returns, in CIDR form, the prevResult's addresses that sit
// on an interface inside the sandbox or name no interface, and the gateways
// of those addresses, without duplicates. An address on a host-side interface
// (the host end of a veth) is not the pod's.
func sandboxAddresses(result *current.Result) (ips, gateways []string, err error) {
	seen := make(map[string]bool)
	for _, ip := range result.IPs {
		if ip.Interface != nil {
			index := *ip.Interface
			if index < 0 || index >= len(result.Interfaces) {
				return nil, nil, fmt.Errorf("%w: prevResult address %s names interface %d of %d",
					errInvalidConfig, ip.Address.String(), index, len(result.Interfaces))
			}
			if result.Interfaces[index].Sandbox == "" {
				continue
			}
		}
		ips = append(ips, ip.Address.String())
		if ip.Gateway != nil {
			if gateway := ip.Gateway.String(); !seen[gateway] {
				seen[gateway] = true
				gateways = append(gateways, gateway)
			}
		}
	}
	return ips, gateways, nil
}

// attachment is the key of this CNI attachment.
func attachment(conf *pluginConfig, args *skel.CmdArgs) *podwallv1.Attachment {
	return &podwallv1.Attachment{Network: conf.Name, ContainerId: args.ContainerID, IfName: args.IfName}
}

// identity is the pod identity as the API carries it.
func (p podArgs) identity() *podwallv1.PodIdentity {
	return &podwallv1.PodIdentity{
		Namespace:        p.Namespace,
		Name:             p.Name,
		Uid:              p.UID,
		InfraContainerId: p.InfraContainerID,
	}
}
