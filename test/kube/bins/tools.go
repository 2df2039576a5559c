//go:build tools

// Package bins pins the Kubernetes commands the test bed builds, so that
// `go build k8s.io/kubernetes/cmd/...` works from this module. It is never
// compiled into anything (build tag tools).
package bins

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
