package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
)

const (
	testNode    = "node-a"
	testNetwork = "podnet"
)

// testNodeAddr is what the fake node reports as its own address.
var testNodeAddr = netip.MustParseAddr("10.250.0.1")

// addedAt is the ADD time of every test attachment (UTC, so that it survives
// the checkpoint unchanged).
var addedAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// attachmentFor returns the CNI attachment of pod shop/name with address ip.
func attachmentFor(name, ip string) checkpoint.Attachment {
	return checkpoint.Attachment{
		Network:     testNetwork,
		ContainerID: "ctr-" + name,
		IfName:      "eth0",
		Namespace:   "shop",
		Name:        name,
		UID:         "uid-" + name,
		Netns:       "/run/netns/pw-syncer-" + name,
		IPs:         []string{ip + "/32"},
		Gateways:    []string{"10.1.0.1"},
		Added:       addedAt,
	}
}

func sourcePod(name string, labels map[string]string, ports ...policy.ContainerPort) *policy.Pod {
	return &policy.Pod{Namespace: "shop", Name: name, UID: "uid-" + name, Labels: labels, Ports: ports,
		NodeName: testNode, Phase: corev1.PodRunning}
}

// parsePolicy reads one NetworkPolicy from YAML and applies the API defaults,
// as every source does.
func parsePolicy(t *testing.T, doc string) *networkingv1.NetworkPolicy {
	t.Helper()
	np := &networkingv1.NetworkPolicy{}
	if err := yaml.UnmarshalStrict([]byte(doc), np); err != nil {
		t.Fatalf("parse policy: %v\n%s", err, doc)
	}
	policy.ApplyDefaults(np)
	return np
}

// shopState is the test cluster: web, db and client in namespace shop, and
// db accepts 5432/TCP from app=web only.
func shopState(t *testing.T) *policy.State {
	return &policy.State{
		Namespaces: []*policy.Namespace{{Name: "shop", Labels: map[string]string{"kubernetes.io/metadata.name": "shop"}}},
		Pods: []*policy.Pod{
			sourcePod("web", map[string]string{"app": "web"}),
			sourcePod("db", map[string]string{"app": "db"}, policy.ContainerPort{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432}),
			sourcePod("client", map[string]string{"app": "client"}),
		},
		Policies: []*networkingv1.NetworkPolicy{parsePolicy(t, `
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]`)},
	}
}

type testBed struct {
	sync  *Syncer
	data  *fakeDataplane
	src   *fakeSource
	store *checkpoint.Store
	// nodeAddrs is what Options.NodeAddrs returns.
	nodeAddrs []netip.Addr
}

func newTestBed(t testing.TB, state *policy.State) *testBed {
	t.Helper()
	store, err := checkpoint.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tb := &testBed{data: newFakeDataplane(), src: newFakeSource(state), store: store, nodeAddrs: []netip.Addr{testNodeAddr}}
	tb.sync = New(Options{
		NodeName:  testNode,
		Source:    tb.src,
		Data:      tb.data,
		Store:     store,
		Log:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		NodeAddrs: func() ([]netip.Addr, error) { return tb.nodeAddrs, nil },
	})
	return tb
}

// drainTrigger takes the pending trigger, if any, so that the next one is a
// test's own.
func (tb *testBed) drainTrigger() {
	select {
	case <-tb.sync.trigger:
	default:
	}
}

func (tb *testBed) add(t testing.TB, recs ...checkpoint.Attachment) {
	t.Helper()
	for _, rec := range recs {
		if err := tb.sync.Add(t.Context(), rec); err != nil {
			t.Fatalf("add %s: %v", rec.Key(), err)
		}
	}
}

// wantFirewalls compiles, independently of the syncer, the firewall every
// attachment should have: a local pod is its source pod (or, when the
// source does not know it, a pod with no labels and no ports) with the
// addresses of its CNI result, running on this node.
func wantFirewalls(state *policy.State, recs ...checkpoint.Attachment) map[string]*policy.Firewall {
	local := map[string]*policy.Pod{}
	var locals []policy.LocalPod
	for _, rec := range recs {
		key := rec.Namespace + "/" + rec.Name
		p, ok := local[key]
		if !ok {
			p = &policy.Pod{Namespace: rec.Namespace, Name: rec.Name, UID: rec.UID, Created: metav1.NewTime(rec.Added)}
			for _, sp := range state.Pods {
				if sp.Key() == key {
					cp := *sp
					p = &cp
				}
			}
			p.IPs, p.NodeName, p.Phase, p.Deleting = nil, testNode, corev1.PodRunning, false
			local[key] = p
		}
		for _, c := range rec.IPs {
			p.IPs = append(p.IPs, netip.MustParsePrefix(c).Addr())
		}
		locals = append(locals, policy.LocalPod{Key: rec.Key(), Pod: p})
	}
	var pods []*policy.Pod
	for _, sp := range state.Pods {
		if local[sp.Key()] == nil {
			pods = append(pods, sp)
		}
	}
	for _, p := range local {
		pods = append(pods, p)
	}
	res := policy.Compile(&policy.State{Namespaces: state.Namespaces, Pods: pods, Policies: state.Policies}, locals)
	return res.Firewalls
}

// wantNodeAddrs is Spec.NodeAddrs for rec: the node's address and the
// attachment's gateways, sorted.
func wantNodeAddrs(rec checkpoint.Attachment) []netip.Addr {
	addrs := []netip.Addr{testNodeAddr}
	for _, g := range rec.Gateways {
		addrs = append(addrs, netip.MustParseAddr(g))
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
}

// checkApplied fails unless the fake's last successful Apply in each
// attachment's netns is exactly the spec a fresh compile gives.
func checkApplied(t *testing.T, data *fakeDataplane, state *policy.State, recs ...checkpoint.Attachment) {
	t.Helper()
	want := wantFirewalls(state, recs...)
	for _, rec := range recs {
		got, ok := data.applied(rec.Netns)
		if !ok {
			t.Errorf("%s: nothing applied in %s", rec.Key(), rec.Netns)
			continue
		}
		wantSpec := dataplane.Spec{Pod: rec.Namespace + "/" + rec.Name, Firewall: want[rec.Key()], NodeAddrs: wantNodeAddrs(rec)}
		if !reflect.DeepEqual(got, wantSpec) {
			t.Errorf("%s: applied spec\n got %s\nwant %s", rec.Key(), describeSpec(got), describeSpec(wantSpec))
		}
	}
}

func describeSpec(s dataplane.Spec) string {
	if s.Firewall == nil {
		return fmt.Sprintf("{pod %s, no firewall, node %v}", s.Pod, s.NodeAddrs)
	}
	return fmt.Sprintf("{pod %s, ingress %+v, egress %+v, node %v}", s.Pod, s.Firewall.Ingress, s.Firewall.Egress, s.NodeAddrs)
}

// checkCheckpoint fails unless the checkpoint holds exactly recs.
func checkCheckpoint(t *testing.T, store *checkpoint.Store, recs ...checkpoint.Attachment) {
	t.Helper()
	got, err := store.Load()
	if err != nil {
		t.Fatalf("load checkpoint: %v", err)
	}
	want := slices.Clone(recs)
	slices.SortFunc(want, func(a, b checkpoint.Attachment) int { return strings.Compare(a.Key(), b.Key()) })
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("checkpoint:\n got %+v\nwant %+v", got, want)
	}
}

// checkAttached fails unless the syncer serves exactly recs.
func checkAttached(t *testing.T, s *Syncer, recs ...checkpoint.Attachment) {
	t.Helper()
	var got, want []string
	for _, v := range s.Pods() {
		got = append(got, v.Attachment.Key())
	}
	for _, rec := range recs {
		want = append(want, rec.Key())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("attachments: got %v, want %v", got, want)
	}
}

// ingressAllows reports whether the firewall lets remote reach port/TCP.
func ingressAllows(fw *policy.Firewall, remote string, port int32) bool {
	d := fw.Ingress
	if !d.Isolated {
		return true
	}
	ip := netip.MustParseAddr(remote)
	for _, r := range d.Rules {
		peerOK := r.Peer.Any
		for _, p := range r.Peer.Prefixes {
			peerOK = peerOK || p.Contains(ip)
		}
		portOK := len(r.Ports) == 0
		for _, p := range r.Ports {
			end := max(p.EndPort, p.Port)
			portOK = portOK || (p.Protocol == corev1.ProtocolTCP && (p.Port == 0 || (port >= p.Port && port <= end)))
		}
		if peerOK && portOK {
			return true
		}
	}
	return false
}

var (
	web    = attachmentFor("web", "10.1.0.10")
	db     = attachmentFor("db", "10.1.0.20")
	client = attachmentFor("client", "10.1.0.30")
)

func TestAddAppliesFirewallBeforeReturning(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web)
	checkCheckpoint(t, tb.store, web)
	tb.add(t, db)

	// No sync loop runs: what is applied was applied by Add itself.
	checkApplied(t, tb.data, shopState(t), web, db)
	got, _ := tb.data.applied(db.Netns)
	if !got.Firewall.Ingress.Isolated {
		t.Fatalf("db's ingress is not isolated: %s", describeSpec(got))
	}
	if !ingressAllows(got.Firewall, "10.1.0.10", 5432) {
		t.Errorf("db does not allow web on 5432: %s", describeSpec(got))
	}
	if ingressAllows(got.Firewall, "10.1.0.10", 80) || ingressAllows(got.Firewall, "10.1.0.30", 5432) {
		t.Errorf("db allows more than web on 5432: %s", describeSpec(got))
	}
	checkCheckpoint(t, tb.store, web, db)
	checkAttached(t, tb.sync, web, db)
	if n := tb.src.lookups; n != 2 {
		t.Errorf("source lookups = %d, want one per ADD", n)
	}
}

func TestAddPodUnknownToSourceHasNoLabels(t *testing.T) {
	state := shopState(t)
	state.Policies = append(state.Policies,
		// Selects every pod without an app label: an unknown pod is one.
		parsePolicy(t, `
metadata: {name: unlabeled-no-egress, namespace: shop}
spec:
  podSelector: {matchExpressions: [{key: app, operator: DoesNotExist}]}
  policyTypes: [Egress]`),
		// Would select the pod by name if the syncer made up labels.
		parsePolicy(t, `
metadata: {name: ghost-ingress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: ghost}}`))
	tb := newTestBed(t, state)
	ghost := attachmentFor("ghost", "10.1.0.40")
	tb.add(t, ghost)

	checkApplied(t, tb.data, state, ghost)
	got, _ := tb.data.applied(ghost.Netns)
	if !got.Firewall.Egress.Isolated || got.Firewall.Ingress.Isolated {
		t.Errorf("unknown pod: want egress isolated (no labels), ingress open; got %s", describeSpec(got))
	}
	if want := []string{"shop/unlabeled-no-egress"}; !slices.Equal(got.Firewall.Egress.Policies, want) {
		t.Errorf("egress policies = %v, want %v", got.Firewall.Egress.Policies, want)
	}
	checkCheckpoint(t, tb.store, ghost)
}

func TestAddUsesPodTheLookupFound(t *testing.T) {
	// The lookup knows the pod before the snapshot does: its labels must
	// count, or the pod would run with no isolation until the snapshot
	// catches up.
	state := shopState(t)
	tb := newTestBed(t, state)
	late := sourcePod("db2", map[string]string{"app": "db"})
	tb.src.lookupOnly["shop/db2"] = late
	db2 := attachmentFor("db2", "10.1.0.21")
	tb.add(t, web, db2)
	tb.sync.SyncAll(t.Context())

	got, _ := tb.data.applied(db2.Netns)
	if !got.Firewall.Ingress.Isolated || !ingressAllows(got.Firewall, "10.1.0.10", 5432) || ingressAllows(got.Firewall, "10.1.0.30", 5432) {
		t.Errorf("db2 was not compiled with the labels the lookup returned: %s", describeSpec(got))
	}

	// Once the snapshot has the pod, the snapshot decides: here it
	// relabels it, and the firewall follows.
	next := shopState(t)
	next.Pods = append(next.Pods, sourcePod("db2", map[string]string{"app": "cache"}))
	tb.src.setState(next)
	tb.sync.SyncAll(t.Context())
	checkApplied(t, tb.data, next, web, db2)
	if got, _ := tb.data.applied(db2.Netns); got.Firewall.Isolated() {
		t.Errorf("db2 relabelled app=cache is still isolated: %s", describeSpec(got))
	}
}

func TestAddLookupErrorIsUnavailable(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	lookupErr := errors.New("apiserver unreachable")
	tb.src.setLookupErr(lookupErr)
	err := tb.sync.Add(t.Context(), db)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, lookupErr) {
		t.Fatalf("Add = %v, want an error wrapping ErrUnavailable and the lookup error", err)
	}
	if n := tb.data.count("apply", ""); n != 0 {
		t.Errorf("%d applies after a failed lookup, want none", n)
	}
	checkAttached(t, tb.sync)
	checkCheckpoint(t, tb.store)
}

func TestAddInvalidRecord(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	bad := db
	bad.IPs = []string{"10.1.0.20"} // not CIDR
	if err := tb.sync.Add(t.Context(), bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Add = %v, want ErrInvalid", err)
	}
	if n := tb.data.count("apply", ""); n != 0 {
		t.Errorf("%d applies for an invalid record", n)
	}
}

func TestAddApplyFailure(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	boom := errors.New("iptables-nft-restore: exit status 4")
	tb.data.failApply(db.Netns, boom)
	err := tb.sync.Add(t.Context(), db)
	if !errors.Is(err, boom) {
		t.Fatalf("Add = %v, want the apply error", err)
	}
	views := tb.sync.Pods()
	if len(views) != 1 || !errors.Is(views[0].Err, boom) || views[0].Firewall != nil {
		t.Errorf("view after a failed ADD = %+v, want the error and no firewall in force", views)
	}
}

func TestAddTwice(t *testing.T) {
	tests := []struct {
		name   string
		second checkpoint.Attachment
	}{
		{"same netns", db},
		{"new netns and address", func() checkpoint.Attachment {
			a := db
			a.Netns = "/run/netns/pw-syncer-db-again"
			a.IPs = []string{"10.1.0.22/32"}
			return a
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestBed(t, shopState(t))
			tb.add(t, web, db, tt.second)
			checkAttached(t, tb.sync, web, tt.second)
			checkCheckpoint(t, tb.store, web, tt.second)
			checkApplied(t, tb.data, shopState(t), web, tt.second)
			views := tb.sync.Pods()
			if v := views[0]; v.Attachment.Name != "db" || v.Attachment.Netns != tt.second.Netns || !slices.Equal(v.Attachment.IPs, tt.second.IPs) {
				t.Errorf("view = %+v, want the second ADD's record", v.Attachment)
			}
			forgets := tb.data.count("forget", db.Netns)
			if tt.second.Netns != db.Netns && forgets != 1 {
				t.Errorf("old netns forgotten %d times, want once", forgets)
			}
			if tt.second.Netns == db.Netns && forgets != 0 {
				t.Errorf("netns forgotten %d times on a repeated ADD, want 0", forgets)
			}
			if n := tb.data.count("remove", ""); n != 0 {
				t.Errorf("%d removes on ADD", n)
			}
		})
	}
}

func TestDel(t *testing.T) {
	tests := []struct {
		name       string
		netns      string
		wantRemove bool
	}{
		{"own netns", web.Netns, true},
		{"netns gone (empty)", "", false},
		{"recycled path", "/proc/4242/ns/net", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTestBed(t, shopState(t))
			tb.add(t, web, db, client)
			if got, _ := tb.data.applied(db.Netns); !ingressAllows(got.Firewall, "10.1.0.10", 5432) {
				t.Fatalf("before DEL db does not allow web: %s", describeSpec(got))
			}

			if err := tb.sync.Del(t.Context(), web.Key(), tt.netns); err != nil {
				t.Fatalf("Del: %v", err)
			}
			if got := tb.data.count("remove", web.Netns) == 1; got != tt.wantRemove {
				t.Errorf("Remove called in the attachment's netns: %v, want %v", got, tt.wantRemove)
			}
			if n := tb.data.count("remove", ""); n > 1 || (n == 1 && !tt.wantRemove) {
				t.Errorf("%d removes, want %v", n, tt.wantRemove)
			}
			if n := tb.data.count("forget", web.Netns); n != 1 {
				t.Errorf("netns forgotten %d times, want once", n)
			}
			checkAttached(t, tb.sync, db, client)
			checkCheckpoint(t, tb.store, db, client)
			// Before Del returned, db stopped allowing web's address.
			checkApplied(t, tb.data, shopState(t), db, client)
			if got, _ := tb.data.applied(db.Netns); ingressAllows(got.Firewall, "10.1.0.10", 5432) {
				t.Errorf("after DEL db still allows the deleted pod's address: %s", describeSpec(got))
			}
		})
	}
}

func TestDelUnknownAttachment(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, db)
	before := tb.data.count("apply", "")
	if err := tb.sync.Del(t.Context(), "podnet/nope/eth0", "/run/netns/nope"); err != nil {
		t.Fatalf("Del of an unknown attachment: %v", err)
	}
	if n := tb.data.count("remove", ""); n != 0 {
		t.Errorf("%d removes", n)
	}
	if n := tb.data.count("apply", ""); n != before {
		t.Errorf("%d applies for an unknown DEL", n-before)
	}
	checkAttached(t, tb.sync, db)
	checkCheckpoint(t, tb.store, db)
}

func TestGC(t *testing.T) {
	web2 := attachmentFor("web2", "10.1.0.11")
	other := client
	other.Network = "othernet"
	state := shopState(t)
	state.Pods = append(state.Pods, sourcePod("web2", map[string]string{"app": "web"}))
	tb := newTestBed(t, state)
	tb.add(t, web, web2, db, other)

	valid := map[string]bool{db.Key(): true, "podnet/ctr-unknown/eth0": true}
	removed, err := tb.sync.GC(t.Context(), testNetwork, valid)
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	var got []string
	for _, r := range removed {
		got = append(got, r.Key())
	}
	if want := []string{web.Key(), web2.Key()}; !slices.Equal(got, want) {
		t.Errorf("GC removed %v, want %v", got, want)
	}
	if n := tb.data.count("remove", ""); n != 0 {
		t.Errorf("GC called Remove %d times; it must never touch a netns the runtime no longer knows", n)
	}
	checkAttached(t, tb.sync, db, other)
	checkCheckpoint(t, tb.store, db, other)
	checkApplied(t, tb.data, state, db, other)
	if got, _ := tb.data.applied(db.Netns); ingressAllows(got.Firewall, "10.1.0.10", 5432) || ingressAllows(got.Firewall, "10.1.0.11", 5432) {
		t.Errorf("after GC db still allows collected pods: %s", describeSpec(got))
	}

	// Nothing left to collect.
	removed, err = tb.sync.GC(t.Context(), testNetwork, valid)
	if err != nil || len(removed) != 0 {
		t.Errorf("second GC = %v, %v; want nothing", removed, err)
	}
}

func TestSyncAllAppliesOnlyChanged(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db, client)
	tb.sync.SyncAll(t.Context())
	before := tb.data.totalApplies()

	tb.sync.SyncAll(t.Context())
	if after := tb.data.totalApplies(); !reflect.DeepEqual(after, before) {
		t.Errorf("SyncAll without a change applied: before %v, after %v", before, after)
	}

	// client becomes a web pod: only db's firewall changes.
	next := shopState(t)
	next.Pods[2] = sourcePod("client", map[string]string{"app": "web"})
	tb.src.setState(next)
	tb.sync.Trigger()
	tb.sync.SyncAll(t.Context())
	after := tb.data.totalApplies()
	for _, rec := range []checkpoint.Attachment{web, db, client} {
		want := before[rec.Netns]
		if rec.Name == "db" {
			want++
		}
		if after[rec.Netns] != want {
			t.Errorf("%s: %d applies, want %d", rec.Name, after[rec.Netns], want)
		}
	}
	checkApplied(t, tb.data, next, web, db, client)
	if got, _ := tb.data.applied(db.Netns); !ingressAllows(got.Firewall, "10.1.0.30", 5432) {
		t.Errorf("db does not allow the relabelled client: %s", describeSpec(got))
	}
	if st := tb.sync.Stats(); st.Syncs != 3 || st.SyncErrors != 0 || st.LastSync.IsZero() {
		t.Errorf("stats = %+v", st)
	}
}

func TestNodeAddressChangeReapplies(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, db)
	n := tb.data.count("apply", db.Netns)
	tb.nodeAddrs = []netip.Addr{testNodeAddr, netip.MustParseAddr("fd12:3456::1")}
	tb.sync.SyncAll(t.Context())
	if got := tb.data.count("apply", db.Netns); got != n+1 {
		t.Fatalf("a new node address caused %d applies, want 1", got-n)
	}
	got, _ := tb.data.applied(db.Netns)
	want := []netip.Addr{netip.MustParseAddr("10.1.0.1"), testNodeAddr, netip.MustParseAddr("fd12:3456::1")}
	if !slices.Equal(got.NodeAddrs, want) {
		t.Errorf("NodeAddrs = %v, want %v", got.NodeAddrs, want)
	}
}

func TestSpecNodeAddrs(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	// The node reports the gateway too and a v6 address; the attachment has
	// a v4 and a v6 gateway. Each appears once, sorted.
	tb.nodeAddrs = []netip.Addr{netip.MustParseAddr("fd12:3456::9"), testNodeAddr, netip.MustParseAddr("10.1.0.1")}
	rec := db
	rec.Gateways = []string{"10.1.0.1", "fd12:3456::1"}
	tb.add(t, rec)
	got, _ := tb.data.applied(rec.Netns)
	want := []netip.Addr{
		netip.MustParseAddr("10.1.0.1"), testNodeAddr,
		netip.MustParseAddr("fd12:3456::1"), netip.MustParseAddr("fd12:3456::9"),
	}
	if !slices.Equal(got.NodeAddrs, want) {
		t.Errorf("NodeAddrs = %v, want %v", got.NodeAddrs, want)
	}

	// Without the node's addresses nothing is applied: a firewall without
	// them would cut kubelet probes.
	tb2 := newTestBed(t, shopState(t))
	tb2.sync.opts.NodeAddrs = func() ([]netip.Addr, error) { return nil, errors.New("netlink: permission denied") }
	if err := tb2.sync.Add(t.Context(), db); err == nil {
		t.Fatal("Add succeeded without the node's addresses")
	}
	if n := tb2.data.count("apply", ""); n != 0 {
		t.Errorf("%d applies without node addresses", n)
	}
}

func TestNetnsGoneIsForgotten(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db, client)
	tb.drainTrigger() // the ADDs' trigger
	tb.data.failApply(db.Netns, dataplane.ErrNetnsGone)
	// A change that touches db's firewall makes the syncer apply in it.
	next := shopState(t)
	next.Pods[2] = sourcePod("client", map[string]string{"app": "web"})
	tb.src.setState(next)
	tb.sync.SyncAll(t.Context())

	checkAttached(t, tb.sync, web, client)
	checkCheckpoint(t, tb.store, web, client)
	if n := tb.data.count("forget", db.Netns); n != 1 {
		t.Errorf("gone netns forgotten %d times by the dataplane, want once", n)
	}
	if st := tb.sync.Stats(); st.LastSyncError != "" || st.SyncErrors != 0 {
		t.Errorf("a gone netns is not a sync error: %+v", st)
	}
	if n := tb.data.count("remove", ""); n != 0 {
		t.Errorf("%d removes for a gone netns", n)
	}
	// The syncer asked for another sync, so the others stop allowing the
	// forgotten pod's addresses.
	select {
	case <-tb.sync.trigger:
	default:
		t.Error("forgetting a pod did not trigger a sync")
	}
}

func TestApplyFailureIsReportedAndRetried(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db, client)
	oldSpec, _ := tb.data.applied(db.Netns)

	boom := errors.New("iptables-nft-restore: exit status 1")
	tb.data.failApply(db.Netns, boom)
	next := shopState(t)
	next.Pods[2] = sourcePod("client", map[string]string{"app": "web"})
	tb.src.setState(next)
	tb.sync.SyncAll(t.Context())

	st := tb.sync.Stats()
	if st.SyncErrors != 1 || !strings.Contains(st.LastSyncError, boom.Error()) {
		t.Errorf("stats after a failed apply = %+v", st)
	}
	for _, v := range tb.sync.Pods() {
		switch v.Attachment.Name {
		case "db":
			if !errors.Is(v.Err, boom) {
				t.Errorf("db's view error = %v, want %v", v.Err, boom)
			}
			if !reflect.DeepEqual(v.Firewall, oldSpec.Firewall) {
				t.Errorf("db's view shows %+v in force; the old firewall still is", v.Firewall)
			}
		default:
			if v.Err != nil {
				t.Errorf("%s: view error %v", v.Attachment.Name, v.Err)
			}
		}
	}
	checkAttached(t, tb.sync, web, db, client) // a failure is not a gone netns

	// The next sync retries, without any new trigger.
	tb.data.failApply(db.Netns, nil)
	tb.sync.SyncAll(t.Context())
	checkApplied(t, tb.data, next, web, db, client)
	if st := tb.sync.Stats(); st.LastSyncError != "" || st.SyncErrors != 1 {
		t.Errorf("stats after the retry = %+v", st)
	}
	for _, v := range tb.sync.Pods() {
		if v.Err != nil {
			t.Errorf("%s: view error %v after a successful retry", v.Attachment.Name, v.Err)
		}
	}
}

func TestRestore(t *testing.T) {
	state := shopState(t)
	tb := newTestBed(t, state)
	gone := attachmentFor("gone", "10.1.0.99")
	if err := tb.store.Save([]checkpoint.Attachment{web, db, client, gone}); err != nil {
		t.Fatal(err)
	}
	tb.data.failApply(gone.Netns, fmt.Errorf("open %s: %w", gone.Netns, dataplane.ErrNetnsGone))
	if err := tb.sync.Restore(t.Context()); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for _, rec := range []checkpoint.Attachment{web, db, client} {
		if n := tb.data.count("apply", rec.Netns); n != 1 {
			t.Errorf("%s: %d applies on restore, want 1", rec.Name, n)
		}
	}
	checkAttached(t, tb.sync, web, db, client)
	checkCheckpoint(t, tb.store, web, db, client)
	// Restore forgot "gone" after the others were applied; the next sync
	// (which Restore triggered) recompiles them without it.
	tb.sync.SyncAll(t.Context())
	checkApplied(t, tb.data, state, web, db, client)
}

func TestCheck(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db)
	if err := tb.sync.Check(t.Context(), db.Key()); err != nil {
		t.Fatalf("Check: %v", err)
	}
	c, _ := tb.data.lastCall("check", db.Netns)
	want, _ := tb.data.applied(db.Netns)
	if !reflect.DeepEqual(c.Spec, want) {
		t.Errorf("Check compared against %s, want %s", describeSpec(c.Spec), describeSpec(want))
	}

	drift := &dataplane.DriftError{Pod: "shop/db", Netns: db.Netns, Differences: []string{`v4: missing "-A PODWALL-INGRESS -i lo -j ACCEPT"`}}
	tb.data.failCheck(db.Netns, drift)
	var got *dataplane.DriftError
	if err := tb.sync.Check(t.Context(), db.Key()); !errors.As(err, &got) || got != drift {
		t.Errorf("Check = %v, want the drift error", err)
	}
	if err := tb.sync.Check(t.Context(), "podnet/nope/eth0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Check of an unknown attachment = %v, want ErrNotFound", err)
	}
}

func TestRunSyncsOnTrigger(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db, client)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { tb.sync.Run(ctx, time.Hour); close(done) }()
	defer func() { cancel(); <-done }()

	next := shopState(t)
	next.Pods[2] = sourcePod("client", map[string]string{"app": "web"})
	tb.src.setState(next)
	tb.sync.Trigger()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := tb.data.applied(db.Netns)
		if ingressAllows(got.Firewall, "10.1.0.30", 5432) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the sync loop did not apply the change: %s", describeSpec(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestDelDuringSyncNeverReappliesDeleted holds a sync between compiling and
// applying while the other pod is deleted: the sync must not write the
// deleted pod's netns after DEL removed its rules.
func TestDelDuringSyncNeverReappliesDeleted(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	tb.add(t, web, db)
	// A policy that changes both firewalls, so the sync applies both.
	next := shopState(t)
	next.Policies = append(next.Policies, parsePolicy(t, `
metadata: {name: all-ingress, namespace: shop}
spec: {podSelector: {}}`))
	tb.src.setState(next)

	held := make(chan string)
	release := make(chan struct{})
	// Only the first apply is held; the others (the sync applies pods in
	// parallel) go on, as sync.Once would make them wait for the held one.
	var holding atomic.Bool
	tb.data.setBeforeApply(func(netns string) {
		if holding.CompareAndSwap(false, true) {
			held <- netns
			<-release
		}
	})
	syncDone := make(chan struct{})
	go func() { tb.sync.SyncAll(context.Background()); close(syncDone) }()
	first := <-held
	victim := web
	if first == web.Netns {
		victim = db
	}
	delDone := make(chan error)
	go func() { delDone <- tb.sync.Del(context.Background(), victim.Key(), victim.Netns) }()
	// Del removes the victim's rules at once (the held apply is another
	// pod's); its own sync then waits for the held one.
	deadline := time.Now().Add(10 * time.Second)
	for tb.data.count("remove", victim.Netns) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Del did not remove the rules")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	<-syncDone
	if err := <-delDone; err != nil {
		t.Fatalf("Del: %v", err)
	}
	if st := tb.data.snapshot(victim.Netns); st.lastOp != "remove" {
		t.Errorf("%s: last operation in the deleted pod's netns is %q, want remove", victim.Name, st.lastOp)
	}
	survivor := db
	if victim.Name == "db" {
		survivor = web
	}
	checkApplied(t, tb.data, next, survivor)
}

// TestConcurrentAddDel runs 50 ADDs and DELs in parallel with the sync loop
// and source changes; afterwards every netns holds exactly what a fresh
// compile says, and every deleted pod's netns was left removed.
func TestConcurrentAddDel(t *testing.T) {
	const pods = 50
	state := func(gen int) *policy.State {
		st := &policy.State{Namespaces: []*policy.Namespace{{Name: "shop"}}}
		for i := range pods {
			role := []string{"web", "db", "client"}[(i+gen)%3]
			st.Pods = append(st.Pods, sourcePod(fmt.Sprintf("p%02d", i), map[string]string{"app": role}))
		}
		st.Policies = []*networkingv1.NetworkPolicy{parsePolicy(t, `
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
  egress: [{to: [{podSelector: {matchLabels: {app: client}}}]}]`)}
		return st
	}
	tb := newTestBed(t, state(0))
	tb.data.setBeforeApply(func(string) {
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
	})
	ctx, cancel := context.WithCancel(t.Context())
	loopDone := make(chan struct{})
	go func() { tb.sync.Run(ctx, 5*time.Millisecond); close(loopDone) }()

	recs := make([]checkpoint.Attachment, pods)
	for i := range pods {
		recs[i] = attachmentFor(fmt.Sprintf("p%02d", i), fmt.Sprintf("10.1.1.%d", i+1))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*pods)
	for i := range pods {
		wg.Go(func() {
			if err := tb.sync.Add(ctx, recs[i]); err != nil {
				errs <- fmt.Errorf("add %s: %w", recs[i].Name, err)
				return
			}
			if i%2 == 0 {
				if err := tb.sync.Del(ctx, recs[i].Key(), recs[i].Netns); err != nil {
					errs <- fmt.Errorf("del %s: %w", recs[i].Name, err)
				}
			}
		})
	}
	wg.Go(func() {
		for gen := 1; gen <= 5; gen++ {
			tb.src.setState(state(gen))
			tb.sync.Trigger()
			time.Sleep(2 * time.Millisecond)
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cancel()
	<-loopDone
	// What the loop would do after the last trigger.
	tb.sync.SyncAll(t.Context())

	var kept []checkpoint.Attachment
	for i, rec := range recs {
		if i%2 == 0 {
			if st := tb.data.snapshot(rec.Netns); st.lastOp != "remove" || st.removes != 1 {
				t.Errorf("%s (deleted): last operation %q, %d removes; want one remove, last", rec.Name, st.lastOp, st.removes)
			}
			continue
		}
		kept = append(kept, rec)
	}
	checkAttached(t, tb.sync, kept...)
	checkCheckpoint(t, tb.store, kept...)
	checkApplied(t, tb.data, state(5), kept...)
	if st := tb.sync.Stats(); st.LastSyncError != "" {
		t.Errorf("last sync error: %s", st.LastSyncError)
	}
}

func TestRestoreMovesCorruptCheckpointAside(t *testing.T) {
	tb := newTestBed(t, shopState(t))
	if err := os.WriteFile(tb.store.Path(), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := tb.sync.Restore(t.Context()); err != nil {
		t.Fatalf("Restore with a corrupt checkpoint: %v (want a start with no attachments)", err)
	}
	aside, _ := filepath.Glob(tb.store.Path() + ".corrupt-*")
	if len(aside) != 1 {
		t.Fatalf("corrupt checkpoint not kept aside: %v", aside)
	}
	recs, err := tb.store.Load()
	if err != nil || len(recs) != 0 {
		t.Fatalf("checkpoint after Restore = %v, %v; want empty, nil", recs, err)
	}
}
