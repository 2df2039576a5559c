package netpol

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// namespaceLabelKey is the label the API server sets to a namespace's name.
const namespaceLabelKey = "kubernetes.io/metadata.name"

// Netpol returns the 42 tests of test/e2e/network/netpol/network_policy.go,
// Describe "Netpol", Context "NetworkPolicy between server and client", in
// file order, in the classic 9-pod form (x, y, z × a, b, c).
func Netpol() []Test {
	tests := []Test{
		{
			Name: "should support a 'default-deny-ingress' policy",
			Run: func(ctx context.Context, t *T) error {
				// Only poll TCP, only port 80.
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				policy := genNetworkPolicyWithNameAndPodSelector("deny-ingress", metav1.LabelSelector{}, setSpecIngressRules())
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				// Set the nsX as false, since it has a policy that blocks traffic.
				reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should support a 'default-deny-all' policy",
			Run: func(ctx context.Context, t *T) error {
				policy := genNetworkPolicyWithNameAndPodSelector("deny-all", metav1.LabelSelector{}, setSpecIngressRules(), setSpecEgressRules())
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
			Run: func(ctx context.Context, t *T) error {
				allowedPods := metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{PodSelector: &allowedPods})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("x-a-allows-x-b", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))

				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), false)
				reachability.Expect(Ref(nsX, "b"), Ref(nsX, "a"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow ingress traffic for a target",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				// having a deny all ingress policy: deny all ingress traffic to pods in nsX.
				policy := genNetworkPolicyWithNameAndPodSelector("deny-all", metav1.LabelSelector{}, setSpecIngressRules())
				t.CreatePolicy(ctx, policy, nsX)

				// Allow ingress traffic only to pod x/a from any pod.
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{}, NamespaceSelector: &metav1.LabelSelector{}})
				allowPolicy := genNetworkPolicyWithNameAndPodMatchLabel("allow-all-to-a", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, allowPolicy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), true)
				reachability.ExpectAllIngress(Ref(nsX, "b"), false)
				reachability.ExpectAllIngress(Ref(nsX, "c"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow ingress traffic from pods in all namespaces",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{}}})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-from-another-ns", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, nsZ := namespacesXYZ(m)
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsY}}})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				// disallow all traffic from the x or z namespaces
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{Namespace: nsX, Pod: "a"}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsZ}, &Peer{Namespace: nsX, Pod: "a"}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on PodSelector with MatchExpressions",
			Run: func(ctx context.Context, t *T) error {
				allowedPods := metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key:      "pod",
						Operator: metav1.LabelSelectorOpIn,
						Values:   []string{"b"},
					}},
				}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{PodSelector: &allowedPods})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("x-a-allows-x-b", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))

				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), false)
				reachability.Expect(Ref(nsX, "b"), Ref(nsX, "a"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on NamespaceSelector with MatchExpressions",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, nsZ := namespacesXYZ(m)
				allowedNamespaces := &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key:      namespaceLabelKey,
						Operator: metav1.LabelSelectorOpIn,
						Values:   []string{nsY},
					}},
				}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedNamespaces})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-match-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				// disallow all traffic from the x or z namespaces
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{Namespace: nsX, Pod: "a"}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsZ}, &Peer{Namespace: nsX, Pod: "a"}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on PodSelector or NamespaceSelector",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				allowedNamespaces := &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key:      namespaceLabelKey,
						Operator: metav1.LabelSelectorOpNotIn,
						Values:   []string{nsX},
					}},
				}
				podBAllowlisting := &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedNamespaces}, networkingv1.NetworkPolicyPeer{PodSelector: podBAllowlisting})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-match-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.Expect(Ref(nsX, "a"), Ref(nsX, "a"), false)
				reachability.Expect(Ref(nsX, "c"), Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on PodSelector and NamespaceSelector",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, nsZ := namespacesXYZ(m)
				allowedNamespaces := &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key:      namespaceLabelKey,
						Operator: metav1.LabelSelectorOpNotIn,
						Values:   []string{nsX},
					}},
				}
				allowedPod := &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedNamespaces, PodSelector: allowedPod})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-podselector-and-nsselector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), false)
				reachability.Expect(Ref(nsY, "b"), Ref(nsX, "a"), true)
				reachability.Expect(Ref(nsZ, "b"), Ref(nsX, "a"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, nsZ := namespacesXYZ(m)
				allowedNamespaces := &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key:      namespaceLabelKey,
						Operator: metav1.LabelSelectorOpNotIn,
						Values:   []string{nsX},
					}},
				}
				allowedPod := &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key:      "pod",
						Operator: metav1.LabelSelectorOpIn,
						Values:   []string{"b", "c"},
					}},
				}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedNamespaces, PodSelector: allowedPod})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-z-pod-b-c", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{Namespace: nsX, Pod: "a"}, false)
				reachability.Expect(Ref(nsY, "a"), Ref(nsX, "a"), false)
				reachability.Expect(Ref(nsZ, "a"), Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on any PodSelectors",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				for _, label := range []map[string]string{{"pod": "b"}, {"pod": "c"}} {
					ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: label}})
				}
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-ns-x-pod-b-c", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), false)
				// Connect pods b and c to pod a from namespace nsX.
				reachability.Expect(Ref(nsX, "b"), Ref(nsX, "a"), true)
				reachability.Expect(Ref(nsX, "c"), Ref(nsX, "a"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
			Run:  allowFromPodInOtherNamespace(protocolTCP, "allow-ns-y-pod-a-via-namespace-pod-selector"),
		},
		{
			Name: "should enforce policy based on Ports",
			Run: func(ctx context.Context, t *T) error {
				// Creating a network allowPort81Policy which only allows allow listed namespaces (y) to connect on exactly one port (81).
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{81})
				nsX, nsY, nsZ := namespacesXYZ(m)
				allowedLabels := &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsY}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedLabels})
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(81), Protocol: &protocolTCP})
				allowPort81Policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, allowPort81Policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{Namespace: nsX, Pod: "a"}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsY}, &Peer{Namespace: nsX, Pod: "a"}, true)
				reachability.ExpectPeer(&Peer{Namespace: nsZ}, &Peer{Namespace: nsX, Pod: "a"}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce multiple, stacked policies with overlapping podSelectors",
			Run: func(ctx context.Context, t *T) error {
				// Creating a network allowPort81Policy which only allows allow listed namespaces (y) to connect on exactly one port (81).
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80, 81})
				nsX, nsY, nsZ := namespacesXYZ(m)
				allowedLabels := &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsY}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedLabels})
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(81), Protocol: &protocolTCP})
				allowPort81Policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, allowPort81Policy, nsX)

				reachabilityALLOW := NewReachability(m.AllPodRefs(), true)
				reachabilityALLOW.ExpectPeer(&Peer{Namespace: nsX}, &Peer{Namespace: nsX, Pod: "a"}, false)
				reachabilityALLOW.ExpectPeer(&Peer{Namespace: nsY}, &Peer{Namespace: nsX, Pod: "a"}, true)
				reachabilityALLOW.ExpectPeer(&Peer{Namespace: nsZ}, &Peer{Namespace: nsX, Pod: "a"}, false)

				// Verifying traffic on port 81.
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachabilityALLOW})

				reachabilityDENY := NewReachability(m.AllPodRefs(), true)
				reachabilityDENY.ExpectAllIngress(Ref(nsX, "a"), false)

				// Verifying traffic on port 80.
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityDENY})

				ingressRule = networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedLabels})
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(80), Protocol: &protocolTCP})
				allowPort80Policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector-80", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, allowPort80Policy, nsX)

				// Verifying that we can add a policy to unblock port 80.
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityALLOW})
				return t.Err()
			},
		},
		{
			Name: "should support allow-all policy",
			Run: func(ctx context.Context, t *T) error {
				// Creating a network policy which allows all traffic.
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-all", map[string]string{}, setSpecIngressRules(networkingv1.NetworkPolicyIngressRule{}))
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80, 81})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)

				// Testing pods can connect to both ports when an 'allow-all' policy is present.
				reachability := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should allow ingress access on one named port",
			Run: func(ctx context.Context, t *T) error {
				IngressRules := networkingv1.NetworkPolicyIngressRule{}
				IngressRules.Ports = append(IngressRules.Ports, networkingv1.NetworkPolicyPort{Port: portName("serve-81-tcp")})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-all", map[string]string{}, setSpecIngressRules(IngressRules))
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80, 81})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)

				// Blocking all ports other then 81 in the entire namespace.
				reachabilityPort81 := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachabilityPort81})

				// disallow all traffic to the x namespace
				reachabilityPort80 := NewReachability(m.AllPodRefs(), true)
				reachabilityPort80.ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityPort80})
				return t.Err()
			},
		},
		{
			Name: "should allow ingress access from namespace on one named port",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80, 81})
				nsX, nsY, nsZ := namespacesXYZ(m)
				allowedLabels := &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsY}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedLabels})
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Port: portName("serve-80-tcp"), Protocol: &protocolTCP})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector-80", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				// disallow all traffic from the x or z namespaces
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{Namespace: nsX, Pod: "a"}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsZ}, &Peer{Namespace: nsX, Pod: "a"}, false)

				// Verify that port 80 is allowed for namespace y.
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})

				// Verify that port 81 is blocked for all namespaces including y.
				reachabilityFAIL := NewReachability(m.AllPodRefs(), true)
				reachabilityFAIL.ExpectAllIngress(Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachabilityFAIL})
				return t.Err()
			},
		},
		{
			Name: "should allow egress access on one named port",
			Run: func(ctx context.Context, t *T) error {
				// validating egress from port 81 to port 80
				egressRule := networkingv1.NetworkPolicyEgressRule{}
				egressRule.Ports = append(egressRule.Ports, networkingv1.NetworkPolicyPort{Port: portName("serve-80-tcp")})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-egress", map[string]string{}, setSpecEgressRules(egressRule))

				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80, 81})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)

				reachabilityPort80 := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityPort80})

				// meanwhile no traffic over 81 should work, since our egress policy is on 80
				reachabilityPort81 := NewReachability(m.AllPodRefs(), true)
				reachabilityPort81.ExpectPeer(&Peer{Namespace: nsX}, &Peer{}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachabilityPort81})
				return t.Err()
			},
		},
		{
			Name: "should enforce updated policy",
			Run: func(ctx context.Context, t *T) error {
				// Using the simplest possible mutation: start with allow all, then switch to deny all.
				// part 1) allow all
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-all-mutate-to-deny-all", map[string]string{}, setSpecIngressRules(networkingv1.NetworkPolicyIngressRule{}))
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{81})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachability})

				// part 2) update the policy to deny all
				policy.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{}
				t.UpdatePolicy(ctx, policy, nsX)

				reachabilityDeny := NewReachability(m.AllPodRefs(), true)
				reachabilityDeny.ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachabilityDeny})
				return t.Err()
			},
		},
		{
			Name: "should allow ingress access from updated namespace",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, _ := namespacesXYZ(m)
				// Upstream removes the label again in DeferCleanup; the model is torn down instead.

				allowedLabels := &metav1.LabelSelector{MatchLabels: map[string]string{"ns2": "updated"}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedLabels})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})

				// add a new label
				t.AddNamespaceLabel(ctx, nsY, "ns2", "updated")

				// anything from namespace 'y' should be able to get to x/a
				reachabilityWithLabel := NewReachability(m.AllPodRefs(), true)
				reachabilityWithLabel.ExpectAllIngress(Ref(nsX, "a"), false)
				reachabilityWithLabel.ExpectPeer(&Peer{Namespace: nsY}, &Peer{}, true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityWithLabel})
				return t.Err()
			},
		},
		{
			Name: "should allow ingress access from updated pod",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)

				// add a new label
				matchLabels := map[string]string{"pod": "b", "pod2": "updated"}
				allowedLabels := &metav1.LabelSelector{MatchLabels: matchLabels}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{PodSelector: allowedLabels})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-pod-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})

				t.AddPodLabels(ctx, nsX, "b", matchLabels)

				// x/b is able to reach x/a when label is updated
				reachabilityWithLabel := NewReachability(m.AllPodRefs(), true)
				reachabilityWithLabel.ExpectAllIngress(Ref(nsX, "a"), false)
				reachabilityWithLabel.Expect(Ref(nsX, "b"), Ref(nsX, "a"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityWithLabel})
				return t.Err()
			},
		},
		{
			Name: "should deny ingress from pods on other namespaces",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, nsZ := namespacesXYZ(m)
				IngressRules := networkingv1.NetworkPolicyIngressRule{}
				IngressRules.From = append(IngressRules.From, networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{}}})
				policy := genNetworkPolicyWithNameAndPodSelector("deny-empty-policy", metav1.LabelSelector{}, setSpecIngressRules(IngressRules))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{Namespace: nsY}, &Peer{Namespace: nsX}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsZ}, &Peer{Namespace: nsX}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should deny ingress access to updated pod",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)

				policy := genNetworkPolicyWithNameAndPodSelector("deny-ingress-via-label-selector",
					metav1.LabelSelector{MatchLabels: map[string]string{"target": "isolated"}}, setSpecIngressRules())
				t.CreatePolicy(ctx, policy, nsX)

				// Verify that everything can reach x/a.
				reachability := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})

				t.AddPodLabels(ctx, nsX, "a", map[string]string{"target": "isolated"})

				reachabilityIsolated := NewReachability(m.AllPodRefs(), true)
				reachabilityIsolated.ExpectAllIngress(Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityIsolated})
				return t.Err()
			},
		},
		{
			Name: "should deny egress from pods based on PodSelector",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				policy := genNetworkPolicyWithNameAndPodSelector("deny-egress-pod-a", metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}, setSpecEgressRules())
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllEgress(Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should deny egress from all pods in a namespace",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				policy := genNetworkPolicyWithNameAndPodSelector("deny-egress-ns-x", metav1.LabelSelector{}, setSpecEgressRules())
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should work with Ingress, Egress specified together",
			Run: func(ctx context.Context, t *T) error {
				allowedPodLabels := &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "b"}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{PodSelector: allowedPodLabels})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-pod-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))

				// add an egress rule on to it...
				policy.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
					Ports: []networkingv1.NetworkPolicyPort{{
						// don't use named ports
						Port: portNumber(80),
					}},
				}}
				policy.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80, 81})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)

				reachabilityPort80 := NewReachability(m.AllPodRefs(), true)
				reachabilityPort80.ExpectAllIngress(Ref(nsX, "a"), false)
				reachabilityPort80.Expect(Ref(nsX, "b"), Ref(nsX, "a"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityPort80})

				// validating that port 81 doesn't work
				// meanwhile no egress traffic on 81 should work, since our egress policy is on 80
				reachabilityPort81 := NewReachability(m.AllPodRefs(), true)
				reachabilityPort81.ExpectAllIngress(Ref(nsX, "a"), false)
				reachabilityPort81.ExpectAllEgress(Ref(nsX, "a"), false)
				reachabilityPort81.Expect(Ref(nsX, "b"), Ref(nsX, "a"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachabilityPort81})
				return t.Err()
			},
		},
		{
			Name: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
			Run: func(ctx context.Context, t *T) error {
				// x/a --> y/a and y/b
				// Egress allowed to y/a only. Egress to y/b should be blocked.
				// Ingress on y/a and y/b allow traffic from x/a.
				// Expectation: traffic from x/a to y/a allowed only, traffic from x/a to y/b denied by egress policy.
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, _ := namespacesXYZ(m)

				// Building egress policy for x/a to y/a only
				allowedEgressNamespaces := &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsY}}
				allowedEgressPods := &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}
				egressRule1 := networkingv1.NetworkPolicyEgressRule{}
				egressRule1.To = append(egressRule1.To, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedEgressNamespaces, PodSelector: allowedEgressPods})
				egressPolicy := genNetworkPolicyWithNameAndPodMatchLabel("allow-to-ns-y-pod-a", map[string]string{"pod": "a"}, setSpecEgressRules(egressRule1))
				t.CreatePolicy(ctx, egressPolicy, nsX)

				// Creating ingress policy to allow from x/a to y/a and y/b
				allowedIngressNamespaces := &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsX}}
				allowedIngressPods := &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedIngressNamespaces, PodSelector: allowedIngressPods})
				allowIngressPolicyPodA := genNetworkPolicyWithNameAndPodMatchLabel("allow-from-xa-on-ya-match-selector", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				allowIngressPolicyPodB := genNetworkPolicyWithNameAndPodMatchLabel("allow-from-xa-on-yb-match-selector", map[string]string{"pod": "b"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, allowIngressPolicyPodA, nsY)
				t.CreatePolicy(ctx, allowIngressPolicyPodB, nsY)

				// While applying the policies, traffic needs to be allowed by both egress and ingress rules.
				// Expected results
				// 	xa	xb	xc	ya	yb	yc	za	zb	zc
				// xa	X	X	X	.	*X*	X	X	X	X
				// xb	.	.	.	X	X	.	.	.	.
				// xc	.	.	.	X	X	.	.	.	.
				// ya	.	.	.	X	X	.	.	.	.
				// yb	.	.	.	X	X	.	.	.	.
				// yc	.	.	.	X	X	.	.	.	.
				// za	.	.	.	X	X	.	.	.	.
				// zb	.	.	.	X	X	.	.	.	.
				// zc	.	.	.	X	X	.	.	.	.
				reachability := NewReachability(m.AllPodRefs(), true)
				// Default all traffic flows.
				// Exception: x/a can only egress to y/a, others are false
				// Exception: y/a can only allow ingress from x/a, others are false
				// Exception: y/b has no allowed traffic (due to limit on x/a egress)
				reachability.ExpectPeer(&Peer{Namespace: nsX, Pod: "a"}, &Peer{}, false)
				reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsY, Pod: "a"}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsX, Pod: "a"}, &Peer{Namespace: nsY, Pod: "a"}, true)
				reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsY, Pod: "b"}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, _ := namespacesXYZ(m)
				allowedNamespaces := &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsY}}
				allowedPods := &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}
				egressRule1 := networkingv1.NetworkPolicyEgressRule{}
				egressRule1.To = append(egressRule1.To, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedNamespaces, PodSelector: allowedPods})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-to-ns-y-pod-a", map[string]string{"pod": "a"}, setSpecEgressRules(egressRule1))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllEgress(Ref(nsX, "a"), false)
				reachability.Expect(Ref(nsX, "a"), Ref(nsY, "a"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP, protocolUDP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Protocol: &protocolTCP})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-ingress-by-proto", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachabilityTCP := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityTCP})

				reachabilityUDP := NewReachability(m.AllPodRefs(), true)
				reachabilityUDP.ExpectPeer(&Peer{}, &Peer{Namespace: nsX, Pod: "a"}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolUDP, Reachability: reachabilityUDP})
				return t.Err()
			},
		},
		{
			Name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{81})
				nsX, _, _ := namespacesXYZ(m)
				IngressRules := networkingv1.NetworkPolicyIngressRule{}
				IngressRules.Ports = append(IngressRules.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(80)})
				policyAllowOnlyPort80 := genNetworkPolicyWithNameAndPodMatchLabel("allow-ingress-port-80", map[string]string{}, setSpecIngressRules(IngressRules))
				t.CreatePolicy(ctx, policyAllowOnlyPort80, nsX)

				// The policy targets port 80 -- so let's make sure traffic on port 81 is blocked.
				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachability})

				// Allowing all ports.
				policyAllowAll := genNetworkPolicyWithNameAndPodMatchLabel("allow-ingress", map[string]string{}, setSpecIngressRules(networkingv1.NetworkPolicyIngressRule{}))
				t.CreatePolicy(ctx, policyAllowAll, nsX)

				reachabilityAll := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachabilityAll})
				return t.Err()
			},
		},
		{
			Name: "should enforce multiple egress policies with egress allow-all policy taking precedence",
			Run: func(ctx context.Context, t *T) error {
				egressRule := networkingv1.NetworkPolicyEgressRule{}
				egressRule.Ports = append(egressRule.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(80)})
				policyAllowPort80 := genNetworkPolicyWithNameAndPodMatchLabel("allow-egress-port-80", map[string]string{}, setSpecEgressRules(egressRule))
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{81})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policyAllowPort80, nsX)

				// Making sure ingress doesn't work other than port 80.
				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachability})

				// Allowing all ports.
				policyAllowAll := genNetworkPolicyWithNameAndPodMatchLabel("allow-egress", map[string]string{}, setSpecEgressRules(networkingv1.NetworkPolicyEgressRule{}))
				t.CreatePolicy(ctx, policyAllowAll, nsX)

				reachabilityAll := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachabilityAll})
				return t.Err()
			},
		},
		{
			Name: "should stop enforcing policies after they are deleted",
			Run: func(ctx context.Context, t *T) error {
				// Creating a network policy for the server which denies all traffic.
				// Deny all traffic into and out of "x".
				policy := genNetworkPolicyWithNameAndPodSelector("deny-all", metav1.LabelSelector{}, setSpecIngressRules(), setSpecEgressRules())
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, policy, nsX)
				reachability := NewReachability(m.AllPodRefs(), true)

				// Expect all traffic into, and out of "x" to be False.
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{}, false)
				reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})

				// Upstream sleeps 3 s here "to keep CI stable"; Validate's per-cell retry covers it.
				t.CleanNetworkPolicies(ctx)

				// Now the policy is deleted, we expect all connectivity to work again.
				reachabilityAll := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityAll})
				return t.Err()
			},
		},
		{
			Name: "should allow egress access to server in CIDR block",
			Run: func(ctx context.Context, t *T) error {
				// Getting podServer's status to get podServer's IP, to create the CIDR.
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, _ := namespacesXYZ(m)
				podServerCIDR := hostCIDR(t.PodIP(nsY, "b"))
				egressRule1 := networkingv1.NetworkPolicyEgressRule{}
				egressRule1.To = append(egressRule1.To, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: podServerCIDR}})
				policyAllowCIDR := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-cidr-egress-rule",
					map[string]string{"pod": "a"}, setSpecEgressRules(egressRule1))
				t.CreatePolicy(ctx, policyAllowCIDR, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllEgress(Ref(nsX, "a"), false)
				reachability.Expect(Ref(nsX, "a"), Ref(nsY, "b"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce except clause while egress access to server in CIDR block",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				podB := t.PodIP(nsX, "b")

				// Create a rule that allows egress to a large set of IPs around podB, but not podB itself.
				// (The 9-pod version writes "<x/a IP>/4", which is not canonical; master's
				// makeLargeCIDRForIP(<x/b IP>) is the same block, written canonically.)
				podServerAllowCIDR := makeLargeCIDRForIP(podB)
				podServerExceptList := []string{hostCIDR(podB)}
				egressRule1 := networkingv1.NetworkPolicyEgressRule{}
				egressRule1.To = append(egressRule1.To, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: podServerAllowCIDR, Except: podServerExceptList}})
				policyAllowCIDR := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-cidr-egress-rule", map[string]string{"pod": "a"}, setSpecEgressRules(egressRule1))
				t.CreatePolicy(ctx, policyAllowCIDR, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.Expect(Ref(nsX, "a"), Ref(nsX, "b"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				podB := t.PodIP(nsX, "b")

				// Exclude podServer's IP with an Except clause.
				podServerAllowCIDR := makeLargeCIDRForIP(podB)
				podServerExceptList := []string{hostCIDR(podB)}
				egressRule1 := networkingv1.NetworkPolicyEgressRule{}
				egressRule1.To = append(egressRule1.To, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: podServerAllowCIDR, Except: podServerExceptList}})
				policyAllowCIDR := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-cidr-egress-rule",
					map[string]string{"pod": "a"}, setSpecEgressRules(egressRule1))
				t.CreatePolicy(ctx, policyAllowCIDR, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.Expect(Ref(nsX, "a"), Ref(nsX, "b"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})

				// Create NetworkPolicy which allows access to the podServer using podServer's IP in allow CIDR.
				// Upstream replaces the policy (same name, UpdatePolicy) rather than adding a second one.
				podBIP := hostCIDR(podB)
				egressRule3 := networkingv1.NetworkPolicyEgressRule{}
				egressRule3.To = append(egressRule3.To, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: podBIP}})
				allowPolicy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-cidr-egress-rule",
					map[string]string{"pod": "a"}, setSpecEgressRules(egressRule3))
				t.UpdatePolicy(ctx, allowPolicy, nsX)

				reachabilityAllow := NewReachability(m.AllPodRefs(), true)
				reachabilityAllow.ExpectAllEgress(Ref(nsX, "a"), false)
				reachabilityAllow.Expect(Ref(nsX, "a"), Ref(nsX, "b"), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachabilityAllow})
				return t.Err()
			},
		},
		{
			Name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
			Run: func(ctx context.Context, t *T) error {
				// Test steps:
				// 1. Verify every pod in every namespace can talk to each other
				//    - including a -> b and b -> a
				// 2. Create a policy to allow egress a -> b (target = a)
				// 3. Create a policy to *deny* ingress b -> a (target = a)
				// 4. Verify a -> b allowed; b -> a blocked
				targetLabels := map[string]string{"pod": "a"}

				// Creating a network policy for pod-a which allows Egress traffic to pod-b.
				allowEgressPolicy := genNetworkPolicyWithNameAndPodSelector("allow-egress-for-target",
					metav1.LabelSelector{MatchLabels: targetLabels}, setSpecEgressRules(networkingv1.NetworkPolicyEgressRule{}))
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				t.CreatePolicy(ctx, allowEgressPolicy, nsX)

				allowEgressReachability := NewReachability(m.AllPodRefs(), true)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: allowEgressReachability})

				// Creating a network policy for pod-a that denies traffic from pod-b.
				denyAllIngressPolicy := genNetworkPolicyWithNameAndPodSelector("deny-ingress-via-label-selector", metav1.LabelSelector{MatchLabels: targetLabels}, setSpecIngressRules())
				t.CreatePolicy(ctx, denyAllIngressPolicy, nsX)

				denyIngressToXReachability := NewReachability(m.AllPodRefs(), true)
				denyIngressToXReachability.ExpectAllIngress(Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: denyIngressToXReachability})
				return t.Err()
			},
		},
		{
			// This test *does* apply to plugins that do not implement SCTP. It is a
			// security hole if you fail this test, because you are allowing TCP
			// traffic that is supposed to be blocked.
			Name: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{81})
				nsX, _, _ := namespacesXYZ(m)

				// Creating a default-deny ingress policy.
				// Empty podSelector blocks the entire namespace.
				policy := genNetworkPolicyWithNameAndPodSelector("deny-ingress", metav1.LabelSelector{}, setSpecIngressRules())
				t.CreatePolicy(ctx, policy, nsX)

				// Creating a network policy for the server which allows traffic only via SCTP on port 81.
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(81), Protocol: &protocolSCTP})
				policy = genNetworkPolicyWithNameAndPodMatchLabel("allow-only-sctp-ingress-on-port-81", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				// Trying to connect to TCP port 81, which should be blocked by the deny-ingress policy.
				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			// This test *does* apply to plugins that do not implement SCTP. It is a
			// security hole if you fail this test, because you are allowing TCP
			// traffic that is supposed to be blocked.
			Name: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{81})
				nsX, _, _ := namespacesXYZ(m)

				// Creating a network policy for the server which allows traffic only via SCTP on port 80.
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(80), Protocol: &protocolSCTP})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-only-sctp-ingress-on-port-80", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				// Trying to connect to TCP port 81, which should be blocked by implicit isolation.
				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should not allow access by TCP when a policy specifies only UDP",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{81})
				nsX, _, _ := namespacesXYZ(m)

				// Creating a network policy for the server which allows traffic only via UDP on port 81.
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(81), Protocol: &protocolUDP})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-only-udp-ingress-on-port-81", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				// Probing with TCP, so all traffic should be dropped.
				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectAllIngress(Ref(nsX, "a"), false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			// Note that this default ns functionality is maintained by the APIMachinery group, but we test it here anyways because its an important feature.
			Name: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, nsZ := namespacesXYZ(m)
				allowedLabels := &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: nsY}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedLabels})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector-for-immutable-ns-label", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{Namespace: nsX, Pod: "a"}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsZ}, &Peer{Namespace: nsX, Pod: "a"}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
		{
			// Note that this default ns functionality is maintained by the APIMachinery group, but we test it here anyways because its an important feature.
			Name: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocolTCP}, []int32{80})
				nsX, nsY, _ := namespacesXYZ(m)
				allowedNamespaces := &metav1.LabelSelector{
					MatchExpressions: []metav1.LabelSelectorRequirement{{
						Key:      corev1.LabelMetadataName,
						Operator: metav1.LabelSelectorOpNotIn,
						Values:   []string{nsY},
					}},
				}
				egressRule := networkingv1.NetworkPolicyEgressRule{}
				egressRule.To = append(egressRule.To, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedNamespaces})
				policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-match-selector-for-immutable-ns-label", map[string]string{"pod": "a"}, setSpecEgressRules(egressRule))
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{Namespace: nsX, Pod: "a"}, &Peer{Namespace: nsY}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocolTCP, Reachability: reachability})
				return t.Err()
			},
		},
	}
	return inSuite(SuiteNetpol, tests)
}

// NetpolUDP returns the 3 tests of Describe "Netpol [LinuxOnly]", Context
// "NetworkPolicy between server and client using UDP".
func NetpolUDP() []Test { return inSuite(SuiteNetpolUDP, protocolSuite(protocolUDP)) }

// NetpolSCTP returns the 3 tests of Describe "Netpol",
// feature.SCTPConnectivity, "[LinuxOnly]", Context "NetworkPolicy between
// server and client using SCTP".
func NetpolSCTP() []Test { return inSuite(SuiteNetpolSCTP, protocolSuite(protocolSCTP)) }

// protocolSuite is the UDP and SCTP Context: the same three tests, run on
// one protocol.
func protocolSuite(protocol corev1.Protocol) []Test {
	return []Test{
		{
			Name: "should support a 'default-deny-ingress' policy",
			Run: func(ctx context.Context, t *T) error {
				m := t.InitializeResources(ctx, []corev1.Protocol{protocol}, []int32{80})
				nsX, _, _ := namespacesXYZ(m)
				policy := genNetworkPolicyWithNameAndPodSelector("deny-all", metav1.LabelSelector{}, setSpecIngressRules())
				t.CreatePolicy(ctx, policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{}, &Peer{Namespace: nsX}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocol, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on Ports",
			Run: func(ctx context.Context, t *T) error {
				// Creating a network policy allowPort81Policy which only allows allow listed namespaces (y) to connect on exactly one port (81).
				m := t.InitializeResources(ctx, []corev1.Protocol{protocol}, []int32{81})
				nsX, nsY, nsZ := namespacesXYZ(m)
				allowedLabels := &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsY}}
				ingressRule := networkingv1.NetworkPolicyIngressRule{}
				ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedLabels})
				ingressRule.Ports = append(ingressRule.Ports, networkingv1.NetworkPolicyPort{Port: portNumber(81), Protocol: &protocol})
				allowPort81Policy := genNetworkPolicyWithNameAndPodMatchLabel("allow-ingress-on-port-81-ns-x", map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
				t.CreatePolicy(ctx, allowPort81Policy, nsX)

				reachability := NewReachability(m.AllPodRefs(), true)
				reachability.ExpectPeer(&Peer{Namespace: nsX}, &Peer{Namespace: nsX, Pod: "a"}, false)
				reachability.ExpectPeer(&Peer{Namespace: nsZ}, &Peer{Namespace: nsX, Pod: "a"}, false)
				t.ValidateOrFail(ctx, TestCase{ToPort: 81, Protocol: protocol, Reachability: reachability})
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
			Run:  allowFromPodInOtherNamespace(protocol, "allow-ns-y-pod-a-via-namespace-pod-selector"),
		},
	}
}

// allowFromPodInOtherNamespace is the body shared by the TCP, UDP and SCTP
// versions of "should enforce policy to allow traffic only from a pod in a
// different namespace based on PodSelector and NamespaceSelector".
func allowFromPodInOtherNamespace(protocol corev1.Protocol, name string) func(ctx context.Context, t *T) error {
	return func(ctx context.Context, t *T) error {
		m := t.InitializeResources(ctx, []corev1.Protocol{protocol}, []int32{80})
		nsX, nsY, _ := namespacesXYZ(m)
		allowedNamespaces := &metav1.LabelSelector{MatchLabels: map[string]string{namespaceLabelKey: nsY}}
		allowedPods := &metav1.LabelSelector{MatchLabels: map[string]string{"pod": "a"}}
		ingressRule := networkingv1.NetworkPolicyIngressRule{}
		ingressRule.From = append(ingressRule.From, networkingv1.NetworkPolicyPeer{NamespaceSelector: allowedNamespaces, PodSelector: allowedPods})
		policy := genNetworkPolicyWithNameAndPodMatchLabel(name, map[string]string{"pod": "a"}, setSpecIngressRules(ingressRule))
		t.CreatePolicy(ctx, policy, nsX)

		reachability := NewReachability(m.AllPodRefs(), true)
		reachability.ExpectAllIngress(Ref(nsX, "a"), false)
		reachability.Expect(Ref(nsY, "a"), Ref(nsX, "a"), true)
		t.ValidateOrFail(ctx, TestCase{ToPort: 80, Protocol: protocol, Reachability: reachability})
		return t.Err()
	}
}

// inSuite sets the Suite of every test.
func inSuite(suite string, tests []Test) []Test {
	for i := range tests {
		tests[i].Suite = suite
	}
	return tests
}
