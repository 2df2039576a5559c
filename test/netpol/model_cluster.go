package netpol

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podwall/podwall/daemon/policy"
)

// ModelCluster is a Cluster kept in memory: namespaces, pods and policies are
// records, and Probe answers from podwall's policy compiler, with every pod
// local: a connection succeeds when the server serves port/proto, the
// server's ingress allows the client's IP on it and the client's egress
// allows the server's IP on it (named ports as the compiler resolved them).
// Loopback is always allowed. No network, no root.
//
// Pods get one address of each family, handed out in order from 10.77.0.0/16
// and fd00:77::/64 and never reused.
type ModelCluster struct {
	mu         sync.Mutex
	namespaces map[string]*policy.Namespace
	pods       map[PodRef]*policy.Pod
	policies   map[string]*networkingv1.NetworkPolicy // by "namespace/name"
	lastHost   uint32
	// compiled caches the compiler's output until the next change.
	compiled *policy.Result
}

var (
	modelPrefix4 = netip.MustParsePrefix("10.77.0.0/16")
	modelPrefix6 = netip.MustParsePrefix("fd00:77::/64")
)

// NewModelCluster returns an empty in-memory cluster.
func NewModelCluster() *ModelCluster {
	return &ModelCluster{
		namespaces: make(map[string]*policy.Namespace),
		pods:       make(map[PodRef]*policy.Pod),
		policies:   make(map[string]*networkingv1.NetworkPolicy),
	}
}

// Setup records the model's namespaces and pods, each pod Running with one
// IPv4 and one IPv6 address.
func (c *ModelCluster) Setup(_ context.Context, m *Model) error {
	if m == nil {
		return errors.New("no model")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	namespaces := make(map[string]*policy.Namespace)
	pods := make(map[PodRef]*policy.Pod)
	var order []PodRef
	for _, ns := range m.Namespaces {
		if ns == nil || ns.Name == "" {
			return errors.New("model has a namespace without a name")
		}
		if c.namespaces[ns.Name] != nil || namespaces[ns.Name] != nil {
			return fmt.Errorf("namespace %s already exists", ns.Name)
		}
		namespaces[ns.Name] = &policy.Namespace{Name: ns.Name, Labels: copyLabels(ns.Labels)}
		for _, p := range ns.Pods {
			if p == nil || p.Name == "" || p.Namespace != ns.Name {
				return fmt.Errorf("namespace %s has an invalid pod %+v", ns.Name, p)
			}
			ref := p.Ref()
			if pods[ref] != nil {
				return fmt.Errorf("duplicate pod %s", ref)
			}
			pp := &policy.Pod{
				Namespace: ns.Name,
				Name:      p.Name,
				UID:       "uid-" + ref.String(),
				Labels:    copyLabels(p.Labels),
				Phase:     corev1.PodRunning,
				Created:   metav1.NewTime(time.Now()),
			}
			for _, cp := range p.Ports {
				if cp.Port < 1 || cp.Port > 65535 || !validProtocol(cp.Protocol) {
					return fmt.Errorf("pod %s: invalid container port %+v", ref, cp)
				}
				pp.Ports = append(pp.Ports, policy.ContainerPort{Name: cp.Name, Protocol: cp.Protocol, Port: cp.Port})
			}
			pods[ref] = pp
			order = append(order, ref)
		}
	}
	// Addresses are handed out only once the whole model is known good.
	for _, ref := range order {
		v4, v6, err := c.nextAddrs()
		if err != nil {
			return err
		}
		pods[ref].IPs = []netip.Addr{v4, v6}
	}
	for name, ns := range namespaces {
		c.namespaces[name] = ns
	}
	for ref, p := range pods {
		c.pods[ref] = p
	}
	c.compiled = nil
	return nil
}

// nextAddrs returns the next unused pair of addresses.
func (c *ModelCluster) nextAddrs() (netip.Addr, netip.Addr, error) {
	if c.lastHost >= 1<<16-2 {
		return netip.Addr{}, netip.Addr{}, errors.New("model cluster ran out of pod addresses")
	}
	c.lastHost++
	n := c.lastHost
	b4 := modelPrefix4.Addr().As4()
	b4[2], b4[3] = byte(n>>8), byte(n)
	b6 := modelPrefix6.Addr().As16()
	b6[14], b6[15] = byte(n>>8), byte(n)
	return netip.AddrFrom4(b4), netip.AddrFrom16(b6), nil
}

func validProtocol(p corev1.Protocol) bool {
	return p == corev1.ProtocolTCP || p == corev1.ProtocolUDP || p == corev1.ProtocolSCTP
}

// CreatePolicy stores a copy of np with the API server's defaults applied. It
// rejects what the API server would reject, a policy that already exists and
// one in an unknown namespace.
func (c *ModelCluster) CreatePolicy(_ context.Context, np *networkingv1.NetworkPolicy) error {
	return c.putPolicy(np, false)
}

// UpdatePolicy replaces an existing policy.
func (c *ModelCluster) UpdatePolicy(_ context.Context, np *networkingv1.NetworkPolicy) error {
	return c.putPolicy(np, true)
}

func (c *ModelCluster) putPolicy(np *networkingv1.NetworkPolicy, update bool) error {
	if np == nil {
		return errors.New("networkpolicy is nil")
	}
	np = np.DeepCopy()
	policy.ApplyDefaults(np)
	if err := policy.Validate(np); err != nil {
		return fmt.Errorf("invalid networkpolicy %s/%s: %w", np.Namespace, np.Name, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.namespaces[np.Namespace] == nil {
		return fmt.Errorf("namespace %s not found", np.Namespace)
	}
	key := np.Namespace + "/" + np.Name
	_, exists := c.policies[key]
	switch {
	case update && !exists:
		return fmt.Errorf("networkpolicy %s not found", key)
	case !update && exists:
		return fmt.Errorf("networkpolicy %s already exists", key)
	}
	c.policies[key] = np
	c.compiled = nil
	return nil
}

// DeletePolicy deletes a policy; deleting one that does not exist is an error.
func (c *ModelCluster) DeletePolicy(_ context.Context, namespace, name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := namespace + "/" + name
	if _, ok := c.policies[key]; !ok {
		return fmt.Errorf("networkpolicy %s not found", key)
	}
	delete(c.policies, key)
	c.compiled = nil
	return nil
}

// DeleteAllPolicies deletes every policy.
func (c *ModelCluster) DeleteAllPolicies(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.policies)
	c.compiled = nil
	return nil
}

// SetNamespaceLabels replaces a namespace's labels.
func (c *ModelCluster) SetNamespaceLabels(_ context.Context, ns string, labels map[string]string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.namespaces[ns]
	if n == nil {
		return fmt.Errorf("namespace %s not found", ns)
	}
	n.Labels = copyLabels(labels)
	c.compiled = nil
	return nil
}

// SetPodLabels replaces a pod's labels.
func (c *ModelCluster) SetPodLabels(_ context.Context, ns, pod string, labels map[string]string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pods[Ref(ns, pod)]
	if p == nil {
		return fmt.Errorf("pod %s/%s not found", ns, pod)
	}
	p.Labels = copyLabels(labels)
	c.compiled = nil
	return nil
}

// PodIP returns the pod's address of the family.
func (c *ModelCluster) PodIP(ns, pod string, family Family) (netip.Addr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pods[Ref(ns, pod)]
	if p == nil {
		return netip.Addr{}, false
	}
	return podAddr(p, family)
}

func podAddr(p *policy.Pod, family Family) (netip.Addr, bool) {
	for _, ip := range p.IPs {
		if (family == IPv4) == ip.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// Probe answers from the compiled firewalls of both pods.
func (c *ModelCluster) Probe(_ context.Context, from, to PodRef, family Family, port int, proto corev1.Protocol) (bool, error) {
	if !family.Valid() {
		return false, fmt.Errorf("invalid IP family %v", family)
	}
	if !validProtocol(proto) || port < 1 || port > 65535 {
		return false, fmt.Errorf("invalid port %s/%d", proto, port)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	src, dst := c.pods[from], c.pods[to]
	if src == nil {
		return false, fmt.Errorf("pod %s not found", from)
	}
	if dst == nil {
		return false, fmt.Errorf("pod %s not found", to)
	}
	serves := slices.ContainsFunc(dst.Ports, func(cp policy.ContainerPort) bool {
		return int(cp.Port) == port && cp.Protocol == proto
	})
	if !serves {
		return false, nil // nothing listens: refused
	}
	if from == to {
		return true, nil
	}
	srcIP, ok := podAddr(src, family)
	if !ok {
		return false, fmt.Errorf("pod %s has no %v address", from, family)
	}
	dstIP, ok := podAddr(dst, family)
	if !ok {
		return false, fmt.Errorf("pod %s has no %v address", to, family)
	}
	res, err := c.compile()
	if err != nil {
		return false, err
	}
	in, out := res.Firewalls[to.String()], res.Firewalls[from.String()]
	if in == nil || out == nil {
		return false, fmt.Errorf("compiler returned no firewall for %s or %s", from, to)
	}
	return directionAllows(&in.Ingress, srcIP, port, proto) && directionAllows(&out.Egress, dstIP, port, proto), nil
}

// compile returns the compiler's output for the current state, every pod
// local and keyed by "namespace/name". Call with c.mu held.
func (c *ModelCluster) compile() (*policy.Result, error) {
	if c.compiled == nil {
		state := &policy.State{}
		for _, ns := range c.namespaces {
			state.Namespaces = append(state.Namespaces, ns)
		}
		slices.SortFunc(state.Namespaces, func(a, b *policy.Namespace) int { return cmp.Compare(a.Name, b.Name) })
		var local []policy.LocalPod
		for ref, p := range c.pods {
			state.Pods = append(state.Pods, p)
			local = append(local, policy.LocalPod{Key: ref.String(), Pod: p})
		}
		slices.SortFunc(state.Pods, func(a, b *policy.Pod) int { return cmp.Compare(a.Key(), b.Key()) })
		slices.SortFunc(local, func(a, b policy.LocalPod) int { return cmp.Compare(a.Key, b.Key) })
		keys := slices.Sorted(maps.Keys(c.policies))
		for _, k := range keys {
			state.Policies = append(state.Policies, c.policies[k])
		}
		c.compiled = policy.Compile(state, local)
	}
	if len(c.compiled.Problems) > 0 {
		return nil, fmt.Errorf("policy compiler reported problems: %w", errors.Join(c.compiled.Problems...))
	}
	return c.compiled, nil
}

// directionAllows reports whether d lets traffic to/from peer on port/proto.
func directionAllows(d *policy.Direction, peer netip.Addr, port int, proto corev1.Protocol) bool {
	if !d.Isolated {
		return true
	}
	for _, rule := range d.Rules {
		if peerContains(rule.Peer, peer) && portsAllow(rule.Ports, port, proto) {
			return true
		}
	}
	return false
}

func peerContains(p policy.Peer, ip netip.Addr) bool {
	if p.Any {
		return true
	}
	return slices.ContainsFunc(p.Prefixes, func(pfx netip.Prefix) bool { return pfx.Contains(ip) })
}

func portsAllow(ports []policy.Port, port int, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	return slices.ContainsFunc(ports, func(p policy.Port) bool {
		if p.Protocol != proto {
			return false
		}
		if p.Port == 0 {
			return true
		}
		return int(p.Port) <= port && port <= int(max(p.EndPort, p.Port))
	})
}

// Teardown forgets every namespace, pod and policy. Addresses are not reused.
func (c *ModelCluster) Teardown(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.namespaces)
	clear(c.pods)
	clear(c.policies)
	c.compiled = nil
	return nil
}
