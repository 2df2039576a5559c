package kube

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
)

// The source talks to the API server through REST clients of its own, one
// per API group version it reads (core/v1, networking.k8s.io/v1,
// discovery.k8s.io/v1), on a scheme holding those groups only. client-go's
// clientset (k8s.io/client-go/kubernetes), its scheme and its informer
// factory link and register every group version of k8s.io/api (about 56):
// with them podwalld's binary was 62 MB (26 MB without), and the pages of
// that code and its registration tables were about 19 MiB of its resident
// memory: 48 MiB idle, 28 MiB without (TestDaemonRSS in daemon_rss_test.go
// measures both). Tests may use the clientset (clientset_test.go).

// clientScheme knows the types the source decodes: the three group
// versions it reads and meta/v1's options, lists and Status.
var clientScheme = newClientScheme()

// clientCodecs and clientParameterCodec encode requests and decode
// responses (protobuf or JSON) with clientScheme.
var (
	clientCodecs         = serializer.NewCodecFactory(clientScheme)
	clientParameterCodec = runtime.NewParameterCodec(clientScheme)
)

func newClientScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	// As client-go's scheme: list and get options as the unversioned
	// "v1", then each group version (each adds meta/v1's options too).
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, networkingv1.AddToScheme, discoveryv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("kube: build the client scheme: %v", err))
		}
	}
	return s
}

// apiResource is one kind of object the source lists and watches, in every
// namespace.
type apiResource struct {
	groupVersion schema.GroupVersion
	name         string // "pods", "namespaces", ...
	// newList returns the empty typed list a list response decodes into.
	newList func() runtime.Object
}

func (r apiResource) String() string { return r.groupVersion.WithResource(r.name).String() }

// The resources the source reads.
var (
	podResource = apiResource{corev1.SchemeGroupVersion, "pods",
		func() runtime.Object { return &corev1.PodList{} }}
	namespaceResource = apiResource{corev1.SchemeGroupVersion, "namespaces",
		func() runtime.Object { return &corev1.NamespaceList{} }}
	serviceResource = apiResource{corev1.SchemeGroupVersion, "services",
		func() runtime.Object { return &corev1.ServiceList{} }}
	nodeResource = apiResource{corev1.SchemeGroupVersion, "nodes",
		func() runtime.Object { return &corev1.NodeList{} }}
	networkPolicyResource = apiResource{networkingv1.SchemeGroupVersion, "networkpolicies",
		func() runtime.Object { return &networkingv1.NetworkPolicyList{} }}
	serviceCIDRResource = apiResource{networkingv1.SchemeGroupVersion, "servicecidrs",
		func() runtime.Object { return &networkingv1.ServiceCIDRList{} }}
	endpointSliceResource = apiResource{discoveryv1.SchemeGroupVersion, "endpointslices",
		func() runtime.Object { return &discoveryv1.EndpointSliceList{} }}
)

// clientGroupVersions are the group versions NewClient makes a REST client
// for.
var clientGroupVersions = []schema.GroupVersion{corev1.SchemeGroupVersion, networkingv1.SchemeGroupVersion, discoveryv1.SchemeGroupVersion}

// Client is the source's access to the API server: the list and watch of
// each resource it reads, and the GET of one pod. NewClient returns one
// that talks to an API server; the package's tests build others.
type Client struct {
	// list lists every object of r with opts into r's typed list.
	list func(ctx context.Context, r apiResource, opts metav1.ListOptions) (runtime.Object, error)
	// listPods lists pods with opts, converting each with convert as it
	// is decoded (podlist.go).
	listPods func(ctx context.Context, opts metav1.ListOptions, convert func(*corev1.Pod) *cachedPod) (*cachedPodList, error)
	// watch watches every object of r from opts.ResourceVersion.
	watch func(ctx context.Context, r apiResource, opts metav1.ListOptions) (watch.Interface, error)
	// getPod reads one pod.
	getPod func(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	// noWatchList tells the reflectors not to try streaming lists
	// (watch with sendInitialEvents): the fake clientset cannot serve them.
	noWatchList bool
}

// NewClient returns a Client for the API server cfg names (see
// InClusterOrKubeconfig). Its REST clients share one HTTP client and one
// rate limiter (cfg's QPS and burst), as a clientset's do. A cfg without a
// content type gets protobuf, JSON accepted too: the pod list is decoded as
// a protobuf stream (podlist.go).
func NewClient(cfg *rest.Config) (*Client, error) {
	base := rest.CopyConfig(cfg)
	if base.ContentType == "" {
		base.ContentType = runtime.ContentTypeProtobuf
		if base.AcceptContentTypes == "" {
			base.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
		}
	}
	if base.UserAgent == "" {
		base.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	if base.RateLimiter == nil && base.QPS > 0 {
		if base.Burst <= 0 {
			return nil, fmt.Errorf("burst must be positive when QPS is (%v)", base.QPS)
		}
		base.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(base.QPS, base.Burst)
	}
	httpClient, err := rest.HTTPClientFor(base)
	if err != nil {
		return nil, fmt.Errorf("http client: %w", err)
	}
	api := restAPI{clients: map[schema.GroupVersion]*rest.RESTClient{}}
	for _, gv := range clientGroupVersions {
		c := rest.CopyConfig(base)
		c.GroupVersion = &gv
		c.APIPath = "/apis"
		if gv.Group == "" {
			c.APIPath = "/api"
		}
		c.NegotiatedSerializer = clientCodecs.WithoutConversion()
		rc, err := rest.RESTClientForConfigAndClient(c, httpClient)
		if err != nil {
			return nil, fmt.Errorf("client for %s: %w", gv, err)
		}
		api.clients[gv] = rc
	}
	return &Client{list: api.list, listPods: api.listPods, watch: api.watch, getPod: api.getPod}, nil
}

// restAPI implements a Client's functions with REST clients.
type restAPI struct {
	clients map[schema.GroupVersion]*rest.RESTClient
}

// request is the GET of every object of r with opts, as a typed client's
// List and Watch send it.
func (a restAPI) request(r apiResource, opts *metav1.ListOptions) *rest.Request {
	var timeout time.Duration
	if opts.TimeoutSeconds != nil {
		timeout = time.Duration(*opts.TimeoutSeconds) * time.Second
	}
	return a.clients[r.groupVersion].Get().Resource(r.name).VersionedParams(opts, clientParameterCodec).Timeout(timeout)
}

func (a restAPI) list(ctx context.Context, r apiResource, opts metav1.ListOptions) (runtime.Object, error) {
	out := r.newList()
	if err := a.request(r, &opts).Do(ctx).Into(out); err != nil {
		return nil, err
	}
	return out, nil
}

func (a restAPI) watch(ctx context.Context, r apiResource, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return a.request(r, &opts).Watch(ctx)
}

func (a restAPI) listPods(ctx context.Context, opts metav1.ListOptions, convert func(*corev1.Pod) *cachedPod) (*cachedPodList, error) {
	body, err := a.request(podResource, &opts).Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	list, err := decodePodList(body, convert)
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	return list, nil
}

func (a restAPI) getPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	out := &corev1.Pod{}
	err := a.clients[corev1.SchemeGroupVersion].Get().Namespace(namespace).Resource("pods").Name(name).
		VersionedParams(&metav1.GetOptions{}, clientParameterCodec).Do(ctx).Into(out)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// watchListUnsupported tells client-go's reflectors, through
// cache.ToListWatcherWithWatchListSemantics, whether they must not list with
// a streaming watch.
type watchListUnsupported bool

func (u watchListUnsupported) IsWatchListSemanticsUnSupported() bool { return bool(u) }

// listWatch is the informer's lister-watcher for r, opts modified by
// tweak (nil for none) on every list and watch.
func (c *Client) listWatch(r apiResource, tweak func(*metav1.ListOptions)) cache.ListerWatcher {
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			if tweak != nil {
				tweak(&opts)
			}
			return c.list(ctx, r, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			if tweak != nil {
				tweak(&opts)
			}
			return c.watch(ctx, r, opts)
		},
	}, watchListUnsupported(c.noWatchList))
}

// podListWatch is the pod informer's lister-watcher: listPods with convert
// for the list (podlist.go), and the watch.
func (c *Client) podListWatch(convert func(*corev1.Pod) *cachedPod) cache.ListerWatcher {
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			return c.listPods(ctx, opts, convert)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return c.watch(ctx, podResource, opts)
		},
	}, watchListUnsupported(c.noWatchList))
}
