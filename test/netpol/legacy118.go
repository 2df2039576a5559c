package netpol

import (
	"context"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Legacy118 returns the 25 tests of release-1.18
// test/e2e/network/network_policy.go, Describe "NetworkPolicy [LinuxOnly]",
// Context "NetworkPolicy between server and client", in file order.
//
// As upstream, every test starts from a server pod "server" in namespace a
// (the framework's namespace) serving TCP 80 and 81 on container ports
// serve-80 and serve-81, and first checks that a client reaches both ports
// (LegacyServer). Pods are labelled pod-name=<name>; the extra namespaces b
// and c carry ns-name=<their name>. Each testCanConnect/testCannotConnect is a
// one-cell Validate from a client pod to a server's IP; clients are created
// with the model instead of one-shot pods, under the names upstream gives
// them. Egress policies keep their UDP 53 (DNS) rules.
func Legacy118() []Test {
	tests := []Test{
		{
			Name: "should support a 'default-deny' policy [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-cannot-connect")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "deny-all"},
					Spec: networkingv1.NetworkPolicySpec{
						PodSelector: metav1.LabelSelector{},
						Ingress:     []networkingv1.NetworkPolicyIngressRule{},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				// Create a pod with name 'client-cannot-connect', which will attempt to communicate with the server,
				// but should not be able to now that isolation is on.
				t.TestCannotConnect(ctx, Ref(nsA, "client-cannot-connect"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow traffic from pods within server namespace based on PodSelector [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b", "b/client-a")
				nsA, nsB := m.NS("a"), m.NS("b")
				server := Ref(nsA, "server")

				// All communication should be possible before applying the policy.
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-b"), server, 80)
				t.TestCanConnect(ctx, Ref(nsB, "client-a"), server, 80)

				// Creating a network policy for the server which allows traffic from the pod 'client-a' in same namespace.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-client-a-via-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the Server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic only from client-a
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-a"}},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCannotConnect(ctx, Ref(nsA, "client-b"), server, 80)
				t.TestCannotConnect(ctx, Ref(nsB, "client-a"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "b/client-b")
				nsA, nsB := m.NS("a"), m.NS("b")
				nsBName := nsB // the value of nsB's ns-name label
				server := Ref(nsA, "server")

				// Creating a network policy for the server which allows traffic from namespace-b.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-ns-b-via-namespace-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply to server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic only from NS-B
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns-name": nsBName}},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsB, "client-b"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on PodSelector with MatchExpressions[Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				// Creating a network policy for the server which allows traffic from the pod 'client-a'.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-client-a-via-pod-selector-with-match-expressions"},
					Spec: networkingv1.NetworkPolicySpec{
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector: &metav1.LabelSelector{
									MatchExpressions: []metav1.LabelSelectorRequirement{{
										Key:      "pod-name",
										Operator: metav1.LabelSelectorOpIn,
										Values:   []string{"client-a"},
									}},
								},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCannotConnect(ctx, Ref(nsA, "client-b"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on NamespaceSelector with MatchExpressions[Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "b/client-a", "c/client-a")
				nsA, nsB, nsC := m.NS("a"), m.NS("b"), m.NS("c")
				nsCName := nsC
				server := Ref(nsA, "server")

				// Creating a network policy for the server which allows traffic from ns different than namespace-a.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-any-ns-different-than-ns-a-via-ns-selector-with-match-expressions"},
					Spec: networkingv1.NetworkPolicySpec{
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								NamespaceSelector: &metav1.LabelSelector{
									MatchExpressions: []metav1.LabelSelectorRequirement{{
										Key:      "ns-name",
										Operator: metav1.LabelSelectorOpNotIn,
										Values:   []string{nsCName},
									}},
								},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCannotConnect(ctx, Ref(nsC, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsB, "client-a"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on PodSelector or NamespaceSelector [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-b", "a/client-c", "b/client-a")
				nsA, nsB := m.NS("a"), m.NS("b")
				nsBName := nsB
				server := Ref(nsA, "server")

				// Creating a network policy for the server which allows traffic from client-b or namespace-b.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-ns-b-via-namespace-selector-or-client-b-via-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-b"}},
							}, {
								NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns-name": nsBName}},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCanConnect(ctx, Ref(nsB, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-b"), server, 80)
				t.TestCannotConnect(ctx, Ref(nsA, "client-c"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on PodSelector and NamespaceSelector [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-b", "b/client-a", "b/client-b")
				nsA, nsB := m.NS("a"), m.NS("b")
				nsBName := nsB
				server := Ref(nsA, "server")

				// Creating a network policy for the server which allows traffic from client-b in namespace-b.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-client-b-in-ns-b-via-ns-selector-and-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-b"}},
								NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns-name": nsBName}},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCannotConnect(ctx, Ref(nsB, "client-a"), server, 80)
				t.TestCannotConnect(ctx, Ref(nsA, "client-b"), server, 80)
				t.TestCanConnect(ctx, Ref(nsB, "client-b"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b", "b/client-a", "b/client-b")
				nsA, nsB := m.NS("a"), m.NS("b")
				nsBName := nsB
				server := Ref(nsA, "server")

				// Before application of the policy, all communication should be successful.
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-b"), server, 80)
				t.TestCanConnect(ctx, Ref(nsB, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsB, "client-b"), server, 80)

				// Creating a network policy for the server which allows traffic only from client-a in namespace-b.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "allow-ns-b-client-a-via-namespace-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the Server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic only from client-a in namespace-b
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns-name": nsBName}},
								PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-a"}},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCannotConnect(ctx, Ref(nsA, "client-b"), server, 80)
				t.TestCanConnect(ctx, Ref(nsB, "client-a"), server, 80)
				t.TestCannotConnect(ctx, Ref(nsB, "client-b"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policy based on Ports [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				// Creating a network policy for the Service which allows traffic only to one port.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-ingress-on-port-81"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply to server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic only to one port.
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							Ports: []networkingv1.NetworkPolicyPort{{Port: portNumber(81)}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				// Testing pods can connect only to the port allowed by the policy.
				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-b"), server, 81)
				return t.Err()
			},
		},
		{
			Name: "should enforce multiple, stacked policies with overlapping podSelectors [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				// Creating a network policy for the Service which allows traffic only to one port.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-ingress-on-port-80"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply to server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic only to one port.
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							Ports: []networkingv1.NetworkPolicyPort{{Port: portNumber(80)}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				// Creating a network policy for the Service which allows traffic only to another port.
				policy2 := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-ingress-on-port-81"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply to server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic only to one port.
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							Ports: []networkingv1.NetworkPolicyPort{{Port: portNumber(81)}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy2, nsA)

				// Testing pods can connect to both ports when both policies are present.
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-b"), server, 81)
				return t.Err()
			},
		},
		{
			Name: "should support allow-all policy [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				// Creating a network policy which allows all traffic.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-all"},
					Spec: networkingv1.NetworkPolicySpec{
						// Allow all traffic
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{}},
						Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				// Testing pods can connect to both ports when an 'allow-all' policy is present.
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-b"), server, 81)
				return t.Err()
			},
		},
		{
			Name: "should allow ingress access on one named port [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-client-a-via-named-port-ingress-rule"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the Server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic to only one named port: "serve-80".
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							Ports: []networkingv1.NetworkPolicyPort{{Port: portName("serve-80")}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCannotConnect(ctx, Ref(nsA, "client-b"), server, 81)
				return t.Err()
			},
		},
		{
			Name: "should allow ingress access from namespace on one named port [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "b/client-b")
				nsA, nsB := m.NS("a"), m.NS("b")
				nsBName := nsB
				server := Ref(nsA, "server")

				const allowedPort = 80
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-client-in-ns-b-via-named-port-ingress-rule"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the Server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic to only one named port: "serve-80" from namespace-b.
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns-name": nsBName}},
							}},
							Ports: []networkingv1.NetworkPolicyPort{{Port: portName("serve-80")}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, allowedPort)
				t.TestCanConnect(ctx, Ref(nsB, "client-b"), server, allowedPort)
				return t.Err()
			},
		},
		{
			Name: "should allow egress access on one named port [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				clientPodName := "client-a"
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-client-a-via-named-port-egress-rule"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to client-a
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": clientPodName}},
						// Allow traffic to only one named port: "serve-80".
						Egress: []networkingv1.NetworkPolicyEgressRule{{
							Ports: []networkingv1.NetworkPolicyPort{
								{Port: portName("serve-80")},
								// Allow DNS look-ups
								{Protocol: &protocolUDP, Port: portNumber(53)},
							},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCanConnect(ctx, Ref(nsA, clientPodName), server, 80)
				t.TestCannotConnect(ctx, Ref(nsA, clientPodName), server, 81)
				return t.Err()
			},
		},
		{
			Name: "should enforce updated policy [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b")
				nsA := m.NS("a")
				server := Ref(nsA, "server")
				clientA, clientB := Ref(nsA, "client-a"), Ref(nsA, "client-b")

				const (
					clientAAllowedPort    = 80
					clientANotAllowedPort = 81
				)
				// Creating a network policy for the Service which allows traffic from pod at a port.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-ingress"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply to server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic only to one port.
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-a"}},
							}},
							Ports: []networkingv1.NetworkPolicyPort{{Port: portNumber(clientAAllowedPort)}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCanConnect(ctx, clientA, server, clientAAllowedPort)
				t.TestCannotConnect(ctx, clientB, server, clientAAllowedPort)
				t.TestCannotConnect(ctx, clientA, server, clientANotAllowedPort)

				const (
					clientBAllowedPort    = 81
					clientBNotAllowedPort = 80
				)
				// Updating a network policy for the Service which allows traffic from another pod at another port.
				policy = &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-ingress"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply to server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						// Allow traffic only to one port.
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-b"}},
							}},
							Ports: []networkingv1.NetworkPolicyPort{{Port: portNumber(clientBAllowedPort)}},
						}},
					},
				}
				t.UpdatePolicy(ctx, policy, nsA)

				t.TestCannotConnect(ctx, clientB, server, clientBNotAllowedPort)
				t.TestCannotConnect(ctx, clientA, server, clientBNotAllowedPort)
				t.TestCanConnect(ctx, clientB, server, clientBAllowedPort)
				return t.Err()
			},
		},
		{
			Name: "should allow ingress access from updated namespace [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "b/client-a", "b/client-b")
				nsA, nsB := m.NS("a"), m.NS("b")
				nsBName := nsB
				newNsBName := nsBName + "-updated"
				server := Ref(nsA, "server")

				const allowedPort = 80
				// Creating a network policy for the server which allows traffic from namespace-b.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-ns-b-via-namespace-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns-name": newNsBName}},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				t.TestCannotConnect(ctx, Ref(nsB, "client-a"), server, allowedPort)

				t.AddNamespaceLabel(ctx, nsB, "ns-name", newNsBName)

				t.TestCanConnect(ctx, Ref(nsB, "client-b"), server, allowedPort)
				return t.Err()
			},
		},
		{
			Name: "should allow ingress access from updated pod [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				const allowedPort = 80
				// Creating a network policy for the server which allows traffic from client-a-updated.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-pod-b-via-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector: &metav1.LabelSelector{
									MatchExpressions: []metav1.LabelSelectorRequirement{{
										Key:      "pod-name",
										Operator: metav1.LabelSelectorOpDoesNotExist,
									}},
								},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				// Creating client pod client-a that should not be able to connect to the server.
				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, allowedPort)

				// Updating client pod client-a that should successfully connect to the server
				// (JSON patch "replace /metadata/labels" with {}).
				t.SetPodLabels(ctx, nsA, "client-a", map[string]string{})
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, allowedPort)
				return t.Err()
			},
		},
		{
			Name: "should deny ingress access to updated pod [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				const allowedPort = 80
				// Creating a network policy for the server which denies all traffic.
				policy := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "deny-ingress-via-isolated-label-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						PodSelector: metav1.LabelSelector{
							MatchLabels: map[string]string{"pod-name": "server"},
							MatchExpressions: []metav1.LabelSelectorRequirement{{
								Key:      "isolated",
								Operator: metav1.LabelSelectorOpExists,
							}},
						},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
						Ingress:     []networkingv1.NetworkPolicyIngressRule{},
					},
				}
				t.CreatePolicy(ctx, policy, nsA)

				// Client can connect to service when the network policy doesn't apply to the server pod.
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, allowedPort)

				// Client cannot connect to service after updating the server pod's labels to match the network policy's selector.
				t.AddPodLabels(ctx, nsA, "server", map[string]string{"isolated": ""})
				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, allowedPort)
				return t.Err()
			},
		},
		{
			Name: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				// Creating pods and services in namespace-b: ns-b-server-a and ns-b-server-b.
				m := t.LegacyServer(ctx, "a/client-a", "b/ns-b-server-a", "b/ns-b-server-b")
				nsA, nsB := m.NS("a"), m.NS("b")
				nsBName := nsB
				server := Ref(nsA, "server")

				// Creating a network policy for the server which allows traffic only to a server in different namespace.
				policyAllowToServerInNSB := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "allow-to-ns-b-server-a-via-namespace-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the client
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-a"}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
						// Allow traffic only to server-a in namespace-b
						Egress: []networkingv1.NetworkPolicyEgressRule{
							{
								Ports: []networkingv1.NetworkPolicyPort{
									// Allow DNS look-ups
									{Protocol: &protocolUDP, Port: portNumber(53)},
								},
							},
							{
								To: []networkingv1.NetworkPolicyPeer{{
									NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"ns-name": nsBName}},
									PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "ns-b-server-a"}},
								}},
							},
						},
					},
				}
				t.CreatePolicy(ctx, policyAllowToServerInNSB, nsA)

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), Ref(nsB, "ns-b-server-a"), 80)
				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), Ref(nsB, "ns-b-server-b"), 80)
				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce multiple ingress policies with ingress allow-all policy taking precedence [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/client-b")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				// Creating a network policy for the server which allows traffic only from client-b.
				policyAllowOnlyFromClientB := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "allow-from-client-b-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the Server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
						// Allow traffic only from "client-b"
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-b"}},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policyAllowOnlyFromClientB, nsA)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-b"), server, 80)

				// Creating a network policy for the server which allows traffic from all clients.
				policyIngressAllowAll := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-all"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to all pods
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
						Ingress:     []networkingv1.NetworkPolicyIngressRule{{}},
					},
				}
				t.CreatePolicy(ctx, policyIngressAllowAll, nsA)

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-b"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce multiple egress policies with egress allow-all policy taking precedence [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a", "a/server-b")
				nsA := m.NS("a")
				server, serverB := Ref(nsA, "server"), Ref(nsA, "server-b")

				// Creating client-a which should be able to contact the server before applying policy.
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), serverB, 80)

				// Creating a network policy for the server which allows traffic only to server-a.
				policyAllowOnlyToServerA := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "allow-to-server-a-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the "client-a"
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-a"}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
						// Allow traffic only to "server-a"
						Egress: []networkingv1.NetworkPolicyEgressRule{
							{
								Ports: []networkingv1.NetworkPolicyPort{
									// Allow DNS look-ups
									{Protocol: &protocolUDP, Port: portNumber(53)},
								},
							},
							{
								To: []networkingv1.NetworkPolicyPeer{{
									PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
								}},
							},
						},
					},
				}
				t.CreatePolicy(ctx, policyAllowOnlyToServerA, nsA)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), serverB, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)

				// Creating a network policy which allows traffic to all pods.
				policyEgressAllowAll := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Name: "allow-all"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to all pods
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
						Egress:      []networkingv1.NetworkPolicyEgressRule{{}},
					},
				}
				t.CreatePolicy(ctx, policyEgressAllowAll, nsA)

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), serverB, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should stop enforcing policies after they are deleted [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				// Creating a network policy for the server which denies all traffic.
				policyDenyAll := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "deny-all"},
					Spec: networkingv1.NetworkPolicySpec{
						// Deny all traffic
						PodSelector: metav1.LabelSelector{},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
						Ingress:     []networkingv1.NetworkPolicyIngressRule{},
					},
				}
				t.CreatePolicy(ctx, policyDenyAll, nsA)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, 80)

				// Creating a network policy for the server which allows traffic only from client-a.
				policyAllowFromClientA := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "allow-from-client-a-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the Server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "server"}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
						// Allow traffic from "client-a"
						Ingress: []networkingv1.NetworkPolicyIngressRule{{
							From: []networkingv1.NetworkPolicyPeer{{
								PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-a"}},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policyAllowFromClientA, nsA)

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)

				// Deleting the network policy allowing traffic from client-a.
				t.DeletePolicy(ctx, nsA, policyAllowFromClientA.Name)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, 80)

				// Deleting the network policy denying all traffic.
				t.DeletePolicy(ctx, nsA, policyDenyAll.Name)

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should allow egress access to server in CIDR block [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				// Creating pod-b and service-b.
				m := t.LegacyServer(ctx, "a/client-a", "a/pod-b")
				nsA := m.NS("a")
				server, podServerB := Ref(nsA, "server"), Ref(nsA, "pod-b")

				// Getting podServer's status to get podServer's IP, to create the CIDR
				// (upstream writes "<ip>/32"; /128 on IPv6).
				podServerCIDR := hostCIDR(t.PodIP(nsA, "server"))

				t.TestCanConnect(ctx, Ref(nsA, "client-a"), podServerB, 80)

				policyAllowCIDR := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "allow-client-a-via-cidr-egress-rule"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the Server
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-a"}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
						// Allow traffic to only one CIDR block.
						Egress: []networkingv1.NetworkPolicyEgressRule{
							{
								Ports: []networkingv1.NetworkPolicyPort{
									// Allow DNS look-ups
									{Protocol: &protocolUDP, Port: portNumber(53)},
								},
							},
							{
								To: []networkingv1.NetworkPolicyPeer{{
									IPBlock: &networkingv1.IPBlock{CIDR: podServerCIDR},
								}},
							},
						},
					},
				}
				t.CreatePolicy(ctx, policyAllowCIDR, nsA)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), podServerB, 80)
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce except clause while egress access to server in CIDR block [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/client-a")
				nsA := m.NS("a")
				server := Ref(nsA, "server")

				// Getting podServer's status to get podServer's IP, to create the CIDR with except clause.
				podServerIP := t.PodIP(nsA, "server")
				allowMask := 24
				if m.Family == IPv6 {
					allowMask = 64
				}
				podServerAllowCIDR := subnetCIDR(podServerIP, allowMask)
				// Exclude podServer's IP with an Except clause.
				podServerExceptList := []string{hostCIDR(podServerIP)}

				// client-a can connect to server prior to applying the NetworkPolicy.
				t.TestCanConnect(ctx, Ref(nsA, "client-a"), server, 80)

				policyAllowCIDRWithExcept := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "deny-client-a-via-except-cidr-egress-rule"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy to the client.
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "client-a"}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
						// Allow traffic to only one CIDR block except subnet which includes Server.
						Egress: []networkingv1.NetworkPolicyEgressRule{{
							To: []networkingv1.NetworkPolicyPeer{{
								IPBlock: &networkingv1.IPBlock{CIDR: podServerAllowCIDR, Except: podServerExceptList},
							}},
						}},
					},
				}
				t.CreatePolicy(ctx, policyAllowCIDRWithExcept, nsA)

				t.TestCannotConnect(ctx, Ref(nsA, "client-a"), server, 80)
				return t.Err()
			},
		},
		{
			Name: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector [Feature:NetworkPolicy]",
			Run: func(ctx context.Context, t *T) error {
				m := t.LegacyServer(ctx, "a/pod-a", "a/pod-b")
				nsA := m.NS("a")
				podA, podB := Ref(nsA, "pod-a"), Ref(nsA, "pod-b")

				// Before applying policy, communication should be successful between pod-a and pod-b.
				t.TestCanConnect(ctx, podB, podA, 80)
				t.TestCanConnect(ctx, podA, podB, 80)

				// Creating a network policy for pod-a which allows Egress traffic to pod-b.
				policyAllowToPodB := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "allow-pod-a-to-pod-b-using-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy on pod-a
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "pod-a"}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
						// Allow traffic to server on pod-b
						Egress: []networkingv1.NetworkPolicyEgressRule{
							{
								Ports: []networkingv1.NetworkPolicyPort{
									// Allow DNS look-ups
									{Protocol: &protocolUDP, Port: portNumber(53)},
								},
							},
							{
								To: []networkingv1.NetworkPolicyPeer{{
									PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "pod-b"}},
								}},
							},
						},
					},
				}
				t.CreatePolicy(ctx, policyAllowToPodB, nsA)

				// Creating a network policy for pod-a that denies traffic from pod-b.
				policyDenyFromPodB := &networkingv1.NetworkPolicy{
					ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "deny-pod-b-to-pod-a-pod-selector"},
					Spec: networkingv1.NetworkPolicySpec{
						// Apply this policy on the server on pod-a
						PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"pod-name": "pod-a"}},
						PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
						// Deny traffic from all pods, including pod-b
						Ingress: []networkingv1.NetworkPolicyIngressRule{},
					},
				}
				t.CreatePolicy(ctx, policyDenyFromPodB, nsA)

				t.TestCanConnect(ctx, podA, podB, 80)
				t.TestCannotConnect(ctx, podB, podA, 80)
				return t.Err()
			},
		},
	}
	return inSuite(SuiteLegacy, tests)
}
