package kube

import (
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"time"

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
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return retryUnavailable{next: rt} }
	return cfg, nil
}

// retryInterval is how often a GET without a deadline is retried while the
// API server refuses connections or answers 503.
const retryInterval = 500 * time.Millisecond

// retryUnavailable retries GETs that carry no deadline (the informers' lists
// and watches) while the API server refuses connections or is not ready, so
// that after an outage podwalld relists within retryInterval instead of
// waiting out client-go's reflector backoff (up to about a minute, measured
// here). Requests with a deadline, such as CNI ADD's GET fallback, fail fast
// as before; the last good state stays enforced meanwhile either way.
type retryUnavailable struct{ next http.RoundTripper }

func (r retryUnavailable) RoundTrip(req *http.Request) (*http.Response, error) {
	_, hasDeadline := req.Context().Deadline()
	for {
		resp, err := r.next.RoundTrip(req)
		if hasDeadline || req.Method != http.MethodGet {
			return resp, err
		}
		unavailable := errors.Is(err, syscall.ECONNREFUSED) || (err == nil && resp.StatusCode == http.StatusServiceUnavailable)
		if !unavailable {
			return resp, err
		}
		if resp != nil {
			resp.Body.Close()
		}
		select {
		case <-req.Context().Done():
			return nil, req.Context().Err()
		case <-time.After(retryInterval):
		}
	}
}
