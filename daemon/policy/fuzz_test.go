package policy

import (
	"fmt"
	"github.com/podwall/podwall/internal/fuzzinput"
	"net/netip"
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// FuzzCompile builds a random but valid cluster from the fuzz input (see
// fuzzState) and checks what Compile promises for valid input: no panic, no
// problems, a deterministic result that does not depend on input order or on
// the API defaults being applied, the Result invariants (checkInvariants),
// and per direction exactly the policies that select the pod and isolate
// that direction.
func FuzzCompile(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x02\x05\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"))
	f.Add([]byte("podwall fuzz: two namespaces, pods and an ipBlock with excepts \x00\x01\x02\xff\xfe\xfd\x80\x81"))
	f.Add(slices.Repeat([]byte{0xff, 0x00, 0x7f, 0x13, 0x42}, 40))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, local := fuzzState(t, fuzzinput.New(data))

		res := Compile(st, local)
		if len(res.Problems) > 0 {
			t.Fatalf("valid input compiled with problems: %v", res.Problems)
		}
		if len(res.Firewalls) != len(local) {
			t.Fatalf("%d firewalls for %d local pods", len(res.Firewalls), len(local))
		}
		if again := Compile(st, local); !reflect.DeepEqual(res, again) {
			t.Fatal("two compiles of the same input differ")
		}
		reversed := &State{
			Namespaces:     slices.Clone(st.Namespaces),
			Pods:           slices.Clone(st.Pods),
			Policies:       slices.Clone(st.Policies),
			Services:       slices.Clone(st.Services),
			EndpointSlices: slices.Clone(st.EndpointSlices),
			ServiceCIDRs:   slices.Clone(st.ServiceCIDRs),
		}
		slices.Reverse(reversed.Namespaces)
		slices.Reverse(reversed.Pods)
		slices.Reverse(reversed.Policies)
		slices.Reverse(reversed.Services)
		slices.Reverse(reversed.EndpointSlices)
		slices.Reverse(reversed.ServiceCIDRs)
		if other := Compile(reversed, local); !reflect.DeepEqual(res, other) {
			t.Fatal("compiles of the same input in reverse order differ")
		}
		defaulted := &State{Namespaces: st.Namespaces, Pods: st.Pods,
			Services: st.Services, EndpointSlices: st.EndpointSlices, ServiceCIDRs: st.ServiceCIDRs}
		for _, np := range st.Policies {
			np = np.DeepCopy()
			ApplyDefaults(np)
			if err := Validate(np); err != nil {
				t.Fatalf("policy %s/%s invalid after ApplyDefaults: %v", np.Namespace, np.Name, err)
			}
			defaulted.Policies = append(defaulted.Policies, np)
		}
		if other := Compile(defaulted, local); !reflect.DeepEqual(res, other) {
			t.Fatal("applying the API defaults changed the result")
		}
		checkInvariants(t, res)
		checkServiceVerdicts(t, res)

		for _, lp := range local {
			fw := res.Firewalls[lp.Key]
			if fw == nil {
				t.Fatalf("no firewall for local pod %s", lp.Key)
			}
			for _, dir := range []struct {
				typ networkingv1.PolicyType
				d   *Direction
			}{{networkingv1.PolicyTypeIngress, &fw.Ingress}, {networkingv1.PolicyTypeEgress, &fw.Egress}} {
				var want []string
				for _, np := range defaulted.Policies {
					if Selects(np, lp.Pod) && slices.Contains(np.Spec.PolicyTypes, dir.typ) {
						want = append(want, np.Namespace+"/"+np.Name)
					}
				}
				slices.Sort(want)
				if !slices.Equal(dir.d.Policies, want) {
					t.Errorf("%s %s: policies %v, want the ones selecting it %v", lp.Key, dir.typ, dir.d.Policies, want)
				}
				if dir.d.Isolated != (len(want) > 0) {
					t.Errorf("%s %s: isolated=%v with selecting policies %v", lp.Key, dir.typ, dir.d.Isolated, want)
				}
			}
		}
	})
}

// fuzzInput is the shared generator input.
type fuzzInput = fuzzinput.Input

// Label keys and values the generator draws from: few, so that selectors
// often match.
var (
	fuzzLabelKeys   = []string{"app", "tier", "team"}
	fuzzLabelValues = []string{"a", "b", "c"}
	fuzzNamespaces  = []string{"alpha", "beta", "gamma"}
	fuzzPortNames   = []string{"http", "dns", "metrics"}
	fuzzProtocols   = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP}
)

// fuzzState builds a cluster of up to 3 namespaces, 8 pods and 4 policies
// from in, and picks some of the pods as local. Pod addresses come from
// 10.9.0.0/28 and fd09::/124, so that pods share addresses now and then and
// ipBlocks often contain some. Every policy passes Validate.
func fuzzState(t *testing.T, in *fuzzInput) (*State, []LocalPod) {
	st := &State{}
	nNamespaces := 1 + in.Intn(len(fuzzNamespaces))
	for i := range nNamespaces {
		st.Namespaces = append(st.Namespaces, &Namespace{Name: fuzzNamespaces[i], Labels: fuzzLabels(in)})
	}
	var local []LocalPod
	for i := range in.Intn(9) {
		p := &Pod{
			// Now and then a pod in a namespace the state does not list.
			Namespace: fuzzNamespaces[in.Intn(nNamespaces+1)%len(fuzzNamespaces)],
			Name:      fmt.Sprintf("pod-%d", i),
			UID:       fmt.Sprintf("uid-%d", i),
			Labels:    fuzzLabels(in),
			Phase:     fuzzinput.Pick(in, corev1.PodRunning, corev1.PodRunning, corev1.PodPending, corev1.PodSucceeded, corev1.PodFailed, ""),
			Created:   metav1.Unix(int64(1_700_000_000+in.Intn(3)), 0),
			NodeName:  "node-1",
		}
		p.HostNetwork = in.Intn(8) == 0
		p.Deleting = in.Intn(6) == 0
		for range in.Intn(4) {
			p.Ports = append(p.Ports, ContainerPort{
				Name:     fuzzinput.Pick(in, append([]string{""}, fuzzPortNames...)...),
				Protocol: fuzzinput.Pick(in, fuzzProtocols...),
				Port:     fuzzPortNumber(in),
			})
		}
		for range in.Intn(3) {
			if in.Bool() {
				p.IPs = append(p.IPs, netip.AddrFrom4([4]byte{10, 9, 0, byte(in.Intn(16))}))
			} else {
				p.IPs = append(p.IPs, netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x09, 15: byte(in.Intn(16))}))
			}
		}
		st.Pods = append(st.Pods, p)
		if in.Intn(3) != 0 {
			local = append(local, LocalPod{Key: "podwall/" + p.UID + "/eth0", Pod: p})
		}
	}
	for i := range in.Intn(5) {
		np := fuzzPolicy(in, fmt.Sprintf("np-%d", i), fuzzNamespaces[in.Intn(nNamespaces)])
		if err := Validate(np); err != nil {
			t.Fatalf("generator built an invalid policy %s/%s: %v", np.Namespace, np.Name, err)
		}
		st.Policies = append(st.Policies, np)
	}
	fuzzServices(in, st)
	return st, local
}

// fuzzServices adds up to 3 Services to st: ClusterIPs 10.9.1.<i> and
// fd09::1:<i> (either or both, or none: headless), now and then an external
// IP 10.9.2.<i>, one or two ports named from fuzzPortNames, and up to two
// EndpointSlices each, whose endpoints are pod addresses or other
// addresses of 10.9.0.0/28 and fd09::/124, ready or not, on node-1, node-2
// or no node. Now and then a Service CIDR covers the IPv4 ClusterIPs.
func fuzzServices(in *fuzzInput, st *State) {
	if in.Bool() {
		st.ServiceCIDRs = append(st.ServiceCIDRs, netip.MustParsePrefix("10.9.1.0/28"))
	}
	for i := range in.Intn(4) {
		svc := &Service{Namespace: fuzzNamespaces[in.Intn(len(fuzzNamespaces))], Name: fmt.Sprintf("svc-%d", i),
			InternalTrafficLocal: in.Intn(4) == 0}
		switch in.Intn(4) {
		case 0:
		case 1:
			svc.ClusterIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 9, 1, byte(i)})}
		case 2:
			svc.ClusterIPs = []netip.Addr{netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x09, 13: 1, 15: byte(i)})}
		default:
			svc.ClusterIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 9, 1, byte(i)}), netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x09, 13: 1, 15: byte(i)})}
		}
		if in.Intn(4) == 0 {
			svc.ExternalIPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 9, 2, byte(i)})}
		}
		for j := range 1 + in.Intn(2) {
			sp := ServicePort{Name: fuzzPortNames[j], Protocol: fuzzinput.Pick(in, fuzzProtocols...), Port: fuzzPortNumber(in)}
			if j > 0 && sp.Protocol == svc.Ports[0].Protocol && sp.Port == svc.Ports[0].Port {
				continue // the API allows a protocol and port once per Service
			}
			svc.Ports = append(svc.Ports, sp)
		}
		st.Services = append(st.Services, svc)
		for k := range in.Intn(3) {
			sp := svc.Ports[in.Intn(len(svc.Ports))]
			es := &EndpointSlice{Namespace: svc.Namespace, Name: fmt.Sprintf("%s-%d", svc.Name, k), Service: svc.Name,
				Ports: []EndpointPort{{Name: sp.Name, Protocol: sp.Protocol, Port: fuzzPortNumber(in)}}}
			for range in.Intn(4) {
				var a netip.Addr
				if in.Bool() {
					a = netip.AddrFrom4([4]byte{10, 9, 0, byte(in.Intn(16))})
				} else {
					a = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x09, 15: byte(in.Intn(16))})
				}
				es.Endpoints = append(es.Endpoints, Endpoint{Addrs: []netip.Addr{a}, Ready: in.Intn(4) != 0,
					NodeName: fuzzinput.Pick(in, "node-1", "node-2", "")})
			}
			st.EndpointSlices = append(st.EndpointSlices, es)
		}
	}
}

// fuzzLabels returns up to 3 labels (nil for none).
func fuzzLabels(in *fuzzInput) map[string]string {
	n := in.Intn(4)
	if n == 0 {
		return nil
	}
	lbls := make(map[string]string, n)
	for range n {
		lbls[fuzzinput.Pick(in, fuzzLabelKeys...)] = fuzzinput.Pick(in, fuzzLabelValues...)
	}
	return lbls
}

// fuzzPortNumber returns a port number, mostly from a few common ones so
// that rules and container ports meet.
func fuzzPortNumber(in *fuzzInput) int32 {
	if in.Intn(4) == 0 {
		return int32(1 + in.Intn(65535))
	}
	return fuzzinput.Pick[int32](in, 53, 80, 443, 8080)
}

// fuzzSelector returns a valid label selector with up to 2 matchLabels and
// up to 2 matchExpressions of all four operators. Namespace selectors may
// also match the namespace's name label.
func fuzzSelector(in *fuzzInput, forNamespaces bool) *metav1.LabelSelector {
	keys, values := fuzzLabelKeys, fuzzLabelValues
	if forNamespaces {
		keys = append(slices.Clone(keys), corev1.LabelMetadataName)
		values = append(slices.Clone(values), fuzzNamespaces...)
	}
	sel := &metav1.LabelSelector{}
	for range in.Intn(3) {
		if sel.MatchLabels == nil {
			sel.MatchLabels = map[string]string{}
		}
		sel.MatchLabels[fuzzinput.Pick(in, keys...)] = fuzzinput.Pick(in, values...)
	}
	for range in.Intn(3) {
		e := metav1.LabelSelectorRequirement{
			Key: fuzzinput.Pick(in, keys...),
			Operator: fuzzinput.Pick(in, metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn,
				metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist),
		}
		if e.Operator == metav1.LabelSelectorOpIn || e.Operator == metav1.LabelSelectorOpNotIn {
			for range 1 + in.Intn(2) {
				e.Values = append(e.Values, fuzzinput.Pick(in, values...))
			}
		}
		sel.MatchExpressions = append(sel.MatchExpressions, e)
	}
	return sel
}

// fuzzPolicy returns a valid policy with up to 3 ingress and 3 egress rules.
func fuzzPolicy(in *fuzzInput, name, namespace string) *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	np.Spec.PodSelector = *fuzzSelector(in, false)
	np.Spec.PolicyTypes = fuzzinput.Pick(in,
		nil,
		[]networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		[]networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
		[]networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
		[]networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress},
	)
	for range in.Intn(4) {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{
			From: fuzzPeers(in), Ports: fuzzPorts(in),
		})
	}
	for range in.Intn(4) {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{
			To: fuzzPeers(in), Ports: fuzzPorts(in),
		})
	}
	return np
}

// fuzzPeers returns up to 3 peers: selectors, or an ipBlock.
func fuzzPeers(in *fuzzInput) []networkingv1.NetworkPolicyPeer {
	var peers []networkingv1.NetworkPolicyPeer
	for range in.Intn(4) {
		var p networkingv1.NetworkPolicyPeer
		switch in.Intn(4) {
		case 0:
			p.PodSelector = fuzzSelector(in, false)
		case 1:
			p.NamespaceSelector = fuzzSelector(in, true)
		case 2:
			p.PodSelector = fuzzSelector(in, false)
			p.NamespaceSelector = fuzzSelector(in, true)
		default:
			p.IPBlock = fuzzIPBlock(in)
		}
		peers = append(peers, p)
	}
	return peers
}

// fuzzIPBlock returns a canonical cidr, often one around the pod addresses,
// with up to 2 excepts strictly inside it.
func fuzzIPBlock(in *fuzzInput) *networkingv1.IPBlock {
	var addr netip.Addr
	v4 := in.Bool()
	switch {
	case v4 && in.Bool():
		addr = netip.AddrFrom4([4]byte{10, 9, 0, in.Byte()})
	case v4:
		addr = netip.AddrFrom4([4]byte{in.Byte(), in.Byte(), in.Byte(), in.Byte()})
	case in.Bool():
		addr = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x09, 15: in.Byte()})
	default:
		var a [16]byte
		for i := range 4 {
			a[i] = in.Byte()
		}
		a[15] = in.Byte()
		addr = netip.AddrFrom16(a)
	}
	cidr := netip.PrefixFrom(addr, in.Intn(addr.BitLen()+1)).Masked()
	block := &networkingv1.IPBlock{CIDR: cidr.String()}
	for range in.Intn(3) {
		if cidr.Bits() == addr.BitLen() {
			break
		}
		bits := cidr.Bits() + 1 + in.Intn(addr.BitLen()-cidr.Bits())
		// Keep cidr's network bits, take the rest from addr or the input.
		a := addr.AsSlice()
		a[in.Intn(len(a))] ^= in.Byte()
		inside, _ := netip.AddrFromSlice(a)
		host := netip.PrefixFrom(inside, bits).Masked()
		except := fuzzMergePrefix(cidr, host)
		block.Except = append(block.Except, except.String())
	}
	return block
}

// fuzzMergePrefix returns the prefix of host's length whose first
// cidr.Bits() bits are cidr's and the rest host's.
func fuzzMergePrefix(cidr, host netip.Prefix) netip.Prefix {
	c, h := cidr.Addr().AsSlice(), host.Addr().AsSlice()
	for i := range c {
		var mask byte
		for b := range 8 {
			if i*8+b < cidr.Bits() {
				mask |= 0x80 >> b
			}
		}
		c[i] = c[i]&mask | h[i]&^mask
	}
	a, _ := netip.AddrFromSlice(c)
	return netip.PrefixFrom(a, host.Bits()).Masked()
}

// fuzzPorts returns up to 3 port entries: every port of a protocol, a port,
// a range or a named port, with or without a protocol.
func fuzzPorts(in *fuzzInput) []networkingv1.NetworkPolicyPort {
	var ports []networkingv1.NetworkPolicyPort
	for range in.Intn(4) {
		var p networkingv1.NetworkPolicyPort
		if in.Intn(4) != 0 {
			proto := fuzzinput.Pick(in, fuzzProtocols...)
			p.Protocol = &proto
		}
		switch in.Intn(4) {
		case 0: // every port of the protocol
		case 1:
			port := intstr.FromInt32(fuzzPortNumber(in))
			p.Port = &port
		case 2:
			from := fuzzPortNumber(in)
			end := from + int32(in.Intn(int(65535-from)+1))
			port := intstr.FromInt32(from)
			p.Port, p.EndPort = &port, &end
		default:
			port := intstr.FromString(fuzzinput.Pick(in, fuzzPortNames...))
			p.Port = &port
		}
		ports = append(ports, p)
	}
	return ports
}
