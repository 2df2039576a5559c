package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// HiddenLabel is the label key ServiceHider adds to the label selector of
// every list and watch of Services, EndpointSlices and ServiceCIDRs: no
// object carries it, so those come back empty. Tests must not put it on
// anything.
const HiddenLabel = "podwall.test/hidden-from-podwalld"

// ServiceHider is a plain-HTTP proxy on 127.0.0.1 in front of a real
// kube-apiserver that hides every Service, EndpointSlice and ServiceCIDR:
// a daemon pointed at it (see WriteKubeconfig) sees the cluster's pods,
// namespaces, policies and nodes as they are, and no Services at all, as a
// podwall without Service handling would. Everything else passes through
// unchanged, with the upstream configuration's credentials. It is for
// showing that tests of Service handling fail without it.
type ServiceHider struct {
	URL string // http://127.0.0.1:<port>

	srv *http.Server
	l   net.Listener
}

// hiddenResources are the (API group path, resource) pairs ServiceHider
// hides.
var hiddenResources = map[string]bool{
	"/api/v1 services":                             true,
	"/apis/discovery.k8s.io/v1 endpointslices":     true,
	"/apis/networking.k8s.io/v1 servicecidrs":      true,
	"/apis/networking.k8s.io/v1beta1 servicecidrs": true,
}

// hiddenRequest says whether a request path reads hidden objects, and
// whether it names one object (rather than a collection).
func hiddenRequest(path string) (hidden, named bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var group string
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		group, parts = "/api/"+parts[1], parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		group, parts = "/apis/"+parts[1]+"/"+parts[2], parts[3:]
	default:
		return false, false
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	if len(parts) == 0 || !hiddenResources[group+" "+parts[0]] {
		return false, false
	}
	return true, len(parts) > 1
}

// StartServiceHider starts the proxy for the API server upstream
// describes (its host, TLS settings and credentials).
func StartServiceHider(upstream *rest.Config) (*ServiceHider, error) {
	target, err := url.Parse(upstream.Host)
	if err != nil || target.Host == "" {
		return nil, fmt.Errorf("service hider: upstream host %q: not a URL", upstream.Host)
	}
	transport, err := rest.TransportFor(upstream)
	if err != nil {
		return nil, fmt.Errorf("service hider: upstream transport: %w", err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			if hidden, _ := hiddenRequest(r.In.URL.Path); hidden {
				q := r.Out.URL.Query()
				sel := q.Get("labelSelector")
				if sel != "" {
					sel += ","
				}
				q.Set("labelSelector", sel+HiddenLabel)
				r.Out.URL.RawQuery = q.Encode()
			}
		},
		Transport:     transport,
		FlushInterval: -1, // watches stream
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hidden, named := hiddenRequest(r.URL.Path); hidden && named {
			// One object by name: it does not exist.
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","message":"hidden by the test's service hider","reason":"NotFound","code":404}`)
			return
		}
		proxy.ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("service hider: %w", err)
	}
	h := &ServiceHider{URL: "http://" + l.Addr().String(), l: l, srv: &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}}
	go h.srv.Serve(l)
	return h, nil
}

// WriteKubeconfig writes a kubeconfig at path that points at the proxy
// (no credentials: the proxy adds the upstream's).
func (h *ServiceHider) WriteKubeconfig(path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["hider"] = &clientcmdapi.Cluster{Server: h.URL}
	cfg.AuthInfos["hider"] = &clientcmdapi.AuthInfo{}
	cfg.Contexts["hider"] = &clientcmdapi.Context{Cluster: "hider", AuthInfo: "hider"}
	cfg.CurrentContext = "hider"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("service hider: write kubeconfig %s: %w", path, err)
	}
	return nil
}

// Close stops the proxy, ending the watches that pass through it.
func (h *ServiceHider) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := h.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = h.srv.Close() // open watches
	}
	return err
}
