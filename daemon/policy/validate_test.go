package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		// want are substrings, one per expected error; none means valid.
		want []string
	}{
		{
			name: "valid",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}
  policyTypes: [Ingress, Egress]
  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {namespaceSelector: {}, podSelector: {}}], ports: [{port: http}, {port: 80, endPort: 90}, {protocol: SCTP}]}]
  egress: [{to: [{ipBlock: {cidr: "fd10::/48", except: ["fd10::/64"]}}], ports: [{port: 53, protocol: UDP}]}]`,
		},
		{
			name:   "missing name and namespace",
			policy: `spec: {podSelector: {}}`,
			want:   []string{"metadata.name: required", "metadata.namespace: required"},
		},
		{
			name: "selectors that do not parse",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {matchExpressions: [{key: app, operator: Exists, values: [x]}]}
  ingress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: Foo}]}}, {namespaceSelector: {matchLabels: {"bad key!": x}}}]}]`,
			want: []string{"spec.podSelector:", "spec.ingress[0].from[0]: podSelector:", "spec.ingress[0].from[1]: namespaceSelector:"},
		},
		{
			name: "bad CIDRs",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {}
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/33}}, {ipBlock: {cidr: 10.0.0.1/8}}, {ipBlock: {cidr: ""}}]`,
			want: []string{"spec.egress[0].to[0]: ipBlock: cidr:", "spec.egress[0].to[1]: ipBlock: cidr: \"10.0.0.1/8\" is not a canonical prefix", "spec.egress[0].to[2]: ipBlock: cidr: required"},
		},
		{
			name: "except not strictly inside cidr",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.0.0/16, 10.1.0.0/24, "fd10::/64", 10.0.1.1/24]}}]`,
			want: []string{"except[0]: 10.0.0.0/16 is not strictly inside", "except[1]: 10.1.0.0/24 is not strictly inside", "except[2]: fd10::/64 is not strictly inside", "except[3]: \"10.0.1.1/24\" is not a canonical prefix"},
		},
		{
			name: "ipBlock with a selector, and an empty peer",
			policy: `
metadata: {name: p, namespace: default}
spec: {podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, namespaceSelector: {}}, {}]}]}`,
			want: []string{"spec.ingress[0].from[0]: ipBlock may not be combined", "spec.ingress[0].from[1]: must specify a peer"},
		},
		{
			name: "ports",
			policy: `
metadata: {name: p, namespace: default}
spec:
  podSelector: {}
  ingress:
  - ports: [{protocol: ICMP, port: 1}, {port: 0}, {port: 65536}, {port: 90, endPort: 80}, {port: http, endPort: 90}, {endPort: 90}, {port: "80"}, {port: 80, endPort: 70000}]`,
			want: []string{
				`ports[0]: protocol: unsupported value "ICMP"`,
				"ports[1]: port: 0 is out of range",
				"ports[2]: port: 65536 is out of range",
				"ports[3]: endPort: 80 is less than port 90",
				"ports[4]: endPort: may not be set with a named port",
				"ports[5]: endPort: may not be set without port",
				`ports[6]: port: "80": must contain at least one letter`,
				"ports[7]: endPort: 70000 is out of range",
			},
		},
		{
			name: "policyTypes",
			policy: `
metadata: {name: p, namespace: default}
spec: {podSelector: {}, policyTypes: [Ingress, Foo, Ingress]}`,
			want: []string{`spec.policyTypes[1]: unsupported value "Foo"`, "spec.policyTypes: 3 values", `spec.policyTypes[2]: duplicate value "Ingress"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			np := parsePolicies(t, tt.policy)[0]
			err := Validate(np)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %d errors", len(tt.want))
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) || len(joined.Unwrap()) != len(tt.want) {
				t.Errorf("Validate returned %d errors, want %d:\n%v", len(joined.Unwrap()), len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
	if err := Validate(nil); err == nil {
		t.Error("Validate(nil) = nil")
	}
}

func TestApplyDefaults(t *testing.T) {
	tcp := corev1.ProtocolTCP
	udp := corev1.ProtocolUDP
	tests := []struct {
		name      string
		policy    string
		wantTypes []networkingv1.PolicyType
	}{
		{"ingress only", `
metadata: {name: p, namespace: default}
spec: {podSelector: {}, ingress: [{ports: [{port: 80}, {port: 53, protocol: UDP}]}]}`, []networkingv1.PolicyType{"Ingress"}},
		{"egress rules add Egress", `
metadata: {name: p, namespace: default}
spec: {podSelector: {}, egress: [{ports: [{port: 80}]}]}`, []networkingv1.PolicyType{"Ingress", "Egress"}},
		{"empty egress list adds nothing", `
metadata: {name: p, namespace: default}
spec: {podSelector: {}, egress: []}`, []networkingv1.PolicyType{"Ingress"}},
		{"explicit types are kept", `
metadata: {name: p, namespace: default}
spec: {podSelector: {}, policyTypes: [Egress], ingress: [{}]}`, []networkingv1.PolicyType{"Egress"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			np := parsePolicies(t, tt.policy)[0]
			ApplyDefaults(np)
			if !reflect.DeepEqual(np.Spec.PolicyTypes, tt.wantTypes) {
				t.Errorf("policyTypes %v, want %v", np.Spec.PolicyTypes, tt.wantTypes)
			}
			for _, r := range np.Spec.Ingress {
				for _, p := range r.Ports {
					if p.Protocol == nil || (*p.Protocol != tcp && *p.Protocol != udp) {
						t.Errorf("ingress port %v: protocol %v", p.Port, p.Protocol)
					}
				}
			}
			for _, r := range np.Spec.Egress {
				for _, p := range r.Ports {
					if p.Protocol == nil || *p.Protocol != tcp {
						t.Errorf("egress port %v: protocol %v, want TCP", p.Port, p.Protocol)
					}
				}
			}
			if len(np.Spec.Ingress) > 0 && len(np.Spec.Ingress[0].Ports) > 1 && *np.Spec.Ingress[0].Ports[1].Protocol != udp {
				t.Errorf("explicit UDP overwritten")
			}
		})
	}
	ApplyDefaults(nil)
}

func TestSelects(t *testing.T) {
	pod := &Pod{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web", "tier": "front"}}
	tests := []struct {
		name   string
		policy string
		want   bool
	}{
		{"empty selector", `{metadata: {name: p, namespace: default}, spec: {podSelector: {}}}`, true},
		{"other namespace", `{metadata: {name: p, namespace: other}, spec: {podSelector: {}}}`, false},
		{"matchLabels", `{metadata: {name: p, namespace: default}, spec: {podSelector: {matchLabels: {app: web}}}}`, true},
		{"matchLabels mismatch", `{metadata: {name: p, namespace: default}, spec: {podSelector: {matchLabels: {app: db}}}}`, false},
		{"NotIn", `{metadata: {name: p, namespace: default}, spec: {podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [front]}]}}}`, false},
		{"DoesNotExist", `{metadata: {name: p, namespace: default}, spec: {podSelector: {matchExpressions: [{key: env, operator: DoesNotExist}]}}}`, true},
		{"broken selector fails closed", `{metadata: {name: p, namespace: default}, spec: {podSelector: {matchExpressions: [{key: env, operator: Foo}]}}}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Selects(parsePolicies(t, tt.policy)[0], pod); got != tt.want {
				t.Errorf("Selects = %v, want %v", got, tt.want)
			}
		})
	}
	if Selects(nil, pod) || Selects(&networkingv1.NetworkPolicy{}, nil) {
		t.Error("Selects with nil arguments = true")
	}
}
