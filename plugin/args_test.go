package main

import (
	"errors"
	"testing"
)

func TestParsePodArgs(t *testing.T) {
	full := podArgs{Namespace: "shop", Name: "web-0", InfraContainerID: "abc123", UID: "0f1e-uid"}
	tests := []struct {
		name        string
		cniArgs     string
		want        podArgs
		wantErr     error
		hasIdentity bool
	}{
		{name: "kubelet", cniArgs: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=0f1e-uid",
			want: full, hasIdentity: true},
		{name: "unknown keys without IgnoreUnknown", cniArgs: "K8S_POD_NAMESPACE=shop;FOO=bar;K8S_POD_NAME=web-0",
			want: podArgs{Namespace: "shop", Name: "web-0"}, hasIdentity: true},
		{name: "IgnoreUnknown=0 still tolerated", cniArgs: "IgnoreUnknown=0;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;X=1",
			want: podArgs{Namespace: "shop", Name: "web-0"}, hasIdentity: true},
		{name: "empty", cniArgs: "", want: podArgs{}},
		{name: "empty segments", cniArgs: ";K8S_POD_NAMESPACE=shop;;K8S_POD_NAME=web-0;",
			want: podArgs{Namespace: "shop", Name: "web-0"}, hasIdentity: true},
		{name: "value with equals", cniArgs: "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=a=b",
			want: podArgs{Namespace: "shop", Name: "a=b"}, hasIdentity: true},
		{name: "last value wins", cniArgs: "K8S_POD_NAMESPACE=a;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0",
			want: podArgs{Namespace: "shop", Name: "web-0"}, hasIdentity: true},
		{name: "name missing", cniArgs: "K8S_POD_NAMESPACE=shop", want: podArgs{Namespace: "shop"}},
		{name: "namespace empty", cniArgs: "K8S_POD_NAMESPACE=;K8S_POD_NAME=web-0", want: podArgs{Name: "web-0"}},
		{name: "keys are case-sensitive", cniArgs: "k8s_pod_namespace=shop;k8s_pod_name=web-0", want: podArgs{}},
		{name: "pair without equals", cniArgs: "K8S_POD_NAMESPACE=shop;garbage", wantErr: errInvalidEnv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePodArgs(tt.cniArgs)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("parsePodArgs(%q) error = %v, want %v", tt.cniArgs, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parsePodArgs(%q) = %+v, want %+v", tt.cniArgs, got, tt.want)
			}
			if err != nil {
				return
			}
			idErr := got.requireIdentity()
			if tt.hasIdentity != (idErr == nil) {
				t.Errorf("requireIdentity() = %v, want identity present %v", idErr, tt.hasIdentity)
			}
			if idErr != nil && !errors.Is(idErr, errInvalidEnv) {
				t.Errorf("requireIdentity() = %v, want it to wrap errInvalidEnv", idErr)
			}
		})
	}
}
