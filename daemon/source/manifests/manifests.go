// Package manifests is the --manifests DIR policy source: the Namespaces,
// Pods, NetworkPolicies, Services, EndpointSlices and ServiceCIDRs in a
// directory of YAML/JSON files are the whole cluster state. It re-reads the directory when files change, keeps the last
// good content of a file that breaks, and reports broken files as
// source.Errors. It must not import client-go, the dataplane or the sync
// package; it hands state to its caller and nothing else.
//
// Rules: DIR's *.yaml, *.yml and *.json files are read, several documents per
// file (YAML "---" or consecutive JSON objects); dotfiles, editor temp files
// and subfolders are ignored. Kinds are Namespace, Pod, Service (v1),
// NetworkPolicy, ServiceCIDR (networking.k8s.io/v1), EndpointSlice
// (discovery.k8s.io/v1), and List and the typed lists of them. Fields the API
// does not know are errors, as with kubectl's strict validation. Namespaced
// objects without a namespace go to "default"; namespaces that pods or
// policies refer to but that are not declared exist with just their
// kubernetes.io/metadata.name label. No controller runs: Services need their
// clusterIP written out and EndpointSlices are read as written. The state's
// ServiceCIDRs are the ServiceCIDR objects' ranges and those given to
// SetServiceCIDRs. A file is broken when it does not parse, has an unknown
// kind, an object without a name or a NetworkPolicy, Service, EndpointSlice
// or ServiceCIDR the API server would reject: it is then reported and its last
// good content stays in force (nothing, if it never was good). An object
// defined twice is taken from the first file in sorted order (the first
// document within a file) and the later definition is reported; the rest of
// that later file applies.
package manifests

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/podwall/podwall/daemon/policy"
	"github.com/podwall/podwall/daemon/source"
)

const (
	// pollInterval is how often Run looks at the directory. A change is
	// in force at most about two intervals later (see racyWindow).
	pollInterval = 500 * time.Millisecond
	// racyWindow: a file modified this recently may be written to again
	// within the same mtime tick without its stamp changing, so it is read
	// again on the next poll (and re-parsed only if its bytes differ).
	racyWindow = time.Second
	// maxFileSize bounds what one manifest file may hold.
	maxFileSize = 16 << 20
)

// Source is the manifests directory source. Its methods are safe for
// concurrent use.
type Source struct {
	dir string
	log *slog.Logger

	mu         sync.Mutex
	files      map[string]*file // by base name
	state      *policy.State
	errs       []source.Error
	generation uint64          // bumped whenever state changes
	logged     map[string]bool // duplicate-object errors already logged
	// staticCIDRs are the ranges SetServiceCIDRs gave.
	staticCIDRs []netip.Prefix
}

// stamp is what tells a file changed without reading it.
type stamp struct {
	size  int64
	mtime int64 // ns since the epoch
	dev   uint64
	inode uint64
}

// file is what the source remembers of one manifest file.
type file struct {
	stamp      stamp
	checkAgain bool // stamp too recent to trust; read again next poll
	sum        [sha256.Size]byte
	current    []object       // parsed from the current bytes; unused when errs != nil
	good       []object       // last good content; nil when never good
	errs       []source.Error // problems of the current bytes
}

// object is one API object of a file, converted for the policy compiler.
type object struct {
	kind      string // Namespace, Pod, NetworkPolicy, Service, EndpointSlice or ServiceCIDR
	namespace string // empty for Namespaces and ServiceCIDRs
	name      string
	ns        *policy.Namespace
	pod       *policy.Pod
	np        *networkingv1.NetworkPolicy
	svc       *policy.Service
	slice     *policy.EndpointSlice
	cidrs     []netip.Prefix // of a ServiceCIDR
}

// id names the object in messages: "Pod nsa/web", "Namespace nsa".
func (o *object) id() string {
	if o.namespace == "" {
		return o.kind + " " + o.name
	}
	return o.kind + " " + o.namespace + "/" + o.name
}

// New returns a source for dir. It reads nothing until Load or Run.
func New(dir string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{
		dir:    dir,
		log:    log.With("source", "manifests", "dir", dir),
		files:  map[string]*file{},
		state:  &policy.State{},
		logged: map[string]bool{},
	}
}

// State returns the current good state, objects sorted by (namespace, name).
// It is a shared snapshot: callers must not modify it.
func (s *Source) State() *policy.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// SetServiceCIDRs sets ranges that the state adds to those of the
// directory's ServiceCIDR objects (the daemon's --service-cidr). The state
// changes at once; Run reports it like a file change.
func (s *Source) SetServiceCIDRs(prefixes []netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.staticCIDRs = source.UniquePrefixes(prefixes)
	s.rebuild()
}

// Errors returns the problems currently reported: broken files and
// documents, and objects defined twice. Each names its file.
func (s *Source) Errors() []source.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

// Load re-reads the directory now: files whose name, size, mtime or inode
// changed are read again. It returns an error only when the directory
// itself cannot be read, and then keeps the state it had.
func (s *Source) Load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load()
}

// Run polls the directory every 500 ms until ctx ends and calls changed
// after a change altered the state. Calls are never concurrent, and changes
// that happen while changed runs are reported by one call after it returns.
// Changes made by Load calls from elsewhere are reported too.
func (s *Source) Run(ctx context.Context, changed func()) {
	s.mu.Lock()
	notified := s.generation
	s.mu.Unlock()

	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	var lastErr string
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		err := s.Load()
		switch {
		case err != nil && err.Error() != lastErr:
			s.log.Error("cannot read manifests directory; keeping the current state", "err", err)
			lastErr = err.Error()
		case err == nil && lastErr != "":
			s.log.Info("manifests directory readable again")
			lastErr = ""
		}
		s.mu.Lock()
		generation := s.generation
		s.mu.Unlock()
		if generation != notified && ctx.Err() == nil {
			notified = generation
			changed()
		}
	}
}

// load does Load's work with s.mu held.
func (s *Source) load() error {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("read manifests directory: %w", err)
	}
	dirty := false
	present := make(map[string]bool, len(entries))
	for _, entry := range entries {
		name := entry.Name()
		if !isManifestName(name) {
			continue
		}
		found, changed := s.refresh(name)
		present[name] = found
		dirty = dirty || changed
	}
	for name := range s.files {
		if !present[name] {
			s.log.Info("manifest file removed", "file", name)
			delete(s.files, name)
			dirty = true
		}
	}
	if dirty {
		s.rebuild()
	}
	return nil
}

// isManifestName reports whether a directory entry named name is read:
// *.yaml, *.yml, *.json, but no dotfiles (which covers ".#x.yaml" locks and
// ".x.yaml.swp") and no editor leftovers ("x.yaml~", "#x.yaml#").
func isManifestName(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") ||
		strings.HasSuffix(name, "~") || strings.HasSuffix(name, ".swp") {
		return false
	}
	switch filepath.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// refresh brings s.files[name] up to date. found is false when name is no
// longer a regular file (gone, or a subfolder); changed is true when the
// file's objects or problems may have changed.
func (s *Source) refresh(name string) (found, changed bool) {
	path := filepath.Join(s.dir, name)
	f := s.files[name]
	fail := func(err error) (bool, bool) {
		if f == nil {
			f = &file{}
			s.files[name] = f
		}
		e := source.Error{Object: path, Err: err}
		repeated := len(f.errs) == 1 && f.errs[0].Error() == e.Error()
		f.stamp, f.checkAgain, f.sum = stamp{}, true, [sha256.Size]byte{}
		f.current = nil
		f.errs = []source.Error{e}
		if repeated {
			return true, false
		}
		s.log.Warn("cannot read manifest file; keeping its last good content", "file", name, "err", err)
		return true, true
	}

	// Stat follows symlinks, as with ConfigMap volumes (x.yaml -> ..data/x.yaml).
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false
	}
	if err != nil {
		return fail(err)
	}
	if !info.Mode().IsRegular() {
		return false, false
	}
	st := stampOf(info)
	if f != nil && f.stamp == st && !f.checkAgain {
		return true, false
	}
	data, err := readFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, false
	}
	if err != nil {
		return fail(err)
	}
	sum := sha256.Sum256(data)
	if f != nil && f.sum == sum {
		f.stamp, f.checkAgain = st, recent(st)
		return true, false
	}

	if f == nil {
		f = &file{}
		s.files[name] = f
	}
	hadErrs := len(f.errs) > 0
	f.stamp, f.checkAgain, f.sum = st, recent(st), sum
	f.current, f.errs = parseFile(path, data)
	if len(f.errs) == 0 {
		f.good = f.current
		if hadErrs {
			s.log.Info("manifest file fixed", "file", name, "objects", len(f.current))
		} else {
			s.log.Info("manifest file read", "file", name, "objects", len(f.current))
		}
	} else {
		for _, e := range f.errs {
			s.log.Warn("manifest file rejected; keeping its last good content",
				"file", name, "object", e.Object, "err", e.Err, "lastGoodObjects", len(f.good))
		}
	}
	return true, true
}

// recent reports whether st's mtime is too recent to trust (see racyWindow).
func recent(st stamp) bool { return time.Since(time.Unix(0, st.mtime)) < racyWindow }

func stampOf(info fs.FileInfo) stamp {
	st := stamp{size: info.Size(), mtime: info.ModTime().UnixNano()}
	if sys, ok := info.Sys().(*syscall.Stat_t); ok {
		st.dev, st.inode = uint64(sys.Dev), uint64(sys.Ino)
	}
	return st
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	return data, nil
}

// rebuild merges the files' objects into a new state and error list, in
// sorted file order, and bumps the generation when the state changed.
func (s *Source) rebuild() {
	names := make([]string, 0, len(s.files))
	for name := range s.files {
		names = append(names, name)
	}
	slices.Sort(names)

	next := &policy.State{}
	cidrs := [][]netip.Prefix{s.staticCIDRs}
	var errs []source.Error
	definedIn := map[string]string{} // "kind namespace/name" -> file
	declared := map[string]bool{}
	for _, name := range names {
		f := s.files[name]
		objects := f.current
		if len(f.errs) > 0 {
			errs = append(errs, f.errs...)
			objects = f.good
		}
		for i := range objects {
			o := &objects[i]
			id := o.id()
			if first, ok := definedIn[id]; ok {
				e := source.Error{
					Object: filepath.Join(s.dir, name) + ": " + id,
					Err:    fmt.Errorf("already defined in %s; that definition is used", first),
				}
				errs = append(errs, e)
				if !s.logged[e.Error()] {
					s.log.Warn("object defined twice; the first definition is used",
						"file", name, "object", id, "firstFile", first)
				}
				continue
			}
			definedIn[id] = name
			switch {
			case o.ns != nil:
				next.Namespaces = append(next.Namespaces, o.ns)
				declared[o.name] = true
			case o.pod != nil:
				next.Pods = append(next.Pods, o.pod)
			case o.np != nil:
				next.Policies = append(next.Policies, o.np)
			case o.svc != nil:
				next.Services = append(next.Services, o.svc)
			case o.slice != nil:
				next.EndpointSlices = append(next.EndpointSlices, o.slice)
			case o.kind == "ServiceCIDR":
				cidrs = append(cidrs, o.cidrs)
			}
		}
	}
	implicit := map[string]bool{}
	for _, p := range next.Pods {
		implicit[p.Namespace] = true
	}
	for _, np := range next.Policies {
		implicit[np.Namespace] = true
	}
	for name := range implicit {
		if !declared[name] {
			next.Namespaces = append(next.Namespaces, source.ImplicitNamespace(name))
		}
	}
	slices.SortFunc(next.Namespaces, func(a, b *policy.Namespace) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(next.Pods, func(a, b *policy.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(next.Policies, func(a, b *networkingv1.NetworkPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(next.Services, func(a, b *policy.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(next.EndpointSlices, func(a, b *policy.EndpointSlice) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	next.ServiceCIDRs = source.UniquePrefixes(cidrs...)

	s.logged = map[string]bool{}
	for _, e := range errs {
		s.logged[e.Error()] = true
	}
	s.errs = errs
	// reflect.DeepEqual, not equality.Semantic: the latter panics on the
	// unexported fields of netip.Addr (pod IPs, Service addresses). At worst
	// it sees a change where there is none (a spurious changed call).
	if !reflect.DeepEqual(s.state, next) {
		s.state = next
		s.generation++
		s.log.Info("manifests state changed", "namespaces", len(next.Namespaces),
			"pods", len(next.Pods), "policies", len(next.Policies), "services", len(next.Services),
			"endpointSlices", len(next.EndpointSlices), "serviceCIDRs", len(next.ServiceCIDRs), "errors", len(errs))
	}
}
