package main

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestInstallPlugin: the binary lands as binDir/podwall, mode 0755, through
// a rename (no temporary file left), and an identical one is not rewritten.
func TestInstallPlugin(t *testing.T) {
	src := filepath.Join(t.TempDir(), "podwall")
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	binDir := filepath.Join(t.TempDir(), "opt", "cni", "bin")
	for i, want := range []bool{true, false} {
		changed, err := installPlugin(src, binDir)
		if err != nil || changed != want {
			t.Fatalf("installPlugin #%d = %v, %v; want changed=%v", i, changed, err, want)
		}
	}
	dst := filepath.Join(binDir, "podwall")
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("%s: %v, %v", dst, fi, err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	if err := os.WriteFile(src, []byte("#!/bin/sh\necho v2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := installPlugin(src, binDir); err != nil || !changed {
		t.Fatalf("installPlugin of a new binary = %v, %v", changed, err)
	}
	if got, _ := os.ReadFile(dst); !bytes.Contains(got, []byte("v2")) {
		t.Errorf("not replaced: %s", got)
	}
	if fi2, _ := os.Stat(dst); fi2.Sys().(*syscall.Stat_t).Ino == ino {
		t.Errorf("replaced in place, not by rename")
	}
	entries, _ := os.ReadDir(binDir)
	if len(entries) != 1 {
		t.Errorf("bin dir holds %d files, want only podwall", len(entries))
	}
	if _, err := installPlugin(filepath.Join(t.TempDir(), "missing"), binDir); err == nil {
		t.Error("installPlugin of a missing binary succeeded")
	}
}

// TestCNICommandExitCodes: the exit statuses scripts and kubelet see.
func TestCNICommandExitCodes(t *testing.T) {
	plugin := filepath.Join(t.TempDir(), "podwall")
	if err := os.WriteFile(plugin, []byte("plugin"), 0o755); err != nil {
		t.Fatal(err)
	}
	confDir := t.TempDir()
	binDir := t.TempDir()
	common := []string{"--cni-conf-dir", confDir, "--cni-bin-dir", binDir}
	writeConf := func(data string) {
		if err := os.WriteFile(filepath.Join(confDir, "10-net.conflist"), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name  string
		conf  string // written first when not ""
		args  []string
		want  int
		extra bool // not a CNI command at all
	}{
		{name: "daemon flags", args: []string{"--socket", "x"}, extra: true},
		{name: "help", args: []string{"install-cni", "-h"}, want: exitOK},
		{name: "unknown flag", args: []string{"install-cni", "--nope"}, want: exitUsage},
		{name: "extra argument", args: []string{"uninstall-cni", "now"}, want: exitUsage},
		{name: "no configuration", args: append([]string{"install-cni", "--plugin", plugin}, common...), want: exitRefused},
		{name: "old cniVersion", conf: `{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"ptp"}]}`, args: append([]string{"install-cni", "--plugin", plugin}, common...), want: exitRefused},
		{name: "missing plugin binary", conf: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]}`, args: append([]string{"install-cni", "--plugin", plugin + ".missing"}, common...), want: exitFailed},
		{name: "install", args: append([]string{"install-cni", "--plugin", plugin, "--fail-open", "--timeout", "3s"}, common...), want: exitOK},
		{name: "uninstall", args: append([]string{"uninstall-cni", "--remove-binary"}, common...), want: exitOK},
		{name: "broken", conf: `{"cniVersion"`, args: append([]string{"uninstall-cni"}, common...), want: exitRefused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.conf != "" {
				writeConf(tt.conf)
			}
			code, ok := runCNICommand(tt.args)
			if ok == tt.extra || (ok && code != tt.want) {
				t.Fatalf("runCNICommand(%q) = %d, %v; want %d", tt.args, code, ok, tt.want)
			}
			switch tt.name {
			case "install":
				got, _ := os.ReadFile(filepath.Join(confDir, "10-net.conflist"))
				if !bytes.Contains(got, []byte(`"failOpen":true,"timeout":"3s"`)) {
					t.Errorf("conflist after install: %s", got)
				}
			case "uninstall":
				if _, err := os.Stat(filepath.Join(binDir, "podwall")); err == nil {
					t.Error("--remove-binary left the plugin")
				}
			}
		})
	}
}
