package kube

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
)

// cannedResponse is what fakeAPIServer answers to one request.
type cannedResponse struct {
	status      int
	contentType string
	body        []byte
}

// fakeAPIServer answers the requests whose path and query it has a canned
// response for, and 404 to others; it records each request's URL and
// Accept header.
type fakeAPIServer struct {
	responses map[string]cannedResponse // by path?query
	mu        sync.Mutex
	seen      []string // "path?query accept"
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = append(f.seen, r.URL.RequestURI()+" "+r.Header.Get("Accept"))
	f.mu.Unlock()
	resp, ok := f.responses[r.URL.RequestURI()]
	if !ok {
		http.Error(w, "no canned response for "+r.URL.RequestURI(), http.StatusTeapot)
		return
	}
	w.Header().Set("Content-Type", resp.contentType)
	w.WriteHeader(resp.status)
	w.Write(resp.body)
}

func (f *fakeAPIServer) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func statusJSON(code int, reason metav1.StatusReason) cannedResponse {
	body := fmt.Sprintf(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":%q,"code":%d}`, reason, code)
	return cannedResponse{code, "application/json", []byte(body)}
}

// TestNewClientRequests: the Client NewClient returns asks for protobuf
// (JSON accepted), sends each resource's list, watch and GET to its group
// version's path with the options as query parameters, decodes protobuf and
// JSON, streams the pod list, and turns Status responses into API errors.
func TestNewClientRequests(t *testing.T) {
	const protobuf = "application/vnd.kubernetes.protobuf"
	pod := newPod("nsa", "web", testNode, map[string]string{"app": "web"}, "10.1.0.5")
	podBytes := encodeList(t, pod, "protobuf")
	nodes := `{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"5"},"items":[{"metadata":{"name":"n1"}}]}`
	sliceEvent := `{"type":"ADDED","object":{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"name":"web-1","namespace":"nsa","resourceVersion":"8"},"addressType":"IPv4","endpoints":[]}}` + "\n"
	api := &fakeAPIServer{responses: map[string]cannedResponse{
		"/api/v1/pods?limit=500&resourceVersion=0":                              {200, protobuf, encodeList(t, testPodList(), "protobuf")},
		"/api/v1/namespaces/nsa/pods/web":                                       {200, protobuf, podBytes},
		"/api/v1/namespaces/nsa/pods/ghost":                                     statusJSON(404, metav1.StatusReasonNotFound),
		"/apis/networking.k8s.io/v1/servicecidrs?limit=1":                       statusJSON(403, metav1.StatusReasonForbidden),
		"/api/v1/nodes?fieldSelector=metadata.name%3Dn1":                        {200, "application/json", []byte(nodes)},
		"/apis/discovery.k8s.io/v1/endpointslices?resourceVersion=7&watch=true": {200, "application/json", []byte(sliceEvent)},
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	client, err := NewClient(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	nodeOpts := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "n1").String()}

	for _, tc := range []struct {
		name string
		call func() (string, error)
		want string // the result, summarized
		// wantErr tells the error apart; nil: no error.
		wantErr func(error) bool
	}{
		{
			name: "pod list, protobuf, streamed",
			call: func() (string, error) {
				l, err := client.listPods(ctx, metav1.ListOptions{ResourceVersion: "0", Limit: 500}, newCachedPod)
				if err != nil {
					return "", err
				}
				var keys []string
				for _, p := range l.Items {
					keys = append(keys, p.Key())
				}
				return l.ResourceVersion + " " + strings.Join(keys, ","), nil
			},
			want: "42 nsa/web,nsb/db,nsb/pending",
		},
		{
			name: "pod GET, protobuf",
			call: func() (string, error) {
				p, err := client.getPod(ctx, "nsa", "web")
				if err != nil {
					return "", err
				}
				return p.Namespace + "/" + p.Name + " " + p.Labels["app"], nil
			},
			want: "nsa/web web",
		},
		{
			name:    "pod GET, not found",
			call:    func() (string, error) { _, err := client.getPod(ctx, "nsa", "ghost"); return "", err },
			wantErr: apierrors.IsNotFound,
		},
		{
			name: "servicecidr list, forbidden",
			call: func() (string, error) {
				_, err := client.list(ctx, serviceCIDRResource, metav1.ListOptions{Limit: 1})
				return "", err
			},
			wantErr: apierrors.IsForbidden,
		},
		{
			name: "node list, field selector, JSON",
			call: func() (string, error) {
				obj, err := client.list(ctx, nodeResource, nodeOpts)
				if err != nil {
					return "", err
				}
				l := obj.(*corev1.NodeList)
				return fmt.Sprintf("%s %d %s", l.ResourceVersion, len(l.Items), l.Items[0].Name), nil
			},
			want: "5 1 n1",
		},
		{
			name: "endpointslice watch, JSON",
			call: func() (string, error) {
				w, err := client.watch(ctx, endpointSliceResource, metav1.ListOptions{ResourceVersion: "7"})
				if err != nil {
					return "", err
				}
				defer w.Stop()
				ev := <-w.ResultChan()
				m, ok := ev.Object.(metav1.Object)
				if ev.Type != watch.Added || !ok {
					return fmt.Sprintf("event %s %v", ev.Type, ev.Object), nil
				}
				return fmt.Sprintf("%s %T %s/%s", ev.Type, ev.Object, m.GetNamespace(), m.GetName()), nil
			},
			want: "ADDED *v1.EndpointSlice nsa/web-1",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.call()
			switch {
			case tc.wantErr != nil:
				if err == nil || !tc.wantErr(err) {
					t.Fatalf("error %v, want another", err)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want:
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, r := range api.requests() {
		if !strings.HasSuffix(r, " "+protobuf+",application/json") {
			t.Errorf("request %s: want protobuf accepted first, then JSON", r)
		}
	}
	if n := len(api.requests()); n != 6 {
		t.Errorf("%d requests, want 6: %v", n, api.requests())
	}
}
