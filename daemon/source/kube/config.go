package kube

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	// clientQPS and clientBurst bound podwalld's requests to the API
	// server. The watches are long-lived; what remains is the GET fallback
	// of Pod on CNI ADD, which comes in bursts when many pods start.
	clientQPS   = 20
	clientBurst = 50
	// userAgent is how the API server's logs and audit name podwalld.
	userAgent = "podwalld"
)

// InClusterOrKubeconfig returns the API client config podwalld uses: the
// in-cluster config (service account token, KUBERNETES_SERVICE_HOST) when
// path is empty, else the kubeconfig file at path. It sets the QPS and
// burst, the user agent "podwalld", and protobuf encoding (smaller and
// faster to decode than JSON when listing every pod of a large cluster).
func InClusterOrKubeconfig(path string) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if path == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
		}
	}
	cfg.QPS = clientQPS
	cfg.Burst = clientBurst
	cfg.UserAgent = userAgent
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return cfg, nil
}
