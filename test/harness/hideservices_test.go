package harness

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

func TestHiddenRequest(t *testing.T) {
	tests := []struct {
		path          string
		hidden, named bool
	}{
		{"/api/v1/services", true, false},
		{"/api/v1/namespaces/a/services", true, false},
		{"/api/v1/namespaces/a/services/web", true, true},
		{"/api/v1/namespaces/a/services/web/status", true, true},
		{"/apis/discovery.k8s.io/v1/endpointslices", true, false},
		{"/apis/discovery.k8s.io/v1/namespaces/a/endpointslices", true, false},
		{"/apis/networking.k8s.io/v1/servicecidrs", true, false},
		{"/apis/networking.k8s.io/v1beta1/servicecidrs/kubernetes", true, true},
		{"/api/v1/pods", false, false},
		{"/api/v1/namespaces", false, false},
		{"/api/v1/namespaces/services", false, false}, // a namespace named "services"
		{"/api/v1/namespaces/services/pods", false, false},
		{"/api/v1/nodes", false, false},
		{"/apis/networking.k8s.io/v1/networkpolicies", false, false},
		{"/apis/discovery.k8s.io/v1beta1/endpointslices", false, false}, // not served by 1.34 anyway
		{"/api", false, false},
		{"/healthz", false, false},
		{"", false, false},
	}
	for _, tc := range tests {
		hidden, named := hiddenRequest(tc.path)
		if hidden != tc.hidden || named != tc.named {
			t.Errorf("hiddenRequest(%q) = %v, %v; want %v, %v", tc.path, hidden, named, tc.hidden, tc.named)
		}
	}
}

// TestServiceHider runs the proxy in front of a fake TLS API server and
// checks what reaches it.
func TestServiceHider(t *testing.T) {
	type seen struct{ path, query, auth string }
	var mu sync.Mutex
	var got []seen
	upstream := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, seen{r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization")})
		mu.Unlock()
		io.WriteString(w, `{"kind":"List"}`)
	}))
	defer upstream.Close()
	h, err := StartServiceHider(&rest.Config{Host: upstream.URL, BearerToken: "s3cret", TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	tests := []struct {
		path       string
		wantStatus int
		wantQuery  string // "-": must not reach upstream
	}{
		{"/api/v1/pods?watch=true", 200, "watch=true"},
		{"/api/v1/services?watch=true", 200, "labelSelector=" + HiddenLabel + "&watch=true"},
		{"/api/v1/namespaces/a/services?labelSelector=app%3Dweb", 200, "labelSelector=app%3Dweb%2C" + HiddenLabel},
		{"/apis/discovery.k8s.io/v1/endpointslices?limit=500", 200, "labelSelector=" + HiddenLabel + "&limit=500"},
		{"/apis/networking.k8s.io/v1/servicecidrs", 200, "labelSelector=" + HiddenLabel},
		{"/api/v1/namespaces/a/services/web", 404, "-"},
	}
	for _, tc := range tests {
		mu.Lock()
		got = nil
		mu.Unlock()
		resp, err := http.Get(h.URL + tc.path)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus {
			t.Errorf("GET %s: status %d, want %d", tc.path, resp.StatusCode, tc.wantStatus)
		}
		mu.Lock()
		reached := got
		mu.Unlock()
		if tc.wantQuery == "-" {
			if len(reached) != 0 {
				t.Errorf("GET %s reached upstream: %+v", tc.path, reached)
			}
			continue
		}
		if len(reached) != 1 {
			t.Errorf("GET %s: upstream saw %+v, want one request", tc.path, reached)
			continue
		}
		path, _, _ := strings.Cut(tc.path, "?")
		gotQuery, _ := url.ParseQuery(reached[0].query)
		wantQuery, _ := url.ParseQuery(tc.wantQuery)
		if r := reached[0]; r.path != path || gotQuery.Encode() != wantQuery.Encode() || r.auth != "Bearer s3cret" {
			t.Errorf("GET %s: upstream saw %+v, want path %s, query %s, the upstream's token", tc.path, r, path, tc.wantQuery)
		}
	}

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := h.WriteKubeconfig(kubeconfig); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != h.URL || cfg.BearerToken != "" {
		t.Errorf("kubeconfig: host %q token %q, want %q and none", cfg.Host, cfg.BearerToken, h.URL)
	}
	if b, _ := os.ReadFile(kubeconfig); strings.Contains(string(b), "s3cret") {
		t.Errorf("kubeconfig holds the upstream's token")
	}
}
