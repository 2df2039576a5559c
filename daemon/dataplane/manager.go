package dataplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// ErrNetnsGone is wrapped by the errors of Apply, Check and Inspect when the
// netns path does not exist or is not a network namespace.
var ErrNetnsGone = errors.New("network namespace is gone")

// DriftError is returned by Check when what is in force in a netns differs
// from what the spec renders to. Check also drops the Manager's memory of
// the netns, so the next Apply inspects it and rewrites the firewall in a
// fresh generation.
type DriftError struct {
	Pod   string
	Netns string
	// Generation is the generation Check compared against.
	Generation uint32
	// Differences has one line per difference, e.g.
	// `v4: missing "-A PODWALL-INGRESS -i lo -j ACCEPT"` or
	// "set pw4-0-g3: unexpected member 10.0.0.9/32".
	Differences []string
}

func (e *DriftError) Error() string {
	const shown = 5
	d := e.Differences
	more := ""
	if len(d) > shown {
		more = fmt.Sprintf(" (and %d more)", len(d)-shown)
		d = d[:shown]
	}
	return fmt.Sprintf("firewall of %s in %s drifted from generation %d: %s%s", e.Pod, e.Netns, e.Generation, strings.Join(d, "; "), more)
}

// binaries are the absolute paths of the commands the Manager runs: only
// the save commands, to read rules. Sets and rules need none: they are
// written over netlink (ipsetnl.go, nftrules.go).
type binaries struct {
	restore [2]string // iptables-nft-restore, ip6tables-nft-restore: only with Manager.restoreRules
	save    [2]string // iptables-nft-save, ip6tables-nft-save
}

// Manager applies firewalls to pod netns. It remembers, per netns path, the
// generation and the firewall it last applied there, so that an unchanged
// spec costs nothing and a change of set members only netlink messages.
// Without that memory (a new Manager, after Forget, after an error or a
// drift) it inspects the netns first and adopts what it finds. It is safe
// for concurrent use; operations on the same netns are serialised.
type Manager struct {
	bins binaries
	// execs counts the commands run and netlinkOps the ipset commands sent
	// over netlink, for tests.
	execs      atomic.Int64
	netlinkOps atomic.Int64
	// nftBatches counts the nf_tables transactions committed, for tests.
	nftBatches atomic.Int64
	// restoreRules makes the Manager switch rules the way it did before
	// nftrules.go, with iptables-nft-restore processes; only benchmarks and
	// tests comparing the two set it.
	restoreRules bool

	mu    sync.Mutex
	netns map[string]*netnsState
}

// netnsState is the Manager's memory of one netns path.
type netnsState struct {
	mu    sync.Mutex // serialises operations on the netns
	users int        // guarded by Manager.mu

	known   bool // the fields below describe what is in force
	id      netnsID
	gen     uint32
	alias   map[string]string // canonical set names of gen -> sets reused from earlier generations
	applied *rendered         // with the aliases applied
	stale   []string          // old sets that could not be destroyed yet
	// conn is a netfilter netlink socket opened in the netns id, kept
	// while it is known: a socket stays in the netns it was made in, so a
	// change of set members needs neither a thread switched into the netns
	// nor a new socket (most of such an Apply's cost).
	conn *ipsetConn
}

func (s *netnsState) forget() {
	s.known, s.applied, s.stale, s.alias = false, nil, nil, nil
	if s.conn != nil {
		s.conn.closeSoon()
		s.conn = nil
	}
}

func (s *netnsState) remember(id netnsID, gen uint32, alias map[string]string, applied *rendered, stale []string) {
	s.known, s.id, s.gen, s.alias, s.applied, s.stale = true, id, gen, alias, applied, stale
}

// want renders spec as the remembered generation names its sets.
func (s *netnsState) want(spec Spec) *rendered {
	return render(spec, s.gen).renamed(s.alias)
}

// netnsID identifies a network namespace (its nsfs inode), so that a new
// netns mounted at a path the Manager remembers is not mistaken for the old.
type netnsID struct{ dev, ino uint64 }

// NewManager finds iptables-nft-save and ip6tables-nft-save, which Inspect,
// Check and an Apply without memory of the netns read rules with, in PATH
// or the usual sbin directories. Rules are written over nf_tables netlink
// (nftrules.go); iptables-nft-restore and ip6tables-nft-restore are looked
// up too, for comparisons only, and may be missing.
func NewManager() (*Manager, error) {
	var missing []string
	find := func(name string) string {
		p, err := lookPath(name)
		if err != nil {
			missing = append(missing, name)
		}
		return p
	}
	m := &Manager{netns: map[string]*netnsState{}}
	for _, f := range families {
		m.bins.restore[f], _ = lookPath([]string{"iptables-nft-restore", "ip6tables-nft-restore"}[f])
	}
	m.bins.save = [2]string{find("iptables-nft-save"), find("ip6tables-nft-save")}
	if len(missing) > 0 {
		return nil, fmt.Errorf("dataplane needs %s: not found in PATH, /usr/sbin or /sbin", strings.Join(missing, ", "))
	}
	return m, nil
}

func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", exec.ErrNotFound
}

// acquire returns the state of a netns path, locked.
func (m *Manager) acquire(path string) *netnsState {
	m.mu.Lock()
	s, ok := m.netns[path]
	if !ok {
		s = &netnsState{}
		m.netns[path] = s
	}
	s.users++
	m.mu.Unlock()
	s.mu.Lock()
	return s
}

// release unlocks s and drops it when nobody uses it and it holds nothing.
func (m *Manager) release(path string, s *netnsState) {
	s.mu.Unlock()
	m.mu.Lock()
	s.users--
	if s.users == 0 && !s.known {
		delete(m.netns, path)
	}
	m.mu.Unlock()
}

// Forget drops what the Manager remembers about a netns; the next Apply
// inspects it.
func (m *Manager) Forget(netnsPath string) {
	s := m.acquire(netnsPath)
	s.forget()
	m.release(netnsPath, s)
}

// Apply makes the firewall of the netns at netnsPath what spec renders to.
// It never lets through what neither the old nor the new firewall allows:
// set members change in place over netlink, removals before additions (no
// command runs); any other change writes a new generation of sets, switches
// the rules of both families to it in one nf_tables transaction, written
// over netlink (nftrules.go, the same rules iptables-nft-restore would
// write for renderTransition's text), and only then destroys the old sets:
// a moment later, in the background, once the kernel has released them
// (every later operation on the netns destroys them first, so Check and
// Inspect never see them), except when spec isolates nothing, which
// leaves no podwall object behind when Apply returns. An unchanged spec
// changes nothing. A netns the Manager does not remember
// is read first with iptables-nft-save (none when it has no filter table).
func (m *Manager) Apply(ctx context.Context, netnsPath string, spec Spec) error {
	if err := validateSpec(spec); err != nil {
		return fmt.Errorf("apply firewall for %s: %w", spec.Pod, err)
	}
	s := m.acquire(netnsPath)
	defer m.release(netnsPath, s)
	id, err := statNetns(netnsPath)
	if err != nil {
		s.forget()
		return fmt.Errorf("apply firewall for %s: %w", spec.Pod, err)
	}
	if s.known && s.id != id {
		s.forget() // another netns now lives at this path
	}
	var want *rendered // in the remembered generation
	if s.known {
		want = s.want(spec)
		if len(s.stale) == 0 && want.equal(s.applied) {
			return nil
		}
		if s.conn != nil && len(s.stale) == 0 && want.sameStructure(s.applied) {
			// Members only, on the netns's own socket, from this thread.
			if err := m.onKeptConn(ctx, s, func(x *executor) error { return x.changeMembers(s, want) }); err != nil {
				return fmt.Errorf("apply firewall for %s in %s: %w", spec.Pod, netnsPath, err)
			}
			return nil
		}
	}
	err = m.inNetns(ctx, netnsPath, func(x *executor) error {
		if s.known && s.id != x.id {
			s.forget()
		}
		x.conn, s.conn = s.conn, nil // the executor's until keepConn
		err := m.apply(x, s, spec, want)
		x.keepConn(s)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNetnsGone) {
			s.forget()
		}
		return fmt.Errorf("apply firewall for %s in %s: %w", spec.Pod, netnsPath, err)
	}
	if s.known && len(s.stale) > 0 {
		m.destroyStaleLater(netnsPath)
	}
	return nil
}

// staleSetDelay is how long destroyStaleLater waits before it tries: about
// the time the kernel takes to release sets whose rules were replaced.
const staleSetDelay = 20 * time.Millisecond

// destroyStaleLater destroys, a moment from now and in the background, the
// old sets of the netns at path that an Apply left behind. Every other
// operation on the netns destroys them first too (they are serialised), so
// only tools outside the Manager can see them in the meantime.
func (m *Manager) destroyStaleLater(path string) {
	go func() {
		time.Sleep(staleSetDelay)
		s := m.acquire(path)
		defer m.release(path, s)
		if !s.known || len(s.stale) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if s.conn != nil {
			// On the netns's own socket, from this thread.
			_ = m.onKeptConn(ctx, s, func(x *executor) error { return x.destroyStale(s) })
			return
		}
		_ = m.inNetns(ctx, path, func(x *executor) error {
			if x.id != s.id {
				return nil
			}
			err := x.destroyStale(s) // what is left is retried by the next operation
			x.keepConn(s)
			return err
		})
	}()
}

// apply runs in the netns; want is spec rendered in the remembered
// generation, when there is one.
func (m *Manager) apply(x *executor, s *netnsState, spec Spec, want *rendered) error {
	var cur [2]table
	var curSets []string
	var have []Set // sets in force the next generation may reuse
	var next uint32
	if s.known {
		if want == nil || want.gen != s.gen {
			want = s.want(spec)
		}
		if want.equal(s.applied) {
			return x.destroyStale(s)
		}
		if want.sameStructure(s.applied) {
			return x.changeMembers(s, want)
		}
		cur = s.applied.tables
		for _, set := range s.applied.sets {
			curSets = append(curSets, set.Name)
		}
		curSets = append(curSets, s.stale...)
		have = s.applied.sets
		next = s.gen + 1
	} else {
		got, err := x.inspect()
		if err != nil {
			return err
		}
		gen := got.generation()
		canonical := render(spec, gen)
		if alias, ok := adopt(canonical, got); ok {
			s.remember(x.id, gen, alias, canonical.renamed(alias), nil)
			return nil
		}
		cur = got.tables
		curSets = got.setNames()
		have = got.reusable()
		next = max(gen, got.maxGeneration()) + 1
	}
	canonical := render(spec, next)
	alias := reuseSets(canonical, have)
	return x.switchGeneration(s, canonical.renamed(alias), alias, cur, curSets)
}

// Remove deletes everything podwall put in the netns, whatever the Manager
// remembers: jumps to podwall chains, podwall chains, podwall sets. It reads
// the rules with iptables-nft-save (when there is a filter table) and
// deletes them in one nf_tables transaction. It returns nil when the netns
// is gone.
func (m *Manager) Remove(ctx context.Context, netnsPath string) error {
	s := m.acquire(netnsPath)
	defer m.release(netnsPath, s)
	s.forget()
	if _, err := statNetns(netnsPath); err != nil {
		if errors.Is(err, ErrNetnsGone) {
			return nil
		}
		return fmt.Errorf("remove firewall in %s: %w", netnsPath, err)
	}
	err := m.inNetns(ctx, netnsPath, func(x *executor) error {
		got, err := x.inspect()
		if err != nil {
			return err
		}
		if err := x.switchRules([2]table{}, got.tables, [2]bool{true, true}); err != nil {
			return errors.Join(err.errs()...)
		}
		_, err = x.destroySets(got.setNames())
		return err
	})
	if err != nil && !errors.Is(err, ErrNetnsGone) {
		return fmt.Errorf("remove firewall in %s: %w", netnsPath, err)
	}
	return nil
}

// Check compares what is in force in the netns with what spec renders to in
// the current generation (remembered, or else the one the rules in force
// use). It returns a *DriftError when they differ.
func (m *Manager) Check(ctx context.Context, netnsPath string, spec Spec) error {
	if err := validateSpec(spec); err != nil {
		return fmt.Errorf("check firewall for %s: %w", spec.Pod, err)
	}
	s := m.acquire(netnsPath)
	defer m.release(netnsPath, s)
	id, err := statNetns(netnsPath)
	if err != nil {
		s.forget()
		return fmt.Errorf("check firewall for %s: %w", spec.Pod, err)
	}
	var drift *DriftError
	err = m.inNetns(ctx, netnsPath, func(x *executor) error {
		if s.known && s.id == x.id {
			_ = x.destroyStale(s) // sets it cannot destroy show as drift
		}
		got, err := x.inspect()
		if err != nil {
			return err
		}
		var want *rendered
		gen := got.generation()
		if s.known && s.id == id && s.id == x.id {
			gen, want = s.gen, s.want(spec)
		} else {
			want = render(spec, gen)
			if alias, ok := adopt(want, got); ok {
				want = want.renamed(alias)
			}
		}
		if d := diff(want, got); len(d) > 0 {
			drift = &DriftError{Pod: spec.Pod, Netns: netnsPath, Generation: gen, Differences: d}
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrNetnsGone) {
			s.forget()
		}
		return fmt.Errorf("check firewall for %s in %s: %w", spec.Pod, netnsPath, err)
	}
	if drift != nil {
		s.forget()
		return drift
	}
	return nil
}

// Inspect returns what podwall has in force in the netns: its chains and
// the jumps to them, in the canonical form Render produces, and its sets.
func (m *Manager) Inspect(ctx context.Context, netnsPath string) (*Ruleset, error) {
	s := m.acquire(netnsPath)
	defer m.release(netnsPath, s)
	if _, err := statNetns(netnsPath); err != nil {
		return nil, fmt.Errorf("inspect firewall: %w", err)
	}
	var rs *Ruleset
	err := m.inNetns(ctx, netnsPath, func(x *executor) error {
		if s.known && s.id == x.id {
			_ = x.destroyStale(s) // an Apply's old sets, unless still in use
		}
		got, err := x.inspect()
		if err != nil {
			return err
		}
		rs = got.ruleset()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("inspect firewall in %s: %w", netnsPath, err)
	}
	return rs, nil
}

// CheckNetns returns nil when path is a network namespace, and otherwise an
// error wrapping ErrNetnsGone (or the I/O error that kept it from telling).
func CheckNetns(path string) error {
	_, err := statNetns(path)
	return err
}

// statNetns checks that path is a network namespace (an nsfs file of type
// CLONE_NEWNET, whatever its directory) and returns its identity.
func statNetns(path string) (netnsID, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return netnsID{}, fmt.Errorf("%s does not exist: %w", path, ErrNetnsGone)
		}
		return netnsID{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return netnsID{}, fmt.Errorf("%s is not a network namespace (filesystem magic %#x): %w", path, fs.Type, ErrNetnsGone)
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return netnsID{}, fmt.Errorf("%s does not exist: %w", path, ErrNetnsGone)
		}
		return netnsID{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		return netnsID{}, fmt.Errorf("namespace type of %s: %w", path, err)
	}
	if typ != unix.CLONE_NEWNET {
		return netnsID{}, fmt.Errorf("%s is a namespace but not a network namespace: %w", path, ErrNetnsGone)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return netnsID{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return netnsID{dev: st.Dev, ino: st.Ino}, nil
}

// inNetns runs fn on a thread in the netns at path, with an executor whose
// commands and netlink sockets belong to that netns.
func (m *Manager) inNetns(ctx context.Context, path string, fn func(*executor) error) error {
	err := ns.WithNetNSPath(path, func(ns.NetNS) error {
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return fmt.Errorf("stat own netns: %w", err)
		}
		x := &executor{ctx: ctx, m: m, id: netnsID{dev: st.Dev, ino: st.Ino}}
		defer x.close()
		return fn(x)
	})
	var notExist ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &notExist) || errors.As(err, &notNS) {
		return fmt.Errorf("%w: %w", ErrNetnsGone, err)
	}
	return err
}

// executor runs commands in a netns and talks netlink there; it lives on
// the locked thread of one inNetns call.
type executor struct {
	ctx  context.Context
	m    *Manager
	id   netnsID
	conn *ipsetConn // opened on first use
}

// onKeptConn runs fn with an executor on s's kept socket (s.conn must be
// set), from the calling thread: a socket stays in the netns it was made
// in. The socket goes back to s if s still remembers the netns afterwards,
// and is closed otherwise.
func (m *Manager) onKeptConn(ctx context.Context, s *netnsState, fn func(*executor) error) error {
	x := &executor{ctx: ctx, m: m, id: s.id, conn: s.conn}
	s.conn = nil // the executor's until keepConn
	err := fn(x)
	x.keepConn(s)
	x.close()
	return err
}

// keepConn hands the executor's socket to s, parked, when s remembers the
// netns the executor runs in; the executor then no longer closes it.
func (x *executor) keepConn(s *netnsState) {
	if x.conn != nil && x.conn.fd >= 0 && s.known && s.id == x.id && s.conn == nil {
		s.conn = x.conn
		s.conn.park()
		x.conn = nil
	}
}

func (x *executor) close() {
	if x.conn != nil {
		x.conn.closeSoon()
		x.conn = nil
	}
}

// ipset runs ops over netlink in the netns and returns the failures.
func (x *executor) ipset(ops []ipsetOp) ([]*ipsetError, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	if err := x.ctx.Err(); err != nil {
		return nil, err
	}
	c, err := x.ipsetConn()
	if err != nil {
		return nil, err
	}
	x.m.netlinkOps.Add(int64(len(ops)))
	return c.run(ops)
}

// ipsetConn returns the executor's ipset netlink connection, opening it in
// the netns on first use.
func (x *executor) ipsetConn() (*ipsetConn, error) {
	if x.conn == nil {
		c, err := openIPSet()
		if err != nil {
			return nil, err
		}
		x.conn = c
	}
	return x.conn, nil
}

// listSets returns the podwall sets in the netns.
func (x *executor) listSets() (map[string]*observedSet, error) {
	c, err := x.ipsetConn()
	if err != nil {
		return nil, err
	}
	return c.list()
}

// ipsetAll runs ops and fails on the first failure, ignoring the ones
// ignore accepts.
func (x *executor) ipsetAll(ops []ipsetOp, ignore func(*ipsetError) bool) error {
	failures, err := x.ipset(ops)
	for _, f := range failures {
		if ignore == nil || !ignore(f) {
			return errors.Join(f, err)
		}
	}
	return err
}

// run runs bin with args and stdin, returning its stdout.
func (x *executor) run(stdin, bin string, args ...string) (string, error) {
	return x.start(stdin, bin, args...).wait()
}

// process is a command started by an executor.
type process struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	err            error // from starting it
}

// start starts bin in the netns (the child inherits the locked thread's
// netns); wait collects it. Starting the commands for both families before
// waiting for either runs them at the same time.
func (x *executor) start(stdin, bin string, args ...string) *process {
	p := &process{}
	if p.err = x.ctx.Err(); p.err != nil {
		return p
	}
	x.m.execs.Add(1)
	p.cmd = exec.CommandContext(x.ctx, bin, args...)
	if stdin != "" {
		p.cmd.Stdin = strings.NewReader(stdin)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		p.err = fmt.Errorf("%s %s: %w", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return p
}

func (p *process) wait() (string, error) {
	if p.err != nil {
		return "", p.err
	}
	if err := p.cmd.Wait(); err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(p.cmd.Path), strings.Join(p.cmd.Args[1:], " "), err, strings.TrimSpace(p.stderr.String()))
	}
	return p.stdout.String(), nil
}

// restoreFamilies runs iptables-nft-restore --noflush with in[f] for each
// family whose input is not empty, both at once, and returns each family's
// error. Only the comparison path (Manager.restoreRules) uses it.
func (x *executor) restoreFamilies(in [2]string) [2]error {
	var procs [2]*process
	for _, f := range families {
		if in[f] != "" {
			procs[f] = x.start(in[f], x.m.bins.restore[f], "--noflush")
		}
	}
	var errs [2]error
	for _, f := range families {
		if procs[f] != nil {
			_, errs[f] = procs[f].wait()
		}
	}
	return errs
}

// inspect reads the podwall part of the netns: both filter tables and the
// podwall sets.
func (x *executor) inspect() (*observed, error) {
	got := &observed{}
	c, err := x.ipsetConn()
	if err != nil {
		return nil, err
	}
	tables, err := c.filterTables()
	if err != nil {
		return nil, err
	}
	var saves [2]*process
	for _, f := range families {
		if tables[f] {
			saves[f] = x.start("", x.m.bins.save[f], "-t", "filter")
		}
	}
	for _, f := range families {
		if saves[f] == nil {
			continue // no filter table: nothing of podwall's
		}
		out, err := saves[f].wait()
		if err != nil {
			for _, p := range saves[f+1:] {
				if p != nil {
					p.wait()
				}
			}
			return nil, err
		}
		if got.tables[f], err = parseSave(out); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(x.m.bins.save[f]), err)
		}
	}
	sets, err := x.listSets()
	if err != nil {
		return nil, err
	}
	got.sets = sets
	return got, nil
}

// changeMembers changes the members of the sets that changed in place,
// keeping rules and set names.
func (x *executor) changeMembers(s *netnsState, want *rendered) error {
	if err := x.ipsetAll(memberChangeOps(s.applied.sets, want.sets), nil); err != nil {
		s.forget() // some members may have changed: inspect next time
		return fmt.Errorf("change set members: %w", err)
	}
	s.applied = want
	return x.destroyStale(s)
}

// switchGeneration moves the netns from cur (its rules) and curSets (its
// podwall sets) to want, a new generation: create and fill want's sets,
// switch both families' rules in one nf_tables transaction, destroy the
// old sets.
func (x *executor) switchGeneration(s *netnsState, want *rendered, alias map[string]string, cur [2]table, curSets []string) error {
	var wantSets, newSets []string // every set want uses; the ones made for it
	var create []Set
	reused := map[string]bool{}
	for _, a := range alias {
		reused[a] = true
	}
	for _, set := range want.sets {
		wantSets = append(wantSets, set.Name)
		if !reused[set.Name] {
			newSets = append(newSets, set.Name)
			create = append(create, set)
		}
	}
	if len(create) > 0 {
		missing := func(f *ipsetError) bool { return f.op.cmd == ipsetCmdDestroy && f.errno == unix.ENOENT }
		if err := x.ipsetAll(setCreationOps(create), missing); err != nil {
			s.forget() // the old firewall is in force; inspect next time
			_, derr := x.destroySets(newSets)
			return errors.Join(fmt.Errorf("create sets of generation %d: %w", want.gen, err), derr)
		}
	}
	// A family whose rules do not change (no set of its family, the same
	// rules) is left alone; the others switch together, in one nf_tables
	// transaction.
	var change [2]bool
	for _, f := range families {
		change[f] = want.texts[f] != cur[f].text()
	}
	if err := x.switchRules(want.tables, cur, change); err != nil {
		s.forget() // inspect next time
		var errs []error
		for _, ferr := range err {
			if ferr.err != nil {
				errs = append(errs, fmt.Errorf("switch %s rules to generation %d: %w", ferr.what, want.gen, ferr.err))
			}
		}
		if err.switched() {
			// One family runs the new generation, the other the old (the
			// restore path only): both are complete firewalls. Converge
			// next time.
			return errors.Join(errs...)
		}
		// The old firewall is in force.
		_, derr := x.destroySets(newSets)
		return errors.Join(append(errs, derr)...)
	}
	var old []string
	for _, name := range curSets {
		if !slices.Contains(wantSets, name) {
			old = append(old, name)
		}
	}
	s.remember(x.id, want.gen, alias, want, old)
	if x.m.restoreRules || len(want.sets) == 0 && want.texts == [2]string{} {
		return x.destroyStale(s) // an open firewall leaves nothing behind
	}
	// The kernel releases the old sets only when its deferred destruction
	// of the replaced rules has run, after an RCU grace period (15-20 ms
	// here): Apply does not wait for that. The sets are destroyed in the
	// background (destroyStaleLater), or by the next operation on the
	// netns, whichever comes first.
	return nil
}

// destroyStale destroys the old sets that are left over, if any.
func (x *executor) destroyStale(s *netnsState) error {
	if len(s.stale) == 0 {
		return nil
	}
	left, err := x.destroySets(s.stale)
	s.stale = left
	if err != nil {
		return fmt.Errorf("destroy old sets (the firewall is in force): %w", err)
	}
	return nil
}

// destroySets destroys the named sets, missing ones included. The kernel
// may release a set a moment after the rules using it are gone, so sets
// still in use are retried for a short while (setBusyWaits). It returns the
// sets it could not destroy.
func (x *executor) destroySets(names []string) ([]string, error) {
	ops := setDestructionOps(names)
	for attempt := 0; ; attempt++ {
		failures, err := x.ipset(ops)
		if err != nil {
			return names, err
		}
		var busy []ipsetOp
		var errs []error
		var left []string
		for _, f := range failures {
			switch {
			case f.errno == unix.ENOENT:
				// already gone
			case f.busy():
				busy = append(busy, f.op)
				left = append(left, f.op.set)
			default:
				errs = append(errs, f)
				left = append(left, f.op.set)
			}
		}
		if len(errs) > 0 || len(busy) == 0 || attempt == len(setBusyWaits) {
			if len(busy) > 0 {
				errs = append(errs, &ipsetError{op: busy[0], errno: ipsetErrBusy})
			}
			return left, errors.Join(errs...)
		}
		select {
		case <-time.After(setBusyWaits[attempt]):
		case <-x.ctx.Done():
			return left, x.ctx.Err()
		}
		ops = busy
	}
}

// setBusyWaits are the pauses before each retry of destroying a set the
// kernel refused because it is still referenced: after a transaction
// replaced the rules using a set, the kernel drops their references only
// in its deferred destruction of the old rules, after an RCU grace period
// (15-20 ms on the test VM).
var setBusyWaits = []time.Duration{500 * time.Microsecond, time.Millisecond, time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond, 4 * time.Millisecond, 8 * time.Millisecond, 16 * time.Millisecond, 32 * time.Millisecond, 64 * time.Millisecond, 150 * time.Millisecond}
