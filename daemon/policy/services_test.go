package policy

import (
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// The Service model: pods in 10.204.0.0/18 and fd00:204::/112-ish host
// addresses, ClusterIPs from the Service CIDRs 10.204.64.0/20 and
// fd00:204::5:0/112, an outside world at 10.204.200.0/24. app/client is the
// pod whose egress the tests restrict; every pod runs on node-1 but api-2,
// on node-2.

const (
	apiIP      = "10.204.64.10" // backend/api: port http 80 -> named targetPort http
	dbIP       = "10.204.64.20" // backend/db: port 15432 -> 5432
	emptyIP    = "10.204.64.30" // backend/empty: no ready endpoints
	dualIP4    = "10.204.64.40" // backend/dual: 80 -> 8080, IPv4 and IPv6
	dualIP6    = "fd00:204::5:40"
	localIP    = "10.204.64.50" // backend/local: internalTrafficPolicy Local, 80 -> 8080
	clusterIP  = "10.204.64.51" // backend/cluster: the same endpoints, cluster-wide
	extCIP     = "10.204.64.60" // backend/ext: 443 -> 8443, external IP below
	extIP      = "10.204.200.60"
	unusedSvc  = "10.204.64.99" // inside the Service CIDR, no Service
	outsideIP  = "10.204.200.1" // an address outside the cluster
	podCIDR    = "10.204.0.0/18"
	serviceV4  = "10.204.64.0/20"
	serviceV6  = "fd00:204::5:0/112"
	api1, api2 = "10.204.2.1", "10.204.2.2"
	api3, db1  = "10.204.2.3", "10.204.2.10"
	api1v6     = "fd00:204::2:1"
)

func tcpPort(name string, port int32) ContainerPort {
	return ContainerPort{Name: name, Protocol: corev1.ProtocolTCP, Port: port}
}

func addrsOf(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// addService adds a Service with one TCP port.
func (c *cluster) addService(ns, name, portName string, port int32, clusterIPs ...string) *Service {
	svc := &Service{
		Namespace:  ns,
		Name:       name,
		ClusterIPs: addrsOf(clusterIPs...),
		Ports:      []ServicePort{{Name: portName, Protocol: corev1.ProtocolTCP, Port: port}},
	}
	c.services = append(c.services, svc)
	return svc
}

// addSlice adds an EndpointSlice of a Service with one TCP port; endpoints
// are "addr" (ready, on node-1), "addr@node" or "addr!" (not ready).
func (c *cluster) addSlice(ns, service, portName string, targetPort int32, endpoints ...string) {
	es := &EndpointSlice{
		Namespace: ns,
		Name:      service + "-" + strings.Repeat("x", len(c.slices)+1),
		Service:   service,
		Ports:     []EndpointPort{{Name: portName, Protocol: corev1.ProtocolTCP, Port: targetPort}},
	}
	for _, e := range endpoints {
		ep := Endpoint{Ready: !strings.HasSuffix(e, "!"), NodeName: "node-1"}
		e = strings.TrimSuffix(e, "!")
		if addr, node, ok := strings.Cut(e, "@"); ok {
			e, ep.NodeName = addr, node
		}
		ep.Addrs = addrsOf(e)
		es.Endpoints = append(es.Endpoints, ep)
	}
	c.slices = append(c.slices, es)
}

// serviceCluster builds the Service model.
func serviceCluster() *cluster {
	c := &cluster{serviceCIDRs: prefixes(serviceV4, serviceV6)}
	c.addNamespace("app", nil)
	c.addNamespace("backend", nil)
	c.addPod("app", "client", labelsOf("app", "client"), nil, "10.204.1.1", "fd00:204::1:1")
	http8080 := []ContainerPort{tcpPort("http", 8080), tcpPort("https", 8443)}
	c.addPod("backend", "api-1", labelsOf("app", "api"), http8080, api1, api1v6)
	c.addPod("backend", "api-2", labelsOf("app", "api"), http8080, api2).NodeName = "node-2"
	// api-3 names 9090 "http": the named targetPort resolves per pod.
	c.addPod("backend", "api-3", labelsOf("app", "api", "track", "canary"), []ContainerPort{tcpPort("http", 9090)}, api3)
	c.addPod("backend", "db", labelsOf("app", "db"), []ContainerPort{tcpPort("pg", 5432)}, db1)

	c.addService("backend", "api", "http", 80, apiIP)
	c.addSlice("backend", "api", "http", 8080, api1, api2, "10.204.2.9!") // .9 is not ready
	c.addSlice("backend", "api", "http", 9090, api3)

	c.addService("backend", "db", "", 15432, dbIP)
	c.addSlice("backend", "db", "", 5432, db1)

	c.addService("backend", "empty", "", 80, emptyIP)
	c.addSlice("backend", "empty", "", 8080, "10.204.2.1!")

	c.addService("backend", "headless", "", 80) // no ClusterIP
	c.addSlice("backend", "headless", "", 8080, api1)

	c.addService("backend", "dual", "", 80, dualIP4, dualIP6)
	c.addSlice("backend", "dual", "", 8080, api1)
	c.addSlice("backend", "dual", "", 8080, api1v6)

	local := c.addService("backend", "local", "", 80, localIP)
	local.InternalTrafficLocal = true
	c.addSlice("backend", "local", "", 8080, api1, api2+"@node-2")
	c.addService("backend", "cluster", "", 80, clusterIP)
	c.addSlice("backend", "cluster", "", 8080, api1, api2+"@node-2")

	ext := c.addService("backend", "ext", "https", 443, extCIP)
	ext.ExternalIPs = addrsOf(extIP)
	c.addSlice("backend", "ext", "https", 8443, api1)
	return c
}

// verdictWant is the part of a ServiceVerdict a test states: "service:port"
// with the family's first frontend, allowed, and the endpoint lists.
type verdictWant struct {
	service  string // "backend/api"
	frontend string // the first frontend, selects the family
	allowed  bool
	allow    []string // allowed endpoints, addr:port
	deny     []string // denied endpoints
}

func TestCompileServices(t *testing.T) {
	tests := []struct {
		name     string
		egress   string // the client's egress rules
		probes   []probe
		verdicts []verdictWant
		// noVerdict are services that must have no verdict at all.
		noVerdict []string
	}{
		{
			name:   "allowed: every endpoint allowed on its target port",
			egress: `[{to: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: backend}}, podSelector: {matchLabels: {app: api}}}], ports: [{port: 8080}, {port: 9090}]}]`,
			probes: []probe{
				tcp("app/client", apiIP, 80, true),
				tcp("app/client", apiIP, 8080, false), // the target port is not a service port
				tcp("app/client", apiIP, 81, false),
				tcp("app/client", dbIP, 15432, false),
				tcp("app/client", "backend/api-1", 8080, true), // direct traffic as before
			},
			verdicts: []verdictWant{
				{"backend/api", apiIP, true, []string{api1 + ":8080", api2 + ":8080", api3 + ":9090"}, nil},
				{"backend/db", dbIP, false, nil, []string{db1 + ":5432"}},
			},
		},
		{
			name:   "denied: no endpoint allowed",
			egress: `[{to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}], ports: [{port: 5432}]}]`,
			probes: []probe{
				tcp("app/client", apiIP, 80, false),
				tcp("app/client", dbIP, 15432, true), // service port 15432, target port 5432
				tcp("app/client", dbIP, 5432, false),
				tcp("app/client", "backend/db", 5432, true),
				tcp("app/client", "backend/api-1", 8080, false),
			},
			verdicts: []verdictWant{
				{"backend/api", apiIP, false, nil, []string{api1 + ":8080", api2 + ":8080", api3 + ":9090"}},
				{"backend/db", dbIP, true, []string{db1 + ":5432"}, nil},
			},
		},
		{
			name:   "partly allowed stays closed and names both groups",
			egress: `[{to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}], ports: [{port: 8080}]}]`,
			probes: []probe{
				tcp("app/client", apiIP, 80, false),
				tcp("app/client", "backend/api-1", 8080, true),
				tcp("app/client", "backend/api-3", 9090, false),
			},
			verdicts: []verdictWant{
				{"backend/api", apiIP, false, []string{api1 + ":8080", api2 + ":8080"}, []string{api3 + ":9090"}},
			},
		},
		{
			name:   "named target port resolves per endpoint pod",
			egress: `[{to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: api}}}], ports: [{port: http}]}]`,
			probes: []probe{
				tcp("app/client", apiIP, 80, true),
				tcp("app/client", "backend/api-3", 9090, true),
				tcp("app/client", "backend/api-3", 8080, false),
			},
			verdicts: []verdictWant{
				{"backend/api", apiIP, true, []string{api1 + ":8080", api2 + ":8080", api3 + ":9090"}, nil},
			},
		},
		{
			name:   "a rule on the service port does not open it",
			egress: `[{to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}], ports: [{port: 15432}]}]`,
			probes: []probe{
				tcp("app/client", dbIP, 15432, false),
				tcp("app/client", "backend/db", 15432, true),
			},
			verdicts: []verdictWant{{"backend/db", dbIP, false, nil, []string{db1 + ":5432"}}},
		},
		{
			name:   "ipBlock 0.0.0.0/0 except the pod CIDR opens no Service",
			egress: `[{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [` + podCIDR + `]}}]}]`,
			probes: []probe{
				tcp("app/client", outsideIP, 443, true),
				tcp("app/client", "8.8.8.8", 53, true),
				tcp("app/client", apiIP, 80, false),
				tcp("app/client", dbIP, 15432, false),
				tcp("app/client", unusedSvc, 80, false), // inside the Service CIDR
				tcp("app/client", extCIP, 443, false),
				tcp("app/client", extIP, 443, false), // the external IP on its service port
				tcp("app/client", extIP, 22, true),   // ... is an ordinary address on other ports
				tcp("app/client", "backend/api-1", 8080, false),
			},
			verdicts: []verdictWant{{"backend/ext", extCIP, false, nil, []string{api1 + ":8443"}}},
		},
		{
			name:   "ipBlock over the pod CIDR opens Services with endpoints",
			egress: `[{to: [{ipBlock: {cidr: ` + podCIDR + `}}]}]`,
			probes: []probe{
				tcp("app/client", apiIP, 80, true),
				tcp("app/client", dbIP, 15432, true),
				tcp("app/client", extIP, 443, true),
				tcp("app/client", emptyIP, 80, false),
				tcp("app/client", outsideIP, 443, false),
				tcp("app/client", dualIP6, 80, false), // no IPv6 ipBlock
			},
			verdicts: []verdictWant{
				{"backend/dual", dualIP4, true, []string{api1 + ":8080"}, nil},
				{"backend/dual", dualIP6, false, nil, []string{"[" + api1v6 + "]:8080"}},
			},
		},
		{
			name:   "Any rule with every port opens Services that have ready endpoints",
			egress: `[{}]`,
			probes: []probe{
				tcp("app/client", apiIP, 80, true),
				tcp("app/client", dbIP, 15432, true),
				tcp("app/client", dualIP4, 80, true),
				tcp("app/client", dualIP6, 80, true),
				tcp("app/client", extCIP, 443, true),
				tcp("app/client", extIP, 443, true),
				tcp("app/client", localIP, 80, true),
				tcp("app/client", emptyIP, 80, false),   // no ready endpoints
				tcp("app/client", apiIP, 443, false),    // not a service port
				tcp("app/client", unusedSvc, 80, false), // no Service
				tcp("app/client", outsideIP, 80, true),
			},
			verdicts: []verdictWant{
				{"backend/empty", emptyIP, false, nil, nil},
				{"backend/api", apiIP, true, []string{api1 + ":8080", api2 + ":8080", api3 + ":9090"}, nil},
			},
			noVerdict: []string{"backend/headless"},
		},
		{
			name:   "Any rule on the target port opens, on the service port does not",
			egress: `[{ports: [{port: 8080}]}]`,
			probes: []probe{
				tcp("app/client", dualIP4, 80, true),
				tcp("app/client", dualIP6, 80, true),
				tcp("app/client", apiIP, 80, false), // api-3 listens on 9090
				tcp("app/client", "10.204.200.7", 8080, true),
				tcp("app/client", unusedSvc, 8080, false),
			},
		},
		{
			name:   "IPv6 ClusterIP judged by the IPv6 endpoints",
			egress: `[{to: [{ipBlock: {cidr: "fd00:204::2:0/112"}}], ports: [{port: 8080}]}]`,
			probes: []probe{
				tcp("app/client", dualIP6, 80, true),
				tcp("app/client", dualIP4, 80, false),
				tcp("app/client", "backend/api-1@6", 8080, true),
			},
			verdicts: []verdictWant{
				{"backend/dual", dualIP6, true, []string{"[" + api1v6 + "]:8080"}, nil},
				{"backend/dual", dualIP4, false, nil, []string{api1 + ":8080"}},
			},
		},
		{
			name:   "internalTrafficPolicy Local counts only endpoints on the pod's node",
			egress: `[{to: [{ipBlock: {cidr: ` + api1 + `/32}}], ports: [{port: 8080}]}]`,
			probes: []probe{
				tcp("app/client", localIP, 80, true),
				tcp("app/client", clusterIP, 80, false), // api-2 on node-2 counts there
			},
			verdicts: []verdictWant{
				{"backend/local", localIP, true, []string{api1 + ":8080"}, nil},
				{"backend/cluster", clusterIP, false, []string{api1 + ":8080"}, []string{api2 + ":8080"}},
			},
		},
		{
			name:      "headless Service needs nothing",
			egress:    `[{to: [{ipBlock: {cidr: ` + api1 + `/32}}], ports: [{port: 8080}]}]`,
			probes:    []probe{tcp("app/client", "backend/api-1", 8080, true), tcp("app/client", "backend/api-2", 8080, false)},
			noVerdict: []string{"backend/headless"},
		},
		{
			name:   "default deny egress: every Service closed, no guard",
			egress: `[]`,
			probes: []probe{tcp("app/client", apiIP, 80, false), tcp("app/client", outsideIP, 80, false)},
			verdicts: []verdictWant{
				{"backend/api", apiIP, false, nil, []string{api1 + ":8080", api2 + ":8080", api3 + ":9090"}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := serviceCluster()
			w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: client-egress, namespace: app}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: `+tt.egress+`}`)...)
			if len(w.result.Problems) > 0 {
				t.Fatalf("problems: %v", w.result.Problems)
			}
			w.check(t, tt.probes)
			key := localKey(c.pod(t, "app/client"))
			verdicts := w.result.Services[key]
			for _, want := range tt.verdicts {
				v := findVerdict(verdicts, want.service, want.frontend)
				if v == nil {
					t.Errorf("no verdict for %s at %s", want.service, want.frontend)
					continue
				}
				if v.Allowed != want.allowed || !slices.Equal(addrPortStrings(v.AllowedEndpoints), want.allow) ||
					!slices.Equal(addrPortStrings(v.DeniedEndpoints), want.deny) {
					t.Errorf("verdict %s at %s: allowed=%v allow=%v deny=%v (%s), want allowed=%v allow=%v deny=%v",
						want.service, want.frontend, v.Allowed, addrPortStrings(v.AllowedEndpoints), addrPortStrings(v.DeniedEndpoints),
						v.Reason, want.allowed, want.allow, want.deny)
				}
			}
			for _, svc := range tt.noVerdict {
				for _, v := range verdicts {
					if v.Service == svc {
						t.Errorf("verdict for %s: %+v", svc, v)
					}
				}
			}
			checkServiceVerdicts(t, w.result)
		})
	}
}

func findVerdict(verdicts []ServiceVerdict, service, frontend string) *ServiceVerdict {
	for i, v := range verdicts {
		if v.Service == service && slices.Contains(v.Frontends, netip.MustParseAddr(frontend)) {
			return &verdicts[i]
		}
	}
	return nil
}

func addrPortStrings(aps []netip.AddrPort) []string {
	var out []string
	for _, ap := range aps {
		out = append(out, ap.String())
	}
	return out
}

// checkServiceVerdicts checks every verdict against the evaluator: a
// frontend is reachable exactly when the verdict allows it, and a verdict
// allows exactly when there are endpoints and the pod's egress would let a
// connection to each of them through directly.
func checkServiceVerdicts(t *testing.T, res *Result) {
	t.Helper()
	for key, verdicts := range res.Services {
		fw := res.Firewalls[key]
		for _, v := range verdicts {
			eps := slices.Concat(v.AllowedEndpoints, v.DeniedEndpoints)
			want := len(eps) > 0
			for _, ep := range eps {
				direct := directionAllows(Direction{Isolated: true, Rules: fw.Egress.Rules}, ep.Addr(), int32(ep.Port()), v.Port.Protocol)
				if direct != slices.Contains(v.AllowedEndpoints, ep) {
					t.Errorf("%s: %s endpoint %s: listed allowed=%v, the rules say %v", key, v.Service, ep, !direct, direct)
				}
				want = want && direct
			}
			if v.Allowed != want {
				t.Errorf("%s: %s port %d: Allowed=%v, endpoints say %v", key, v.Service, v.Port.Port, v.Allowed, want)
			}
			for _, fe := range v.Frontends {
				if got := directionAllows(fw.Egress, fe, v.Port.Port, v.Port.Protocol); got != v.Allowed {
					t.Errorf("%s: %s at %s:%d reachable=%v, verdict %v", key, v.Service, fe, v.Port.Port, got, v.Allowed)
				}
			}
		}
	}
}

func TestCompileServicesFirewallShape(t *testing.T) {
	c := serviceCluster()
	w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: client-egress, namespace: app}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{}]}
---
metadata: {name: api-ingress, namespace: backend}
spec: {podSelector: {matchLabels: {app: api}}, ingress: [{}]}`)...)
	fw := w.firewall(t, "app/client")
	// One rule per service port: every allowed frontend on TCP 80 shares it.
	wantServices := []Rule{
		// backend/local and backend/cluster are adjacent: one /31.
		{Peer: Peer{Prefixes: prefixes(apiIP+"/32", dualIP4+"/32", localIP+"/31", dualIP6+"/128")}, Ports: []Port{{Protocol: "TCP", Port: 80}}},
		{Peer: Peer{Prefixes: prefixes(extCIP+"/32", extIP+"/32")}, Ports: []Port{{Protocol: "TCP", Port: 443}}},
		{Peer: Peer{Prefixes: prefixes(dbIP + "/32")}, Ports: []Port{{Protocol: "TCP", Port: 15432}}},
	}
	if !reflect.DeepEqual(fw.Egress.Services, wantServices) {
		t.Errorf("services:\n got %+v\nwant %+v", fw.Egress.Services, wantServices)
	}
	// The ClusterIPs are inside the Service CIDRs; the external IP is
	// guarded on its service port only.
	wantGuard := []Rule{
		{Peer: Peer{Prefixes: prefixes(serviceV4, serviceV6)}},
		{Peer: Peer{Prefixes: prefixes(extIP + "/32")}, Ports: []Port{{Protocol: "TCP", Port: 443}}},
	}
	if !reflect.DeepEqual(fw.Egress.ServiceGuard, wantGuard) {
		t.Errorf("guard:\n got %+v\nwant %+v", fw.Egress.ServiceGuard, wantGuard)
	}
	if fw.Egress.Rules == nil || !fw.Egress.Rules[0].Peer.Any {
		t.Errorf("rules: %+v", fw.Egress.Rules)
	}
	// Pods whose egress is not isolated get nothing, and no verdicts.
	api := w.firewall(t, "backend/api-1")
	if api.Egress.Isolated || len(api.Egress.Services) > 0 || len(api.Egress.ServiceGuard) > 0 {
		t.Errorf("api-1 egress: %+v", api.Egress)
	}
	if _, ok := w.result.Services[localKey(c.pod(t, "backend/api-1"))]; ok {
		t.Errorf("verdicts for a pod whose egress is open")
	}
	if !reflect.DeepEqual(w.firewall(t, "backend/db"), &Firewall{}) {
		t.Errorf("db is selected by no policy but has a firewall: %+v", w.firewall(t, "backend/db"))
	}
}

func TestCompileServicesGuardWithoutServiceCIDRs(t *testing.T) {
	c := serviceCluster()
	c.serviceCIDRs = nil
	w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: client-egress, namespace: app}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0}}]}]}`)...)
	guard := w.firewall(t, "app/client").Egress.ServiceGuard
	want := prefixes(apiIP+"/32", dbIP+"/32", emptyIP+"/32", dualIP4+"/32", localIP+"/31", extCIP+"/32", dualIP6+"/128")
	if len(guard) == 0 || !reflect.DeepEqual(guard[0], Rule{Peer: Peer{Prefixes: want}}) {
		t.Errorf("guard: %+v, want every ClusterIP %v", guard, want)
	}
	w.check(t, []probe{
		tcp("app/client", apiIP, 80, true),
		tcp("app/client", unusedSvc, 80, true), // not known to be a Service address
		tcp("app/client", emptyIP, 80, false),
	})
	checkServiceVerdicts(t, w.result)
}

// TestCompileServicesEndpointsChange follows a Service through endpoint
// churn under one live policy: each step recompiles.
func TestCompileServicesEndpointsChange(t *testing.T) {
	policy := parsePolicies(t, `
metadata: {name: client-egress, namespace: app}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{to: [{podSelector: {matchLabels: {app: api}}, namespaceSelector: {}}], ports: [{port: 8080}]}]}`)
	steps := []struct {
		name      string
		endpoints []string // of backend/api's 8080 slice
		allow     bool
	}{
		{"two allowed endpoints", []string{api1, api2}, true},
		{"scaled to zero", nil, false},
		{"one not ready", []string{"10.204.2.1!"}, false},
		{"back to one", []string{api1}, true},
		{"an endpoint that is no selected pod", []string{api1, "10.204.2.77"}, false},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			c := serviceCluster()
			c.slices = slices.DeleteFunc(c.slices, func(es *EndpointSlice) bool { return es.Service == "api" })
			c.addSlice("backend", "api", "http", 8080, step.endpoints...)
			w := compileCluster(t, c, policy...)
			w.check(t, []probe{tcp("app/client", apiIP, 80, step.allow)})
			checkServiceVerdicts(t, w.result)
		})
	}
}

func TestCompileServicesProblems(t *testing.T) {
	c := serviceCluster()
	c.services = append(c.services, &Service{Namespace: "backend", Name: "bad", ClusterIPs: addrsOf("10.204.64.70"),
		Ports: []ServicePort{{Protocol: "ICMP", Port: 1}, {Protocol: corev1.ProtocolTCP, Port: 70000}, {Port: 80}}})
	c.addSlice("backend", "bad", "", 8080, api1)
	c.services = append(c.services, nil)
	c.slices = append(c.slices, nil)
	w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: client-egress, namespace: app}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{}]}`)...)
	var msgs []string
	for _, err := range w.result.Problems {
		msgs = append(msgs, err.Error())
	}
	want := []string{
		`service backend/bad: spec.ports[0]: unusable protocol "ICMP" or port 1`,
		`service backend/bad: spec.ports[1]: unusable protocol "TCP" or port 70000`,
	}
	if !slices.Equal(msgs, want) {
		t.Errorf("problems:\n got %q\nwant %q", msgs, want)
	}
	// The usable port (protocol defaulted to TCP) still works.
	w.check(t, []probe{tcp("app/client", "10.204.64.70", 80, true), tcp("app/client", "10.204.64.70", 1, false)})
}

// TestCompileServicesShared checks that pods with the same egress rules share
// one outcome and that the guard is shared by every firewall.
func TestCompileServicesShared(t *testing.T) {
	c := serviceCluster()
	c.addPod("app", "client-2", labelsOf("app", "client"), nil, "10.204.1.2")
	w := compileCluster(t, c, parsePolicies(t, `
metadata: {name: client-egress, namespace: app}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{ports: [{port: 8080}]}]}`)...)
	a, b := w.firewall(t, "app/client"), w.firewall(t, "app/client-2")
	if &a.Egress.Services[0] != &b.Egress.Services[0] || &a.Egress.ServiceGuard[0] != &b.Egress.ServiceGuard[0] {
		t.Errorf("two pods with the same rules do not share their service rules and guard")
	}
}

// TestCompileServicesOrderIndependent checks that the input order of
// Services, EndpointSlices and Service CIDRs, and an endpoint listed twice,
// change nothing.
func TestCompileServicesOrderIndependent(t *testing.T) {
	policies := parsePolicies(t, `
metadata: {name: client-egress, namespace: app}
spec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{ports: [{port: 8080}, {port: 9090}]}]}`)
	c := serviceCluster()
	want := compileCluster(t, c, policies...).result
	slices.Reverse(c.services)
	slices.Reverse(c.slices)
	slices.Reverse(c.serviceCIDRs)
	c.addSlice("backend", "api", "http", 8080, api2) // api-2 again, in another slice
	got := compileCluster(t, c, policies...).result
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reordered input compiled differently:\n got %+v\nwant %+v", got.Services, want.Services)
	}
}
