package main

import (
	"context"
	"flag"
	"path/filepath"
	"time"

	"github.com/podwall/podwall/test/bench/controlplane"
)

// runControlplane is `bench controlplane`: it runs test/bench/controlplane
// and writes its result as JSON (also when it failed part-way: what was
// measured until then).
func runControlplane(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	out := fs.String("out", "bin/bench/controlplane.json", "write the result here")
	outDir := fs.String("profiles", "bin/bench", "directory for podwalld's profiles and log")
	binDir := fs.String("bin", "bin", "directory of podwall, podwalld and podwallctl")
	cniDir := fs.String("cni-bin", "bin/cni", "directory of the reference CNI plugins")
	kubeDir := fs.String("kube-bin", "", "directory of the Kubernetes binaries (default $PODWALL_KUBE_BIN_DIR or ~/.cache/podwall/k8s-<version>)")
	sc := controlplane.DefaultScale
	fs.IntVar(&sc.Pods, "pods", sc.Pods, "pods in the cluster, local ones included")
	fs.IntVar(&sc.Namespaces, "namespaces", sc.Namespaces, "namespaces")
	fs.IntVar(&sc.Policies, "policies", sc.Policies, "NetworkPolicies")
	fs.IntVar(&sc.Services, "services", sc.Services, "Services")
	fs.IntVar(&sc.LocalPods, "local-pods", sc.LocalPods, "local pods the measured policies select")
	fs.IntVar(&sc.RemoteNodes, "remote-nodes", sc.RemoteNodes, "other nodes")
	var o controlplane.Options
	fs.IntVar(&o.PolicyRounds, "policy-rounds", 5, "rounds of policy changes on one pod")
	fs.IntVar(&o.PolicyAllRounds, "policy-all-rounds", 3, "rounds of policy changes on all local pods")
	fs.IntVar(&o.PeerRounds, "peer-rounds", 5, "rounds of peer changes per churn group")
	fs.IntVar(&o.NamespaceRounds, "namespace-rounds", 5, "rounds of namespace relabels")
	fs.IntVar(&o.AddSamples, "add-samples", 30, "timed CNI ADDs")
	fs.IntVar(&o.ProfileSeconds, "profile-seconds", 60, "length of podwalld's CPU profile")
	sharedHost := fs.Bool("shared-host", false, "run in the current netns instead of a node netns of its own")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*sharedHost {
		if done, err := inNodeNetns(ctx, "pw-bnnode-cp"); done {
			return err
		}
	}
	var err error
	for _, p := range []*string{binDir, cniDir, outDir} {
		if *p, err = filepath.Abs(*p); err != nil {
			return err
		}
	}
	o.BinDir, o.CNIBinDir, o.KubeBinDir, o.OutDir, o.Scale = *binDir, *cniDir, *kubeDir, *outDir, sc
	o.Logf = logger(time.Now())
	res, runErr := controlplane.Run(ctx, o)
	if res != nil {
		if err := writeJSON(*out, res); err != nil {
			return err
		}
	}
	return runErr
}
