package dataplane

import (
	"context"
	"fmt"
	"github.com/podwall/podwall/internal/fuzzinput"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go4.org/netipx"
	corev1 "k8s.io/api/core/v1"

	"github.com/podwall/podwall/daemon/policy"
)

// FuzzRender renders random firewalls (see fuzzSpec): Render must not panic,
// must be deterministic and must produce set names within ipset's limit,
// sets that are valid hash:net contents, and rules that reference exactly
// the sets it returns. As root it then applies two random specs in turn to
// one scratch netns (pwfz-<pid>-<random>, created once per fuzzing process,
// with no links) and checks each: the nf_tables writer and ipset must accept
// what Render wrote, and what is in force must be what Render wants.
func FuzzRender(f *testing.F) {
	f.Add([]byte{}, uint32(0))
	f.Add([]byte("\x03\x01\x02\x00\x20\x0a\x09\x00\x01\x80\x02\x01\x01\x50\x00\x01"), uint32(7))
	f.Add([]byte("podwall fuzz: both directions, /0 and host prefixes, ranges \x00\xff\x20\x80\x7f"), uint32(math.MaxUint32))
	f.Add(slices.Repeat([]byte{0xff, 0x00, 0x7f, 0x13, 0x42, 0x80}, 40), uint32(1))

	var m *Manager
	var path string
	if os.Geteuid() == 0 {
		m = newManager(f)
		path = newFuzzNetns(f)
	}
	f.Fuzz(func(t *testing.T, data []byte, gen uint32) {
		in := fuzzinput.New(data)
		first, second := fuzzSpec(in), fuzzSpec(in)
		for _, spec := range []Spec{first, second} {
			checkRender(t, spec, gen)
			checkRender(t, spec, math.MaxUint32)
		}
		if m == nil {
			return // the part that needs root
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Start from an empty netns, so that a failure reproduces from its
		// input alone.
		if err := m.Remove(ctx, path); err != nil {
			t.Fatalf("Remove: %v", err)
		}
		for i, spec := range []Spec{first, second} {
			if err := m.Apply(ctx, path, spec); err != nil {
				t.Fatalf("Apply of spec %d: %v\nrendered:\n%s", i, err, formatRuleset(Render(spec, 1)))
			}
			if err := m.Check(ctx, path, spec); err != nil {
				t.Fatalf("Check after Apply of spec %d: %v\nrendered:\n%s", i, err, formatRuleset(Render(spec, 1)))
			}
		}
		// A Manager without memory finds the generation in force.
		fresh := newManager(t)
		if err := fresh.Check(ctx, path, second); err != nil {
			t.Fatalf("Check by a new Manager: %v", err)
		}
	})
}

// checkRender checks the pure promises of Render for one spec.
func checkRender(t *testing.T, spec Spec, gen uint32) {
	t.Helper()
	rs := Render(spec, gen)
	if again := Render(spec, gen); !reflect.DeepEqual(rs, again) {
		t.Fatal("two renders of the same spec differ")
	}
	if spec.Firewall == nil || !spec.Firewall.Isolated() {
		if rs.V4 != "" || rs.V6 != "" || len(rs.Sets) > 0 {
			t.Fatalf("a firewall that is not isolated rendered rules or sets: %+v", rs)
		}
		return
	}
	byName := make(map[string]Set, len(rs.Sets))
	for i, s := range rs.Sets {
		// ipset's limit is 31 characters, for the swap's temporary set too.
		if n := len(s.Name + setTempSuffix); n > 31 {
			t.Errorf("set %s: name with %s is %d characters, ipset allows 31", s.Name, setTempSuffix, n)
		}
		m := setNameRE.FindStringSubmatch(s.Name)
		if m == nil || m[4] != "" {
			t.Errorf("set %s: name does not match %s", s.Name, setNameExpr)
			continue
		}
		if g, _ := setGeneration(s.Name); g != gen {
			t.Errorf("set %s: generation %d, rendered for %d", s.Name, g, gen)
		}
		if i > 0 && rs.Sets[i-1].Name >= s.Name {
			t.Errorf("sets %s and %s: not sorted by name or duplicate", rs.Sets[i-1].Name, s.Name)
		}
		f := familyV4
		if m[1] == "6" {
			f = familyV6
		}
		if s.Family != f.setFamily() {
			t.Errorf("set %s: family %s", s.Name, s.Family)
		}
		if len(s.Members) == 0 {
			t.Errorf("set %s: no members", s.Name)
		}
		for j, p := range s.Members {
			if !p.IsValid() || p != p.Masked() || p.Bits() == 0 || familyOf(p.Addr()) != f || p.Addr().Zone() != "" {
				t.Errorf("set %s: member %s cannot be a %s hash:net entry", s.Name, p, s.Family)
			}
			if j > 0 && comparePrefix(s.Members[j-1], p) >= 0 {
				t.Errorf("set %s: members %s and %s not sorted or duplicate", s.Name, s.Members[j-1], p)
			}
		}
		byName[s.Name] = s
	}
	used := make(map[string]bool)
	for _, f := range families {
		text := rs.V4
		if f == familyV6 {
			text = rs.V6
		}
		if text == "" {
			t.Errorf("%s: no rules for an isolated firewall", f)
		}
		for _, line := range strings.Split(text, "\n") {
			for _, name := range matchSets(line) {
				s, ok := byName[name]
				if !ok {
					t.Errorf("%s: rule %q references a set Render did not return", f, line)
				} else if s.Family != f.setFamily() {
					t.Errorf("%s: rule %q references a set of family %s", f, line, s.Family)
				}
				used[name] = true
			}
		}
	}
	for name := range byName {
		if !used[name] {
			t.Errorf("set %s: no rule references it", name)
		}
	}
}

// newFuzzNetns creates the scratch netns pwfz-<pid>-<random> and removes it
// when the fuzz target ends. It first removes scratch netns left behind by
// fuzzing processes that no longer exist (killed before their cleanup ran).
func newFuzzNetns(tb testing.TB) string {
	tb.Helper()
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		fields := strings.Split(e.Name(), "-")
		if len(fields) != 3 || fields[0] != "pwfz" {
			continue
		}
		pid, err := strconv.Atoi(fields[1])
		if err != nil || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		_ = exec.Command("ip", "netns", "del", e.Name()).Run()
	}
	name := fmt.Sprintf("pwfz-%d-%s", os.Getpid(), randomID(tb))
	run(tb, "ip", "netns", "add", name)
	tb.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			tb.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return "/run/netns/" + name
}

// fuzzInput is the shared generator input.
type fuzzInput = fuzzinput.Input

// fuzzSpec builds a spec that validateSpec accepts: each direction isolated
// or not, up to 4 rules each, peers that are Any or up to 4 prefixes of
// either family (/0 and host prefixes included; either normalized as
// policy.Compile makes them, or raw: overlapping, duplicated, with host bits
// set), up to 3 ports (every port of a protocol, one port, a range), now
// and then Service rules and a guard on an isolated egress, up to 3
// node addresses (IPv4-mapped and zoned ones included) and a pod name that is
// now and then arbitrary bytes.
func fuzzSpec(in *fuzzInput) Spec {
	spec := Spec{Pod: fuzzinput.Pick(in, "ns/pod", "default/web-0", "kube-system/coredns-5d78c9869d-x7k2p")}
	if in.Intn(4) == 0 {
		spec.Pod = string(in.Take(in.Intn(250)))
	}
	if in.Intn(8) != 0 {
		spec.Firewall = &policy.Firewall{Ingress: fuzzDirection(in), Egress: fuzzDirection(in)}
		if spec.Firewall.Egress.Isolated && in.Bool() {
			spec.Firewall.Egress.Services = fuzzServiceRules(in, false)
			spec.Firewall.Egress.ServiceGuard = fuzzServiceRules(in, true)
		}
	}
	for range in.Intn(4) {
		var a netip.Addr
		switch in.Intn(4) {
		case 0:
			a = netip.AddrFrom4([4]byte{10, 9, 0, in.Byte()})
		case 1:
			a = netip.AddrFrom16([16]byte{0: 0xfd, 1: 0x09, 15: in.Byte()})
		case 2:
			a = netip.AddrFrom16(netip.AddrFrom4([4]byte{10, 9, 1, in.Byte()}).As16()) // ::ffff:10.9.1.x
		default:
			a = netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 15: in.Byte()}).WithZone("eth0")
		}
		spec.NodeAddrs = append(spec.NodeAddrs, a)
	}
	return spec
}

func fuzzDirection(in *fuzzInput) policy.Direction {
	var d policy.Direction
	if !in.Bool() {
		return d
	}
	d.Isolated = true
	for range in.Intn(5) {
		var r policy.Rule
		if in.Intn(5) == 0 {
			r.Peer.Any = true
		} else {
			r.Peer.Prefixes = fuzzPrefixes(in)
		}
		for range in.Intn(4) {
			p := policy.Port{Protocol: fuzzinput.Pick(in, corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP)}
			switch in.Intn(4) {
			case 0: // every port
			case 1:
				p.Port = fuzzPortNumber(in)
			default:
				p.Port = fuzzPortNumber(in)
				p.EndPort = p.Port + int32(in.Intn(int(65535-p.Port)+1))
			}
			r.Ports = append(r.Ports, p)
		}
		d.Rules = append(d.Rules, r)
	}
	return d
}

// fuzzServiceRules returns up to 3 rules of Service frontends (or, for the
// guard, also any peer), each on one port or, for the guard, on every port.
func fuzzServiceRules(in *fuzzInput, guard bool) []policy.Rule {
	var rules []policy.Rule
	for range in.Intn(4) {
		var r policy.Rule
		if guard && in.Intn(6) == 0 {
			r.Peer.Any = true
		} else {
			r.Peer.Prefixes = fuzzPrefixes(in)
		}
		if !guard || in.Bool() {
			r.Ports = []policy.Port{{Protocol: fuzzinput.Pick(in, corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP), Port: fuzzPortNumber(in)}}
		}
		rules = append(rules, r)
	}
	return rules
}

func fuzzPortNumber(in *fuzzInput) int32 {
	if in.Intn(3) == 0 {
		return fuzzinput.Pick[int32](in, 1, 80, 65535)
	}
	return int32(1 + in.Intn(65535))
}

// fuzzPrefixes returns 1 to 4 prefixes, normalized (sorted, disjoint,
// minimal, as Compile makes them) or raw.
func fuzzPrefixes(in *fuzzInput) []netip.Prefix {
	normalized := in.Bool()
	var raw []netip.Prefix
	for range 1 + in.Intn(4) {
		var a netip.Addr
		if in.Bool() {
			a = netip.AddrFrom4([4]byte{fuzzinput.Pick(in, 10, in.Byte()), in.Byte(), in.Byte(), in.Byte()})
		} else {
			var b [16]byte
			b[0], b[1] = fuzzinput.Pick(in, 0xfd, in.Byte()), in.Byte()
			b[14], b[15] = in.Byte(), in.Byte()
			a = netip.AddrFrom16(b)
		}
		bits := fuzzinput.Pick(in, 0, 1, a.BitLen(), a.BitLen(), in.Intn(a.BitLen()+1))
		raw = append(raw, netip.PrefixFrom(a, bits))
	}
	if !normalized {
		return raw
	}
	var b netipx.IPSetBuilder
	for _, p := range raw {
		b.AddPrefix(p.Masked())
	}
	set, _ := b.IPSet()
	return set.Prefixes()
}
