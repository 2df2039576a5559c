package bed

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderConfList(t *testing.T) {
	opts := Options{
		Name:      "bt0",
		PodCIDRv4: netip.MustParsePrefix("10.202.0.0/16"),
		PodCIDRv6: netip.MustParsePrefix("fd00:202::/64"),
		Extra:     []map[string]any{{"type": "podwall", "socket": "/run/x.sock", "timeout": "5s"}},
	}
	got, err := renderConfList("pw-bt0", opts, "/tmp/ipam")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "conflist-dualstack.golden", string(got)+"\n")

	opts.PodCIDRv6 = netip.Prefix{}
	opts.Extra = nil
	got, err = renderConfList("pw-bt0", opts, "/tmp/ipam")
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "conflist-v4.golden", string(got)+"\n")
}

func TestValidateOptions(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"ptp", "host-local"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	withPodwall := t.TempDir()
	if err := os.WriteFile(filepath.Join(withPodwall, "podwall"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	v4 := netip.MustParsePrefix("10.202.0.0/16")
	v6 := netip.MustParsePrefix("fd00:202::/64")
	ext := netip.MustParsePrefix("203.0.113.0/24")
	valid := func() Options {
		return Options{Name: "bt0", CNIBinDir: bin, PodCIDRv4: v4, PodCIDRv6: v6, ExternalCIDRv4: ext}
	}
	tests := []struct {
		name    string
		edit    func(*Options)
		wantErr string // "" for valid
	}{
		{"valid dual-stack with external", func(*Options) {}, ""},
		{"valid v6 only", func(o *Options) { o.PodCIDRv4, o.ExternalCIDRv4 = netip.Prefix{}, netip.Prefix{} }, ""},
		{"unmasked prefixes are masked", func(o *Options) { o.PodCIDRv4 = netip.MustParsePrefix("10.202.3.4/16") }, ""},
		{"unknown extra plugin is ADD's business", func(o *Options) { o.Extra = []map[string]any{{"type": "nope"}} }, ""},
		{"podwall found in CNIPath", func(o *Options) {
			o.Extra = []map[string]any{{"type": "podwall"}}
			o.CNIPath = []string{withPodwall}
		}, ""},
		{"empty name", func(o *Options) { o.Name = "" }, "name"},
		{"name too long", func(o *Options) { o.Name = "bt012345678" }, "name"},
		{"name with dash", func(o *Options) { o.Name = "bt-1" }, "name"},
		{"no bin dir", func(o *Options) { o.CNIBinDir = "" }, "CNIBinDir"},
		{"ptp missing", func(o *Options) { o.CNIBinDir = withPodwall }, "ptp"},
		{"podwall missing", func(o *Options) { o.Extra = []map[string]any{{"type": "podwall"}} }, "podwall"},
		{"extra without type", func(o *Options) { o.Extra = []map[string]any{{"socket": "x"}} }, "type"},
		{"no pod range", func(o *Options) { o.PodCIDRv4, o.PodCIDRv6 = netip.Prefix{}, netip.Prefix{} }, "no pod range"},
		{"v6 as v4", func(o *Options) { o.PodCIDRv4 = v6 }, "PodCIDRv4"},
		{"v4 as v6", func(o *Options) { o.PodCIDRv6 = v4 }, "PodCIDRv6"},
		{"v4 too narrow", func(o *Options) { o.PodCIDRv4 = netip.MustParsePrefix("10.202.0.0/31") }, "PodCIDRv4"},
		{"external v6", func(o *Options) { o.ExternalCIDRv4 = v6 }, "ExternalCIDRv4"},
		{"external too narrow", func(o *Options) { o.ExternalCIDRv4 = netip.MustParsePrefix("203.0.113.0/29") }, "ExternalCIDRv4"},
		{"external overlaps pods", func(o *Options) { o.ExternalCIDRv4 = netip.MustParsePrefix("10.202.7.0/24") }, "overlaps"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := valid()
			tc.edit(&o)
			err := validateOptions(&o)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("no error, want one mentioning %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
			if err == nil && o.PodCIDRv4.IsValid() && o.PodCIDRv4 != o.PodCIDRv4.Masked() {
				t.Errorf("PodCIDRv4 %s not masked", o.PodCIDRv4)
			}
		})
	}
}

func TestExternalAddrs(t *testing.T) {
	host, ext := externalAddrs(netip.MustParsePrefix("203.0.113.0/24"))
	if host.String() != "203.0.113.1" || ext.String() != "203.0.113.10" {
		t.Errorf("externalAddrs = %s, %s; want 203.0.113.1, 203.0.113.10", host, ext)
	}
}
