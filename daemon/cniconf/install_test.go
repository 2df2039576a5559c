package cniconf

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// realWorld holds the real-world configuration directories, one per case:
// conflist/testdata/<case>/ (see its README.md for where each comes from).
var realWorld = filepath.Join("..", "..", "conflist", "testdata")

// snapshot is a directory's regular files: name → content and mode.
type snapshot map[string]fileState

type fileState struct {
	data []byte
	perm fs.FileMode
}

func takeSnapshot(t *testing.T, dir string) snapshot {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		s[e.Name()] = fileState{data: data, perm: fi.Mode().Perm()}
	}
	return s
}

// diff describes how b differs from a; "" if they are the same.
func (a snapshot) diff(b snapshot) string {
	var out []string
	for name, fa := range a {
		fb, ok := b[name]
		switch {
		case !ok:
			out = append(out, name+" is gone")
		case !bytes.Equal(fa.data, fb.data):
			out = append(out, fmt.Sprintf("%s differs:\n%s\n-- want --\n%s", name, fb.data, fa.data))
		case fa.perm != fb.perm:
			out = append(out, fmt.Sprintf("%s mode %v, want %v", name, fb.perm, fa.perm))
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			out = append(out, name+" is new")
		}
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}

// render lists the snapshot for a golden file: files byte-equal to a file
// of the input are named, the others printed.
func (a snapshot) render(input snapshot) string {
	names := make([]string, 0, len(a))
	for name := range a {
		names = append(names, name)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		f := a[name]
		same := ""
		for in, fi := range input {
			if bytes.Equal(fi.data, f.data) && (same == "" || in == name) {
				same = in
			}
		}
		if same != "" {
			fmt.Fprintf(&b, "== %s (%v): byte for byte the input's %s\n", name, f.perm, same)
			continue
		}
		fmt.Fprintf(&b, "== %s (%v):\n%s", name, f.perm, f.data)
		if !bytes.HasSuffix(f.data, []byte("\n")) {
			b.WriteString("\n")
		}
	}
	return b.String()
}

// copyCase copies conflist/testdata/<name> into a new temporary directory,
// every file mode 0644 as ENI agents write them.
func copyCase(t *testing.T, name string) string {
	t.Helper()
	src := filepath.Join(realWorld, name)
	dir := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it):\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

// describe is a result as the golden files show it, with the directory
// replaced by $DIR.
func describe(dir string, res Result, err error) string {
	if err != nil {
		return "error: " + strings.ReplaceAll(err.Error(), dir, "$DIR") + "\n"
	}
	return strings.ReplaceAll(strings.ReplaceAll(res.String(), dir+"/", ""), dir, "$DIR") + "\n"
}

// TestInstallRealWorld installs podwall into each real-world configuration
// directory and uninstalls it again: the outcome (file contents or the
// refusal) matches testdata/install/<case>.golden, a second install changes
// nothing, a refused one leaves the directory exactly as it was, and
// uninstall gives back the original directory byte for byte.
func TestInstallRealWorld(t *testing.T) {
	tests := []struct {
		name    string
		want    Action
		wantErr error
		// removed: the input already held a podwall entry, so what
		// uninstall gives back is the input without it.
		removed bool
	}{
		{name: "tke", want: Patched},
		{name: "aws", want: Patched},
		{name: "bridge", want: Patched},
		{name: "compact", want: Patched},
		{name: "conf", want: Converted},
		{name: "already-patched", want: Unchanged, removed: true},
		{name: "hand-patched", want: Patched, removed: true},
		{name: "tke-0.3.1", want: Patched},
		{name: "flannel", want: Patched},
		{name: "broken", wantErr: ErrNotUnderstood},
		{name: "empty", wantErr: ErrNoConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyCase(t, tt.name)
			input := takeSnapshot(t, dir)
			opts := Options{Dir: dir}

			var golden strings.Builder
			res, err := Install(opts)
			golden.WriteString("$ podwalld install-cni\n" + describe(dir, res, err))
			if !errors.Is(err, tt.wantErr) || (err == nil && res.Action != tt.want) {
				t.Fatalf("Install: %v, %v; want %s, %v", res, err, tt.want, tt.wantErr)
			}
			installed := takeSnapshot(t, dir)
			golden.WriteString(installed.render(input))
			if err != nil {
				if d := input.diff(installed); d != "" {
					t.Errorf("refused install changed the directory:\n%s", d)
				}
			} else {
				again, err := Install(opts)
				if err != nil || again.Action != Unchanged {
					t.Errorf("second Install: %v, %v; want unchanged", again, err)
				}
				if d := installed.diff(takeSnapshot(t, dir)); d != "" {
					t.Errorf("second Install changed the directory:\n%s", d)
				}
				checkLoadsWithPodwall(t, dir)
			}

			res, err = Uninstall(opts)
			golden.WriteString("$ podwalld uninstall-cni\n" + describe(dir, res, err))
			uninstalled := takeSnapshot(t, dir)
			golden.WriteString(uninstalled.render(input))
			checkGolden(t, filepath.Join("testdata", "install", tt.name+".golden"), golden.String())

			want := input
			if tt.removed {
				want = withoutPodwall(t, input)
			}
			if tt.name == "broken" {
				if !errors.Is(err, ErrNotUnderstood) {
					t.Errorf("Uninstall of a broken file: %v, want ErrNotUnderstood", err)
				}
			} else if err != nil {
				t.Fatalf("Uninstall: %v", err)
			}
			if d := want.diff(uninstalled); d != "" {
				t.Errorf("after uninstall the directory is not the original:\n%s", d)
			}
		})
	}
}

// withoutPodwall is the snapshot with podwall's entries cut out of every
// .conflist and the backups dropped.
func withoutPodwall(t *testing.T, s snapshot) snapshot {
	t.Helper()
	out := snapshot{}
	for name, f := range s {
		if strings.HasSuffix(name, BackupSuffix) {
			continue
		}
		if filepath.Ext(name) == ".conflist" {
			data, err := Unpatch(f.data)
			if err != nil {
				t.Fatal(err)
			}
			f.data = data
		}
		out[name] = f
	}
	return out
}

// checkLoadsWithPodwall checks that the file the runtime loads from dir
// holds podwall's entry right after the first plugin.
func checkLoadsWithPodwall(t *testing.T, dir string) {
	t.Helper()
	path, err := Find(dir)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := parseConfList(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(cl.plugins) < 2 || cl.plugins[1].typ != PluginType || cl.index(PluginType) != 1 {
		t.Errorf("%s: podwall is not the second plugin (and only there):\n%s", path, data)
	}
}

// TestInstallExplicitFile patches a file named with Options.File even when
// it is not the one the runtime loads first, and uninstalls it by the same
// name.
func TestInstallExplicitFile(t *testing.T) {
	dir := copyCase(t, "aws")
	first := []byte(`{"cniVersion": "1.0.0", "name": "first", "plugins": [{"type": "ptp"}]}` + "\n")
	if err := os.WriteFile(filepath.Join(dir, "00-first.conflist"), first, 0o644); err != nil {
		t.Fatal(err)
	}
	input := takeSnapshot(t, dir)
	opts := Options{Dir: dir, File: "10-aws.conflist"}
	res, err := Install(opts)
	if err != nil || res.Action != Patched || res.Path != filepath.Join(dir, "10-aws.conflist") {
		t.Fatalf("Install: %v, %v", res, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "00-first.conflist")); !bytes.Equal(got, first) {
		t.Errorf("00-first.conflist changed")
	}
	if _, err := Uninstall(opts); err != nil {
		t.Fatal(err)
	}
	if d := input.diff(takeSnapshot(t, dir)); d != "" {
		t.Errorf("after uninstall:\n%s", d)
	}

	_, err = Install(Options{Dir: dir, File: "missing.conflist"})
	if !errors.Is(err, ErrNoConfig) {
		t.Errorf("Install of a missing file: %v, want ErrNoConfig", err)
	}
	_, err = Install(Options{Dir: dir, File: "notes.txt"})
	if !errors.Is(err, ErrNotUnderstood) {
		t.Errorf("Install of a .txt: %v, want ErrNotUnderstood", err)
	}
}

// TestInstallAfterAgentRewrite is the sequence on a node whose ENI agent
// restarts: install, the agent writes its conflist again (without podwall,
// with a change of its own), install again. The new content is kept, the
// entry is back, and the backup follows the agent's new content, so that
// uninstall gives the agent's latest file back.
func TestInstallAfterAgentRewrite(t *testing.T) {
	dir := copyCase(t, "aws")
	path := filepath.Join(dir, "10-aws.conflist")
	if _, err := Install(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(filepath.Join(realWorld, "aws", "10-aws.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	rewritten := bytes.ReplaceAll(orig, []byte(`"9001"`), []byte(`"1500"`))
	if err := os.WriteFile(path, rewritten, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Install(Options{Dir: dir})
	if err != nil || res.Action != Patched {
		t.Fatalf("Install after rewrite: %v, %v", res, err)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Contains(got, []byte(`"1500"`)) || bytes.Contains(got, []byte(`"9001"`)) {
		t.Errorf("the agent's change is lost:\n%s", got)
	}
	if backup, _ := os.ReadFile(path + BackupSuffix); !bytes.Equal(backup, rewritten) {
		t.Errorf("backup is not the agent's latest file:\n%s", backup)
	}
	if res, err := Uninstall(Options{Dir: dir}); err != nil || res.Action != Restored {
		t.Fatalf("Uninstall: %v, %v", res, err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, rewritten) {
		t.Errorf("uninstall did not restore the agent's latest file:\n%s", got)
	}
}

// TestUninstallAfterEdit: a patched file edited by hand keeps the edit on
// uninstall; only podwall's entry goes, and the backup stays for comparison.
func TestUninstallAfterEdit(t *testing.T) {
	dir := copyCase(t, "tke")
	path := filepath.Join(dir, "10-tke-route-eni.conflist")
	if _, err := Install(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	patched, _ := os.ReadFile(path)
	edited := bytes.Replace(patched, []byte(`"mtu": 1500`), []byte(`"mtu": 9000`), 1)
	if err := os.WriteFile(path, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := Uninstall(Options{Dir: dir})
	if err != nil || res.Action != Removed || res.Backup != path+BackupSuffix {
		t.Fatalf("Uninstall: %v, %v; want removed with the backup kept", res, err)
	}
	got, _ := os.ReadFile(path)
	want, _ := Unpatch(edited)
	if !bytes.Equal(got, want) || bytes.Contains(got, []byte(PluginType)) {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestConvertedConfRewritten: after a .conf was converted, its agent writes
// the .conf again. It sorts before the .conflist, so the runtime loads it:
// install converts it again (replacing podwall's own .conflist), and
// uninstall then puts the newest .conf back.
func TestConvertedConfRewritten(t *testing.T) {
	dir := copyCase(t, "conf")
	conf := filepath.Join(dir, "10-mynet.conf")
	if res, err := Install(Options{Dir: dir}); err != nil || res.Action != Converted {
		t.Fatalf("Install: %v, %v", res, err)
	}
	if _, err := os.Stat(conf); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the .conf is still there after conversion: %v", err)
	}
	orig, _ := os.ReadFile(filepath.Join(realWorld, "conf", "10-mynet.conf"))
	newer := bytes.Replace(orig, []byte("10.22.0.0/16"), []byte("10.23.0.0/16"), 1)
	if err := os.WriteFile(conf, newer, 0o644); err != nil {
		t.Fatal(err)
	}
	if path, _ := Find(dir); path != conf {
		t.Fatalf("Find = %s, want the rewritten .conf", path)
	}
	if res, err := Install(Options{Dir: dir}); err != nil || res.Action != Converted {
		t.Fatalf("Install after rewrite: %v, %v", res, err)
	}
	list, _ := os.ReadFile(filepath.Join(dir, "10-mynet.conflist"))
	if !bytes.Contains(list, []byte("10.23.0.0/16")) {
		t.Errorf("converted list lacks the new subnet:\n%s", list)
	}
	if res, err := Uninstall(Options{Dir: dir}); err != nil || res.Action != Restored {
		t.Fatalf("Uninstall: %v, %v", res, err)
	}
	if got, _ := os.ReadFile(conf); !bytes.Equal(got, newer) {
		t.Errorf("restored .conf:\n%s\nwant:\n%s", got, newer)
	}
	if _, err := os.Stat(filepath.Join(dir, "10-mynet.conflist")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("podwall's .conflist is still there: %v", err)
	}
}

// TestConvertRefusesForeignList: converting a .conf must not replace a
// .conflist of the same name that podwall did not write.
func TestConvertRefusesForeignList(t *testing.T) {
	dir := copyCase(t, "conf")
	foreign := []byte(`{"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "bridge"}]}`)
	if err := os.WriteFile(filepath.Join(dir, "10-mynet.conflist"), foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	before := takeSnapshot(t, dir)
	_, err := Install(Options{Dir: dir})
	if !errors.Is(err, ErrNotUnderstood) || !strings.Contains(err.Error(), "podwall did not write") {
		t.Fatalf("Install: %v, want a refusal", err)
	}
	if d := before.diff(takeSnapshot(t, dir)); d != "" {
		t.Errorf("refused install changed the directory:\n%s", d)
	}
}

// TestFind picks the lexically first file a runtime loads, ignoring other
// extensions, backups, temporary files and directories.
func TestFind(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"10-aws.conflist.podwall-orig", ".10-aws.conflist.podwall-tmp-123", "05-notes.txt", "20-b.json", "30-a.conflist", "15-c.conf"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "01-dir.conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := Find(dir)
	if want := filepath.Join(dir, "15-c.conf"); err != nil || got != want {
		t.Errorf("Find = %s, %v; want %s", got, err, want)
	}
	if _, err := Find(filepath.Join(dir, "missing")); !errors.Is(err, ErrNoConfig) {
		t.Errorf("Find on a missing dir: %v, want ErrNoConfig", err)
	}
}
