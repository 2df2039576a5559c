package kube

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/podwall/podwall/daemon/source"
)

const (
	// probeTimeout bounds one attempt of probeServiceCIDRs.
	probeTimeout = 10 * time.Second
	// probeRetry is how long probeServiceCIDRs waits after an attempt that
	// could not tell.
	probeRetry = time.Second
)

// SetServiceCIDRs sets ranges that State adds to those of the cluster's
// ServiceCIDR objects: the daemon's --service-cidr, for clusters whose
// ServiceCIDRs cannot be read (older than v1.33, or not granted). It may be
// called at any time; the next State has them. It does not call Run's
// changed func.
func (s *Source) SetServiceCIDRs(prefixes []netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.staticCIDRs = source.UniquePrefixes(prefixes)
	s.updateCIDRsLocked()
}

// NotifyNodeAddrs makes the source call f with this node's Node object's
// addresses (status.addresses of type InternalIP and ExternalIP, sorted)
// each time they change, including from none to some when the first state
// is built and to none when the Node is deleted. f is called from Run's
// goroutine, never concurrently, and must not block. It must be called
// before Run.
func (s *Source) NotifyNodeAddrs(f func([]netip.Addr)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodeAddrsFunc = f
}

// NodeAddrs returns this node's Node object's InternalIP and ExternalIP
// addresses, sorted; none before the first sync or when the Node does not
// exist.
func (s *Source) NodeAddrs() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.nodeAddrs)
}

// activeWatches are the watches whose informers run or may still run: all
// but the ServiceCIDR watch once it is known to be unavailable.
func (s *Source) activeWatches() []watched {
	if s.cidrWatch.Load() != cidrWatchUnavailable {
		return s.watched
	}
	return slices.DeleteFunc(slices.Clone(s.watched), func(w watched) bool { return w.kind == kindServiceCIDR })
}

// probeServiceCIDRs reports whether ServiceCIDRs (networking.k8s.io/v1,
// GA in Kubernetes v1.33) can be listed. When the list is forbidden or the
// API server does not serve the resource it logs that once and reports
// false: the ranges then come from SetServiceCIDRs only. Other errors (the
// API server unreachable) are retried until ctx ends.
func (s *Source) probeServiceCIDRs(ctx context.Context) bool {
	for {
		pctx, cancel := context.WithTimeout(ctx, probeTimeout)
		_, err := s.client.list(pctx, serviceCIDRResource, metav1.ListOptions{Limit: 1})
		cancel()
		switch {
		case err == nil:
			return true
		case apierrors.IsForbidden(err), apierrors.IsNotFound(err), apierrors.IsMethodNotSupported(err):
			s.mu.Lock()
			static := prefixStrings(s.staticCIDRs)
			s.mu.Unlock()
			s.log.Warn("cannot list servicecidrs; ClusterIP ranges come from --service-cidr only",
				"serviceCIDRs", static, "err", err)
			return false
		}
		if ctx.Err() != nil {
			return false
		}
		s.log.Debug("cannot tell whether servicecidrs can be listed; retrying", "err", err)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(probeRetry):
		}
	}
}

// applyObject brings set's entry for key up to date with informer's cache,
// which holds cachedObjects (see applyCached).
func applyObject[V interface{ Clone() V }](s *Source, informer cache.SharedIndexInformer, set *objectSet[V], key objectKey) (bool, error) {
	return applyCached(s, informer, set, key,
		func(o *cachedObject[V]) V { return o.value },
		func(a, b V) bool { return reflect.DeepEqual(a, b) })
}

// applyCached brings set's entry for key up to date with informer's cache,
// whose objects (of type C) hold the values the state points at (valueOf),
// so that each object is held once. It reports whether the value changed
// as the compiler sees it (same).
func applyCached[C any, V any](s *Source, informer cache.SharedIndexInformer, set *objectSet[V], key objectKey, valueOf func(C) V, same func(a, b V) bool) (bool, error) {
	k := key.storeKey()
	obj, exists, err := informer.GetIndexer().GetByKey(k)
	if err != nil {
		return false, fmt.Errorf("read %s cache: %w", key.kind, err)
	}
	var next V
	if exists {
		o, ok := obj.(C)
		if !ok {
			return false, fmt.Errorf("%s cache holds a %T", key.kind, obj)
		}
		next = valueOf(o)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !exists {
		return set.remove(k), nil
	}
	if prev, had := set.get(k); had && same(prev, next) {
		// E.g. a pod's status conditions, an endpoint's serving condition
		// or a resourceVersion changed: nothing to tell, but the state now
		// points at the cached value, so that the one it replaced can be
		// freed.
		set.swap(k, next)
		return false, nil
	}
	set.put(k, next)
	return true, nil
}

func (s *Source) applyServiceCIDR(key objectKey) (bool, error) {
	k := key.storeKey()
	obj, exists, err := s.serviceCIDRs.GetIndexer().GetByKey(k)
	if err != nil {
		return false, fmt.Errorf("read servicecidr cache: %w", err)
	}
	var next []netip.Prefix
	if exists {
		c, ok := obj.(*networkingv1.ServiceCIDR)
		if !ok {
			return false, fmt.Errorf("servicecidr cache holds a %T", obj)
		}
		next = source.ServiceCIDRFromAPI(c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, had := s.cidrsByObject[k]
	if exists == had && slices.Equal(prev, next) {
		return false, nil
	}
	if exists {
		s.cidrsByObject[k] = next
	} else {
		delete(s.cidrsByObject, k)
	}
	return s.updateCIDRsLocked(), nil
}

// updateCIDRsLocked recomputes the union of the ServiceCIDR ranges and
// reports whether it changed.
func (s *Source) updateCIDRsLocked() bool {
	lists := [][]netip.Prefix{s.staticCIDRs}
	for _, l := range s.cidrsByObject {
		lists = append(lists, l)
	}
	next := source.UniquePrefixes(lists...)
	if slices.Equal(next, s.cidrs) {
		return false
	}
	s.cidrs = next
	s.cidrsStale = true
	return true
}

// applyNode updates the Node object's addresses and tells the NotifyNodeAddrs
// func when they changed. It never reports a change of the policy state.
func (s *Source) applyNode(key objectKey) (bool, error) {
	if key.name != s.nodeName {
		return false, nil // not ours (the watch selects ours only)
	}
	obj, exists, err := s.node.GetIndexer().GetByKey(key.storeKey())
	if err != nil {
		return false, fmt.Errorf("read node cache: %w", err)
	}
	var next []netip.Addr
	if exists {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return false, fmt.Errorf("node cache holds a %T", obj)
		}
		next = source.NodeAddrsFromAPI(n)
	}
	s.mu.Lock()
	if slices.Equal(s.nodeAddrs, next) {
		s.mu.Unlock()
		return false, nil
	}
	s.nodeAddrs = next
	notify := s.nodeAddrsFunc
	s.mu.Unlock()
	s.log.Info("node addresses changed", "node", s.nodeName, "addrs", addrStrings(next))
	if notify != nil {
		notify(slices.Clone(next))
	}
	return false, nil
}

func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}
