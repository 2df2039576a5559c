package main

import (
	"fmt"
	"io"
	"log/slog"

	"k8s.io/klog/v2"
)

// logFormats are the values of --log-format.
var logFormats = []string{"text", "json"}

// newLogger returns podwalld's logger: slog key/value lines on w, as text
// (key=value) or JSON (one object per line), at level and above. client-go's
// own messages (klog) go through it too, so every line has one format.
func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch format {
	case "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	log := slog.New(h)
	slog.SetDefault(log)
	klog.SetSlogLogger(log.With("component", "client-go"))
	return log, nil
}
