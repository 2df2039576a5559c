package main

import (
	"errors"
	"testing"
	"time"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name     string
		config   string
		wantErr  error // nil, errDecode or errInvalidConfig
		socket   string
		failOpen bool
		timeout  time.Duration
		noConfig bool // parseConfig returns no config at all
	}{
		{name: "defaults", config: `{"cniVersion":"1.0.0","name":"net","type":"podwall"}`,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "socket", config: `{"name":"net","socket":"/tmp/x/pw.sock"}`,
			socket: "/tmp/x/pw.sock", timeout: defaultTimeout},
		{name: "failOpen true", config: `{"name":"net","failOpen":true}`,
			socket: defaultSocket, failOpen: true, timeout: defaultTimeout},
		{name: "failOpen false", config: `{"name":"net","failOpen":false}`,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "timeout", config: `{"name":"net","timeout":"300ms"}`,
			socket: defaultSocket, timeout: 300 * time.Millisecond},
		{name: "null values mean default", config: `{"name":"net","socket":null,"failOpen":null,"timeout":null}`,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "unknown keys ignored", config: `{"name":"net","flavour":"mint","nested":{"a":[1,2]},"Socket2":"x"}`,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "bad JSON", config: `{"name":"net",`, wantErr: errDecode, noConfig: true},
		{name: "not an object", config: `[1,2]`, wantErr: errDecode, noConfig: true},
		{name: "empty input", config: ``, wantErr: errDecode, noConfig: true},
		{name: "unparsable timeout", config: `{"name":"net","timeout":"soon"}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "timeout without unit", config: `{"name":"net","timeout":"10"}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "zero timeout", config: `{"name":"net","timeout":"0s"}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "negative timeout", config: `{"name":"net","timeout":"-1s"}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "numeric timeout", config: `{"name":"net","timeout":10}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "empty socket", config: `{"name":"net","socket":""}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "relative socket", config: `{"name":"net","socket":"run/pw.sock"}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "socket not a string", config: `{"name":"net","socket":7}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "failOpen a string", config: `{"name":"net","failOpen":"yes"}`, wantErr: errInvalidConfig,
			socket: defaultSocket, timeout: defaultTimeout},
		{name: "bad values keep the good ones", config: `{"name":"net","socket":"/s.sock","failOpen":1,"timeout":"1s"}`,
			wantErr: errInvalidConfig, socket: "/s.sock", timeout: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf, err := parseConfig([]byte(tt.config))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("parseConfig(%s) error = %v, want %v", tt.config, err, tt.wantErr)
			}
			if tt.noConfig {
				if conf != nil {
					t.Fatalf("parseConfig(%s) returned a config with error %v", tt.config, err)
				}
				return
			}
			if conf.Socket != tt.socket || conf.FailOpen != tt.failOpen || conf.Timeout != tt.timeout {
				t.Errorf("parseConfig(%s) = socket %q failOpen %v timeout %v, want %q %v %v", tt.config,
					conf.Socket, conf.FailOpen, conf.Timeout, tt.socket, tt.failOpen, tt.timeout)
			}
		})
	}
}

func TestParseConfigKeepsCNIFields(t *testing.T) {
	conf, err := parseConfig([]byte(`{"cniVersion":"1.1.0","name":"pods","type":"podwall",
		"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],
		"prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.9.0.2/24"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.CNIVersion != "1.1.0" || conf.Name != "pods" || conf.RawPrevResult == nil {
		t.Errorf("CNI fields lost: %+v", conf.PluginConf)
	}
	if len(conf.ValidAttachments) != 1 || conf.ValidAttachments[0].ContainerID != "c1" || conf.ValidAttachments[0].IfName != "eth0" {
		t.Errorf("valid attachments = %+v", conf.ValidAttachments)
	}
}
