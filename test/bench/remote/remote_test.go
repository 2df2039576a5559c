package remote

import (
	"net/netip"
	"testing"
)

func TestAddr(t *testing.T) {
	base := netip.MustParsePrefix("10.216.64.0/18")
	for _, tc := range []struct {
		i       int
		want    string
		wantErr bool
	}{
		{0, "10.216.64.1", false},
		{1, "10.216.64.3", false},
		{126, "10.216.64.253", false},
		{127, "10.216.65.1", false},
		{64*PerBlock - 1, "10.216.127.253", false},
		{64 * PerBlock, "", true},
		{-1, "", true},
	} {
		got, err := Addr(base, tc.i)
		if (err != nil) != tc.wantErr {
			t.Errorf("Addr(%d) error = %v, want error %t", tc.i, err, tc.wantErr)
			continue
		}
		if !tc.wantErr && got.String() != tc.want {
			t.Errorf("Addr(%d) = %s, want %s", tc.i, got, tc.want)
		}
	}
	if _, err := Addr(netip.MustParsePrefix("10.215.0.0/16"), 0); err == nil {
		t.Error("Addr outside the remote range did not fail")
	}
}

func TestAddBlackholeOutsideRange(t *testing.T) {
	for _, p := range []string{"10.215.0.0/16", "10.0.0.0/8"} {
		if _, err := AddBlackhole(netip.MustParsePrefix(p)); err == nil {
			t.Errorf("AddBlackhole(%s) did not fail", p)
		}
	}
}
