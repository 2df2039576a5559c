package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

const (
	defaultSocket  = "/run/podwall/podwall.sock"
	defaultTimeout = 10 * time.Second
)

// pluginConfig is podwall's entry of a conflist with its defaults applied.
type pluginConfig struct {
	types.PluginConf

	// Socket is the absolute path of podwalld's unix socket.
	Socket string
	// FailOpen lets ADD succeed when the daemon cannot be reached.
	FailOpen bool
	// Timeout is the deadline of every RPC to the daemon.
	Timeout time.Duration
	// LogFile, when set, is the absolute path of a file the plugin appends
	// its log lines to instead of writing them to stderr.
	LogFile string
}

// podwallKeys holds the raw values of the keys podwall reads itself. Each is
// decoded on its own, so that a value of the wrong type is an invalid config
// (CNI code 7) and not a decoding failure (6), which is kept for bad JSON.
type podwallKeys struct {
	Socket   json.RawMessage `json:"socket"`
	FailOpen json.RawMessage `json:"failOpen"`
	Timeout  json.RawMessage `json:"timeout"`
	LogFile  json.RawMessage `json:"logFile"`
}

// parseConfig decodes the network configuration from stdin. Unknown keys are
// ignored. Malformed JSON wraps errDecode and returns no config. Bad values
// wrap errInvalidConfig (all of them, joined); the config is returned even
// then, holding the default for every key whose value was bad, so that DEL can
// go on with it.
func parseConfig(data []byte) (*pluginConfig, error) {
	conf := &pluginConfig{Socket: defaultSocket, Timeout: defaultTimeout}
	if err := json.Unmarshal(data, &conf.PluginConf); err != nil {
		return nil, fmt.Errorf("%w: %w", errDecode, err)
	}
	var raw podwallKeys
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %w", errDecode, err)
	}

	var errs []error
	if present(raw.Socket) {
		var socket string
		switch err := json.Unmarshal(raw.Socket, &socket); {
		case err != nil:
			errs = append(errs, fmt.Errorf("socket must be a string: %w", err))
		case socket == "":
			errs = append(errs, errors.New("socket must not be empty"))
		case !filepath.IsAbs(socket):
			errs = append(errs, fmt.Errorf("socket %q must be an absolute path", socket))
		default:
			conf.Socket = socket
		}
	}
	if present(raw.FailOpen) {
		if err := json.Unmarshal(raw.FailOpen, &conf.FailOpen); err != nil {
			errs = append(errs, fmt.Errorf("failOpen must be true or false: %w", err))
		}
	}
	if present(raw.Timeout) {
		var text string
		if err := json.Unmarshal(raw.Timeout, &text); err != nil {
			errs = append(errs, fmt.Errorf("timeout must be a duration string such as \"10s\": %w", err))
		} else if timeout, err := time.ParseDuration(text); err != nil {
			errs = append(errs, fmt.Errorf("timeout: %w", err))
		} else if timeout <= 0 {
			errs = append(errs, fmt.Errorf("timeout %q must be positive", text))
		} else {
			conf.Timeout = timeout
		}
	}
	if present(raw.LogFile) {
		var logFile string
		switch err := json.Unmarshal(raw.LogFile, &logFile); {
		case err != nil:
			errs = append(errs, fmt.Errorf("logFile must be a string: %w", err))
		case logFile == "":
		case !filepath.IsAbs(logFile):
			errs = append(errs, fmt.Errorf("logFile %q must be an absolute path", logFile))
		default:
			conf.LogFile = logFile
		}
	}
	if err := errors.Join(errs...); err != nil {
		return conf, fmt.Errorf("%w: %w", errInvalidConfig, err)
	}
	return conf, nil
}

// present reports whether a key was given a value other than null.
func present(value json.RawMessage) bool {
	return len(value) > 0 && string(value) != "null"
}
