package main

import (
	"strings"
	"testing"
)

func TestServiceCIDRFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    string
		wantErr string
	}{
		{"none", nil, "", ""},
		{"one", []string{"--service-cidr", "10.96.0.0/12"}, "10.96.0.0/12", ""},
		{"repeated and comma-separated, dual-stack, sorted, unique",
			[]string{"--service-cidr", "fd00:96::/108, 10.96.0.0/12", "--service-cidr=10.100.0.0/16,10.96.0.0/12"},
			"10.96.0.0/12,10.100.0.0/16,fd00:96::/108", ""},
		{"host bits masked like kube-apiserver", []string{"--service-cidr", "10.96.0.1/12"}, "10.96.0.0/12", ""},
		{"not a CIDR", []string{"--service-cidr", "10.96.0.0"}, "", `range "10.96.0.0": want a CIDR`},
		{"bad length", []string{"--service-cidr", "10.96.0.0/33"}, "", `range "10.96.0.0/33"`},
		{"empty entry", []string{"--service-cidr", "10.96.0.0/12,"}, "", "empty range"},
		{"IPv4-mapped", []string{"--service-cidr", "::ffff:10.96.0.0/108"}, "", "plain IPv4 or IPv6"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"--manifests", "/nonexistent", "--node-name", "n"}, tt.args...)
			cfg, err := parseFlags(args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseFlags(%q) error = %v, want one containing %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseFlags(%q): %v", tt.args, err)
			}
			if got := cfg.serviceCIDRs.String(); got != tt.want {
				t.Errorf("--service-cidr = %q, want %q", got, tt.want)
			}
		})
	}
}
