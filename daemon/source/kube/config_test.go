package kube

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:16443
    insecure-skip-tls-verify: true
users:
- name: podwalld
  user:
    token: secret-token
contexts:
- name: test
  context: {cluster: test, user: podwalld}
current-context: test
`

func TestInClusterOrKubeconfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(good, []byte(testKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(dir, "broken")
	if err := os.WriteFile(broken, []byte("clusters: [this is not: a kubeconfig"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Outside a pod: no in-cluster environment.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")

	cases := []struct {
		name    string
		path    string
		wantErr string // substring; empty for success
		is      error
	}{
		{name: "kubeconfig", path: good},
		{name: "missing kubeconfig", path: filepath.Join(dir, "missing"), wantErr: filepath.Join(dir, "missing")},
		{name: "broken kubeconfig", path: broken, wantErr: broken},
		{name: "in-cluster outside a pod", path: "", wantErr: "in-cluster config", is: rest.ErrNotInCluster},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := InClusterOrKubeconfig(c.path)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				if c.is != nil && !errors.Is(err, c.is) {
					t.Errorf("error %v does not wrap %v", err, c.is)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != "https://127.0.0.1:16443" || cfg.BearerToken != "secret-token" {
				t.Errorf("host %q token %q: not from the kubeconfig", cfg.Host, cfg.BearerToken)
			}
			if cfg.UserAgent != "podwalld" {
				t.Errorf("user agent %q, want podwalld", cfg.UserAgent)
			}
			if cfg.QPS != clientQPS || cfg.Burst != clientBurst {
				t.Errorf("QPS %v burst %d, want %v %d", cfg.QPS, cfg.Burst, float32(clientQPS), clientBurst)
			}
			if cfg.ContentType != "application/vnd.kubernetes.protobuf" {
				t.Errorf("content type %q", cfg.ContentType)
			}
		})
	}
}
