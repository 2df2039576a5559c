package manifests

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/podwall/podwall/daemon/policy"
)

// summarizeServices renders the Service part of a state as one line per
// object.
func summarizeServices(st *policy.State) []string {
	var out []string
	for _, s := range st.Services {
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s/%d/%d", p.Name, p.Protocol, p.Port, p.NodePort))
		}
		out = append(out, fmt.Sprintf("service %s clusterIPs=%s external=%s ports=%s local=%v",
			s.Key(), addrList(s.ClusterIPs), addrList(s.ExternalIPs), strings.Join(ports, ","), s.InternalTrafficLocal))
	}
	for _, e := range st.EndpointSlices {
		var ports, eps []string
		for _, p := range e.Ports {
			ports = append(ports, fmt.Sprintf("%s/%s/%d", p.Name, p.Protocol, p.Port))
		}
		for _, ep := range e.Endpoints {
			eps = append(eps, fmt.Sprintf("%s:%v:%s", addrList(ep.Addrs), ep.Ready, ep.NodeName))
		}
		out = append(out, fmt.Sprintf("slice %s/%s service=%s ports=%s endpoints=%s",
			e.Namespace, e.Name, e.Service, strings.Join(ports, ","), strings.Join(eps, ",")))
	}
	var cidrs []string
	for _, p := range st.ServiceCIDRs {
		cidrs = append(cidrs, p.String())
	}
	return append(out, "cidrs "+strings.Join(cidrs, ","))
}

func addrList(as []netip.Addr) string {
	var out []string
	for _, a := range as {
		out = append(out, a.String())
	}
	return strings.Join(out, "+")
}

const servicesYAML = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: nsa}
spec:
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::a"]
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: nsa}
spec: {clusterIP: None, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec: {type: ExternalName, externalName: db.example.com}
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: nsa}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.11
  externalIPs: [203.0.113.7]
  internalTrafficPolicy: Local
  ports: [{port: 443, nodePort: 30443}]
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.1}, {ip: 198.51.100.2, ipMode: Proxy}, {hostname: lb.example.com}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: nsa
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- addresses: [10.1.0.5]
  nodeName: node-a
- addresses: [10.1.0.6]
  conditions: {ready: false, serving: true, terminating: true}
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: kubernetes}
spec: {cidrs: [10.96.0.0/12, "fd00:96::/108"]}
`

func TestLoadServices(t *testing.T) {
	tests := []struct {
		name     string
		files    map[string]string
		want     []string
		wantErrs []string
	}{
		{
			name:  "every kind",
			files: map[string]string{"svc.yaml": servicesYAML},
			want: []string{
				"service default/db clusterIPs= external= ports= local=false",
				"service nsa/headless clusterIPs= external= ports=/TCP/80/0 local=false",
				"service nsa/lb clusterIPs=10.96.0.11 external=203.0.113.7+198.51.100.1 ports=/TCP/443/30443 local=true",
				"service nsa/web clusterIPs=10.96.0.10+fd00:96::a external= ports=http/TCP/80/0,dns/UDP/53/0 local=false",
				"slice nsa/web-1 service=web ports=http/TCP/8080,dns/UDP/5353 endpoints=10.1.0.5:true:node-a,10.1.0.6:false:",
				"cidrs 10.96.0.0/12,fd00:96::/108",
			},
		},
		{
			name: "lists",
			files: map[string]string{"lists.yaml": `
apiVersion: v1
kind: ServiceList
items:
- metadata: {name: a, namespace: nsa}
  spec: {clusterIP: 10.96.0.20, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSliceList
items:
- metadata: {name: a-1, namespace: nsa, labels: {kubernetes.io/service-name: a}}
  addressType: IPv6
  ports: [{port: 8080}]
  endpoints: [{addresses: ["fd10::5"]}]
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDRList
items:
- metadata: {name: one}
  spec: {cidrs: [10.96.0.0/16]}
- metadata: {name: two}
  spec: {cidrs: [10.100.0.0/16]}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Service, metadata: {name: b, namespace: nsa}, spec: {clusterIP: 10.96.0.21}}
`},
			want: []string{
				"service nsa/a clusterIPs=10.96.0.20 external= ports=/TCP/80/0 local=false",
				"service nsa/b clusterIPs=10.96.0.21 external= ports= local=false",
				"slice nsa/a-1 service=a ports=/TCP/8080 endpoints=fd10::5:true:",
				"cidrs 10.96.0.0/16,10.100.0.0/16",
			},
		},
		{
			name: "invalid objects name the field",
			files: map[string]string{"bad.yaml": `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: nsa}
spec:
  clusterIP: 10.96.0.300
  ports: [{port: 80, protocol: ICMP}, {port: 0}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: nsa}
addressType: IPv4
endpoints: [{addresses: ["fd10::5"]}, {addresses: []}]
---
apiVersion: networking.k8s.io/v1
kind: ServiceCIDR
metadata: {name: x}
spec: {cidrs: [10.96.0.0/33]}
---
apiVersion: v1
kind: Service
metadata: {namespace: nsa}
spec: {clusterIP: 10.96.0.1}
`},
			want: []string{"cidrs "},
			wantErrs: []string{
				`bad.yaml: Service nsa/web: invalid: spec.clusterIP: "10.96.0.300" is not an IP address`,
				`bad.yaml: EndpointSlice nsa/web-1: invalid: endpoints[0].addresses[0]: "fd10::5" is not of addressType IPv4`,
				`bad.yaml: ServiceCIDR x: invalid: spec.cidrs[0]: "10.96.0.0/33" is not a CIDR`,
				"bad.yaml: document 4: Service: missing metadata.name",
			},
		},
		{
			name: "unknown field is an error, as with kubectl",
			files: map[string]string{"bad.yaml": `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: nsa}
spec: {clusterIP: 10.96.0.1, clusterIp: 10.96.0.2}
`},
			want:     []string{"cidrs "},
			wantErrs: []string{`bad.yaml: document 1: decode:`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, dir, name, content)
			}
			s := New(dir, nil)
			mustLoad(t, s)
			if got := summarizeServices(s.State()); !slices.Equal(got, tt.want) {
				t.Errorf("state:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tt.want, "\n     "))
			}
			checkErrors(t, s, tt.wantErrs...)
		})
	}
}

func TestValidationErrorsListEveryProblem(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "bad.yaml", `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: nsa}
spec:
  clusterIPs: [10.96.0.1, 10.96.0.2]
  externalIPs: [nope]
  ports: [{name: a, port: 80, protocol: ICMP}, {name: a, port: 70000}]
`)
	s := New(dir, nil)
	mustLoad(t, s)
	errs := errorStrings(s)
	if len(errs) != 1 {
		t.Fatalf("errors = %q, want one for the Service", errs)
	}
	for _, want := range []string{
		"spec.clusterIPs[1]: a second address of one IP family",
		`spec.externalIPs[0]: "nope" is not an IP address`,
		`spec.ports[0].protocol: unsupported value "ICMP"`,
		"spec.ports[1].port: 70000 is not between 1 and 65535",
		`spec.ports[1].name: "a" used twice`,
	} {
		if !strings.Contains(errs[0], want) {
			t.Errorf("error %q does not say %q", errs[0], want)
		}
	}
}

// The --service-cidr ranges are merged with the ServiceCIDR objects', and a
// change of either is reported by Run.
func TestServiceCIDRsMerge(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "cidr.yaml", "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: a}\nspec: {cidrs: [10.96.0.0/16]}\n")
	s := New(dir, nil)
	s.SetServiceCIDRs([]netip.Prefix{netip.MustParsePrefix("fd00:96::/108"), netip.MustParsePrefix("10.96.0.0/16")})
	mustLoad(t, s)
	cidrs := func() string { return strings.Join(summarizeServices(s.State()), "\n") }
	if got, want := cidrs(), "cidrs 10.96.0.0/16,fd00:96::/108"; got != want {
		t.Errorf("state %q, want %q", got, want)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var changed atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, func() { changed.Add(1) })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	wait := func(what, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for cidrs() != want || changed.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: state %q (changed %d), want %q and a changed call", what, cidrs(), changed.Load(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		changed.Store(0)
	}
	writeFile(t, dir, "cidr.yaml", "apiVersion: networking.k8s.io/v1\nkind: ServiceCIDR\nmetadata: {name: a}\nspec: {cidrs: [10.97.0.0/16]}\n")
	wait("object changed", "cidrs 10.96.0.0/16,10.97.0.0/16,fd00:96::/108")
	// Run is running now: a SetServiceCIDRs call is reported too.
	s.SetServiceCIDRs([]netip.Prefix{netip.MustParsePrefix("10.100.0.0/16")})
	wait("flag changed", "cidrs 10.97.0.0/16,10.100.0.0/16")
}

// A file re-read with the same pod and a new address, next to an unchanged
// file, compares states holding netip values: this used to panic
// (equality.Semantic refuses their unexported fields).
func TestReloadComparesAddresses(t *testing.T) {
	dir := t.TempDir()
	pod := func(ip string) string {
		return "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: nsa}\nstatus: {podIP: " + ip + "}\n"
	}
	writeFile(t, dir, "a.yaml", pod("10.1.0.1"))
	writeFile(t, dir, "b.yaml", servicesYAML)
	s := New(dir, nil)
	mustLoad(t, s)
	writeFile(t, dir, "b.yaml", servicesYAML+"---\napiVersion: v1\nkind: Namespace\nmetadata: {name: nsb}\n")
	mustLoad(t, s)
	writeFile(t, dir, "a.yaml", pod("10.1.0.2"))
	mustLoad(t, s)
	if got := s.State().Pods; len(got) != 1 || got[0].IPs[0] != netip.MustParseAddr("10.1.0.2") {
		t.Errorf("pods after the reload: %v", got)
	}
}
