package main

import (
	"fmt"
	"os"
)

// logFile appends log lines to the file at path, opened on the first line
// (so a run that logs nothing creates nothing). When the file cannot be
// opened the lines go to stderr, after one line saying why: logging must
// never fail a verb, nor reach stdout.
type logFile struct {
	path string
	f    *os.File
	err  error
}

func (l *logFile) Write(p []byte) (int, error) {
	if l.f == nil && l.err == nil {
		l.f, l.err = os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if l.err != nil {
			fmt.Fprintf(os.Stderr, "podwall: cannot open logFile, logging to stderr: %v\n", l.err)
		}
	}
	if l.err != nil {
		return os.Stderr.Write(p)
	}
	return l.f.Write(p)
}
