package main

import (
	"fmt"
	"strings"
)

// podArgs is the pod identity the runtime passes in CNI_ARGS.
type podArgs struct {
	Namespace        string // K8S_POD_NAMESPACE
	Name             string // K8S_POD_NAME
	InfraContainerID string // K8S_POD_INFRA_CONTAINER_ID
	UID              string // K8S_POD_UID
}

// parsePodArgs reads the K8S_POD_* keys of CNI_ARGS ("K1=V1;K2=V2"). Every
// other key is ignored whether or not IgnoreUnknown is set: the same CNI_ARGS
// go to every plugin of the chain and podwall reads only its own keys. Empty
// segments are skipped; a segment without "=" is an invalid environment
// variable (errInvalidEnv). A key given twice keeps its last value.
func parsePodArgs(cniArgs string) (podArgs, error) {
	var pod podArgs
	for pair := range strings.SplitSeq(cniArgs, ";") {
		if pair == "" {
			continue
		}
		key, value, ok := strings.Cut(pair, "=")
		if !ok {
			return podArgs{}, fmt.Errorf("%w: CNI_ARGS: %q is not KEY=VALUE", errInvalidEnv, pair)
		}
		switch key {
		case "K8S_POD_NAMESPACE":
			pod.Namespace = value
		case "K8S_POD_NAME":
			pod.Name = value
		case "K8S_POD_INFRA_CONTAINER_ID":
			pod.InfraContainerID = value
		case "K8S_POD_UID":
			pod.UID = value
		}
	}
	return pod, nil
}

// requireIdentity returns an error naming the missing keys unless both the pod
// namespace and name are set, which ADD needs to find the pod's policies.
//
// The error is an invalid environment variable (CNI code 4), not an invalid
// network config (7): the conflist is fine, it is CNI_ARGS, an environment
// variable, that lacks the keys, and the spec asks code 4 to name the variable.
func (p podArgs) requireIdentity() error {
	var missing []string
	if p.Namespace == "" {
		missing = append(missing, "K8S_POD_NAMESPACE")
	}
	if p.Name == "" {
		missing = append(missing, "K8S_POD_NAME")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: CNI_ARGS lacks %s (podwall needs the pod's identity)",
			errInvalidEnv, strings.Join(missing, " and "))
	}
	return nil
}

// String is the pod's namespace/name for logs.
func (p podArgs) String() string {
	if p.Namespace == "" && p.Name == "" {
		return "unknown pod"
	}
	return p.Namespace + "/" + p.Name
}
