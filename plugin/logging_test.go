package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// wantStdout is exactly what ADD must print for config: the prevResult in
// the config's version, as types.PrintResult prints it.
func wantStdout(t *testing.T, config string) string {
	t.Helper()
	conf, err := parseConfig([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parsePrevResult(conf, "ADD"); err != nil {
		t.Fatal(err)
	}
	res, err := conf.PrevResult.GetAsVersion(conf.CNIVersion)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := res.PrintTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestLogsNeverReachStdout: a verb that logs (ADD with failOpen while the
// daemon is down warns that the pod is unprotected; DEL warns that the
// daemon did not answer) prints exactly the CNI result on stdout, byte for
// byte, and its log lines on stderr or, with logFile, in that file only.
func TestLogsNeverReachStdout(t *testing.T) {
	netns := newNetNS(t)
	for _, cniVersion := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		for _, withFile := range []bool{false, true} {
			name := cniVersion + " stderr"
			if withFile {
				name = cniVersion + " logFile"
			}
			t.Run(name, func(t *testing.T) {
				extra := map[string]any{"failOpen": true}
				logPath := filepath.Join(t.TempDir(), "podwall.log")
				if withFile {
					extra["logFile"] = logPath
				}
				config := netConf(t, cniVersion, absentSocket(t), extra, prevResultJSON(cniVersion, netns))
				out := run(t, addInvocation(netns, config))
				out.wantCode(t, 0)
				if want := wantStdout(t, config); out.stdout != want {
					t.Errorf("ADD stdout is not exactly the result:\n%q\nwant\n%q", out.stdout, want)
				}
				del := addInvocation(netns, config)
				del.command = "DEL"
				delOut := run(t, del)
				delOut.wantCode(t, 0)
				if delOut.stdout != "" {
					t.Errorf("DEL stdout %q, want nothing", delOut.stdout)
				}

				logged, _ := os.ReadFile(logPath)
				where, other := out.stderr+delOut.stderr, string(logged)
				if withFile {
					where, other = other, where
				}
				for _, want := range []string{"verb=ADD", "failOpen", "WITHOUT", "pod=shop/web-0", "verb=DEL", "GC will"} {
					if !strings.Contains(where, want) {
						t.Errorf("log lacks %q:\n%s", want, where)
					}
				}
				if other != "" {
					t.Errorf("log lines in the wrong place: %q", other)
				}
			})
		}
	}
}

// TestLogFileConfig: a logFile that is not an absolute path is an invalid
// config; one that cannot be opened sends the lines to stderr instead,
// saying so, and the verb still succeeds.
func TestLogFileConfig(t *testing.T) {
	netns := newNetNS(t)
	prevResult := prevResultJSON("1.0.0", netns)
	out := run(t, addInvocation(netns, netConf(t, "1.0.0", absentSocket(t), map[string]any{"logFile": "podwall.log"}, prevResult)))
	out.wantCode(t, types.ErrInvalidNetworkConfig)
	if !strings.Contains(out.msg, `logFile "podwall.log" must be an absolute path`) {
		t.Errorf("message %q", out.msg)
	}
	out = run(t, addInvocation(netns, netConf(t, "1.0.0", absentSocket(t), map[string]any{"logFile": 42}, prevResult)))
	out.wantCode(t, types.ErrInvalidNetworkConfig)

	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "podwall.log")
	config := netConf(t, "1.0.0", absentSocket(t), map[string]any{"failOpen": true, "logFile": missing}, prevResult)
	out = run(t, addInvocation(netns, config))
	out.wantCode(t, 0)
	if want := wantStdout(t, config); out.stdout != want {
		t.Errorf("stdout %q, want %q", out.stdout, want)
	}
	if !strings.Contains(out.stderr, "cannot open logFile, logging to stderr") || !strings.Contains(out.stderr, "WITHOUT") {
		t.Errorf("stderr %q", out.stderr)
	}
}
