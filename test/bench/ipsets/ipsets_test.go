package ipsets

import (
	"fmt"
	"io"
	"log"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestReader creates a netns pw-bnip-<pid> with two hash:net sets and reads
// them back: members (including a dump split over several messages),
// Contains for a member and a non-member, and SetHolding.
func TestReader(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, ipset)")
	}
	// The netlink library logs every ipset attribute it does not decode.
	log.SetOutput(io.Discard)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	name := fmt.Sprintf("pw-bnip-%d", os.Getpid())
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	var restore strings.Builder
	restore.WriteString("create pw4-0-g1 hash:net family inet\ncreate pw4-1-g1 hash:net family inet\ncreate other hash:net family inet\n")
	for i := range 3000 {
		fmt.Fprintf(&restore, "add pw4-0-g1 10.216.%d.%d\n", i/250, i%250+1)
	}
	restore.WriteString("add pw4-1-g1 10.216.200.0/24\nadd other 10.216.0.1\n")
	cmd := exec.Command("ip", "netns", "exec", name, "ipset", "restore")
	cmd.Stdin = strings.NewReader(restore.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ipset restore: %v: %s", err, out)
	}

	r, err := Open("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sets, err := r.List("pw4-")
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 2 || sets[0].Name != "pw4-0-g1" || sets[1].Name != "pw4-1-g1" {
		t.Fatalf("List = %d sets %v, want pw4-0-g1 and pw4-1-g1", len(sets), names(sets))
	}
	if n := len(sets[0].Members); n != 3000 {
		t.Errorf("pw4-0-g1 has %d members, want 3000", n)
	}
	if got := sets[1].Members; len(got) != 1 || got[0] != netip.MustParsePrefix("10.216.200.0/24") {
		t.Errorf("pw4-1-g1 members = %v", got)
	}
	for _, tc := range []struct {
		set, addr string
		want      bool
	}{
		{"pw4-0-g1", "10.216.0.1", true},
		{"pw4-0-g1", "10.216.199.1", false},
		{"pw4-1-g1", "10.216.200.77", true},
	} {
		got, err := r.Contains(tc.set, netip.MustParseAddr(tc.addr))
		if err != nil || got != tc.want {
			t.Errorf("Contains(%s, %s) = %t, %v; want %t", tc.set, tc.addr, got, err, tc.want)
		}
	}
	if _, err := r.Contains("pw4-9-g1", netip.MustParseAddr("10.216.0.1")); err == nil {
		t.Error("Contains on a missing set did not fail")
	}
	if got, err := r.SetHolding("pw4-", netip.MustParseAddr("10.216.200.9")); err != nil || got != "pw4-1-g1" {
		t.Errorf("SetHolding = %q, %v; want pw4-1-g1", got, err)
	}
	if _, err := r.SetHolding("pw4-", netip.MustParseAddr("10.216.250.1")); err == nil {
		t.Error("SetHolding of an address no set holds did not fail")
	}
}

func names(sets []Set) []string {
	var out []string
	for _, s := range sets {
		out = append(out, s.Name)
	}
	return out
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}
