// Command conformance writes docs/conformance.md: the result of every
// upstream NetworkPolicy e2e test (test/netpol's suites) in each mode podwall
// runs them in, read from `go test -json` streams.
//
//	go test -json -run '^TestUpstream' ./test/e2e/ > manifests.json
//	go test -json -run '^TestKubeUpstream' ./test/e2e/kube/ > kube.json   # every kubernetes mode
//	conformance -manifests manifests.json -kube kube.json -out docs/conformance.md
//
// There is one column per mode (Modes: policy source × pods' families ×
// family probed × pod IP or Service). A test's result is its subtest's pass,
// fail or skip. A subtest missing from the stream takes its suite test's (or
// that test's parents') result when that skipped, and is a failure
// otherwise (it never ran). The Kubernetes version is the one the
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

// Mode is one way podwall runs the suites: where podwalld reads policies
// from, the pods' families, the family probed, and whether probes go to the
// pods' IPs or to their Services' ClusterIPs.
type Mode struct {
	// Name is the mode's column in the report.
	Name string
	// Source is podwalld's policy source: "manifests" or "kubernetes".
	Source string
	// Pods are the pods' families ("IPv4", "IPv6", "dual-stack"); Probes
	// the family probed.
	Pods, Probes string
	// Path is "pod IP" or "Service" (the pod's Service's ClusterIP, through
	// kube-proxy).
	Path string
	// Stream names the go test -json stream holding the mode's results:
	// "manifests" (test/e2e) or "kube" (test/e2e/kube).
	Stream string
	// Funcs maps a netpol suite name to the Go test (or subtest) running
	// it in this mode.
	Funcs map[string]string
}

// The subtest names test/e2e/kube gives the suites in a run of several.
var kubeSuiteNames = map[string]string{
	netpol.SuiteLegacy:     "Legacy118",
	netpol.SuiteNetpol:     "Netpol",
	netpol.SuiteNetpolUDP:  "NetpolUDP",
	netpol.SuiteNetpolSCTP: "NetpolSCTP",
}

// kubeRun returns the Funcs of a test/e2e/kube run that is one Go test with
// a subtest per suite under prefix ("TestKubeUpstreamService",
// "TestKubeUpstreamDualStack/IPv4").
func kubeRun(prefix string) map[string]string {
	funcs := map[string]string{}
	for suite, name := range kubeSuiteNames {
		funcs[suite] = prefix + "/" + name
	}
	return funcs
}

// Modes are the modes of the report, in report order.
var Modes = []Mode{
	{
		Name: "manifests", Source: "manifests", Pods: "IPv4", Probes: "IPv4", Path: "pod IP", Stream: "manifests",
		Funcs: map[string]string{
			netpol.SuiteLegacy:     "TestUpstreamLegacy118",
			netpol.SuiteNetpol:     "TestUpstreamNetpol",
			netpol.SuiteNetpolUDP:  "TestUpstreamNetpolUDP",
			netpol.SuiteNetpolSCTP: "TestUpstreamNetpolSCTP",
		},
	},
	{
		Name: "kube-ipv4", Source: "kubernetes", Pods: "IPv4", Probes: "IPv4", Path: "pod IP", Stream: "kube",
		Funcs: map[string]string{
			netpol.SuiteLegacy:     "TestKubeUpstreamLegacy118",
			netpol.SuiteNetpol:     "TestKubeUpstreamNetpol",
			netpol.SuiteNetpolUDP:  "TestKubeUpstreamNetpolUDP",
			netpol.SuiteNetpolSCTP: "TestKubeUpstreamNetpolSCTP",
		},
	},
	{Name: "kube-ipv4-svc", Source: "kubernetes", Pods: "IPv4", Probes: "IPv4", Path: "Service", Stream: "kube",
		Funcs: kubeRun("TestKubeUpstreamService")},
	{Name: "kube-ipv6", Source: "kubernetes", Pods: "IPv6", Probes: "IPv6", Path: "pod IP", Stream: "kube",
		Funcs: kubeRun("TestKubeUpstreamIPv6")},
	{Name: "kube-ipv6-svc", Source: "kubernetes", Pods: "IPv6", Probes: "IPv6", Path: "Service", Stream: "kube",
		Funcs: kubeRun("TestKubeUpstreamIPv6Service")},
	{Name: "kube-dual-4", Source: "kubernetes", Pods: "dual-stack", Probes: "IPv4", Path: "pod IP", Stream: "kube",
		Funcs: kubeRun("TestKubeUpstreamDualStack/IPv4")},
	{Name: "kube-dual-6", Source: "kubernetes", Pods: "dual-stack", Probes: "IPv6", Path: "pod IP", Stream: "kube",
		Funcs: kubeRun("TestKubeUpstreamDualStack/IPv6")},
	{Name: "kube-dual-4-svc", Source: "kubernetes", Pods: "dual-stack", Probes: "IPv4", Path: "Service", Stream: "kube",
		Funcs: kubeRun("TestKubeUpstreamDualStackService/IPv4")},
	{Name: "kube-dual-6-svc", Source: "kubernetes", Pods: "dual-stack", Probes: "IPv6", Path: "Service", Stream: "kube",
		Funcs: kubeRun("TestKubeUpstreamDualStackService/IPv6")},
}

// Suites returns the upstream tests, suite by suite, in upstream order.
func Suites() [][]netpol.Test {
	return [][]netpol.Test{netpol.Legacy118(), netpol.Netpol(), netpol.NetpolUDP(), netpol.NetpolSCTP()}
}

// event is one line of `go test -json` (test2json).
type event struct {
	Action  string
	Test    string
	Output  string
	Elapsed float64
}

// Stream is what a `go test -json` stream says: the final action of every
// test and subtest ("pass", "fail", "skip") and how long it took, by the
// name test2json gives it, and the Kubernetes version logged in it, if any.
type Stream struct {
	Results     map[string]Result
	Elapsed     map[string]time.Duration
	KubeVersion string
}

// kubeVersionRE matches the line the kube-mode suites log.
var kubeVersionRE = regexp.MustCompile(`kubernetes-version: (v\d+\.\d+\.\d+\S*)`)

// ParseStream reads a `go test -json` stream. Lines that are not JSON (build
// output) are ignored; a stream with no test event at all is an error.
func ParseStream(r io.Reader) (*Stream, error) {
	s := &Stream{Results: map[string]Result{}, Elapsed: map[string]time.Duration{}}
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
				s.Elapsed[e.Test] = time.Duration(e.Elapsed * float64(time.Second))
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

// Row is one line of the report's table: an upstream test and its result
// in every mode.
type Row struct {
	Suite, Test string
	// Results are the test's results, one per mode in mode order.
	Results []Cell
}

// Cell is the result of one test in one mode.
type Cell struct {
	Result Result
	// NotRun is set when the stream has no result for the test or its
	// suite test (Result is then Fail).
	NotRun bool
}

// Rows returns a row per upstream test, suite by suite and test by test in
// upstream order, with a cell per mode. streams maps a stream name (Mode.Stream)
// to its stream; a mode without one has every test not run.
func Rows(suites [][]netpol.Test, modes []Mode, streams map[string]*Stream) []Row {
	var rows []Row
	for _, suite := range suites {
		for _, test := range suite {
			row := Row{Suite: test.Suite, Test: test.Name}
			for _, mode := range modes {
				var c Cell
				c.Result, c.NotRun = result(streams[mode.Stream], mode.Funcs[test.Suite], test.Name)
				row.Results = append(row.Results, c)
			}
			rows = append(rows, row)
		}
	}
	return rows
}

// result is the result of test name of suite test fn in s: the subtest's,
// else that of fn or of the first of its parents the stream has, when it
// skipped or failed; a test that never ran fails.
func result(s *Stream, fn, name string) (Result, bool) {
	if s == nil || fn == "" {
		return Fail, true
	}
	if r, ok := s.Results[SubtestName(fn, name)]; ok {
		return r, false
	}
	for parent := fn; parent != ""; parent = parentTest(parent) {
		switch r, ok := s.Results[parent]; {
		case !ok:
			continue
		case r == Skip:
			return Skip, false
		}
		return Fail, true // failed or passed without running it
	}
	return Fail, true
}

// parentTest returns the parent of a subtest's name, "" for a top-level
// test.
func parentTest(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[:i]
	}
	return ""
}

// Report is everything the document shows.
type Report struct {
	PodwallVersion string
	KubeVersion    string
	Date           time.Time
	Modes          []Mode
	Rows           []Row
	// Streams are the streams the rows were read from, by name, for the
	// modes' durations; may be nil.
	Streams map[string]*Stream
}

// Counts returns the pass, fail and skip counts of the mode at index i, and
// how many of its failures never ran.
func (r *Report) Counts(i int) (pass, fail, skip, notRun int) {
	for _, row := range r.Rows {
		c := row.Results[i]
		switch c.Result {
		case Pass:
			pass++
		case Fail:
			fail++
		case Skip:
			skip++
		}
		if c.NotRun {
			notRun++
		}
	}
	return pass, fail, skip, notRun
}

// SlowestSuite returns how long the slowest of mode m's suite tests took,
// 0 when the stream does not say.
func (r *Report) SlowestSuite(m Mode) time.Duration {
	s := r.Streams[m.Stream]
	if s == nil {
		return 0
	}
	var slowest time.Duration
	for _, fn := range m.Funcs {
		slowest = max(slowest, s.Elapsed[fn])
	}
	return slowest
}

// Render writes the report as Markdown.
func Render(w io.Writer, r *Report) error {
	var b strings.Builder
	b.WriteString("# NetworkPolicy conformance\n\n")
	b.WriteString("The upstream Kubernetes NetworkPolicy e2e suites (the 25 tests of release-1.18 `test/e2e/network/network_policy.go`, and the 42 TCP, 3 UDP and 3 SCTP tests of `test/e2e/network/netpol`), encoded once in `test/netpol` and run against podwall on one machine: pods are network namespaces plumbed by the real CNI chain (ptp + host-local, then podwall), probes are real connections between them. See `test/netpol`'s package doc for the deliberate differences from upstream.\n\n")
	b.WriteString("Each mode runs all 73 tests. **Source**: podwalld reads a directory of manifests (`--manifests`, test/e2e) or a real kube-apiserver (`--kubeconfig`, as the ServiceAccount of install/rbac.yaml; pods created through the API and plumbed by a kubelet stand-in; test/e2e/kube). **Pods**: IPv4-only, IPv6-only or dual-stack pods (ptp + host-local with one range per family); the kubernetes modes share one dual-stack control plane (IPv4 primary). **Probes**: the family probed and used for ipBlocks; dual-stack pods are run once per family. **Path**: to the server pod's IP, or, as upstream's e2e does, to the ClusterIP of a Service per server pod (selecting it by its pod label, a service port per container port, target ports by name except in the legacy suite), rewritten by a real kube-proxy (iptables mode, ip6tables for IPv6, `--cluster-cidr` the pod ranges so pods see each other's IPs) in the host netns after podwall's egress rules in the client's netns have judged the ClusterIP.\n\n")
	fmt.Fprintf(&b, "- podwall: `%s`\n", r.PodwallVersion)
	fmt.Fprintf(&b, "- Kubernetes: `%s` (kube-apiserver `/version`, kubernetes modes; kube-proxy and kube-controller-manager of the same release)\n", r.KubeVersion)
	fmt.Fprintf(&b, "- Date: %s\n", r.Date.UTC().Format("2006-01-02 15:04 MST"))
	b.WriteString("- Generated by `make conformance` (`test/cmd/conformance`); do not edit.\n\n")
	b.WriteString("`make test` runs the manifests mode and the kubernetes IPv4 modes; the IPv6 and dual-stack modes run in `make conformance` only (`PODWALL_KUBE_E2E_ALL_MODES=1`). The kubernetes modes run at once, sharing 8 slots for upstream tests, so *slowest suite* (the wall time of the mode's slowest suite) says as much about the machine as about the mode.\n\n")
	b.WriteString("| mode | source | pods | probes | path | pass | fail | skip | slowest suite |\n|---|---|---|---|---|---|---|---|---|\n")
	for i, m := range r.Modes {
		pass, fail, skip, notRun := r.Counts(i)
		failText := strconv.Itoa(fail)
		if notRun > 0 {
			failText += fmt.Sprintf(" (%d not run)", notRun)
		}
		slowest := "-"
		if d := r.SlowestSuite(m); d > 0 {
			slowest = d.Round(time.Second).String()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %s | %d | %s |\n", m.Name, m.Source, m.Pods, m.Probes, m.Path, pass, failText, skip, slowest)
	}
	b.WriteString("\n| suite | test name |")
	for _, m := range r.Modes {
		fmt.Fprintf(&b, " %s |", m.Name)
	}
	b.WriteString("\n|---|---|" + strings.Repeat("---|", len(r.Modes)) + "\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %s |", escapeCell(row.Suite), escapeCell(row.Test))
		for _, c := range row.Results {
			fmt.Fprintf(&b, " %s |", cellText(c))
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// cellText is a result as the table shows it: failures stand out.
func cellText(c Cell) string {
	switch {
	case c.NotRun:
		return "**not run**"
	case c.Result == Fail:
		return "**fail**"
	}
	return string(c.Result)
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
	for name, path := range map[string]string{"manifests": *manifests, "kube": *kube} {
		s, err := readStream(path)
		if err != nil {
			return err
		}
		streams[name] = s
	}
	r := &Report{Modes: Modes, Rows: Rows(Suites(), Modes, streams), Streams: streams,
		PodwallVersion: *podwallVersion, KubeVersion: *kubeVersion, Date: time.Now()}
	if r.PodwallVersion == "" {
		r.PodwallVersion = gitDescribe()
	}
	if r.KubeVersion == "" {
		r.KubeVersion = streams["kube"].KubeVersion
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
	for i, m := range Modes {
		pass, fail, skip, notRun := r.Counts(i)
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
