package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// serve is `bench serve -addr :80`: the benchmark's HTTP server, a tiny
// handler answering "ok" to every request, run inside a server pod's netns.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	addr := fs.String("addr", ":80", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srv := &http.Server{
		Addr:              *addr,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "ok\n")
		}),
	}
	if err := srv.ListenAndServe(); err != nil {
		return fmt.Errorf("serve %s: %w", *addr, err)
	}
	return nil
}
