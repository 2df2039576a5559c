package cniconf

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

// BackupSuffix ends the name of the original's copy kept beside a patched
// or converted file: 10-aws.conflist → 10-aws.conflist.podwall-orig. No
// runtime loads files with this extension.
const BackupSuffix = ".podwall-orig"

// tempInfix is in the names of files being written; their extension is not
// one a runtime loads, so a runtime never reads one.
const tempInfix = ".podwall-tmp-"

// ConfigExtensions are the extensions of the files containerd and CRI-O load
// from the configuration directory, the lexically first one winning.
var ConfigExtensions = []string{".conf", ".conflist", ".json"}

// ErrNoConfig is wrapped by the errors of Find, Install and Uninstall when
// there is no configuration file to work on.
var ErrNoConfig = errors.New("no CNI network configuration found")

// errChangedMeanwhile means a file changed between reading and replacing it
// (its owner rewrote it): the work is redone from the new content.
var errChangedMeanwhile = errors.New("changed while podwall was patching it")

// Options says which configuration to work on and what to write.
type Options struct {
	// Dir is the CNI configuration directory, e.g. /etc/cni/net.d.
	Dir string
	// File, when set, is the configuration file to work on: a name in Dir,
	// or a path. Otherwise it is the file the runtime loads (Find).
	File string
	// Entry is what Install writes.
	Entry Entry
}

// Action says what Install or Uninstall did.
type Action string

// The actions.
const (
	// Unchanged: the configuration was already as wanted.
	Unchanged Action = "unchanged"
	// Patched: podwall's entry was put into the .conflist.
	Patched Action = "patched"
	// Converted: a .conf (or .json) became a .conflist holding podwall.
	Converted Action = "converted"
	// Restored: the original is back, byte for byte.
	Restored Action = "restored"
	// Removed: podwall's entry was cut out of a file that changed after
	// install; the rest stays as it is, and the backup, if any, is kept.
	Removed Action = "removed"
)

// Result is what Install or Uninstall did.
type Result struct {
	Action Action
	// Path is the configuration file that holds (Install) or held
	// (Uninstall) podwall's entry, or, when Restored from a conversion, the
	// .conf put back.
	Path string
	// From is the file that was read when it differs from Path: the .conf
	// converted, or the .conflist removed when the .conf was restored.
	From string
	// Backup is the copy of the original kept beside it, if any.
	Backup string
}

func (r Result) String() string {
	if r.Path == "" {
		return string(r.Action) + ": no configuration"
	}
	s := string(r.Action) + " " + r.Path
	if r.From != "" {
		s += " (from " + r.From + ")"
	}
	if r.Backup != "" {
		s += ", original kept in " + r.Backup
	}
	return s
}

// Find returns the configuration file a runtime loads from dir: the
// lexically first *.conf, *.conflist or *.json.
func Find(dir string) (string, error) {
	files, err := configFiles(dir)
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("%w in %s (no *.conf, *.conflist or *.json file)", ErrNoConfig, dir)
	}
	return files[0], nil
}

// configFiles lists dir's configuration files, sorted; a missing dir has none.
func configFiles(dir string) ([]string, error) {
	files, err := libcni.ConfFiles(dir, ConfigExtensions)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	slices.Sort(files)
	return files, nil
}

// isConfigName reports whether a runtime would load a file of this name.
func isConfigName(name string) bool {
	return slices.Contains(ConfigExtensions, filepath.Ext(name))
}

// target returns the file to work on: Options.File, or Find's.
func (o Options) target() (string, error) {
	if o.File == "" {
		return Find(o.Dir)
	}
	path := o.File
	if !strings.ContainsRune(path, '/') {
		path = filepath.Join(o.Dir, path)
	}
	if !isConfigName(path) {
		return "", fmt.Errorf("%s: %w: not a .conf, .conflist or .json file", path, ErrNotUnderstood)
	}
	if _, err := os.Stat(path); err != nil {
		// A .conf podwall converted is gone; its .conflist is what to use.
		if list := listName(path); list != path && errors.Is(err, fs.ErrNotExist) {
			if _, lerr := os.Stat(list); lerr == nil {
				return list, nil
			}
		}
		return "", fmt.Errorf("%w: %w", ErrNoConfig, err)
	}
	return path, nil
}

// listName is the .conflist a .conf or .json is converted into.
func listName(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
}

// Install puts podwall's entry into the configuration (see the package
// comment), keeping the original beside it. It is idempotent: an
// installed configuration is left alone (Unchanged). A configuration it
// cannot chain into is refused with an error wrapping ErrNotUnderstood and
// nothing is written; no configuration at all is ErrNoConfig.
func Install(o Options) (Result, error) {
	for attempt := 0; ; attempt++ {
		res, err := install(o)
		if errors.Is(err, errChangedMeanwhile) && attempt < 3 {
			continue
		}
		return res, err
	}
}

func install(o Options) (Result, error) {
	path, err := o.target()
	if err != nil {
		return Result{}, err
	}
	data, perm, err := readFile(path)
	if err != nil {
		return Result{}, err
	}
	if filepath.Ext(path) != ".conflist" {
		return installConverted(o, path, data, perm)
	}
	patched, err := Patch(data, o.Entry)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	base, err := Unpatch(data)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	res := Result{Action: Unchanged, Path: path}
	if origin, ok := convertedOrigin(path, base); ok {
		res.Backup = origin + BackupSuffix
	} else {
		res.Backup = path + BackupSuffix
		if err := ensureFile(res.Backup, base, perm); err != nil {
			return Result{}, err
		}
	}
	if bytes.Equal(patched, data) {
		return res, nil
	}
	if err := replaceFile(path, data, patched, perm); err != nil {
		return Result{}, err
	}
	res.Action = Patched
	return res, nil
}

// installConverted converts the .conf (or .json) at path into a .conflist
// beside it holding podwall's entry, then removes the .conf: until the
// .conf is gone the runtime still loads it (it sorts first), after that the
// .conflist. At no time does it load a half-written file.
func installConverted(o Options, path string, data []byte, perm fs.FileMode) (Result, error) {
	list, err := Convert(data)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	patched, err := Patch(list, o.Entry)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	target := listName(path)
	existing, err := os.ReadFile(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		existing = nil
	case err != nil:
		return Result{}, err
	default:
		if has, err := Contains(existing); err != nil || !has {
			return Result{}, fmt.Errorf("%s: %w: converting it to a .conflist would replace %s, which podwall did not write", path, ErrNotUnderstood, target)
		}
	}
	if o.File == "" {
		// The runtime must then load the .conflist: no other file may sort before it.
		files, err := configFiles(filepath.Dir(path))
		if err != nil {
			return Result{}, err
		}
		files = slices.DeleteFunc(files, func(f string) bool { return f == path || f == target })
		if len(files) > 0 && files[0] < target {
			return Result{}, fmt.Errorf("%s: %w: its .conflist %s would not be the first configuration (%s sorts before it)", path, ErrNotUnderstood, filepath.Base(target), filepath.Base(files[0]))
		}
	}
	res := Result{Action: Converted, Path: target, From: path, Backup: path + BackupSuffix}
	if err := ensureFile(res.Backup, data, perm); err != nil {
		return Result{}, err
	}
	if err := replaceFile(target, existing, patched, perm); err != nil {
		return Result{}, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Result{}, fmt.Errorf("remove %s after converting it: %w", path, err)
	}
	return res, syncDir(filepath.Dir(path))
}

// convertedOrigin returns the .conf (or .json) the .conflist at path was
// converted from, when its backup is there and converts to base (the list
// without podwall).
func convertedOrigin(path string, base []byte) (string, bool) {
	stem := strings.TrimSuffix(path, ".conflist")
	for _, ext := range []string{".conf", ".json"} {
		orig, err := os.ReadFile(stem + ext + BackupSuffix)
		if err != nil {
			continue
		}
		if list, err := Convert(orig); err == nil && bytes.Equal(list, base) {
			return stem + ext, true
		}
	}
	return "", false
}

// Uninstall takes podwall's entry out of the configuration. When the file
// is what Install made of the original kept beside it, the original is put
// back byte for byte (a converted .conf included) and the copy removed
// (Restored); when it changed since, only podwall's entry is cut out and
// the copy is kept (Removed). A configuration without podwall is left
// alone (Unchanged), and a stale copy beside it removed.
func Uninstall(o Options) (Result, error) {
	for attempt := 0; ; attempt++ {
		res, err := uninstall(o)
		if errors.Is(err, errChangedMeanwhile) && attempt < 3 {
			continue
		}
		return res, err
	}
}

func uninstall(o Options) (Result, error) {
	path, err := o.target()
	if errors.Is(err, ErrNoConfig) && o.File == "" {
		return Result{Action: Unchanged}, nil
	}
	if err != nil {
		return Result{}, err
	}
	data, perm, err := readFile(path)
	if err != nil {
		return Result{}, err
	}
	res := Result{Action: Unchanged, Path: path}
	if filepath.Ext(path) != ".conflist" {
		// podwall never edits a .conf. A .conflist it converted from this
		// one is stale (the .conf was written again since): remove it.
		if list, err := os.ReadFile(listName(path)); err == nil {
			if has, err := Contains(list); err == nil && has {
				if err := os.Remove(listName(path)); err != nil {
					return Result{}, err
				}
				res.Action, res.From = Removed, listName(path)
			}
		}
		return res, removeIfExists(path + BackupSuffix)
	}
	has, err := Contains(data)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	if !has {
		return res, removeIfExists(path + BackupSuffix)
	}
	want, err := Unpatch(data)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", path, err)
	}
	if origin, ok := convertedOrigin(path, want); ok {
		orig, origPerm, err := readFile(origin + BackupSuffix)
		if err != nil {
			return Result{}, err
		}
		// The .conf sorts before the .conflist: once it is back the
		// runtime loads it, and the .conflist can go.
		if err := replaceFile(origin, nil, orig, origPerm); err != nil {
			return Result{}, err
		}
		if err := os.Remove(path); err != nil {
			return Result{}, err
		}
		if err := removeIfExists(origin + BackupSuffix); err != nil {
			return Result{}, err
		}
		return Result{Action: Restored, Path: origin, From: path}, syncDir(filepath.Dir(path))
	}
	if err := replaceFile(path, data, want, perm); err != nil {
		return Result{}, err
	}
	backup := path + BackupSuffix
	kept, err := os.ReadFile(backup)
	switch {
	case err == nil && bytes.Equal(kept, want):
		res.Action = Restored
		return res, removeIfExists(backup)
	case err == nil:
		res.Action, res.Backup = Removed, backup
	default:
		res.Action = Removed
	}
	return res, nil
}

// readFile returns a file's content and permissions.
func readFile(path string) ([]byte, fs.FileMode, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s: %w: not a regular file", path, ErrNotUnderstood)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", path, err)
	}
	return buf.Bytes(), fi.Mode().Perm(), nil
}

// ensureFile makes the file at path hold data, writing it (atomically)
// only if it does not already.
func ensureFile(path string, data []byte, perm fs.FileMode) error {
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, data) {
		return nil
	}
	return replaceFile(path, nil, data, perm)
}

// replaceFile atomically replaces the file at path with data: a temporary
// file in the same directory, fsync, rename, fsync of the directory. When
// old is not nil and the file no longer holds old just before the rename
// (its owner rewrote it meanwhile), nothing is replaced and the error wraps
// errChangedMeanwhile, so the owner's new content is never lost.
func replaceFile(path string, old, data []byte, perm fs.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+tempInfix+"*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if old != nil {
		if cur, err := os.ReadFile(path); err != nil || !bytes.Equal(cur, old) {
			return fmt.Errorf("%s: %w", path, errChangedMeanwhile)
		}
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
