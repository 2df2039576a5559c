package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Explain answers "may SOURCE open a connection to DESTINATION:PORT, and
// why?" from the compiler's own output. The verdict of each direction is the
// compiled Firewall of the pod on that side, evaluated the way the dataplane
// renders it (Services, then ServiceGuard, then Rules for egress; the node's
// addresses, then Rules for ingress; loopback always). The attribution
// compiles each rule of each isolating policy alone with the same compiler
// and the same state, so it names exactly the rules that allow the flow.

// Verdict is the outcome of an explained flow or direction.
type Verdict string

// The verdicts. Partial means some of the ports asked about (no port was
// given) or part of a CIDR.
const (
	VerdictAllowed Verdict = "allowed"
	VerdictDenied  Verdict = "denied"
	VerdictPartial Verdict = "partial"
)

// Kinds of explained endpoints.
const (
	EndpointPod     = "pod"
	EndpointAddress = "address"
	EndpointCIDR    = "cidr"
)

// Directions as explanations name them.
const (
	DirectionIngress = "ingress"
	DirectionEgress  = "egress"
)

// ErrExplainInvalid is wrapped by Explain's errors for a malformed query;
// ErrExplainNotFound by those for a pod or port it does not know.
var (
	ErrExplainInvalid  = errors.New("invalid explain query")
	ErrExplainNotFound = errors.New("not found")
)

// ExplainInput is what Explain reads: the compiler's input exactly as the
// syncer compiles it, and what the dataplane adds to each local pod.
type ExplainInput struct {
	State *State
	// Local are the local attachments (Pod.IPs from the CNI result).
	Local []LocalPod
	// NodeAddrs are the addresses always allowed into each local pod, by
	// LocalPod.Key: the node's addresses and the gateway of its link.
	NodeAddrs map[string][]netip.Addr
	// InForce are the firewalls in force, by LocalPod.Key (absent: nothing
	// applied yet), and ApplyErrors the last error applying one.
	InForce     map[string]*Firewall
	ApplyErrors map[string]error
}

// ExplainQuery is one question. Source and Destination are each
// "namespace/name", an IP address or a CIDR. Port 0 and an empty PortName
// mean every port; Protocol "" means TCP with a port, every protocol
// without one. PortName names a container port of the destination pod.
type ExplainQuery struct {
	Source, Destination string
	Protocol            corev1.Protocol
	Port                int32
	PortName            string
}

// Explanation is Explain's answer.
type Explanation struct {
	Source, Destination ExplainEndpoint
	// Protocol and Port are the query's, with a PortName resolved; "" and 0
	// mean every protocol and port.
	Protocol corev1.Protocol
	Port     int32
	PortName string
	// Verdict is allowed when every flow is, denied when every flow is,
	// else partial.
	Verdict Verdict
	Flows   []ExplainFlow
}

// ExplainEndpoint is one side of the question, resolved.
type ExplainEndpoint struct {
	Input string
	// Kind is EndpointPod, EndpointAddress or EndpointCIDR.
	Kind string
	// Pod is "namespace/name" of the pod the endpoint is or whose address
	// it is; empty when no pod owns it.
	Pod string
	// Local is true when the pod is attached on this node.
	Local     bool
	Addresses []netip.Prefix
	Note      string
}

// ExplainFlow is one (source, destination) address pair of the question.
type ExplainFlow struct {
	Source, Destination netip.Prefix
	Egress, Ingress     DirectionVerdict
	Verdict             Verdict
	// AllowedPorts, when the query gave no port, are the ports both
	// directions allow.
	AllowedPorts []string
}

// DirectionVerdict is what one side's firewall says in one direction.
type DirectionVerdict struct {
	// Direction is DirectionEgress (the source's) or DirectionIngress (the
	// destination's).
	Direction string
	// Pod is the pod whose firewall decides, "" when that side is no pod.
	Pod string
	// Enforced is true when the pod is local: this node enforces it.
	Enforced bool
	Isolated bool
	Policies []string
	Verdict  Verdict
	Reason   string
	// AllowedBy are the rules that allow (part of) the flow alone.
	AllowedBy []RuleRef
	// AllowedPorts (no port asked) and AllowedPeers (a CIDR partly
	// allowed) detail a partial verdict.
	AllowedPorts []string
	AllowedPeers []netip.Prefix
	// Pending is set when the firewall in force says something else.
	Pending string
}

// RuleRef names one rule of one policy.
type RuleRef struct {
	Policy    string // "namespace/name"
	Direction string // DirectionIngress or DirectionEgress
	Index     int    // in spec.ingress or spec.egress
	Ports     []string
	Peers     []netip.Prefix
}

// String returns "namespace/name ingress[0]".
func (r RuleRef) String() string { return fmt.Sprintf("%s %s[%d]", r.Policy, r.Direction, r.Index) }

// Explain answers q from in. Its errors wrap ErrExplainInvalid or
// ErrExplainNotFound.
func Explain(in *ExplainInput, q ExplainQuery) (*Explanation, error) {
	x := newExplainer(in)
	src, err := x.resolve(q.Source)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dst, err := x.resolve(q.Destination)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	pq, err := x.portQuery(q, dst)
	if err != nil {
		return nil, err
	}
	out := &Explanation{Source: src.ep, Destination: dst.ep, Protocol: pq.protocol, Port: pq.port, PortName: q.PortName}
	for _, s := range src.ep.Addresses {
		for _, d := range dst.ep.Addresses {
			if s.Addr().Is4() != d.Addr().Is4() {
				continue
			}
			out.Flows = append(out.Flows, x.flow(src, dst, s, d, pq))
		}
	}
	if len(out.Flows) == 0 {
		return nil, fmt.Errorf("%w: %s and %s have no IP family in common", ErrExplainInvalid, q.Source, q.Destination)
	}
	verdicts := make([]Verdict, len(out.Flows))
	for i, f := range out.Flows {
		verdicts[i] = f.Verdict
	}
	out.Verdict = combineAll(verdicts)
	return out, nil
}

// explainer holds the indexes of one Explain call.
type explainer struct {
	in *ExplainInput
	// owners maps each address to the eligible pod that wins it, as the
	// compiler decides.
	owners map[netip.Addr]*Pod
	// local maps "namespace/name" to the pod's first attachment.
	local map[string]LocalPod
	pods  map[string]*Pod
	// nodeAddrs are every local pod's always-allowed addresses.
	nodeAddrs map[netip.Addr]bool
	firewalls map[string]*Firewall
}

func newExplainer(in *ExplainInput) *explainer {
	in = &ExplainInput{State: in.State, Local: in.Local, NodeAddrs: in.NodeAddrs, InForce: in.InForce, ApplyErrors: in.ApplyErrors}
	if in.State == nil {
		in.State = &State{}
	}
	x := &explainer{
		in:        in,
		owners:    make(map[netip.Addr]*Pod),
		local:     make(map[string]LocalPod),
		pods:      make(map[string]*Pod),
		nodeAddrs: make(map[netip.Addr]bool),
		firewalls: make(map[string]*Firewall),
	}
	for _, pp := range eligiblePeers(in.State.Pods) {
		for _, a := range pp.addrs {
			x.owners[a] = pp.pod
		}
	}
	for _, p := range in.State.Pods {
		if p != nil {
			x.pods[p.Key()] = p
		}
	}
	local := slices.Clone(in.Local)
	slices.SortFunc(local, func(a, b LocalPod) int { return strings.Compare(a.Key, b.Key) })
	for _, lp := range local {
		if lp.Pod == nil {
			continue
		}
		if _, ok := x.local[lp.Pod.Key()]; !ok {
			x.local[lp.Pod.Key()] = lp
		}
		x.pods[lp.Pod.Key()] = lp.Pod
	}
	for _, addrs := range in.NodeAddrs {
		for _, a := range addrs {
			x.nodeAddrs[a.Unmap()] = true
		}
	}
	return x
}

// endpoint is a resolved side: pod is the pod whose firewall applies (nil
// when NetworkPolicy does not apply to that side).
type endpoint struct {
	ep  ExplainEndpoint
	pod *Pod
	// key is the attachment key of a local pod.
	key string
}

func (x *explainer) resolve(s string) (endpoint, error) {
	e := endpoint{ep: ExplainEndpoint{Input: s}}
	switch {
	case s == "":
		return e, fmt.Errorf("%w: empty; want namespace/name, an IP address or a CIDR", ErrExplainInvalid)
	case strings.Contains(s, "/"):
		if p, err := netip.ParsePrefix(s); err == nil {
			if p.IsSingleIP() {
				return x.resolveAddr(e, p.Addr().Unmap()), nil
			}
			if p.Masked() != p {
				return e, fmt.Errorf("%w: %q has host bits set (the network is %s)", ErrExplainInvalid, s, p.Masked())
			}
			e.ep.Kind, e.ep.Addresses = EndpointCIDR, []netip.Prefix{p}
			e.ep.Note = x.cidrNote(p)
			return e, nil
		}
		ns, name, _ := strings.Cut(s, "/")
		if ns == "" || name == "" || strings.Contains(name, "/") {
			return e, fmt.Errorf("%w: %q is not namespace/name, an IP address or a CIDR", ErrExplainInvalid, s)
		}
		return x.resolvePod(e, ns+"/"+name)
	default:
		a, err := netip.ParseAddr(s)
		if err != nil {
			return e, fmt.Errorf("%w: %q is not namespace/name, an IP address or a CIDR", ErrExplainInvalid, s)
		}
		if a.Zone() != "" {
			return e, fmt.Errorf("%w: %q: zoned addresses are not pod or peer addresses", ErrExplainInvalid, s)
		}
		return x.resolveAddr(e, a.Unmap()), nil
	}
}

func (x *explainer) resolvePod(e endpoint, key string) (endpoint, error) {
	e.ep.Kind = EndpointPod
	e.ep.Pod = key
	p := x.pods[key]
	if p == nil {
		return e, fmt.Errorf("pod %s: %w (neither attached on this node nor known to the policy source)", key, ErrExplainNotFound)
	}
	lp, local := x.local[key]
	e.ep.Local = local
	for _, a := range p.IPs {
		if a.IsValid() {
			e.ep.Addresses = append(e.ep.Addresses, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	slices.SortFunc(e.ep.Addresses, explainComparePrefixes)
	e.ep.Addresses = slices.Compact(e.ep.Addresses)
	if len(e.ep.Addresses) == 0 {
		return e, fmt.Errorf("pod %s has no IP address yet: %w", key, ErrExplainNotFound)
	}
	switch {
	case p.HostNetwork:
		e.ep.Note = "uses the host network: NetworkPolicy does not apply to it"
		return e, nil
	case p.Phase == corev1.PodSucceeded || p.Phase == corev1.PodFailed:
		e.ep.Note = fmt.Sprintf("has ended (%s): NetworkPolicy no longer applies to it", p.Phase)
		return e, nil
	}
	e.pod = p
	if local {
		e.key = lp.Key
	} else {
		e.ep.Note = remoteNote(p)
	}
	return e, nil
}

func remoteNote(p *Pod) string {
	if p.NodeName == "" {
		return "not attached on this node: its firewall is enforced where it runs"
	}
	return fmt.Sprintf("runs on node %s: its firewall is enforced there, not on this node", p.NodeName)
}

func (x *explainer) resolveAddr(e endpoint, a netip.Addr) endpoint {
	e.ep.Kind = EndpointAddress
	e.ep.Addresses = []netip.Prefix{netip.PrefixFrom(a, a.BitLen())}
	if p := x.owners[a]; p != nil {
		e.pod = p
		e.ep.Pod = p.Key()
		if lp, ok := x.local[p.Key()]; ok {
			e.ep.Local, e.key = true, lp.Key
		} else {
			e.ep.Note = remoteNote(p)
		}
		return e
	}
	switch {
	case x.nodeAddrs[a]:
		e.ep.Note = "an address of this node: always allowed into local pods"
	case x.hostNetworkPod(a) != "":
		e.ep.Note = fmt.Sprintf("an address of host-network pod %s (a node address)", x.hostNetworkPod(a))
	default:
		e.ep.Note = "no pod known to podwalld has this address"
	}
	return e
}

func (x *explainer) hostNetworkPod(a netip.Addr) string {
	for _, p := range x.in.State.Pods {
		if p != nil && p.HostNetwork && slices.ContainsFunc(p.IPs, func(ip netip.Addr) bool { return ip.Unmap() == a }) {
			return p.Key()
		}
	}
	return ""
}

func (x *explainer) cidrNote(p netip.Prefix) string {
	n := 0
	for a := range x.owners {
		if p.Contains(a) {
			n++
		}
	}
	if n == 0 {
		return "no pod known to podwalld is in this range"
	}
	return fmt.Sprintf("holds %d pod addresses, judged here as plain addresses (their own policies are not); name a pod to see them", n)
}

// portQuery is the port part of a query: port 0 means every port of want.
type portQuery struct {
	protocol corev1.Protocol
	port     int32
	want     portSet
}

func (x *explainer) portQuery(q ExplainQuery, dst endpoint) (portQuery, error) {
	proto := corev1.Protocol(strings.ToUpper(string(q.Protocol)))
	switch proto {
	case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		return portQuery{}, fmt.Errorf("%w: protocol %q: want TCP, UDP or SCTP", ErrExplainInvalid, q.Protocol)
	}
	port := q.Port
	if q.PortName != "" {
		if port != 0 {
			return portQuery{}, fmt.Errorf("%w: give a port number or a port name, not both", ErrExplainInvalid)
		}
		if dst.ep.Pod == "" {
			return portQuery{}, fmt.Errorf("%w: port name %q needs a destination pod", ErrExplainInvalid, q.PortName)
		}
		p := x.pods[dst.ep.Pod]
		for _, cp := range p.Ports {
			if cp.Name == q.PortName && (proto == "" || cp.Protocol == proto) && cp.Port > 0 {
				port, proto = cp.Port, cp.Protocol
				break
			}
		}
		if port == 0 {
			return portQuery{}, fmt.Errorf("pod %s has no container port named %q: %w", dst.ep.Pod, q.PortName, ErrExplainNotFound)
		}
	}
	if port < 0 || port > 65535 {
		return portQuery{}, fmt.Errorf("%w: port %d is out of range 1-65535", ErrExplainInvalid, port)
	}
	if port > 0 {
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		return portQuery{protocol: proto, port: port, want: singlePort(proto, port)}, nil
	}
	if proto == "" {
		return portQuery{want: everyPort()}, nil
	}
	return portQuery{protocol: proto, want: everyPortOf(proto)}, nil
}

// flow explains one address pair.
func (x *explainer) flow(src, dst endpoint, s, d netip.Prefix, pq portQuery) ExplainFlow {
	f := ExplainFlow{Source: s, Destination: d}
	if src.pod != nil && dst.pod != nil && src.pod.Key() == dst.pod.Key() {
		loop := func(dir string) DirectionVerdict {
			return DirectionVerdict{Direction: dir, Pod: src.pod.Key(), Enforced: src.key != "",
				Verdict: VerdictAllowed, Reason: "loopback: a pod always reaches itself"}
		}
		f.Egress, f.Ingress, f.Verdict = loop(DirectionEgress), loop(DirectionIngress), VerdictAllowed
		if pq.port == 0 {
			f.Egress.AllowedPorts, f.Ingress.AllowedPorts, f.AllowedPorts = pq.want.strings(), pq.want.strings(), pq.want.strings()
		}
		return f
	}
	var egressPorts, ingressPorts portSet
	f.Egress, egressPorts = x.side(src, DirectionEgress, d, pq)
	f.Ingress, ingressPorts = x.side(dst, DirectionIngress, s, pq)
	both := []Verdict{f.Egress.Verdict, f.Ingress.Verdict}
	f.Verdict = combineAll(both)
	if f.Egress.Verdict == VerdictDenied || f.Ingress.Verdict == VerdictDenied {
		f.Verdict = VerdictDenied
	}
	if pq.port == 0 && f.Verdict != VerdictDenied {
		ports := egressPorts.intersect(ingressPorts)
		switch {
		case ports.empty():
			f.Verdict = VerdictDenied
		case f.Verdict == VerdictAllowed && !ports.equal(pq.want):
			f.Verdict = VerdictPartial
		}
		f.AllowedPorts = ports.strings()
	}
	return f
}

// side explains one endpoint's firewall in one direction towards peer. The
// port set is what it allows of pq (an upper bound for a CIDR peer).
func (x *explainer) side(e endpoint, dir string, peer netip.Prefix, pq portQuery) (DirectionVerdict, portSet) {
	v := DirectionVerdict{Direction: dir}
	if e.pod == nil {
		v.Verdict = VerdictAllowed
		what := e.ep.Input
		if e.ep.Pod != "" {
			what = e.ep.Pod
		}
		v.Reason = fmt.Sprintf("%s is not a pod NetworkPolicy applies to: nothing is enforced on this side", what)
		if e.ep.Kind == EndpointCIDR && dir == DirectionEgress {
			v.Reason += " (" + e.ep.Note + ")"
		}
		if pq.port == 0 {
			v.AllowedPorts = pq.want.strings()
		}
		return v, pq.want
	}
	v.Pod, v.Enforced = e.pod.Key(), e.key != ""
	fw := x.firewall(e)
	d := &fw.Ingress
	if dir == DirectionEgress {
		d = &fw.Egress
	}
	var nodes []netip.Addr
	if dir == DirectionIngress && e.key != "" {
		nodes = x.in.NodeAddrs[e.key]
	}
	v.Isolated, v.Policies = d.Isolated, slices.Clone(d.Policies)
	ev := evaluateDirection(d, nodes, peer, pq)
	v.Verdict = ev.verdict
	if pq.port == 0 {
		v.AllowedPorts = ev.ports.strings()
	}
	if ev.verdict == VerdictPartial && !peer.IsSingleIP() {
		v.AllowedPeers = ev.peers.Prefixes()
	}
	if !d.Isolated {
		v.Reason = fmt.Sprintf("no policy isolates %s's %s: open", e.pod.Key(), dir)
	} else {
		v.AllowedBy = x.attribute(e, dir, d, peer, pq)
		v.Reason = explainReason(v, ev, peer, pq)
	}
	if e.key != "" {
		v.Pending = x.pending(e.key, dir, nodes, peer, pq, ev.verdict)
	} else {
		v.Reason = "not enforced on this node; its policies say: " + v.Reason
	}
	return v, ev.ports
}

// firewall compiles e's pod as a local pod, with the syncer's input.
func (x *explainer) firewall(e endpoint) *Firewall {
	key := e.pod.Key()
	if fw, ok := x.firewalls[key]; ok {
		return fw
	}
	lp := LocalPod{Key: e.key, Pod: e.pod}
	if lp.Key == "" {
		lp.Key = "explain/" + key
	}
	fw := Compile(x.in.State, []LocalPod{lp}).Firewalls[lp.Key]
	if fw == nil {
		fw = &Firewall{}
	}
	x.firewalls[key] = fw
	return fw
}

// attribute compiles each rule of each policy isolating d alone, with the
// same compiler and state, and returns those that allow (part of) the flow.
func (x *explainer) attribute(e endpoint, dir string, d *Direction, peer netip.Prefix, pq portQuery) []RuleRef {
	byKey := make(map[string]*networkingv1.NetworkPolicy, len(x.in.State.Policies))
	for _, np := range x.in.State.Policies {
		if np != nil {
			byKey[np.Namespace+"/"+np.Name] = np
		}
	}
	var refs []RuleRef
	for _, key := range d.Policies {
		np := byKey[key]
		if np == nil {
			continue
		}
		n := len(np.Spec.Ingress)
		if dir == DirectionEgress {
			n = len(np.Spec.Egress)
		}
		for i := range n {
			alone := ruleAlone(np, dir, i)
			state := *x.in.State
			state.Policies = []*networkingv1.NetworkPolicy{alone}
			lp := LocalPod{Key: "explain/rule", Pod: e.pod}
			fw := Compile(&state, []LocalPod{lp}).Firewalls[lp.Key]
			if fw == nil {
				continue
			}
			rd := &fw.Ingress
			if dir == DirectionEgress {
				rd = &fw.Egress
			}
			ev := evaluateDirection(rd, nil, peer, pq)
			if ev.verdict == VerdictDenied {
				continue
			}
			ref := RuleRef{Policy: key, Direction: dir, Index: i, Ports: ev.ports.strings()}
			if ev.verdict == VerdictPartial && !peer.IsSingleIP() {
				ref.Peers = ev.peers.Prefixes()
			}
			refs = append(refs, ref)
		}
	}
	return refs
}

// ruleAlone returns a copy of np that isolates only dir and has only rule i
// of that direction.
func ruleAlone(np *networkingv1.NetworkPolicy, dir string, i int) *networkingv1.NetworkPolicy {
	c := np.DeepCopy()
	if dir == DirectionEgress {
		c.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
		c.Spec.Egress = c.Spec.Egress[i : i+1]
		c.Spec.Ingress = nil
	} else {
		c.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
		c.Spec.Ingress = c.Spec.Ingress[i : i+1]
		c.Spec.Egress = nil
	}
	return c
}

// pending compares the verdict with the one of the firewall in force.
func (x *explainer) pending(key, dir string, nodes []netip.Addr, peer netip.Prefix, pq portQuery, want Verdict) string {
	fw := x.in.InForce[key]
	var d *Direction
	switch {
	case fw == nil:
		d = &Direction{}
	case dir == DirectionEgress:
		d = &fw.Egress
	default:
		d = &fw.Ingress
	}
	got := evaluateDirection(d, nodes, peer, pq).verdict
	if got == want {
		return ""
	}
	msg := fmt.Sprintf("the firewall in force still says %s: the next sync applies the current policies", got)
	if fw == nil {
		msg = fmt.Sprintf("no firewall applied yet (in force: %s)", got)
	}
	if err := x.in.ApplyErrors[key]; err != nil {
		msg += "; the last apply failed: " + err.Error()
	}
	return msg
}

// explainReason words the verdict of an isolated direction.
func explainReason(v DirectionVerdict, ev evaluation, peer netip.Prefix, pq portQuery) string {
	what := peer.String()
	if peer.IsSingleIP() {
		what = peer.Addr().String()
	}
	on := "on any port"
	if pq.port != 0 {
		on = fmt.Sprintf("on %s/%d", pq.protocol, pq.port)
	} else if pq.protocol != "" {
		on = fmt.Sprintf("on any %s port", pq.protocol)
	}
	if v.Verdict == VerdictDenied {
		return fmt.Sprintf("isolated by %s; no rule allows %s %s", strings.Join(v.Policies, ", "), what, on)
	}
	var parts []string
	if ev.node {
		parts = append(parts, "an address of this node (always allowed in)")
	}
	for _, r := range v.AllowedBy {
		parts = append(parts, r.String())
	}
	by := strings.Join(parts, ", ")
	if by == "" {
		by = "the rules together (no single rule allows it alone)"
	}
	if ev.service {
		by += "; a Service frontend is judged by its endpoints"
	}
	if v.Verdict == VerdictPartial {
		return "partly allowed by " + by
	}
	return "allowed by " + by
}

// evaluation is what one Direction allows of a flow.
type evaluation struct {
	verdict Verdict
	// peers is the allowed part of the peer prefix (on some port of the
	// query when it gave none).
	peers *netipx.IPSet
	// ports are the allowed ports of the query (exact for a single peer
	// address, an upper bound for a CIDR).
	ports portSet
	// node is true when the node-address rule contributes; service when a
	// Services rule does.
	node, service bool
}

// evaluateDirection judges d for traffic with peer (the remote prefix) as the
// dataplane renders it: nothing isolated allows all; else the node's
// addresses (ingress) and the Services rules (egress) allow, the
// ServiceGuard drops, and then Rules allow.
func evaluateDirection(d *Direction, nodes []netip.Addr, peer netip.Prefix, pq portQuery) evaluation {
	full := singlePrefixSet(peer)
	if !d.Isolated {
		return evaluation{verdict: VerdictAllowed, peers: full, ports: pq.want}
	}
	var allow []Rule
	if len(nodes) > 0 {
		var p []netip.Prefix
		for _, a := range nodes {
			a = a.Unmap()
			if a.IsValid() {
				p = append(p, netip.PrefixFrom(a, a.BitLen()))
			}
		}
		allow = append(allow, Rule{Peer: Peer{Prefixes: p}})
	}
	nodeRules := len(allow)
	allow = append(allow, d.Services...)

	ev := evaluation{}
	if pq.port != 0 || peer.IsSingleIP() {
		// Exact: per port for a single address; per address for one port.
		if peer.IsSingleIP() {
			ev.ports = newPortSet()
			for i, r := range allow {
				if explainPeerCovers(r.Peer, peer) {
					got := portsOfRule(r).intersect(pq.want)
					if !got.empty() {
						ev.node = ev.node || i < nodeRules
						ev.service = ev.service || i >= nodeRules
					}
					ev.ports = ev.ports.union(got)
				}
			}
			guarded, ruled := newPortSet(), newPortSet()
			for _, r := range d.ServiceGuard {
				if explainPeerCovers(r.Peer, peer) {
					guarded = guarded.union(portsOfRule(r))
				}
			}
			for _, r := range d.Rules {
				if explainPeerCovers(r.Peer, peer) {
					ruled = ruled.union(portsOfRule(r))
				}
			}
			ev.ports = ev.ports.union(ruled.minus(guarded)).intersect(pq.want)
			switch {
			case ev.ports.empty():
				ev.verdict, ev.peers = VerdictDenied, &netipx.IPSet{}
			case ev.ports.equal(pq.want):
				ev.verdict, ev.peers = VerdictAllowed, full
			default:
				ev.verdict, ev.peers = VerdictPartial, full
			}
			return ev
		}
		// One port, a CIDR peer.
		matches := func(r Rule) bool { return portsOfRule(r).covers(pq.want) }
		var b netipx.IPSetBuilder
		for i, r := range allow {
			if matches(r) && explainPeerOverlaps(r.Peer, peer) {
				ev.node = ev.node || i < nodeRules
				ev.service = ev.service || i >= nodeRules
				b.AddSet(explainPeerSet(r.Peer, peer))
			}
		}
		var guard, ruled netipx.IPSetBuilder
		for _, r := range d.ServiceGuard {
			if matches(r) {
				guard.AddSet(explainPeerSet(r.Peer, peer))
			}
		}
		for _, r := range d.Rules {
			if matches(r) {
				ruled.AddSet(explainPeerSet(r.Peer, peer))
			}
		}
		g, _ := guard.IPSet()
		ruled.RemoveSet(g)
		rs, _ := ruled.IPSet()
		b.AddSet(rs)
		ev.peers, _ = b.IPSet()
		ev.ports = pq.want
		ev.verdict = setVerdict(ev.peers, full)
		if ev.verdict == VerdictDenied {
			ev.ports = newPortSet()
		}
		return ev
	}

	// Every port, a CIDR peer: the whole range on every port, nothing, or
	// something in between.
	var allFull, anyPart, guardAny, guardFull, rulesFull, rulesAny netipx.IPSetBuilder
	ev.ports = newPortSet()
	for i, r := range allow {
		ports := portsOfRule(r).intersect(pq.want)
		if ports.empty() || !explainPeerOverlaps(r.Peer, peer) {
			continue
		}
		ev.node = ev.node || i < nodeRules
		ev.service = ev.service || i >= nodeRules
		ev.ports = ev.ports.union(ports)
		anyPart.AddSet(explainPeerSet(r.Peer, peer))
		if ports.equal(pq.want) {
			allFull.AddSet(explainPeerSet(r.Peer, peer))
		}
	}
	for _, r := range d.ServiceGuard {
		ports := portsOfRule(r).intersect(pq.want)
		if ports.empty() {
			continue
		}
		guardAny.AddSet(explainPeerSet(r.Peer, peer))
		if ports.equal(pq.want) {
			guardFull.AddSet(explainPeerSet(r.Peer, peer))
		}
	}
	for _, r := range d.Rules {
		ports := portsOfRule(r).intersect(pq.want)
		if ports.empty() || !explainPeerOverlaps(r.Peer, peer) {
			continue
		}
		ev.ports = ev.ports.union(ports)
		rulesAny.AddSet(explainPeerSet(r.Peer, peer))
		if ports.equal(pq.want) {
			rulesFull.AddSet(explainPeerSet(r.Peer, peer))
		}
	}
	ga, _ := guardAny.IPSet()
	gf, _ := guardFull.IPSet()
	rulesFull.RemoveSet(ga)
	rulesAny.RemoveSet(gf)
	rf, _ := rulesFull.IPSet()
	ra, _ := rulesAny.IPSet()
	allFull.AddSet(rf)
	anyPart.AddSet(ra)
	fullSet, _ := allFull.IPSet()
	anySet, _ := anyPart.IPSet()
	ev.peers = anySet
	switch {
	case setVerdict(fullSet, full) == VerdictAllowed:
		ev.verdict = VerdictAllowed
	case setVerdict(anySet, full) == VerdictDenied:
		ev.verdict, ev.ports = VerdictDenied, newPortSet()
	default:
		ev.verdict = VerdictPartial
	}
	return ev
}

func singlePrefixSet(p netip.Prefix) *netipx.IPSet {
	var b netipx.IPSetBuilder
	b.AddPrefix(p)
	s, _ := b.IPSet()
	return s
}

// setVerdict compares the allowed part of a peer with the whole.
func setVerdict(allowed, whole *netipx.IPSet) Verdict {
	switch {
	case allowed == nil || len(allowed.Ranges()) == 0:
		return VerdictDenied
	case allowed.Equal(whole):
		return VerdictAllowed
	}
	return VerdictPartial
}

// peerSet is the part of prefix p that peer matches.
func explainPeerSet(peer Peer, p netip.Prefix) *netipx.IPSet {
	var b netipx.IPSetBuilder
	if peer.Any {
		b.AddPrefix(p)
	} else {
		for _, q := range peer.Prefixes {
			b.AddPrefix(q)
		}
		b.Intersect(singlePrefixSet(p))
	}
	s, _ := b.IPSet()
	return s
}

// explainPeerCovers reports whether peer matches every address of p.
func explainPeerCovers(peer Peer, p netip.Prefix) bool {
	if peer.Any {
		return true
	}
	for _, q := range peer.Prefixes {
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return explainPeerSet(peer, p).Equal(singlePrefixSet(p))
}

func explainPeerOverlaps(peer Peer, p netip.Prefix) bool {
	if peer.Any {
		return true
	}
	return slices.ContainsFunc(peer.Prefixes, p.Overlaps)
}

func explainComparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// combineAll is allowed when every verdict is, denied when every one is,
// else partial.
func combineAll(vs []Verdict) Verdict {
	allowed, denied := true, true
	for _, v := range vs {
		allowed = allowed && v == VerdictAllowed
		denied = denied && v == VerdictDenied
	}
	switch {
	case len(vs) == 0:
		return VerdictDenied
	case allowed:
		return VerdictAllowed
	case denied:
		return VerdictDenied
	}
	return VerdictPartial
}

// Port sets: per protocol, sorted disjoint inclusive ranges of ports, where
// 0-65535 is every port of the protocol.

var explainProtocols = [...]corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}

type portRange struct{ lo, hi int32 }

type portSet map[corev1.Protocol][]portRange

func newPortSet() portSet { return portSet{} }

func everyPort() portSet {
	s := portSet{}
	for _, p := range explainProtocols {
		s[p] = []portRange{{0, 65535}}
	}
	return s
}

func everyPortOf(proto corev1.Protocol) portSet { return portSet{proto: {{0, 65535}}} }

func singlePort(proto corev1.Protocol, port int32) portSet {
	return portSet{proto: {{port, port}}}
}

// portsOfRule is the set of ports a rule allows.
func portsOfRule(r Rule) portSet {
	if len(r.Ports) == 0 {
		return everyPort()
	}
	s := portSet{}
	for _, p := range r.Ports {
		lo, hi := p.Port, portHigh(p)
		if p.Port == 0 {
			lo, hi = 0, 65535
		}
		s[p.Protocol] = append(s[p.Protocol], portRange{lo, hi})
	}
	for proto := range s {
		s[proto] = normalizeRanges(s[proto])
	}
	return s
}

func normalizeRanges(rs []portRange) []portRange {
	slices.SortFunc(rs, func(a, b portRange) int { return int(a.lo - b.lo) })
	var out []portRange
	for _, r := range rs {
		if n := len(out); n > 0 && r.lo <= out[n-1].hi+1 {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

func (s portSet) union(o portSet) portSet {
	out := portSet{}
	for _, p := range explainProtocols {
		if rs := normalizeRanges(slices.Concat(s[p], o[p])); len(rs) > 0 {
			out[p] = rs
		}
	}
	return out
}

func (s portSet) intersect(o portSet) portSet {
	out := portSet{}
	for _, p := range explainProtocols {
		var rs []portRange
		for _, a := range s[p] {
			for _, b := range o[p] {
				if lo, hi := max(a.lo, b.lo), min(a.hi, b.hi); lo <= hi {
					rs = append(rs, portRange{lo, hi})
				}
			}
		}
		if rs = normalizeRanges(rs); len(rs) > 0 {
			out[p] = rs
		}
	}
	return out
}

func (s portSet) minus(o portSet) portSet {
	out := portSet{}
	for _, p := range explainProtocols {
		rs := slices.Clone(s[p])
		for _, b := range o[p] {
			var next []portRange
			for _, a := range rs {
				if b.hi < a.lo || b.lo > a.hi {
					next = append(next, a)
					continue
				}
				if a.lo < b.lo {
					next = append(next, portRange{a.lo, b.lo - 1})
				}
				if a.hi > b.hi {
					next = append(next, portRange{b.hi + 1, a.hi})
				}
			}
			rs = next
		}
		if len(rs) > 0 {
			out[p] = rs
		}
	}
	return out
}

func (s portSet) empty() bool {
	for _, rs := range s {
		if len(rs) > 0 {
			return false
		}
	}
	return true
}

func (s portSet) equal(o portSet) bool {
	for _, p := range explainProtocols {
		if !slices.Equal(s[p], o[p]) {
			return false
		}
	}
	return true
}

// covers reports whether every port of o is in s.
func (s portSet) covers(o portSet) bool { return o.minus(s).empty() }

// strings renders the set: "*" for every port of every protocol, else
// "TCP/*", "TCP/80", "TCP/80-90", ...
func (s portSet) strings() []string {
	if s.equal(everyPort()) {
		return []string{"*"}
	}
	out := []string{}
	for _, p := range explainProtocols {
		for _, r := range s[p] {
			switch {
			case r.lo == 0 && r.hi == 65535:
				out = append(out, string(p)+"/*")
			case r.lo == r.hi:
				out = append(out, fmt.Sprintf("%s/%d", p, r.lo))
			default:
				out = append(out, fmt.Sprintf("%s/%d-%d", p, r.lo, r.hi))
			}
		}
	}
	return out
}
