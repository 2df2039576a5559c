package netpol

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"runtime/debug"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// The suites, named as upstream renders them (Describe + Context).
const (
	SuiteLegacy     = "[sig-network] NetworkPolicy [LinuxOnly] NetworkPolicy between server and client"
	SuiteNetpol     = "[sig-network] Netpol NetworkPolicy between server and client"
	SuiteNetpolUDP  = "[sig-network] Netpol [LinuxOnly] NetworkPolicy between server and client using UDP"
	SuiteNetpolSCTP = "[sig-network] Netpol [Feature:SCTPConnectivity] [LinuxOnly] NetworkPolicy between server and client using SCTP"
)

// namespacePrefix is the framework base name of each suite, the prefix of its
// namespaces.
var namespacePrefix = map[string]string{
	SuiteLegacy:     "network-policy",
	SuiteNetpol:     "netpol",
	SuiteNetpolUDP:  "udp-network-policy",
	SuiteNetpolSCTP: "sctp-network-policy",
}

// Test is one upstream test. Name is the verbatim It string (release-1.18 for
// the legacy suite, which carries its feature tag inline; master for the
// others).
type Test struct {
	Suite string
	Name  string
	Run   func(ctx context.Context, t *T) error
}

// FullName is the name as sonobuoy lists it: Suite, Name and, for the
// truth-table suites, the feature tag.
func (t Test) FullName() string {
	if t.Suite == SuiteLegacy {
		return t.Suite + " " + t.Name
	}
	return t.Suite + " " + t.Name + " [Feature:NetworkPolicy]"
}

// RunTest runs one test against c: the test sets up its model, changes
// policies and labels, and validates reachability; RunTest tears the model
// down afterwards, also when the test fails.
func RunTest(ctx context.Context, c Cluster, test Test, opts Options) (err error) {
	opts = opts.withDefaults()
	if !opts.Family.Valid() {
		return fmt.Errorf("invalid IP family %v", opts.Family)
	}
	if test.Run == nil {
		return fmt.Errorf("test %q has no body", test.Name)
	}
	suffix := opts.NamespaceSuffix
	if suffix == "" {
		suffix = randomSuffix()
	}
	t := &T{Cluster: c, Options: opts, suite: test.Suite, suffix: suffix}
	defer func() {
		if t.attemptedSetup {
			if terr := c.Teardown(context.WithoutCancel(ctx)); terr != nil {
				err = errors.Join(err, fmt.Errorf("teardown: %w", terr))
			}
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("test panicked: %v\n%s", r, debug.Stack())
		}
	}()
	if err := test.Run(ctx, t); err != nil {
		return err
	}
	return t.Err()
}

// randomSuffix returns 5 random lowercase letters and digits, as the e2e
// framework appends to namespace names.
func randomSuffix() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// T is what a test body drives. Its actions record the first failure and do
// nothing after it, so a body reads like its upstream original, a straight
// line of actions and validations, and returns t.Err() at the end.
type T struct {
	Cluster Cluster
	Options Options

	suite          string
	suffix         string
	model          *Model
	attemptedSetup bool
	validations    int
	err            error
}

// Err returns the first failure.
func (t *T) Err() error { return t.err }

// Fail records err as the test's failure unless one is already recorded.
func (t *T) Fail(err error) {
	if err != nil && t.err == nil {
		t.err = err
	}
}

// Logf logs through Options.Logf.
func (t *T) Logf(format string, args ...any) { t.Options.Logf(format, args...) }

// ready reports whether an action may run: nothing failed yet and the test
// has set up its model. An action before the setup is a failure.
func (t *T) ready(action string) bool {
	if t.err != nil {
		return false
	}
	if t.model == nil {
		t.Fail(fmt.Errorf("%s: the test has not set up a model", action))
		return false
	}
	return true
}

// Model returns the model set up by the test, or nil.
func (t *T) Model() *Model { return t.model }

// setup builds the model and creates it in the cluster. On failure it still
// returns the model, so that the rest of the body can run (as no-ops).
func (t *T) setup(ctx context.Context, spec modelSpec) *Model {
	spec.prefix = namespacePrefix[t.suite]
	if spec.prefix == "" {
		spec.prefix = "netpol"
	}
	spec.suffix = t.suffix
	spec.family = t.Options.Family
	m, err := newModel(spec)
	if err != nil {
		t.Fail(fmt.Errorf("build model: %w", err))
		return &Model{Family: t.Options.Family}
	}
	if t.err != nil {
		return m
	}
	if t.model != nil {
		t.Fail(errors.New("the test set up a second model"))
		return m
	}
	t.model = m
	t.attemptedSetup = true
	if err := t.Cluster.Setup(ctx, m); err != nil {
		t.Fail(fmt.Errorf("set up model: %w", err))
	}
	return m
}

// InitializeResources sets up the classic 9-pod model (namespaces x, y, z
// with pods a, b, c, labelled pod=<name>, serving every port×protocol on
// container ports serve-<port>-<proto>) and, as upstream waitForHTTPServers,
// checks that every pod reaches every other on each port and protocol.
func (t *T) InitializeResources(ctx context.Context, protocols []corev1.Protocol, ports []int32) *Model {
	m := t.setup(ctx, modelSpec{
		ports:       ports,
		protocols:   protocols,
		portName:    truthTablePortName,
		podLabelKey: "pod",
		pods:        []string{"x/a", "x/b", "x/c", "y/a", "y/b", "y/c", "z/a", "z/b", "z/c"},
	})
	for _, port := range ports {
		for _, proto := range protocols {
			if t.err != nil {
				return m
			}
			if err := Validate(ctx, t.Cluster, m, TestCase{ToPort: int(port), Protocol: proto, Reachability: NewReachability(m.AllPodRefs(), true)}, t.Options); err != nil {
				t.Fail(fmt.Errorf("wait for servers: %w", err))
			}
		}
	}
	return m
}

// namespacesXYZ returns the real names of x, y and z (upstream
// getK8sNamespaces).
func namespacesXYZ(m *Model) (nsX, nsY, nsZ string) {
	return m.NS("x"), m.NS("y"), m.NS("z")
}

// LegacyServer sets up the release-1.18 layout: namespace a (the framework's
// namespace) with the pod "server", plus the given "base/pod" clients in
// namespaces a, b, c. Pods are labelled pod-name=<name> and serve TCP 80 and
// 81 on container ports serve-80 and serve-81; namespaces b and c carry
// ns-name=<their real name>. As the upstream BeforeEach, it then checks that
// client-can-connect-80 and -81 reach the server on 80 and 81.
func (t *T) LegacyServer(ctx context.Context, clients ...string) *Model {
	pods := append([]string{"a/server", "a/client-can-connect-80", "a/client-can-connect-81"}, clients...)
	m := t.setup(ctx, modelSpec{
		ports:       []int32{80, 81},
		protocols:   []corev1.Protocol{corev1.ProtocolTCP},
		portName:    legacyPortName,
		podLabelKey: "pod-name",
		namespaceLabels: func(base, name string) map[string]string {
			if base == "a" {
				return nil
			}
			return map[string]string{"ns-name": name}
		},
		pods: pods,
	})
	nsA := m.NS("a")
	t.TestCanConnect(ctx, Ref(nsA, "client-can-connect-80"), Ref(nsA, "server"), 80)
	t.TestCanConnect(ctx, Ref(nsA, "client-can-connect-81"), Ref(nsA, "server"), 81)
	return m
}

// TestCanConnect validates that from reaches to on TCP port (upstream
// testCanConnect, with the Validate retry semantics).
func (t *T) TestCanConnect(ctx context.Context, from, to PodRef, port int) {
	t.expectConnect(ctx, from, to, port, true)
}

// TestCannotConnect validates that from does not reach to on TCP port
// (upstream testCannotConnect).
func (t *T) TestCannotConnect(ctx context.Context, from, to PodRef, port int) {
	t.expectConnect(ctx, from, to, port, false)
}

func (t *T) expectConnect(ctx context.Context, from, to PodRef, port int, connected bool) {
	if !t.ready("probe") {
		return
	}
	r := newReachability([]PodRef{from}, []PodRef{to}, connected)
	if err := Validate(ctx, t.Cluster, t.model, TestCase{ToPort: port, Protocol: corev1.ProtocolTCP, Reachability: r}, t.Options); err != nil {
		t.Fail(fmt.Errorf("%s -> %s:%d should connect=%t: %w", from, to, port, connected, err))
	}
}

// ValidateOrFail validates the test case's matrix (upstream ValidateOrFail).
func (t *T) ValidateOrFail(ctx context.Context, tc TestCase) {
	if !t.ready("validate") {
		return
	}
	t.validations++
	if err := Validate(ctx, t.Cluster, t.model, tc, t.Options); err != nil {
		t.Fail(fmt.Errorf("validation #%d: %w", t.validations, err))
	}
}

// CreatePolicy creates np in namespace ns.
func (t *T) CreatePolicy(ctx context.Context, np *networkingv1.NetworkPolicy, ns string) {
	if !t.ready("create networkpolicy") {
		return
	}
	np = np.DeepCopy()
	np.Namespace = ns
	if err := t.Cluster.CreatePolicy(ctx, np); err != nil {
		t.Fail(fmt.Errorf("create networkpolicy %s/%s: %w", ns, np.Name, err))
	}
}

// UpdatePolicy replaces the policy of np's name in namespace ns by np.
func (t *T) UpdatePolicy(ctx context.Context, np *networkingv1.NetworkPolicy, ns string) {
	if !t.ready("update networkpolicy") {
		return
	}
	np = np.DeepCopy()
	np.Namespace = ns
	if err := t.Cluster.UpdatePolicy(ctx, np); err != nil {
		t.Fail(fmt.Errorf("update networkpolicy %s/%s: %w", ns, np.Name, err))
	}
}

// DeletePolicy deletes the policy ns/name.
func (t *T) DeletePolicy(ctx context.Context, ns, name string) {
	if !t.ready("delete networkpolicy") {
		return
	}
	if err := t.Cluster.DeletePolicy(ctx, ns, name); err != nil {
		t.Fail(fmt.Errorf("delete networkpolicy %s/%s: %w", ns, name, err))
	}
}

// CleanNetworkPolicies deletes every policy of the model's namespaces
// (upstream k8s.cleanNetworkPolicies).
func (t *T) CleanNetworkPolicies(ctx context.Context) {
	if !t.ready("delete all networkpolicies") {
		return
	}
	if err := t.Cluster.DeleteAllPolicies(ctx); err != nil {
		t.Fail(fmt.Errorf("delete all networkpolicies: %w", err))
	}
}

// AddNamespaceLabel sets one label of namespace ns.
func (t *T) AddNamespaceLabel(ctx context.Context, ns, key, value string) {
	if !t.ready("label namespace") {
		return
	}
	n := t.model.Namespace(ns)
	if n == nil {
		t.Fail(fmt.Errorf("add label to namespace %s: not in the model", ns))
		return
	}
	labels := copyLabels(n.Labels)
	labels[key] = value
	if err := t.Cluster.SetNamespaceLabels(ctx, ns, labels); err != nil {
		t.Fail(fmt.Errorf("set labels of namespace %s: %w", ns, err))
		return
	}
	n.Labels = labels
}

// AddPodLabels adds labels to pod ns/name, keeping its other labels.
func (t *T) AddPodLabels(ctx context.Context, ns, name string, labels map[string]string) {
	if !t.ready("label pod") {
		return
	}
	p := t.model.Pod(Ref(ns, name))
	if p == nil {
		t.Fail(fmt.Errorf("add labels to pod %s/%s: not in the model", ns, name))
		return
	}
	all := copyLabels(p.Labels)
	maps.Copy(all, labels)
	t.SetPodLabels(ctx, ns, name, all)
}

// SetPodLabels replaces the labels of pod ns/name.
func (t *T) SetPodLabels(ctx context.Context, ns, name string, labels map[string]string) {
	if !t.ready("label pod") {
		return
	}
	p := t.model.Pod(Ref(ns, name))
	if p == nil {
		t.Fail(fmt.Errorf("set labels of pod %s/%s: not in the model", ns, name))
		return
	}
	labels = copyLabels(labels)
	if err := t.Cluster.SetPodLabels(ctx, ns, name, labels); err != nil {
		t.Fail(fmt.Errorf("set labels of pod %s/%s: %w", ns, name, err))
		return
	}
	p.Labels = labels
}

// PodIP returns the IP of pod ns/name in the model's family.
func (t *T) PodIP(ns, name string) netip.Addr {
	if !t.ready("get pod IP") {
		return netip.Addr{}
	}
	ip, ok := t.Cluster.PodIP(ns, name, t.model.Family)
	if !ok || !ip.IsValid() {
		t.Fail(fmt.Errorf("pod %s/%s has no %v address", ns, name, t.model.Family))
		return netip.Addr{}
	}
	return ip
}
