// Package kube is the Kubernetes policy source: client-go informers, on REST
// clients of the three API groups it reads (client.go), watch every Pod of
// the cluster (peers on other nodes matter), every Namespace,
// NetworkPolicy, Service, EndpointSlice and ServiceCIDR, and the source
// keeps a stripped copy of them (policy.Pod, policy.Namespace,
// defaulted and validated NetworkPolicies, policy.Service,
// policy.EndpointSlice, the ServiceCIDR ranges) that the syncer reads as one
// snapshot. It also watches this node's own Node object, whose addresses it
// hands to a callback (they are always allowed into local pods; see
// NotifyNodeAddrs). Events go through
// a rate-limited work queue to a single worker, which applies each change
// to the maintained state and calls the caller's changed func, coalescing
// bursts and skipping updates the compiler cannot see. It may import
// client-go (but not, outside tests, its clientset k8s.io/client-go/kubernetes,
// its scheme or k8s.io/client-go/informers: client.go says why),
// daemon/source and daemon/policy; it must not import the syncer, the
// server or the dataplane.
//
// The informers' caches hold stripped objects only (see transform.go), so a
// node can watch every pod of a large cluster in little memory: a pod is
// held once, as a cachedPod that the state shares (podcache.go), and the
// pod list is decoded as a stream, one pod at a time (podlist.go). After an API
// outage the informers relist; nothing is flushed meanwhile: State keeps
// returning the last good state and Ready stays nil once the first sync is
// done.
package kube

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

const (
	// podSyncWait bounds how long Pod waits for the caches' first sync.
	podSyncWait = 10 * time.Second
	// settleDelay is how long the worker waits for more events after the
	// queue ran empty before it calls changed, so that the events of one
	// burst (a rollout, a relist) mostly land as one call. A change after a
	// quiet spell of settleDelay does not wait: it is reported as soon as
	// the queue is empty, and what follows it within settleDelay waits (the
	// syncer coalesces what comes in while it syncs). Waiting on every
	// change added its length to every change's latency (it was 100 ms,
	// then 10 ms: the bench saw it in every change).
	settleDelay = 10 * time.Millisecond
	// maxNotifyDelay bounds how long a steady stream of events may defer
	// the changed call.
	maxNotifyDelay = time.Second
	// maxRetries is how often a key whose change could not be applied is
	// retried (with backoff) before it is dropped.
	maxRetries = 5

	// nodeIndex indexes pods by spec.nodeName.
	nodeIndex = "node"
)

// kind is the type of object a work-queue key names.
type kind uint8

const (
	kindPod kind = iota
	kindNamespace
	kindPolicy
	kindService
	kindEndpointSlice
	kindServiceCIDR
	kindNode
)

func (k kind) String() string {
	switch k {
	case kindPod:
		return "Pod"
	case kindNamespace:
		return "Namespace"
	case kindPolicy:
		return "NetworkPolicy"
	case kindService:
		return "Service"
	case kindEndpointSlice:
		return "EndpointSlice"
	case kindServiceCIDR:
		return "ServiceCIDR"
	case kindNode:
		return "Node"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// objectKey is what the event handlers put on the work queue.
type objectKey struct {
	kind      kind
	namespace string // empty for cluster-scoped kinds
	name      string
}

// storeKey is the informer store's key: "namespace/name", or "name".
func (k objectKey) storeKey() string {
	if k.namespace == "" {
		return k.name
	}
	return k.namespace + "/" + k.name
}

func (k objectKey) String() string { return k.kind.String() + " " + k.storeKey() }

// watched is this source's handler registration on one informer.
type watched struct {
	name         string // "pods", "namespaces", "networkpolicies", ...
	kind         kind
	informer     cache.SharedIndexInformer
	registration cache.ResourceEventHandlerRegistration
}

// Source is the Kubernetes policy source. Its methods are safe for
// concurrent use; Run must be called once.
type Source struct {
	client   *Client
	nodeName string
	log      *slog.Logger

	pods           cache.SharedIndexInformer
	namespaces     cache.SharedIndexInformer
	policies       cache.SharedIndexInformer
	services       cache.SharedIndexInformer
	endpointSlices cache.SharedIndexInformer
	node           cache.SharedIndexInformer // this node's Node object only
	// serviceCIDRs runs only when ServiceCIDRs can be listed (see
	// probeServiceCIDRs); Run starts the others in any case.
	serviceCIDRs cache.SharedIndexInformer
	cidrWatch    atomic.Int32 // a cidrWatch* value
	watched      []watched
	queue        workqueue.TypedRateLimitingInterface[objectKey]
	initErr      error // registering the event handlers failed

	running atomic.Bool
	synced  chan struct{} // closed once the first full state is built

	// Timing; tests shorten them.
	podSyncWait    time.Duration
	settleDelay    time.Duration
	maxNotifyDelay time.Duration

	// processed counts keys the worker applied (tests wait on it).
	processed atomic.Uint64

	mu         sync.Mutex
	podSet     *objectSet[*policy.Pod] // by "namespace/name"
	nsSet      *objectSet[*policy.Namespace]
	policySet  *objectSet[*networkingv1.NetworkPolicy] // by "namespace/name"
	policyErrs map[string]source.Error                 // by "namespace/name"
	serviceSet *objectSet[*policy.Service]             // by "namespace/name"
	sliceSet   *objectSet[*policy.EndpointSlice]       // by "namespace/name"
	// cidrsByObject are the ranges of each ServiceCIDR object (by name),
	// staticCIDRs those given to SetServiceCIDRs; cidrs is their union.
	cidrsByObject map[string][]netip.Prefix
	staticCIDRs   []netip.Prefix
	cidrs         []netip.Prefix
	cidrsStale    bool // cidrs changed since the last snapshot
	// nodeAddrs are this node's Node object's addresses; nodeAddrsFunc is
	// told when they change.
	nodeAddrs     []netip.Addr
	nodeAddrsFunc func([]netip.Addr)
	// snapshot is what State returns; the list of a kind that changed
	// since is copied again on the next State call, the others are reused.
	snapshot *policy.State
}

// The states of the ServiceCIDR watch.
const (
	cidrWatchProbing     int32 = iota // not known yet whether they can be listed
	cidrWatchOn                       // the informer runs
	cidrWatchUnavailable              // forbidden or not served: --service-cidr only
)

// New returns a source that watches the cluster client talks to (NewClient).
// nodeName is this node's name (LocalPods). Nothing is watched until Run.
func New(client *Client, nodeName string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{
		client:   client,
		nodeName: nodeName,
		log:      log.With("source", "kubernetes"),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[objectKey](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[objectKey]{Name: "podwalld-kubernetes-source"}),
		synced:         make(chan struct{}),
		podSyncWait:    podSyncWait,
		settleDelay:    settleDelay,
		maxNotifyDelay: maxNotifyDelay,
		podSet:         newObjectSet(comparePods),
		nsSet:          newObjectSet(compareNamespaces),
		policySet:      newObjectSet(comparePolicies),
		policyErrs:     map[string]source.Error{},
		serviceSet:     newObjectSet(compareServices),
		sliceSet:       newObjectSet(compareEndpointSlices),
		cidrsByObject:  map[string][]netip.Prefix{},
		snapshot:       &policy.State{},
	}
	// Every informer strips what it stores (transform.go). The pod cache
	// holds cachedPods (see podcache.go), listed by the streaming pod list
	// (podlist.go). Only this node's pods are indexed (LocalPods).
	s.pods = cache.NewSharedIndexInformerWithOptions(client.podListWatch(s.cachePod), &corev1.Pod{}, cache.SharedIndexInformerOptions{
		Indexers: cache.Indexers{nodeIndex: localPodIndexFunc(nodeName)},
	})
	s.namespaces = newInformer(client, namespaceResource, &corev1.Namespace{}, nil)
	s.policies = newInformer(client, networkPolicyResource, &networkingv1.NetworkPolicy{}, nil)
	s.services = newInformer(client, serviceResource, &corev1.Service{}, nil)
	s.endpointSlices = newInformer(client, endpointSliceResource, &discoveryv1.EndpointSlice{}, nil)
	s.node = newInformer(client, nodeResource, &corev1.Node{}, func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", nodeName).String()
	})
	s.serviceCIDRs = newInformer(client, serviceCIDRResource, &networkingv1.ServiceCIDR{}, nil)
	var errs []error
	for _, w := range []watched{
		{name: "pods", informer: s.pods, kind: kindPod},
		{name: "namespaces", informer: s.namespaces, kind: kindNamespace},
		{name: "networkpolicies", informer: s.policies, kind: kindPolicy},
		{name: "services", informer: s.services, kind: kindService},
		{name: "endpointslices", informer: s.endpointSlices, kind: kindEndpointSlice},
		{name: "servicecidrs", informer: s.serviceCIDRs, kind: kindServiceCIDR},
		{name: "node " + nodeName, informer: s.node, kind: kindNode},
	} {
		strip := transform
		if w.kind == kindPod {
			strip = s.transformPod
		}
		if err := w.informer.SetTransform(strip); err != nil {
			errs = append(errs, fmt.Errorf("watch %s: %w", w.name, err))
			continue
		}
		reg, err := w.informer.AddEventHandler(s.handler(w.kind))
		if err != nil {
			errs = append(errs, fmt.Errorf("watch %s: %w", w.name, err))
			continue
		}
		w.registration = reg
		s.watched = append(s.watched, w)
	}
	s.initErr = errors.Join(errs...)
	return s
}

// localPodIndexFunc indexes the pods on node by their spec.nodeName; other
// pods are not indexed (an index of every pod would cost memory for
// nothing: only this node's are looked up).
func localPodIndexFunc(node string) cache.IndexFunc {
	return func(obj any) ([]string, error) {
		p, ok := obj.(*cachedPod)
		if !ok || node == "" || p.NodeName != node {
			return nil, nil
		}
		return []string{p.NodeName}, nil
	}
}

// newInformer returns the informer of every object of r (of type obj), list
// and watch options modified by tweak (nil for none), storing what
// transform keeps. It has no periodic resync: the maintained state follows
// every event, and the syncer re-checks the local pods on its own schedule.
// New sets its transform.
func newInformer(client *Client, r apiResource, obj runtime.Object, tweak func(*metav1.ListOptions)) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformerWithOptions(client.listWatch(r, tweak), obj, cache.SharedIndexInformerOptions{})
}

// Name describes the source for status output.
func (s *Source) Name() string { return "kubernetes" }

// handler returns the event handler that puts the key of every added,
// updated or deleted object of kind k on the work queue.
func (s *Source) handler(k kind) cache.ResourceEventHandler {
	enqueue := func(obj any) {
		key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
		if err != nil {
			s.log.Error("cannot key object from watch", "kind", k.String(), "err", err)
			return
		}
		namespace, name, err := cache.SplitMetaNamespaceKey(key)
		if err != nil {
			s.log.Error("cannot split object key from watch", "kind", k.String(), "key", key, "err", err)
			return
		}
		s.queue.Add(objectKey{kind: k, namespace: namespace, name: name})
	}
	return cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, isInInitialList bool) {
			// The objects of the first list are applied by
			// buildFirstState, which runs once every handler has seen
			// them: queueing them too would only fill the queue (whose
			// sets keep their size) with keys that change nothing.
			if isInInitialList && !s.firstStateBuilt() {
				return
			}
			enqueue(obj)
		},
		UpdateFunc: func(oldObj, newObj any) {
			// A relist reports every object as updated; unchanged ones keep
			// their resourceVersion.
			o, okOld := oldObj.(metav1.Object)
			n, okNew := newObj.(metav1.Object)
			if okOld && okNew && n.GetResourceVersion() != "" && o.GetResourceVersion() == n.GetResourceVersion() {
				return
			}
			enqueue(newObj)
		},
		DeleteFunc: enqueue,
	}
}

// Run starts the informers and blocks until ctx ends. Once every cache has
// synced it builds the first state, marks the source ready and calls
// changed; after that it calls changed after each change the policy
// compiler can see. Calls are never concurrent; a burst of events yields
// one call, made about 100 ms after the burst ends (at most about a second
// after its first change). Run must be called once.
func (s *Source) Run(ctx context.Context, changed func()) {
	if !s.running.CompareAndSwap(false, true) {
		s.log.Error("Run called twice; ignoring the second call")
		return
	}
	if s.initErr != nil {
		s.log.Error("cannot watch the API server", "err", s.initErr)
		return
	}
	var informers sync.WaitGroup
	defer informers.Wait() // the informers stop when ctx ends
	go func() {
		<-ctx.Done()
		s.queue.ShutDown()
	}()
	for _, w := range s.watched {
		if w.kind != kindServiceCIDR {
			informers.Go(func() { w.informer.RunWithContext(ctx) })
		}
	}
	s.log.Info("watching pods, namespaces, networkpolicies, services, endpointslices and this node's Node", "node", s.nodeName)

	start := time.Now()
	if s.probeServiceCIDRs(ctx) {
		s.cidrWatch.Store(cidrWatchOn)
		informers.Go(func() { s.serviceCIDRs.RunWithContext(ctx) })
	} else {
		s.cidrWatch.Store(cidrWatchUnavailable)
	}
	checkers := make([]cache.DoneChecker, 0, len(s.watched))
	for _, w := range s.activeWatches() {
		// Done once the informer synced and the handler got every
		// object of the initial list.
		checkers = append(checkers, w.registration.HasSyncedChecker())
	}
	if !cache.WaitFor(ctx, "", checkers...) {
		return // ctx ended first
	}
	s.buildFirstState()
	close(s.synced)
	st := s.State()
	s.log.Info("caches synced", "pods", len(st.Pods), "namespaces", len(st.Namespaces),
		"policies", len(st.Policies), "services", len(st.Services), "endpointSlices", len(st.EndpointSlices),
		"serviceCIDRs", prefixStrings(st.ServiceCIDRs), "nodeAddrs", len(s.NodeAddrs()),
		"errors", len(s.Errors()), "duration", time.Since(start).Round(time.Millisecond))
	if ctx.Err() != nil {
		return
	}
	changed()
	s.work(ctx, changed)
}

// firstStateBuilt reports whether buildFirstState has run.
func (s *Source) firstStateBuilt() bool {
	select {
	case <-s.synced:
		return true
	default:
		return false
	}
}

// buildFirstState applies every object the caches hold. The keys the
// handlers queued meanwhile (changes after the first list) are applied again
// by the worker, which then finds nothing changed.
func (s *Source) buildFirstState() {
	for _, w := range s.activeWatches() {
		var keys []objectKey
		for _, key := range w.informer.GetStore().ListKeys() {
			namespace, name, err := cache.SplitMetaNamespaceKey(key)
			if err == nil {
				keys = append(keys, objectKey{kind: w.kind, namespace: namespace, name: name})
			}
		}
		// In list order, each object is appended to the sorted lists.
		slices.SortFunc(keys, func(a, b objectKey) int {
			return cmp.Or(cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name))
		})
		for _, k := range keys {
			if _, err := s.apply(k); err != nil {
				s.log.Error("cannot use object", "object", k.String(), "err", err)
			}
		}
	}
}

// work is the single worker: it applies queued keys until the queue shuts
// down and calls changed for a change that came after a quiet spell as soon
// as the queue is empty, and for the others once their burst has settled.
func (s *Source) work(ctx context.Context, changed func()) {
	var pendingSince time.Time // first change not yet reported; zero if none
	var lastChange time.Time   // the last change applied
	leading := false           // pendingSince came after a quiet spell
	for {
		if !pendingSince.IsZero() {
			if s.queue.Len() == 0 && !leading && time.Since(pendingSince) < s.maxNotifyDelay {
				// Let the rest of a burst land.
				select {
				case <-ctx.Done():
					return
				case <-time.After(s.settleDelay):
				}
			}
			if s.queue.Len() == 0 || time.Since(pendingSince) >= s.maxNotifyDelay {
				if ctx.Err() != nil {
					return
				}
				changed()
				pendingSince = time.Time{}
				continue
			}
		}
		key, shutdown := s.queue.Get()
		if shutdown {
			return
		}
		dirty, err := s.apply(key)
		s.processed.Add(1)
		switch {
		case err == nil:
			s.queue.Forget(key)
		case s.queue.NumRequeues(key) < maxRetries:
			s.log.Warn("cannot apply change; retrying", "object", key.String(), "err", err)
			s.queue.AddRateLimited(key)
		default:
			s.log.Error("cannot apply change; dropping it", "object", key.String(), "err", err)
			s.queue.Forget(key)
		}
		s.queue.Done(key)
		if dirty {
			now := time.Now()
			if pendingSince.IsZero() {
				pendingSince = now
				leading = now.Sub(lastChange) >= s.settleDelay
			}
			lastChange = now
		}
	}
}

// apply brings the maintained state of the object key names up to date with
// the informer's cache. It reports whether anything the compiler sees
// changed.
func (s *Source) apply(key objectKey) (bool, error) {
	switch key.kind {
	case kindPod:
		return s.applyPod(key)
	case kindNamespace:
		return s.applyNamespace(key)
	case kindPolicy:
		return s.applyPolicy(key)
	case kindService:
		return applyObject(s, s.services, s.serviceSet, key)
	case kindEndpointSlice:
		return applyObject(s, s.endpointSlices, s.sliceSet, key)
	case kindServiceCIDR:
		return s.applyServiceCIDR(key)
	case kindNode:
		return s.applyNode(key)
	}
	return false, fmt.Errorf("unknown kind %v", key.kind)
}

func (s *Source) applyPod(key objectKey) (bool, error) {
	// The state's pod is the cache's: each pod is held once.
	return applyCached(s, s.pods, s.podSet, key, func(p *cachedPod) *policy.Pod { return &p.Pod }, samePod)
}

// samePod reports whether a and b are the same to the compiler.
func samePod(a, b *policy.Pod) bool {
	if !a.Created.Equal(&b.Created) {
		return false
	}
	x, y := *a, *b
	x.Created, y.Created = metav1.Time{}, metav1.Time{} // Equal ignores the location
	return reflect.DeepEqual(x, y)
}

func (s *Source) applyNamespace(key objectKey) (bool, error) {
	k := key.storeKey()
	obj, exists, err := s.namespaces.GetIndexer().GetByKey(k)
	if err != nil {
		return false, fmt.Errorf("read namespace cache: %w", err)
	}
	var next *policy.Namespace
	if exists {
		ns, ok := obj.(*corev1.Namespace)
		if !ok {
			return false, fmt.Errorf("namespace cache holds a %T", obj)
		}
		next = source.NamespaceFromAPI(ns)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if next == nil {
		return s.nsSet.remove(k), nil
	}
	if prev, had := s.nsSet.get(k); had && reflect.DeepEqual(prev, next) {
		return false, nil
	}
	s.nsSet.put(k, next)
	return true, nil
}

// applyPolicy keeps a policy in the state and, when the API accepted it but
// podwall's validation does not, reports it in Errors. Such a policy is not
// left out: leaving it out would open the pods it selects. The compiler
// enforces it fail-closed (a broken peer matches nothing; the pods it selects
// stay isolated).
func (s *Source) applyPolicy(key objectKey) (bool, error) {
	k := key.storeKey()
	obj, exists, err := s.policies.GetIndexer().GetByKey(k)
	if err != nil {
		return false, fmt.Errorf("read networkpolicy cache: %w", err)
	}
	var next *networkingv1.NetworkPolicy
	var invalid error
	if exists {
		np, ok := obj.(*networkingv1.NetworkPolicy)
		if !ok {
			return false, fmt.Errorf("networkpolicy cache holds a %T", obj)
		}
		next, invalid = source.PolicyFromAPI(np)
		if invalid != nil {
			next = np.DeepCopy()
			next.ManagedFields = nil
			policy.ApplyDefaults(next)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prevErr, hadErr := s.policyErrs[k]
	switch {
	case invalid != nil:
		e := source.Error{Object: key.String(), Err: invalid}
		if !hadErr || prevErr.Error() != e.Error() {
			s.log.Warn("networkpolicy is invalid; enforced fail-closed (its broken parts allow nothing)", "policy", k, "err", invalid)
		}
		s.policyErrs[k] = e
	case hadErr:
		delete(s.policyErrs, k)
		if exists {
			s.log.Info("networkpolicy usable again", "policy", k)
		}
	}
	if next == nil {
		return s.policySet.remove(k), nil
	}
	if prev, had := s.policySet.get(k); had && equality.Semantic.DeepEqual(prev.Spec, next.Spec) {
		return false, nil // the compiler reads only the spec (and the key)
	}
	s.policySet.put(k, next)
	return true, nil
}

// State returns the current state, objects sorted by (namespace, name);
// ServiceCIDRs are the union of the ServiceCIDR objects' ranges and those
// given to SetServiceCIDRs, sorted. It
// is a shared snapshot: callers must not modify it. Before the first sync
// it is empty, and a firewall compiled from it would ignore every policy:
// the daemon waits for WaitForSync before it restores or adds pods. It
// costs nothing when nothing changed since the last call;
// otherwise the lists of the kinds that changed are copied.
func (s *Source) State() *policy.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.podSet.stale && !s.nsSet.stale && !s.policySet.stale &&
		!s.serviceSet.stale && !s.sliceSet.stale && !s.cidrsStale {
		return s.snapshot
	}
	next := *s.snapshot
	if s.podSet.stale {
		next.Pods = s.podSet.publish()
	}
	if s.nsSet.stale {
		next.Namespaces = s.nsSet.publish()
	}
	if s.policySet.stale {
		next.Policies = s.policySet.publish()
	}
	if s.serviceSet.stale {
		next.Services = s.serviceSet.publish()
	}
	if s.sliceSet.stale {
		next.EndpointSlices = s.sliceSet.publish()
	}
	if s.cidrsStale {
		next.ServiceCIDRs = s.cidrs // replaced, never modified
		s.cidrsStale = false
	}
	s.snapshot = &next
	return s.snapshot
}

// Errors lists the NetworkPolicies the API server accepted but podwall
// cannot use (each left out of the state), sorted, each naming its
// namespace/name ("NetworkPolicy nsa/deny-all").
func (s *Source) Errors() []source.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]source.Error, 0, len(s.policyErrs))
	for _, e := range s.policyErrs {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b source.Error) int { return cmp.Compare(a.Object, b.Object) })
	return out
}

// Ready returns nil once the caches have synced and the first state is
// built, and stays nil from then on (an API outage keeps the last good
// state). Before that it returns an error naming what has not synced. The
// caches are those of every watched kind and this node's Node; ServiceCIDRs
// only when they can be listed (a forbidden list or a cluster that does not
// serve them is logged once and does not hold readiness back).
func (s *Source) Ready() error {
	select {
	case <-s.synced:
		return nil
	default:
	}
	if s.initErr != nil {
		return s.initErr
	}
	if !s.running.Load() {
		return errors.New("kubernetes source not started")
	}
	var pending []string
	for _, w := range s.activeWatches() {
		if !w.registration.HasSynced() {
			pending = append(pending, w.name)
		}
	}
	if len(pending) == 0 {
		return errors.New("kubernetes caches synced, first state not built yet")
	}
	return fmt.Errorf("kubernetes caches not synced: %s", strings.Join(pending, ", "))
}

// WaitForSync waits until Ready returns nil or ctx ends; then it returns an
// error naming what has not synced, wrapping ctx's error.
func (s *Source) WaitForSync(ctx context.Context) error {
	select {
	case <-s.synced:
		return nil
	default:
	}
	select {
	case <-s.synced:
		return nil
	case <-ctx.Done():
		if err := s.Ready(); err != nil {
			return fmt.Errorf("%w: %w", err, ctx.Err())
		}
		return nil
	}
}
