// Package syncer owns the local attachments and keeps each one's firewall equal
// to what the policy compiler says it should be. It is the only caller of the
// dataplane's Apply and Remove: CNI ADD/DEL/CHECK/GC arrive here from the gRPC
// server, source changes arrive as Trigger calls, and one coalescing loop
// recompiles and applies the pods whose firewall changed.
//
// It imports the policy compiler, the dataplane and the checkpoint; it must not
// import a concrete source or the gRPC server.
package syncer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	gosync "sync"
	"sync/atomic"
	"time"

	"github.com/podwall/podwall/daemon/checkpoint"
	"github.com/podwall/podwall/daemon/dataplane"
	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

// Source is where the cluster state comes from (the manifests directory or
// the Kubernetes API).
type Source interface {
	// Name describes the source for status output.
	Name() string
	// State is a snapshot of the cluster; callers must not mutate it.
	State() *policy.State
	// Pod returns the pod a CNI ADD names, consulting the origin when the
	// snapshot does not have it yet. (nil, nil) means the source does not know
	// the pod; an error means it could not tell (the ADD should be retried).
	Pod(ctx context.Context, namespace, name string) (*policy.Pod, error)
	// Errors lists inputs the source currently cannot use.
	Errors() []source.Error
}

// Dataplane applies firewalls inside pod network namespaces.
type Dataplane interface {
	Apply(ctx context.Context, netnsPath string, spec dataplane.Spec) error
	Remove(ctx context.Context, netnsPath string) error
	Check(ctx context.Context, netnsPath string, spec dataplane.Spec) error
	Inspect(ctx context.Context, netnsPath string) (*dataplane.Ruleset, error)
	Forget(netnsPath string)
}

// ErrNotFound is returned for an attachment or pod the syncer does not have.
var ErrNotFound = errors.New("not found")

// Options configure a Syncer.
type Options struct {
	NodeName string
	Source   Source
	Data     Dataplane
	Store    *checkpoint.Store
	Log      *slog.Logger
	// NodeAddrs returns the node's own addresses (allowed into every pod).
	NodeAddrs func() ([]netip.Addr, error)
	// Observer is told about every sync and every dataplane Apply (the
	// daemon's metrics); nil tells nobody.
	Observer Observer
}

// Observer is told what the Syncer did. Its methods may be called with the
// Syncer's locks held, and ApplyDone from several goroutines at once: they
// must be quick, safe for concurrent use and must not call the Syncer.
type Observer interface {
	// SyncDone reports one SyncAll: how long it took and the errors of the
	// pods it could not apply, joined (nil when it applied everything).
	SyncDone(d time.Duration, err error)
	// ApplyDone reports one dataplane Apply: how long it took and its error.
	ApplyDone(d time.Duration, err error)
}

type nopObserver struct{}

func (nopObserver) SyncDone(time.Duration, error)  {}
func (nopObserver) ApplyDone(time.Duration, error) {}

// attachment is one CNI attachment this node serves, with what was last
// applied to it.
type attachment struct {
	rec checkpoint.Attachment
	ips []netip.Addr
	gws []netip.Addr

	// looked is the pod the source's lookup returned on ADD, used until the
	// source's snapshot has the pod (guarded by Syncer.mu).
	looked *policy.Pod

	mu       gosync.Mutex // serializes applies to this attachment
	applied  *policy.Firewall
	size     firewallSize // of applied, counted at apply time (view.go)
	nodeAddr []netip.Addr
	gen      uint64 // state generation the applied firewall was compiled from
	lastErr  error
	// retired is set once the attachment is deleted or replaced: nothing is
	// applied to its netns any more, whatever syncs are still in flight.
	retired bool

	// services are the Service verdicts of the last compile (nil while
	// egress is open).
	services atomic.Pointer[[]policy.ServiceVerdict]
}

// retire marks a as deleted or replaced, waiting for an apply in progress.
func (a *attachment) retire() {
	a.mu.Lock()
	a.retired = true
	a.mu.Unlock()
}

// Syncer keeps every local pod's firewall in sync.
type Syncer struct {
	opts    Options
	log     *slog.Logger
	trigger chan struct{}

	mu       gosync.Mutex
	atts     map[string]*attachment
	stateGen uint64 // bumped on every change of the inputs

	stats Stats

	waiters syncWaiters // the syncs DEL and GC wait for (waiters.go)

	// compiler keeps the policy compiler's work between syncs, so that a
	// sync costs what changed since the last one (its zero value is ready).
	compiler policy.Compiler
	// local is what localState keeps between syncs (localstate.go).
	local localCache
	// saves orders the checkpoint's writes (save.go).
	saves saver
}

// Stats are counters for the status API.
type Stats struct {
	Syncs         int64
	SyncErrors    int64
	LastSync      time.Time
	LastSyncError string
	Problems      []string
}

// New returns a Syncer; call Restore, then Run.
func New(opts Options) *Syncer {
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	return &Syncer{
		opts:    opts,
		log:     log,
		trigger: make(chan struct{}, 1),
		atts:    map[string]*attachment{},
	}
}

// Trigger asks the sync loop to recompile every local pod. It never blocks;
// triggers that arrive while a sync is pending coalesce into one.
func (s *Syncer) Trigger() {
	s.mu.Lock()
	s.stateGen++
	s.mu.Unlock()
	select {
	case s.trigger <- struct{}{}:
	default:
	}
}

// Run is the sync loop: it syncs every local pod after each trigger and every
// resync period, until ctx ends. Every resync period it also repairs drift
// (RepairDrift): rules or sets changed by hand inside a pod's netns; a
// trigger during that pass is synced before the next pod's check.
func (s *Syncer) Run(ctx context.Context, resync time.Duration) {
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		periodic := false
		select {
		case <-ctx.Done():
			return
		case <-s.trigger:
		case <-tick.C:
			// Every sync re-reads the node's addresses, so an address
			// added to the host is allowed in by the next tick at the latest.
			periodic = true
		}
		s.SyncAll(ctx)
		if periodic {
			s.repairDrift(ctx, func() { s.syncIfTriggered(ctx) })
		}
	}
}

// syncIfTriggered syncs every local pod when a trigger is waiting.
func (s *Syncer) syncIfTriggered(ctx context.Context) {
	select {
	case <-s.trigger:
		s.SyncAll(ctx)
	default:
	}
}

// Restore loads the checkpoint and re-applies every attachment whose netns
// still exists. The rules of the previous run stay in force in each netns
// until the new ones replace them in one transaction, so no pod is ever open.
func (s *Syncer) Restore(ctx context.Context) error {
	recs, err := s.opts.Store.Load()
	if errors.Is(err, checkpoint.ErrCorrupt) {
		// Refusing to start would stop every new pod on the node. The rules
		// already in the pods' netns stay in force (closed, possibly stale);
		// the unreadable file is kept aside for inspection.
		aside := fmt.Sprintf("%s.corrupt-%d", s.opts.Store.Path(), time.Now().Unix())
		if renameErr := os.Rename(s.opts.Store.Path(), aside); renameErr != nil {
			return fmt.Errorf("load checkpoint: %w (and moving it aside failed: %w)", err, renameErr)
		}
		s.log.Error("checkpoint unreadable, moved aside; pods attached before are no longer updated until they are re-created",
			"err", err, "movedTo", aside)
		recs, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("load checkpoint: %w", err)
	}
	s.mu.Lock()
	for _, rec := range recs {
		a, err := newAttachment(rec)
		if err != nil {
			s.log.Error("dropping unusable checkpoint entry", "attachment", rec.Key(), "err", err)
			continue
		}
		s.atts[rec.Key()] = a
	}
	s.stateGen++
	s.mu.Unlock()
	s.log.Info("checkpoint loaded", "attachments", len(recs))
	s.SyncAll(ctx)
	s.resyncAfterDrops(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveLocked()
}

func newAttachment(rec checkpoint.Attachment) (*attachment, error) {
	a := &attachment{rec: rec}
	for _, c := range rec.IPs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("ip %q: %w", c, err)
		}
		a.ips = append(a.ips, p.Addr())
	}
	for _, g := range rec.Gateways {
		ip, err := netip.ParseAddr(g)
		if err != nil {
			return nil, fmt.Errorf("gateway %q: %w", g, err)
		}
		a.gws = append(a.gws, ip)
	}
	return a, nil
}

// Add records a new attachment and installs its complete firewall before it
// returns. Other local pods that may now select it are synced afterwards.
// The checkpoint that records the attachment is written while the firewall
// is compiled and applied, and Add succeeds only once both are done: when
// the write fails, the attachment is dropped, its rules are removed, and the
// runtime gets the error (the pod does not start).
func (s *Syncer) Add(ctx context.Context, rec checkpoint.Attachment) error {
	a, err := newAttachment(rec)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	start := time.Now()
	looked, err := s.opts.Source.Pod(ctx, rec.Namespace, rec.Name)
	if err != nil {
		return fmt.Errorf("look up pod %s/%s: %w: %w", rec.Namespace, rec.Name, ErrUnavailable, err)
	}
	a.looked = looked
	lookedUp := time.Now()
	key := rec.Key()
	s.mu.Lock()
	old := s.atts[key]
	s.atts[key] = a
	snap := s.snapshotLocked()
	s.stateGen++
	gen := s.stateGen
	s.mu.Unlock()
	saved := make(chan error, 1)
	if old != nil {
		// ADD twice for the same attachment: the new record replaces the
		// old one once it is on disk, and no sync still holding the old
		// one may write to its netns after this ADD applied.
		if err := s.write(snap); err != nil {
			s.mu.Lock()
			if s.atts[key] == a {
				s.atts[key] = old
			}
			s.mu.Unlock()
			return fmt.Errorf("save checkpoint: %w", err)
		}
		saved <- nil
		old.retire()
		if old.rec.Netns != rec.Netns {
			s.opts.Data.Forget(old.rec.Netns)
		}
	} else {
		go func() { saved <- s.write(snap) }()
	}

	fws, problems := s.compile([]*attachment{a})
	s.noteProblems(problems)
	compiled := time.Now()
	applyErr := s.apply(ctx, a, fws[key], gen, s.readHostAddrs())
	if err := <-saved; err != nil {
		s.mu.Lock()
		if s.atts[key] == a {
			delete(s.atts, key)
		}
		s.mu.Unlock()
		a.retire()
		if applyErr == nil {
			if rerr := s.opts.Data.Remove(ctx, rec.Netns); rerr != nil {
				s.log.Error("remove the firewall of an attachment whose checkpoint failed", "pod", rec.Namespace+"/"+rec.Name,
					"containerID", rec.ContainerID, "err", rerr)
			}
		}
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if applyErr != nil {
		if errors.Is(applyErr, errRetired) {
			return fmt.Errorf("add %s: %w: deleted or replaced while it was being added", key, ErrUnavailable)
		}
		return applyErr
	}
	s.Trigger()
	s.log.Debug("added", "pod", rec.Namespace+"/"+rec.Name, "lookup", lookedUp.Sub(start).Round(time.Microsecond),
		"compile", compiled.Sub(lookedUp).Round(time.Microsecond), "duration", time.Since(start).Round(time.Microsecond))
	return nil
}

// ErrInvalid marks a request the daemon cannot use.
var ErrInvalid = errors.New("invalid request")

// ErrUnavailable marks a request the daemon cannot serve yet; retrying later
// may succeed.
var ErrUnavailable = errors.New("not available yet")

// errRetired is returned by apply for an attachment that was deleted or
// replaced meanwhile.
var errRetired = errors.New("attachment retired")

// forget drops a if it is still the attachment recorded under key and
// rewrites the checkpoint; it reports whether it dropped a.
func (s *Syncer) forget(key string, a *attachment) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.atts[key] != a {
		return false, nil
	}
	delete(s.atts, key)
	s.stateGen++
	return true, s.saveLocked()
}

// Del forgets an attachment and removes its rules if its netns still exists.
// netns is the path the runtime passed with DEL: rules are removed only when it
// is the attachment's own netns (empty means the runtime says it is gone), so a
// recycled path (/proc/<pid>/ns/net) never loses another pod's rules. Del
// succeeds when the netns is gone or the attachment is unknown. Before it
// returns, every other local pod stops allowing the deleted pod's addresses,
// so a pod that reuses them inherits nothing.
func (s *Syncer) Del(ctx context.Context, key, netns string) error {
	s.mu.Lock()
	a, ok := s.atts[key]
	if ok {
		delete(s.atts, key)
		s.stateGen++
	}
	saveErr := s.saveLocked()
	s.mu.Unlock()
	if !ok {
		return saveErr
	}
	a.mu.Lock()
	a.retired = true
	var err error
	if netns != "" && netns == a.rec.Netns {
		// Not cut short by a caller that stops waiting (the plugin's DEL
		// deadline): iptables killed halfway helps nobody.
		err = s.opts.Data.Remove(context.WithoutCancel(ctx), a.rec.Netns)
	}
	s.opts.Data.Forget(a.rec.Netns)
	a.mu.Unlock()
	if err != nil && !errors.Is(err, dataplane.ErrNetnsGone) {
		s.log.Warn("remove rules on DEL", "pod", a.rec.Namespace+"/"+a.rec.Name, "containerID", a.rec.ContainerID, "err", err)
	}
	s.syncOthers(ctx) // a caller that gives up waiting does not stop the sync
	return saveErr
}

// Check verifies the attachment's rules equal the desired firewall.
func (s *Syncer) Check(ctx context.Context, key string) error {
	s.mu.Lock()
	a, ok := s.atts[key]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("attachment %s: %w", key, ErrNotFound)
	}
	fws, _ := s.compile([]*attachment{a})
	fw, ok := fws[key]
	if !ok {
		return fmt.Errorf("attachment %s: %w", key, ErrNotFound) // deleted meanwhile
	}
	spec, err := s.spec(a, fw, s.readHostAddrs())
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return s.opts.Data.Check(ctx, a.rec.Netns, spec)
}

// GC removes every attachment of network that is not in valid (keys). The
// runtime no longer knows these containers and their netns paths may have
// been recycled, so their rules are not touched; the other pods are synced
// once, before GC returns, so they stop allowing the removed addresses.
func (s *Syncer) GC(ctx context.Context, network string, valid map[string]bool) ([]checkpoint.Attachment, error) {
	s.mu.Lock()
	var stale []*attachment
	for key, a := range s.atts {
		if a.rec.Network == network && !valid[key] {
			stale = append(stale, a)
			delete(s.atts, key)
		}
	}
	if len(stale) == 0 {
		s.mu.Unlock()
		return nil, nil
	}
	s.stateGen++
	saveErr := s.saveLocked()
	s.mu.Unlock()
	recs := make([]checkpoint.Attachment, 0, len(stale))
	for _, a := range stale {
		a.retire()
		s.opts.Data.Forget(a.rec.Netns)
		s.log.Info("gc: forgot attachment", "pod", a.rec.Namespace+"/"+a.rec.Name, "containerID", a.rec.ContainerID, "attachment", a.rec.Key())
		recs = append(recs, a.rec)
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Key() < recs[j].Key() })
	s.syncOthers(ctx)
	if saveErr != nil {
		return recs, fmt.Errorf("gc: save checkpoint: %w", saveErr)
	}
	return recs, nil
}

// SyncAll recompiles every local pod and applies those whose firewall changed.
func (s *Syncer) SyncAll(ctx context.Context) {
	start := time.Now()
	s.mu.Lock()
	gen := s.stateGen
	atts := make([]*attachment, 0, len(s.atts))
	for _, a := range s.atts {
		atts = append(atts, a)
	}
	s.mu.Unlock()

	fws, problems := s.compile(atts)
	s.noteProblems(problems)
	compiled := time.Now()
	host := s.readHostAddrs() // once per sync, not per pod: the dump grows with the pods' veths
	var applied, failed int
	var touched touchedPods
	var errs []error
	var gone bool
	// The applies run in parallel (each attachment's own lock still
	// serializes applies to one netns); their outcomes are handled below,
	// one after another, in the order of atts.
	type outcome struct {
		skipped, changed bool
		err              error
	}
	outcomes := make([]outcome, len(atts))
	forEachParallel(len(atts), maxParallelApplies, func(i int) {
		a := atts[i]
		fw, ok := fws[a.rec.Key()]
		if !ok {
			outcomes[i].skipped = true // deleted or replaced since the snapshot
			return
		}
		outcomes[i].changed, outcomes[i].err = s.applyIfChanged(ctx, a, fw, gen, host)
	})
	for i, a := range atts {
		changed, err := outcomes[i].changed, outcomes[i].err
		if outcomes[i].skipped || errors.Is(err, errRetired) {
			continue
		}
		if changed {
			applied++
			touched.add(a.rec.Namespace + "/" + a.rec.Name)
		}
		if errors.Is(err, dataplane.ErrNetnsGone) {
			// The runtime removed the sandbox without a DEL reaching us
			// (e.g. while the daemon was down): nothing is left to protect.
			s.log.Warn("netns gone, forgetting attachment", "pod", a.rec.Namespace+"/"+a.rec.Name,
				"containerID", a.rec.ContainerID, "netns", a.rec.Netns)
			dropped, saveErr := s.forget(a.rec.Key(), a)
			if dropped {
				a.retire()
				s.opts.Data.Forget(a.rec.Netns)
				gone = true
			}
			if saveErr != nil {
				errs = append(errs, fmt.Errorf("save checkpoint: %w", saveErr))
			}
			continue
		}
		if err != nil {
			failed++
			errs = append(errs, err)
		}
	}
	if gone {
		// The other pods must stop allowing the forgotten pods' addresses.
		s.Trigger()
	}
	s.mu.Lock()
	s.stats.Syncs++
	s.stats.LastSync = time.Now()
	if len(errs) > 0 {
		s.stats.SyncErrors++
		s.stats.LastSyncError = errors.Join(errs...).Error()
	} else {
		s.stats.LastSyncError = ""
	}
	s.mu.Unlock()
	s.opts.Observer.SyncDone(time.Since(start), errors.Join(errs...))
	s.log.Info("sync", "pods", len(atts), "applied", applied, "failed", failed, "touched", touched,
		"compile", compiled.Sub(start).Round(time.Microsecond), "duration", time.Since(start).Round(time.Microsecond))
}

// compile runs the compiler over the current state for the given attachments.
func (s *Syncer) compile(targets []*attachment) (map[string]*policy.Firewall, []error) {
	state, locals := s.localState(targets)
	res := s.compiler.Compile(state, locals)
	s.recordServices(targets, res)
	return res.Firewalls, res.Problems
}

// podName identifies a pod by namespace and name.
type podName struct{ namespace, name string }

func appendUnique(dst []netip.Addr, add ...netip.Addr) []netip.Addr {
	for _, ip := range add {
		if !slices.Contains(dst, ip) {
			dst = append(dst, ip)
		}
	}
	return dst
}

func (s *Syncer) noteProblems(problems []error) {
	msgs := make([]string, 0, len(problems))
	for _, p := range problems {
		msgs = append(msgs, p.Error())
	}
	s.mu.Lock()
	changed := !slices.Equal(msgs, s.stats.Problems)
	s.stats.Problems = msgs
	s.mu.Unlock()
	if changed {
		for _, m := range msgs {
			s.log.Warn("policy problem", "err", m)
		}
	}
}

// spec builds the dataplane input for an attachment.
func (s *Syncer) spec(a *attachment, fw *policy.Firewall, host hostAddrs) (dataplane.Spec, error) {
	if host.err != nil {
		return dataplane.Spec{}, host.err
	}
	return dataplane.Spec{Pod: a.rec.Namespace + "/" + a.rec.Name, Firewall: fw, NodeAddrs: nodeAddrs(a, host.addrs)}, nil
}

// hostAddrs is one reading of the node's own addresses.
type hostAddrs struct {
	addrs []netip.Addr
	err   error
}

// readHostAddrs reads the node's addresses; callers read them once for a
// round of applies.
func (s *Syncer) readHostAddrs() hostAddrs {
	if s.opts.NodeAddrs == nil {
		return hostAddrs{}
	}
	addrs, err := s.opts.NodeAddrs()
	if err != nil {
		return hostAddrs{err: fmt.Errorf("node addresses: %w", err)}
	}
	return hostAddrs{addrs: addrs}
}

// nodeAddrs returns the addresses always allowed into a: the host's and the
// gateways of its link, sorted and unique.
func nodeAddrs(a *attachment, host []netip.Addr) []netip.Addr {
	addrs := appendUnique(slices.Clone(host), a.gws...)
	slices.SortFunc(addrs, func(x, y netip.Addr) int { return x.Compare(y) })
	return slices.Compact(addrs)
}

func (s *Syncer) applyIfChanged(ctx context.Context, a *attachment, fw *policy.Firewall, gen uint64, host hostAddrs) (bool, error) {
	a.mu.Lock()
	same := a.applied != nil && a.lastErr == nil && a.applied.Equal(fw)
	if same && host.err == nil {
		same = slices.Equal(nodeAddrs(a, host.addrs), a.nodeAddr)
	}
	a.mu.Unlock()
	if same {
		return false, nil
	}
	return true, s.apply(ctx, a, fw, gen, host)
}

// apply installs fw for a, unless a newer generation was applied meanwhile.
func (s *Syncer) apply(ctx context.Context, a *attachment, fw *policy.Firewall, gen uint64, host hostAddrs) error {
	a.mu.Lock()
	retired := a.retired
	a.mu.Unlock()
	if retired {
		return errRetired
	}
	if fw == nil {
		// Never fall back to an open firewall.
		return fmt.Errorf("apply firewall for %s/%s: no firewall compiled", a.rec.Namespace, a.rec.Name)
	}
	spec, err := s.spec(a, fw, host)
	if err != nil {
		a.mu.Lock()
		a.lastErr = err
		a.mu.Unlock()
		return fmt.Errorf("apply firewall for %s/%s: %w", a.rec.Namespace, a.rec.Name, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.retired {
		return errRetired
	}
	if a.applied != nil && a.gen > gen {
		return nil // a newer state is already in force
	}
	start := time.Now()
	err = s.opts.Data.Apply(ctx, a.rec.Netns, spec)
	s.opts.Observer.ApplyDone(time.Since(start), err)
	pod := a.rec.Namespace + "/" + a.rec.Name
	if err != nil {
		a.lastErr = err
		// A gone netns is not an error of podwall's: SyncAll logs it once
		// and forgets the attachment; ADD returns it to the runtime.
		if !errors.Is(err, dataplane.ErrNetnsGone) {
			s.log.Error("apply firewall", "pod", pod, "containerID", a.rec.ContainerID, "err", err)
		}
		return fmt.Errorf("apply firewall for %s: %w", pod, err)
	}
	a.applied, a.nodeAddr, a.gen, a.lastErr = fw, spec.NodeAddrs, gen, nil
	a.size = sizeOf(fw)
	s.log.Debug("applied", "pod", pod, "containerID", a.rec.ContainerID,
		"ingressIsolated", fw.Ingress.Isolated, "egressIsolated", fw.Egress.Isolated,
		"ingressRules", len(fw.Ingress.Rules), "egressRules", len(fw.Egress.Rules),
		"duration", time.Since(start).Round(time.Microsecond))
	return nil
}
