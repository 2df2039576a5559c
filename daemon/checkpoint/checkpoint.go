// Package checkpoint is the daemon's on-disk record of the CNI attachments it
// serves, kept under --state-dir so that a restarted daemon knows which pod
// network namespaces to keep enforcing. The file is one JSON envelope,
// {"version": 1, "attachments": [...]}, sorted by attachment key and replaced
// atomically (temp file, fsync, rename, fsync of the directory), as
// aws-vpc-cni's ipamd does. It must not import the policy, dataplane or
// source packages: it stores what it is given.
package checkpoint

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

const (
	// fileName is the checkpoint inside the state dir; frozen across upgrades.
	fileName = "attachments.json"
	// tempPrefix starts the names of files being written; leftovers of a
	// crash are removed by Open and never read.
	tempPrefix = "." + fileName + ".tmp-"
	// version is the envelope version this code writes and reads.
	version = 1
)

var (
	// ErrCorrupt is wrapped by Load's error when the checkpoint cannot be
	// decoded or holds invalid attachments.
	ErrCorrupt = errors.New("checkpoint corrupt")
	// ErrUnknownVersion is wrapped by Load's error when the checkpoint was
	// written by a newer podwalld, in a format this one does not know.
	ErrUnknownVersion = errors.New("checkpoint version unknown")
)

// Attachment is one CNI attachment: a pod's interface in one network.
type Attachment struct {
	Network          string    `json:"network"`
	ContainerID      string    `json:"containerID"`
	IfName           string    `json:"ifName"`
	Namespace        string    `json:"namespace"`
	Name             string    `json:"name"`
	UID              string    `json:"uid,omitempty"`
	InfraContainerID string    `json:"infraContainerID,omitempty"`
	Netns            string    `json:"netns"`
	IPs              []string  `json:"ips,omitempty"`      // CIDR, e.g. "10.1.0.5/32"
	Gateways         []string  `json:"gateways,omitempty"` // addresses
	Added            time.Time `json:"added"`
}

// Key identifies the attachment, as CNI does: "network/containerID/ifName".
func (a Attachment) Key() string { return a.Network + "/" + a.ContainerID + "/" + a.IfName }

// validate checks what Load relies on; Save checks it too, so that Load
// never rejects what Save wrote.
func (a *Attachment) validate() error {
	if a.Network == "" || a.ContainerID == "" || a.IfName == "" {
		return fmt.Errorf("attachment %q: network, containerID and ifName are required", a.Key())
	}
	for _, ip := range a.IPs {
		if _, err := netip.ParsePrefix(ip); err != nil {
			return fmt.Errorf("attachment %s: ips: %w", a.Key(), err)
		}
	}
	for _, gw := range a.Gateways {
		if _, err := netip.ParseAddr(gw); err != nil {
			return fmt.Errorf("attachment %s: gateways: %w", a.Key(), err)
		}
	}
	return nil
}

// envelope is the file's format.
type envelope struct {
	Version     int          `json:"version"`
	Attachments []Attachment `json:"attachments"`
}

// Store reads and writes the checkpoint in one directory. Its methods are
// safe for concurrent use; one daemon owns a directory.
type Store struct {
	dir  string
	path string
	mu   sync.Mutex
}

// Open returns the store in dir, creating dir (0700) if missing and making
// it 0700 if it is not. It removes temp files a crash left behind.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("chmod state dir: %w", err)
	}
	s := &Store{dir: dir, path: filepath.Join(dir, fileName)}
	if err := os.Chmod(s.path, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chmod checkpoint: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read state dir: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("remove leftover checkpoint temp file: %w", err)
			}
		}
	}
	return s, nil
}

// Path returns the checkpoint file's path.
func (s *Store) Path() string { return s.path }

// Load returns the attachments saved last, sorted by Key. No checkpoint yet
// is no attachments and no error; a damaged one is an error wrapping
// ErrCorrupt, one from a newer podwalld an error wrapping ErrUnknownVersion.
func (s *Store) Load() ([]Attachment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	atts, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint %s: %w", s.path, err)
	}
	return atts, nil
}

// ReadFile decodes the checkpoint file at path, sorted by Key, without
// touching its directory (Open removes leftover temp files and fixes
// modes): for tools and tests that read the checkpoint of a running
// daemon. Its errors wrap ErrCorrupt or ErrUnknownVersion as Load's do; a
// missing file is an error wrapping fs.ErrNotExist.
func ReadFile(path string) ([]Attachment, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	atts, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %s: %w", path, err)
	}
	return atts, nil
}

func decode(data []byte) ([]Attachment, error) {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	switch {
	case probe.Version == nil:
		return nil, fmt.Errorf("%w: no version", ErrCorrupt)
	case *probe.Version > version:
		return nil, fmt.Errorf("%w: version %d, this podwalld reads version %d", ErrUnknownVersion, *probe.Version, version)
	case *probe.Version < version:
		return nil, fmt.Errorf("%w: invalid version %d", ErrCorrupt, *probe.Version)
	}
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err := check(env.Attachments); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	slices.SortFunc(env.Attachments, compareKeys)
	return env.Attachments, nil
}

// check validates atts and rejects two attachments with one key.
func check(atts []Attachment) error {
	seen := make(map[string]bool, len(atts))
	for i := range atts {
		if err := atts[i].validate(); err != nil {
			return err
		}
		key := atts[i].Key()
		if seen[key] {
			return fmt.Errorf("attachment %s recorded twice", key)
		}
		seen[key] = true
	}
	return nil
}

func compareKeys(a, b Attachment) int { return cmp.Compare(a.Key(), b.Key()) }

// Save replaces the checkpoint with atts, sorted by Key, atomically: after a
// crash the file holds either the previous or the new content.
func (s *Store) Save(atts []Attachment) error {
	if err := check(atts); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	sorted := slices.Clone(atts)
	for i := range sorted {
		sorted[i].Added = sorted[i].Added.UTC()
	}
	slices.SortFunc(sorted, compareKeys)
	if sorted == nil {
		sorted = []Attachment{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(envelope{Version: version, Attachments: sorted}); err != nil {
		return fmt.Errorf("save checkpoint: encode: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if err := writeFileAtomic(s.dir, s.path, buf.Bytes()); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to a temp file in dir, syncs it, renames it
// over path and syncs dir, so that the rename itself survives a crash.
func writeFileAtomic(dir, path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
