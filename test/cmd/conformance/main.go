// Command conformance writes docs/conformance.md: the result of every
// upstream NetworkPolicy e2e test (test/netpol's suites) in each mode podwall
// runs them in, read from `go test -json` streams.
//
//	go test -json -run '^TestUpstream' ./test/e2e/ > manifests.json
//	go test -json -run '^TestKubeUpstream' ./test/e2e/kube/ > kube.json
//	conformance -manifests manifests.json -kube kube.json -out docs/conformance.md
//
// A test's result is its subtest's pass, fail or skip. A subtest missing from
// the stream takes its suite test's result when that skipped or failed, and
// is a failure otherwise (it never ran). The Kubernetes version is the one the
// kube-mode suites logged ("kubernetes-version: v1.34.4", read from the API
// server's /version) unless -kube-version is given. The command exits 1 after
// writing the report when any test did not pass (skips included), so `make
// conformance` fails then; -allow-failures makes it exit 0.
//
// It imports test/netpol for the list of tests and nothing of the daemon.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/podwall/podwall/test/netpol"
)

// Result is a test's outcome.
type Result string

// The results a row can show.
const (
	Pass Result = "pass"
	Fail Result = "fail"
	Skip Result = "skip"
)

// Mode is one way podwall runs the suites: its name in the report, what it
// is, and the Go test function of each suite.
type Mode struct {
	Name        string
	Description string
	// Funcs maps a netpol suite name to the Go test running it.
	Funcs map[string]string
}

// Modes are the modes of the report, in report order.
var Modes = []Mode{
	{
		Name:        "manifests",
		Description: "podwalld `--manifests` on a directory of Namespace, Pod and NetworkPolicy manifests (test/e2e)",
		Funcs: map[string]string{
			netpol.SuiteLegacy:     "TestUpstreamLegacy118",
			netpol.SuiteNetpol:     "TestUpstreamNetpol",
			netpol.SuiteNetpolUDP:  "TestUpstreamNetpolUDP",
			netpol.SuiteNetpolSCTP: "TestUpstreamNetpolSCTP",
		},
	},
	{
		Name:        "kubernetes",
		Description: "podwalld `--kubeconfig` against a real kube-apiserver, as the ServiceAccount of install/rbac.yaml, pods created through the API and plumbed through the CNI chain by a kubelet stand-in (test/e2e/kube)",
		Funcs: map[string]string{
			netpol.SuiteLegacy:     "TestKubeUpstreamLegacy118",
			netpol.SuiteNetpol:     "TestKubeUpstreamNetpol",
			netpol.SuiteNetpolUDP:  "TestKubeUpstreamNetpolUDP",
			netpol.SuiteNetpolSCTP: "TestKubeUpstreamNetpolSCTP",
		},
	},
}

// Suites returns the upstream tests, suite by suite, in upstream order.
func Suites() [][]netpol.Test {
	return [][]netpol.Test{netpol.Legacy118(), netpol.Netpol(), netpol.NetpolUDP(), netpol.NetpolSCTP()}
}

// event is one line of `go test -json` (test2json).
type event struct {
	Action string
	Test   string
	Output string
}

// Stream is what a `go test -json` stream says: the final action of every
// test and subtest ("pass", "fail", "skip"), by the name test2json gives it,
// and the Kubernetes version logged in it, if any.
type Stream struct {
	Results     map[string]Result
	KubeVersion string
}

// kubeVersionRE matches the line the kube-mode suites log.
var kubeVersionRE = regexp.MustCompile(`kubernetes-version: (v\d+\.\d+\.\d+\S*)`)

// ParseStream reads a `go test -json` stream. Lines that are not JSON (build
// output) are ignored; a stream with no test event at all is an error.
func ParseStream(r io.Reader) (*Stream, error) {
	s := &Stream{Results: map[string]Result{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	events := 0
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			continue
		}
		events++
		switch e.Action {
		case "pass", "fail", "skip":
			if e.Test != "" {
				s.Results[e.Test] = Result(e.Action)
			}
		case "output":
			if m := kubeVersionRE.FindStringSubmatch(e.Output); m != nil && s.KubeVersion == "" {
				s.KubeVersion = m[1]
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read go test -json stream: %w", err)
	}
	if events == 0 {
		return nil, errors.New("no go test -json events in the stream")
	}
	return s, nil
}

// SubtestName is the name `go test` gives subtest name of parent: spaces
// become underscores and unprintable runes are escaped (testing's rewrite).
func SubtestName(parent, name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case unicode.IsSpace(r):
			b.WriteByte('_')
		case !strconv.IsPrint(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteRune(r)
		}
	}
	return parent + "/" + b.String()
}

// Row is one line of the report's table.
type Row struct {
	Suite, Test, Mode string
	Result            Result
	// NotRun is set when the stream has no result for the test or its
	// suite test (Result is then Fail).
	NotRun bool
}

// Rows returns a row per upstream test per mode, suite by suite and test by
// test in upstream order, the modes of a test together. streams maps a
// mode's name to its stream; a mode without one has every test not run.
func Rows(suites [][]netpol.Test, modes []Mode, streams map[string]*Stream) []Row {
	var rows []Row
	for _, suite := range suites {
		for _, test := range suite {
			for _, mode := range modes {
				row := Row{Suite: test.Suite, Test: test.Name, Mode: mode.Name}
				row.Result, row.NotRun = result(streams[mode.Name], mode.Funcs[test.Suite], test.Name)
				rows = append(rows, row)
			}
		}
	}
	return rows
}

func result(s *Stream, fn, name string) (Result, bool) {
	if s == nil || fn == "" {
		return Fail, true
	}
	if r, ok := s.Results[SubtestName(fn, name)]; ok {
		return r, false
	}
	switch parent, ok := s.Results[fn]; {
	case !ok:
		return Fail, true
	case parent == Skip:
		return Skip, false
	case parent == Fail:
		return Fail, true
	}
	return Fail, true // the suite passed without running it
}

// Report is everything the document shows.
type Report struct {
	PodwallVersion string
	KubeVersion    string
	Date           time.Time
	Modes          []Mode
	Rows           []Row
}

// Counts returns the pass, fail and skip counts of mode, and how many of
// its failures never ran.
func (r *Report) Counts(mode string) (pass, fail, skip, notRun int) {
	for _, row := range r.Rows {
		if row.Mode != mode {
			continue
		}
		switch row.Result {
		case Pass:
			pass++
		case Fail:
			fail++
		case Skip:
			skip++
		}
		if row.NotRun {
			notRun++
		}
	}
	return pass, fail, skip, notRun
}

// Render writes the report as Markdown.
func Render(w io.Writer, r *Report) error {
	var b strings.Builder
	b.WriteString("# NetworkPolicy conformance\n\n")
	b.WriteString("The upstream Kubernetes NetworkPolicy e2e suites (the 25 tests of release-1.18 `test/e2e/network/network_policy.go`, and the 42 TCP, 3 UDP and 3 SCTP tests of `test/e2e/network/netpol`), encoded once in `test/netpol` and run against podwall on one machine: pods are network namespaces plumbed by the real CNI chain (ptp + host-local, then podwall), probes are real connections between them. See `test/netpol`'s package doc for the deliberate differences from upstream.\n\n")
	fmt.Fprintf(&b, "- podwall: `%s`\n", r.PodwallVersion)
	fmt.Fprintf(&b, "- Kubernetes: `%s` (kube-apiserver `/version`, kubernetes mode)\n", r.KubeVersion)
	fmt.Fprintf(&b, "- Date: %s\n", r.Date.UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("- Generated by `make conformance` (`test/cmd/conformance`); do not edit.\n\n")
	b.WriteString("| mode | what runs | pass | fail | skip |\n|---|---|---|---|---|\n")
	for _, m := range r.Modes {
		pass, fail, skip, notRun := r.Counts(m.Name)
		failText := strconv.Itoa(fail)
		if notRun > 0 {
			failText += fmt.Sprintf(" (%d not run)", notRun)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %d |\n", m.Name, escapeCell(m.Description), pass, failText, skip)
	}
	b.WriteString("\n| suite | test name | mode | result |\n|---|---|---|---|\n")
	for _, row := range r.Rows {
		result := string(row.Result)
		if row.NotRun {
			result += " (not run)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", escapeCell(row.Suite), escapeCell(row.Test), row.Mode, result)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// escapeCell makes s safe inside a Markdown table cell.
func escapeCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

// errNotAllPassed is run's error when the report was written but some test
// did not pass.
var errNotAllPassed = errors.New("not every test passed")

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	manifests := fs.String("manifests", "", "go test -json stream of the manifests-mode suites (test/e2e)")
	kube := fs.String("kube", "", "go test -json stream of the kubernetes-mode suites (test/e2e/kube)")
	out := fs.String("out", "docs/conformance.md", "the report to write")
	podwallVersion := fs.String("podwall-version", "", "podwall's version; default `git describe --tags --always --dirty`")
	kubeVersion := fs.String("kube-version", "", "the Kubernetes version; default the one the kube stream logged")
	date := fs.String("date", "", "the report's date, RFC 3339; default now")
	allowFailures := fs.Bool("allow-failures", false, "exit 0 even when a test did not pass")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if *manifests == "" || *kube == "" {
		return errors.New("-manifests and -kube are required")
	}
	streams := map[string]*Stream{}
	for mode, path := range map[string]string{"manifests": *manifests, "kubernetes": *kube} {
		s, err := readStream(path)
		if err != nil {
			return err
		}
		streams[mode] = s
	}
	r := &Report{Modes: Modes, Rows: Rows(Suites(), Modes, streams), PodwallVersion: *podwallVersion, KubeVersion: *kubeVersion, Date: time.Now()}
	if r.PodwallVersion == "" {
		r.PodwallVersion = gitDescribe()
	}
	if r.KubeVersion == "" {
		r.KubeVersion = streams["kubernetes"].KubeVersion
	}
	if r.KubeVersion == "" {
		r.KubeVersion = "unknown (the kube stream logged no version)"
	}
	if *date != "" {
		d, err := time.Parse(time.RFC3339, *date)
		if err != nil {
			return fmt.Errorf("-date: %w", err)
		}
		r.Date = d
	}
	var buf bytes.Buffer
	if err := Render(&buf, r); err != nil {
		return err
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	failed := 0
	for _, m := range Modes {
		pass, fail, skip, notRun := r.Counts(m.Name)
		fmt.Fprintf(stderr, "%s: %d pass, %d fail (%d not run), %d skip\n", m.Name, pass, fail, notRun, skip)
		failed += fail + skip
	}
	fmt.Fprintf(stderr, "wrote %s\n", *out)
	if failed > 0 && !*allowFailures {
		return errNotAllPassed
	}
	return nil
}

func readStream(path string) (*Stream, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read go test -json stream: %w", err)
	}
	defer f.Close()
	s, err := ParseStream(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// gitDescribe returns `git describe --tags --always --dirty`, or "unknown".
func gitDescribe() string {
	out, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
