package bed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The ranges this package's tests own. Top-level tests here run one after
// another (no t.Parallel): they share these ranges.
var (
	testPodV4 = netip.MustParsePrefix("10.202.0.0/16")
	testPodV6 = netip.MustParsePrefix("fd00:202::/64")
	testExtV4 = netip.MustParsePrefix("203.0.113.0/24")
)

const probeTimeout = 800 * time.Millisecond

// TestMain fails the run if any test left a pw-bt* netns or anything in the
// test ranges behind.
func TestMain(m *testing.M) {
	code := m.Run()
	if os.Geteuid() == 0 {
		left, _ := filepath.Glob(filepath.Join(netnsDir, "pw-bt*"))
		routes, _ := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
		for _, r := range routes {
			if r.Dst != nil {
				if dst, ok := netipPrefix(r.Dst.String()); ok && insideTestRanges(dst) {
					left = append(left, "route "+r.String())
				}
			}
		}
		if len(left) > 0 {
			fmt.Fprintf(os.Stderr, "tests left behind: %v\n", left)
			code = 1
		}
	}
	os.Exit(code)
}

func testOptions(t *testing.T, name string) Options {
	return Options{
		Name:           name,
		CNIBinDir:      CNIBinDirForTest(t),
		PodCIDRv4:      testPodV4,
		PodCIDRv6:      testPodV6,
		ExternalCIDRv4: testExtV4,
	}
}

// firewall appends an iptables (IPv4) or ip6tables (IPv6) rule to a chain of
// the filter table in the pod's netns and returns a func deleting it (also run
// when the test ends).
func firewall(t *testing.T, p *Pod, f Family, chain string, rule ...string) (remove func()) {
	t.Helper()
	bin := "iptables"
	if f == IPv6 {
		bin = "ip6tables"
	}
	run := func(op string) error {
		args := append([]string{"netns", "exec", p.NetnsName, bin, "-w", op, chain}, rule...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("-A"); err != nil {
		t.Fatal(err)
	}
	done := false
	remove = func() {
		if done {
			return
		}
		done = true
		if err := run("-D"); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(remove)
	return remove
}

func mustProbe(t *testing.T, want bool, from, to *Pod, f Family, port int, proto string) {
	t.Helper()
	got, err := ProbePod(context.Background(), from, to, f, port, proto, probeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("%s %s -> %s %s port %d: connected=%v, want %v", proto, from, to, f, port, got, want)
	}
}

// TestBed runs the bed's own checks on one dual-stack bed with an external
// host and the plain ptp + host-local chain (no podwall).
func TestBed(t *testing.T) {
	RequireRoot(t)
	b := NewForTest(t, testOptions(t, "bt1"))
	all := []ServePort{{TCP, 80}, {TCP, 81}, {UDP, 80}, {UDP, 81}, {SCTP, 80}, {SCTP, 81}}
	client := b.AddPodForTest(t, "x", "a", all...)
	server := b.AddPodForTest(t, "x", "b", all...)
	for _, p := range []*Pod{client, server} {
		if len(p.Families()) != 2 || !testPodV4.Contains(p.IPv4()) || !testPodV6.Contains(p.IPv6()) {
			t.Fatalf("pod %s has IPs %v, want one in %s and one in %s", p, p.IPs, testPodV4, testPodV6)
		}
	}

	t.Run("allowed and denied twin", func(t *testing.T) {
		for _, proto := range []string{TCP, UDP, SCTP} {
			for _, f := range []Family{IPv4, IPv6} {
				t.Run(proto+"/"+f.String(), func(t *testing.T) {
					mustProbe(t, true, client, server, f, 80, proto)
					mustProbe(t, true, client, server, f, 81, proto)
					remove := firewall(t, server, f, "INPUT", "-p", strings.ToLower(proto), "--dport", "80", "-j", "DROP")
					mustProbe(t, false, client, server, f, 80, proto)
					mustProbe(t, true, client, server, f, 81, proto)
					remove()
					mustProbe(t, true, client, server, f, 80, proto)
				})
			}
		}
	})

	t.Run("sctp receiver records source and port", func(t *testing.T) {
		mustProbe(t, true, client, server, IPv4, 81, SCTP)
		seen := server.SCTPReceived()
		if len(seen) == 0 || seen[len(seen)-1] != (SCTPPacket{Source: client.IPv4(), Port: 81}) {
			t.Errorf("last SCTP packets %v, want {%s 81} last", seen, client.IPv4())
		}
	})

	t.Run("sctp init is valid for conntrack", func(t *testing.T) {
		// conntrack verifies the SCTP checksum and chunks: the probe's INIT must
		// be NEW, never INVALID (which a policy would drop).
		firewall(t, server, IPv4, "INPUT", "-p", "sctp", "--dport", "80", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
		firewall(t, server, IPv6, "INPUT", "-p", "sctp", "--dport", "80", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP")
		firewall(t, server, IPv4, "INPUT", "-p", "sctp", "--dport", "81", "-m", "conntrack", "!", "--ctstate", "NEW", "-j", "DROP")
		mustProbe(t, true, client, server, IPv4, 80, SCTP)
		mustProbe(t, true, client, server, IPv6, 80, SCTP)
		mustProbe(t, true, client, server, IPv4, 81, SCTP)

		// Denied twin: the same INIT with a corrupted checksum is INVALID, so
		// the kernel does check what we computed.
		firewall(t, server, IPv4, "INPUT", "-p", "sctp", "--dport", "83", "-m", "conntrack", "--ctstate", "NEW", "-m", "comment", "--comment", "bt-new")
		firewall(t, server, IPv4, "INPUT", "-p", "sctp", "--dport", "83", "-m", "conntrack", "--ctstate", "INVALID", "-m", "comment", "--comment", "bt-invalid")
		good := renderSCTPInit(40000, 83, 0x1234)
		sendRaw(t, client, server.IPv4(), good)
		bad := renderSCTPInit(40001, 83, 0x1235)
		bad[9] ^= 0xff
		sendRaw(t, client, server.IPv4(), bad)
		waitFor(t, time.Second, func() bool {
			return ruleCount(t, server, "bt-new") == 1 && ruleCount(t, server, "bt-invalid") == 1
		}, "one NEW (good INIT) and one INVALID (corrupted INIT)")
	})

	t.Run("sctp probe is per port", func(t *testing.T) {
		// Probe's SCTP receiver must ignore INITs to ports the pod does not
		// serve even though the raw socket sees every SCTP packet.
		mustProbe(t, false, client, server, IPv4, 82, SCTP)
	})

	t.Run("unserved port", func(t *testing.T) {
		for _, proto := range []string{TCP, UDP, SCTP} {
			for _, f := range []Family{IPv4, IPv6} {
				mustProbe(t, false, client, server, f, 82, proto)
			}
		}
	})

	t.Run("no pod at address dies on blackhole", func(t *testing.T) {
		for _, addr := range []netip.Addr{netip.MustParseAddr("10.202.255.254"), netip.MustParseAddr("fd00:202::ffff:fffe")} {
			rt, err := hostRouteType(addr)
			if err != nil {
				t.Fatal(err)
			}
			if rt != unix.RTN_BLACKHOLE {
				t.Errorf("host route to %s has type %d, want blackhole (%d)", addr, rt, unix.RTN_BLACKHOLE)
			}
			for _, proto := range []string{TCP, UDP} {
				start := time.Now()
				got, err := Probe(context.Background(), client, addr, 80, proto, probeTimeout)
				if err != nil {
					t.Fatal(err)
				}
				if got {
					t.Errorf("%s %s -> %s connected", proto, client, addr)
				}
				// Silently dropped (the blackhole), not refused by someone.
				if took := time.Since(start); took < probeTimeout {
					t.Errorf("%s %s -> %s failed after %s, before the timeout: something answered", proto, client, addr, took)
				}
			}
		}
	})

	t.Run("external host", func(t *testing.T) {
		ext := b.External()
		if ext == nil || ext.IPv4() != netip.MustParseAddr("203.0.113.10") {
			t.Fatalf("external host %v, want one at 203.0.113.10", ext)
		}
		if err := ext.Serve(ServePort{TCP, 80}, ServePort{UDP, 80}, ServePort{SCTP, 80}); err != nil {
			t.Fatal(err)
		}
		for _, proto := range []string{TCP, UDP, SCTP} {
			mustProbe(t, true, client, ext, IPv4, 80, proto)
			mustProbe(t, true, ext, server, IPv4, 80, proto)
		}
		// Denied twins: drop on either end.
		removeExt := firewall(t, ext, IPv4, "INPUT", "-p", "tcp", "--dport", "80", "-j", "DROP")
		mustProbe(t, false, client, ext, IPv4, 80, TCP)
		mustProbe(t, true, client, ext, IPv4, 80, UDP)
		removeExt()
		firewall(t, server, IPv4, "INPUT", "-s", ext.IPv4().String(), "-j", "DROP")
		mustProbe(t, false, ext, server, IPv4, 80, TCP)
		mustProbe(t, true, client, server, IPv4, 80, TCP)
	})

	t.Run("DelPod removes netns and host route", func(t *testing.T) {
		ctx := context.Background()
		gone := b.AddPodForTest(t, "x", "gone", ServePort{TCP, 80})
		mustProbe(t, true, client, gone, IPv4, 80, TCP)
		mustProbe(t, true, client, gone, IPv6, 80, TCP)
		if err := b.DelPod(ctx, gone); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(gone.NetnsPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s still there (stat: %v)", gone.NetnsPath, err)
		}
		if _, err := netlink.LinkByName(gone.HostVeth); err == nil {
			t.Errorf("host veth %s still there", gone.HostVeth)
		}
		for _, a := range gone.IPs {
			if rt, err := hostRouteType(a); err != nil || rt != unix.RTN_BLACKHOLE {
				t.Errorf("host route to deleted pod's %s: type %d, %v; want blackhole", a, rt, err)
			}
			got, err := Probe(ctx, client, a, 80, TCP, probeTimeout)
			if err != nil || got {
				t.Errorf("probe to deleted pod's %s: %v, %v; want false", a, got, err)
			}
		}
		if err := b.DelPod(ctx, gone); err != nil {
			t.Errorf("second DelPod: %v", err)
		}
	})

	t.Run("CNI verbs through the bed's client", func(t *testing.T) {
		ctx := context.Background()
		cni, list := b.CNI(), b.NetworkList()
		if list.Name != "pw-bt1" || list.CNIVersion != CNIVersion {
			t.Errorf("network list %s %s, want pw-bt1 %s", list.Name, list.CNIVersion, CNIVersion)
		}
		if err := cni.GetStatusNetworkList(ctx, list); err != nil {
			t.Errorf("STATUS: %v", err)
		}
		if err := cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: b.Attachments()}); err != nil {
			t.Errorf("GC: %v", err)
		}
		mustProbe(t, true, client, server, IPv4, 80, TCP) // GC kept the live pods
		p := b.AddPodForTest(t, "x", "checked")
		if err := cni.CheckNetworkList(ctx, list, p.RuntimeConf()); err != nil {
			t.Errorf("CHECK on a fresh pod: %v", err)
		}
		// Denied twin: CHECK notices a pod whose addresses are gone.
		if out, err := exec.Command("ip", "netns", "exec", p.NetnsName, "ip", "addr", "flush", "dev", p.IfName).CombinedOutput(); err != nil {
			t.Fatalf("flush addresses: %v: %s", err, out)
		}
		if err := cni.CheckNetworkList(ctx, list, p.RuntimeConf()); err == nil {
			t.Error("CHECK on a pod without addresses passed")
		}
		if err := b.DelPod(ctx, p); err != nil {
			t.Errorf("DelPod of a broken pod: %v", err)
		}
	})

	t.Run("bad probes are errors", func(t *testing.T) {
		ctx := context.Background()
		for name, probe := range map[string]func() (bool, error){
			"protocol": func() (bool, error) { return Probe(ctx, client, server.IPv4(), 80, "ICMP", probeTimeout) },
			"port":     func() (bool, error) { return Probe(ctx, client, server.IPv4(), 0, TCP, probeTimeout) },
			"timeout":  func() (bool, error) { return Probe(ctx, client, server.IPv4(), 80, TCP, 0) },
			"no addr":  func() (bool, error) { return Probe(ctx, client, netip.Addr{}, 80, TCP, probeTimeout) },
			"no from":  func() (bool, error) { return Probe(ctx, nil, server.IPv4(), 80, TCP, probeTimeout) },
			"family":   func() (bool, error) { return ProbePod(ctx, client, b.External(), IPv6, 80, TCP, probeTimeout) },
		} {
			if _, err := probe(); err == nil {
				t.Errorf("%s: no error", name)
			}
		}
		if err := client.Serve(ServePort{"ICMP", 80}); err == nil {
			t.Error("Serve ICMP: no error")
		}
		if err := client.Serve(ServePort{TCP, 80}); err == nil {
			t.Error("Serve TCP 80 twice: no error")
		}
		if err := client.Serve(ServePort{SCTP, 80}); err == nil {
			t.Error("Serve SCTP 80 twice: no error")
		}
	})

	t.Run("ProbeUntil returns once the value is seen", func(t *testing.T) {
		ctx := context.Background()
		remove := firewall(t, server, IPv4, "INPUT", "-p", "tcp", "--dport", "81", "-j", "DROP")
		go func() { time.Sleep(1500 * time.Millisecond); remove() }()
		start := time.Now()
		got, err := ProbePodUntil(ctx, client, server, IPv4, 81, TCP, 300*time.Millisecond, true, 10*time.Second)
		if err != nil || !got {
			t.Fatalf("ProbePodUntil = %v, %v; want true", got, err)
		}
		if took := time.Since(start); took < time.Second || took > 5*time.Second {
			t.Errorf("took %s, want 1.5s-ish", took)
		}
		got, err = ProbePodUntil(ctx, client, server, IPv4, 81, TCP, 300*time.Millisecond, false, 1500*time.Millisecond)
		if err != nil || !got {
			t.Errorf("ProbePodUntil want=false on an open port = %v, %v; want true (the last observation)", got, err)
		}
	})
}

// TestMatrix checks the matrix, PrettyPrint and the mixed-family mark on real
// probes.
func TestMatrix(t *testing.T) {
	RequireRoot(t)
	opts := testOptions(t, "bt2")
	opts.ExternalCIDRv4 = netip.Prefix{}
	b := NewForTest(t, opts)
	items := []string{"x/a", "x/b", "y/a"}
	ctx := context.Background()
	pods, err := b.AddPods(ctx, items, ServePort{TCP, 80}, ServePort{UDP, 80}, ServePort{SCTP, 80})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range pods {
		if p.String() != items[i] || len(p.IPs) != 2 {
			t.Fatalf("AddPods[%d] = %s with %v, want %s dual-stack", i, p, p.IPs, items[i])
		}
	}

	for _, proto := range []string{TCP, UDP, SCTP} {
		t.Run(proto, func(t *testing.T) {
			observed := b.Matrix(ctx, pods, 80, proto, probeTimeout)
			if m := NewTruth(items, true).Mismatches(observed); len(m) > 0 {
				t.Fatalf("all-open matrix:\n%s\n%s", observed.PrettyPrint(), strings.Join(m, "\n"))
			}
			wantPrint := "-   x/a x/b y/a\n" +
				"x/a ?   .   .\n" +
				"x/b .   ?   .\n" +
				"y/a .   .   ?\n"
			if got := observed.PrettyPrint(); got != wantPrint {
				t.Errorf("PrettyPrint:\n%s\nwant:\n%s", got, wantPrint)
			}

			// Denied twin: y/a drops everything on port 80 in both families.
			rm4 := firewall(t, pods[2], IPv4, "INPUT", "-p", strings.ToLower(proto), "--dport", "80", "-j", "DROP")
			rm6 := firewall(t, pods[2], IPv6, "INPUT", "-p", strings.ToLower(proto), "--dport", "80", "-j", "DROP")
			want := NewTruth(items, true)
			want.ExpectAllIngress("y/a", false)
			b.AssertReachability(t, pods, want, 80, proto, probeTimeout, 3*time.Second)
			if m := NewTruth(items, true).Mismatches(b.Matrix(ctx, pods, 80, proto, probeTimeout)); len(m) != 2 {
				t.Errorf("all-open expectation vs. y/a closed: %d mismatches %q, want 2", len(m), m)
			}

			// Families disagree: only IPv6 closed.
			rm4()
			observed = b.Matrix(ctx, pods, 80, proto, probeTimeout)
			for _, from := range []string{"x/a", "x/b"} {
				if got := observed.Mark(from, "y/a"); got != "!" {
					t.Errorf("%s -> y/a with only IPv6 closed: %q, want !", from, got)
				}
			}
			if m := want.Mismatches(observed); len(m) != 2 {
				t.Errorf("mixed cells must not match: %q", m)
			}
			v4 := b.Reachability(ctx, pods, MatrixOptions{Port: 80, Protocol: proto, Timeout: probeTimeout, Family: IPv4})
			if m := NewTruth(items, true).Mismatches(v4); len(m) > 0 {
				t.Errorf("IPv4 matrix: %q", m)
			}
			v6 := b.Reachability(ctx, pods, MatrixOptions{Port: 80, Protocol: proto, Timeout: probeTimeout, Family: IPv6})
			if m := want.Mismatches(v6); len(m) > 0 {
				t.Errorf("IPv6 matrix: %q", m)
			}
			rm6()
		})
	}

	t.Run("bad options", func(t *testing.T) {
		observed := b.Matrix(ctx, pods, 80, "ICMP", probeTimeout)
		if observed.Err() == nil {
			t.Error("no error for protocol ICMP")
		}
		if m := NewTruth(items, true).Mismatches(observed); len(m) == 0 {
			t.Error("a matrix that could not probe matched")
		}
	})
}

// TestClose checks Close leaves nothing behind and can run twice.
func TestClose(t *testing.T) {
	RequireRoot(t)
	b, err := New(testOptions(t, "bt3"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	var veths []string
	for _, name := range []string{"a", "b"} {
		p := b.AddPodForTest(t, "x", name, ServePort{TCP, 80}, ServePort{UDP, 80}, ServePort{SCTP, 80})
		veths = append(veths, p.HostVeth)
	}
	ext := b.External()
	if err := ext.Serve(ServePort{TCP, 80}); err != nil {
		t.Fatal(err)
	}
	veths = append(veths, ext.HostVeth)
	mustProbe(t, true, b.Pods()[0], ext, IPv4, 80, TCP)
	dir := b.dir
	// Denied twin of the check below: while the bed lives, it sees it all.
	before := strings.Join(leftovers(t, "bt3", veths), "\n")
	for _, want := range []string{"netns /run/netns/pw-bt3-0", "netns /run/netns/pw-bt3-ext", "link " + ext.HostVeth,
		"host address 10.202.0.1/32", "host address 203.0.113.1/24", "10.202.0.0/16", "fd00:202::/64", "203.0.113.0/24"} {
		if !strings.Contains(before, want) {
			t.Errorf("leftovers while the bed lives do not show %q:\n%s", want, before)
		}
	}

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, "bt3", veths)
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still there", dir)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := b.AddPod(context.Background(), "x", "late", PodOptions{}); err == nil {
		t.Error("AddPod on a closed bed: no error")
	}
}

// TestNewFailureCleansUp makes New fail after it created everything.
func TestNewFailureCleansUp(t *testing.T) {
	RequireRoot(t)
	setUpHook = func(stage string) error {
		if stage == "external" {
			return fmt.Errorf("injected failure")
		}
		return nil
	}
	t.Cleanup(func() { setUpHook = nil })
	b, err := New(testOptions(t, "bt4"))
	if err == nil {
		b.Close()
		t.Fatal("New did not fail")
	}
	if !strings.Contains(err.Error(), "injected failure") {
		t.Errorf("error %q does not carry the cause", err)
	}
	assertNothingLeft(t, "bt4", []string{externalVethName("bt4")})
}

// TestAddFailure checks a failing ADD returns the plugin's error and leaves no
// netns or veth behind.
func TestAddFailure(t *testing.T) {
	RequireRoot(t)
	opts := testOptions(t, "bt5")
	opts.ExternalCIDRv4 = netip.Prefix{}
	opts.Extra = []map[string]any{{"type": "bt-no-such-plugin"}}
	b := NewForTest(t, opts)
	_, err := b.AddPod(context.Background(), "x", "a", PodOptions{})
	if err == nil {
		t.Fatal("ADD with a missing plugin succeeded")
	}
	if !strings.Contains(err.Error(), "bt-no-such-plugin") {
		t.Errorf("error %q does not name the missing plugin", err)
	}
	if len(b.Pods()) != 0 {
		t.Errorf("bed has pods %v after a failed ADD", b.Pods())
	}
	assertNoNetns(t, "bt5")
	assertNoLinksInRanges(t)

	// Denied twin: the same bed without the broken plugin adds pods.
	opts = testOptions(t, "bt6")
	opts.ExternalCIDRv4 = netip.Prefix{}
	b.Close()
	ok := NewForTest(t, opts)
	if _, err := ok.AddPod(context.Background(), "x", "a", PodOptions{}); err != nil {
		t.Errorf("ADD with a good chain: %v", err)
	}
}

// sendRaw sends one SCTP packet from a pod with a raw socket.
func sendRaw(t *testing.T, from *Pod, to netip.Addr, pkt []byte) {
	t.Helper()
	var conn *net.IPConn
	err := inNetns(from.NetnsPath, func() error {
		var err error
		conn, err = net.DialIP(rawNet(familyOf(to)), nil, &net.IPAddr{IP: to.AsSlice()})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
}

var counterRE = regexp.MustCompile(`^\[(\d+):\d+\] `)

// ruleCount returns the packet counter of the IPv4 INPUT rule carrying the
// given comment in the pod's netns.
func ruleCount(t *testing.T, p *Pod, comment string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", p.NetnsName, "iptables-save", "-c", "-t", "filter").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, "--comment "+comment) {
			continue
		}
		m := counterRE.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("no counter in %q", line)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	t.Fatalf("no rule with comment %s", comment)
	return 0
}

func waitFor(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("after %s, still not: %s", within, what)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func assertNothingLeft(t *testing.T, bedName string, veths []string) {
	t.Helper()
	for _, l := range leftovers(t, bedName, veths) {
		t.Errorf("left behind: %s", l)
	}
}

// leftovers lists what of a bed exists on the host: its netns, the given
// links, host addresses and routes inside the test ranges.
func leftovers(t *testing.T, bedName string, veths []string) []string {
	t.Helper()
	var out []string
	netnses, _ := filepath.Glob(filepath.Join(netnsDir, "pw-"+bedName+"-*"))
	for _, n := range netnses {
		out = append(out, "netns "+n)
	}
	for _, v := range veths {
		if _, err := netlink.LinkByName(v); err == nil {
			out = append(out, "link "+v)
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && insideTestRanges(netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen())) {
			out = append(out, fmt.Sprintf("host address %s (link index %d)", a.IPNet, a.LinkIndex))
		}
	}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if dst, ok := netipPrefix(r.Dst.String()); ok && insideTestRanges(dst) {
			out = append(out, "route "+r.String())
		}
	}
	return out
}

func assertNoNetns(t *testing.T, bedName string) {
	t.Helper()
	left, _ := filepath.Glob(filepath.Join(netnsDir, "pw-"+bedName+"-*"))
	if len(left) > 0 {
		t.Errorf("netns left: %v", left)
	}
}

// assertNoLinksInRanges fails if a host link holds an address of the test
// ranges (ptp puts the range's gateway on each pod's host veth).
func assertNoLinksInRanges(t *testing.T) {
	t.Helper()
	for _, l := range leftovers(t, "-", nil) {
		if strings.HasPrefix(l, "host address") {
			t.Errorf("left behind: %s", l)
		}
	}
}

// insideTestRanges reports whether p lies inside one of the test ranges.
func insideTestRanges(p netip.Prefix) bool {
	for _, r := range []netip.Prefix{testPodV4, testPodV6, testExtV4} {
		if r.Overlaps(p) && p.Bits() >= r.Bits() {
			return true
		}
	}
	return false
}

func netipPrefix(s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	return p, err == nil
}

// hostRouteType is the type (unicast, blackhole…) of the host's main-table
// route to a: the most specific one, lowest metric first. (`ip route get`
// cannot tell: the kernel answers EINVAL for a blackhole.)
func hostRouteType(a netip.Addr) (int, error) {
	family := netlink.FAMILY_V4
	if a.Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, err
	}
	best, bestBits, bestMetric := -1, -1, 0
	for i, r := range routes {
		p := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if a.Is6() {
			p = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		if r.Dst != nil {
			var ok bool
			if p, ok = netipPrefix(r.Dst.String()); !ok {
				continue
			}
		}
		if !p.Contains(a) {
			continue
		}
		if p.Bits() > bestBits || (p.Bits() == bestBits && r.Priority < bestMetric) {
			best, bestBits, bestMetric = i, p.Bits(), r.Priority
		}
	}
	if best < 0 {
		return 0, fmt.Errorf("no host route to %s", a)
	}
	return routes[best].Type, nil
}

// TestSingleStack checks IPv4-only and IPv6-only beds.
func TestSingleStack(t *testing.T) {
	RequireRoot(t)
	for _, f := range []Family{IPv4, IPv6} {
		t.Run(f.String(), func(t *testing.T) {
			opts := testOptions(t, "bt7")
			opts.ExternalCIDRv4 = netip.Prefix{}
			if f == IPv4 {
				opts.PodCIDRv6 = netip.Prefix{}
			} else {
				opts.PodCIDRv4 = netip.Prefix{}
			}
			b := NewForTest(t, opts)
			pods, err := b.AddPods(context.Background(), []string{"x/a", "x/b"}, ServePort{TCP, 80}, ServePort{UDP, 80}, ServePort{SCTP, 80})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pods {
				if fs := p.Families(); len(fs) != 1 || fs[0] != f {
					t.Fatalf("pod %s has %v, want %s only", p, p.IPs, f)
				}
			}
			for _, proto := range []string{TCP, UDP, SCTP} {
				mustProbe(t, true, pods[0], pods[1], f, 80, proto)
				remove := firewall(t, pods[1], f, "INPUT", "-p", strings.ToLower(proto), "-j", "DROP")
				mustProbe(t, false, pods[0], pods[1], f, 80, proto)
				remove()
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			assertNothingLeft(t, "bt7", nil)
		})
	}
}
