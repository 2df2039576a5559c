package checkpoint

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func attachment(network, id, ifName string) Attachment {
	return Attachment{
		Network: network, ContainerID: id, IfName: ifName,
		Namespace: "nsa", Name: "pod-" + id, UID: "uid-" + id, InfraContainerID: id,
		Netns:    "/var/run/netns/cni-" + id,
		IPs:      []string{"10.1.0.5/32", "fd10::5/128"},
		Gateways: []string{"10.1.0.1"},
		Added:    time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.FixedZone("X", 3600)),
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		atts []Attachment
		want []string // keys, in order
	}{
		{"empty", nil, nil},
		{"one", []Attachment{attachment("podnet", "c1", "eth0")}, []string{"podnet/c1/eth0"}},
		{"sorted by key", []Attachment{
			attachment("podnet", "c2", "eth0"),
			attachment("other", "c9", "eth0"),
			attachment("podnet", "c1", "eth1"),
			attachment("podnet", "c1", "eth0"),
		}, []string{"other/c9/eth0", "podnet/c1/eth0", "podnet/c1/eth1", "podnet/c2/eth0"}},
		{"minimal fields", []Attachment{{Network: "n", ContainerID: "c", IfName: "eth0"}}, []string{"n/c/eth0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Save(tt.atts); err != nil {
				t.Fatalf("Save: %v", err)
			}
			got, err := s.Load()
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var keys []string
			for _, a := range got {
				keys = append(keys, a.Key())
			}
			if !reflect.DeepEqual(keys, tt.want) {
				t.Fatalf("keys = %v, want %v", keys, tt.want)
			}
			byKey := map[string]Attachment{}
			for _, a := range tt.atts {
				byKey[a.Key()] = a
			}
			for _, a := range got {
				want := byKey[a.Key()]
				if !a.Added.Equal(want.Added) {
					t.Errorf("%s: Added = %v, want %v", a.Key(), a.Added, want.Added)
				}
				a.Added, want.Added = time.Time{}, time.Time{}
				if !reflect.DeepEqual(a, want) {
					t.Errorf("%s:\n got %+v\nwant %+v", a.Key(), a, want)
				}
			}
		})
	}
}

func TestLoadWithoutCheckpoint(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || len(got) != 0 {
		t.Errorf("Load = %v, %v; want nothing, nil", got, err)
	}
}

func TestSaveReplaces(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save([]Attachment{attachment("n", "c1", "eth0"), attachment("n", "c2", "eth0")}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save([]Attachment{attachment("n", "c3", "eth0")}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || len(got) != 1 || got[0].ContainerID != "c3" {
		t.Fatalf("Load = %+v, %v; want just c3", got, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != fileName {
		t.Errorf("state dir holds %v, want just %s", entries, fileName)
	}
}

func TestSaveRejectsInvalid(t *testing.T) {
	bad := attachment("n", "c1", "eth0")
	bad.IPs = []string{"10.1.0.5"} // not a CIDR
	tests := []struct {
		name string
		atts []Attachment
	}{
		{"missing ifName", []Attachment{{Network: "n", ContainerID: "c"}}},
		{"ip not CIDR", []Attachment{bad}},
		{"duplicate key", []Attachment{attachment("n", "c1", "eth0"), attachment("n", "c1", "eth0")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Save(tt.atts); err == nil {
				t.Fatal("Save accepted invalid attachments")
			}
			if _, err := os.Stat(filepath.Join(dir, fileName)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a rejected Save left a checkpoint: %v", err)
			}
		})
	}
}

func TestLeftoverTempFileIgnored(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save([]Attachment{attachment("n", "c1", "eth0")}); err != nil {
		t.Fatal(err)
	}
	// A crash between creating the temp file and renaming it leaves a
	// half-written temp file next to the good checkpoint.
	leftover := filepath.Join(dir, tempPrefix+"12345")
	if err := os.WriteFile(leftover, []byte(`{"version":1,"attachments":[{"netw`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load()
	if err != nil || len(got) != 1 || got[0].ContainerID != "c1" {
		t.Fatalf("Load with a leftover temp file = %+v, %v; want c1", got, err)
	}
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open kept the leftover temp file: %v", err)
	}
	if got, err := s2.Load(); err != nil || len(got) != 1 {
		t.Errorf("Load after reopening = %+v, %v", got, err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    error
		wantMsg string
	}{
		{"truncated", `{"version":1,"attachments":[{"network":"n"`, ErrCorrupt, "unexpected end"},
		{"not json", "\x00\x01garbage", ErrCorrupt, "invalid character"},
		{"empty file", "", ErrCorrupt, "unexpected end"},
		{"no version", `{"attachments":[]}`, ErrCorrupt, "no version"},
		{"version zero", `{"version":0,"attachments":[]}`, ErrCorrupt, "invalid version 0"},
		{"wrong type", `{"version":1,"attachments":{}}`, ErrCorrupt, "cannot unmarshal"},
		{"missing key fields", `{"version":1,"attachments":[{"network":"n"}]}`, ErrCorrupt, "required"},
		{"bad ip", `{"version":1,"attachments":[{"network":"n","containerID":"c","ifName":"eth0","ips":["x"]}]}`, ErrCorrupt, "ips"},
		{"duplicate", `{"version":1,"attachments":[{"network":"n","containerID":"c","ifName":"eth0"},{"network":"n","containerID":"c","ifName":"eth0"}]}`,
			ErrCorrupt, "recorded twice"},
		{"future version", `{"version":2,"attachments":[],"somethingNew":true}`, ErrUnknownVersion, "version 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, fileName), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := s.Load()
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Load = %v, %v; want an error wrapping %v containing %q", got, err, tt.want, tt.wantMsg)
			}
			if tt.want == ErrUnknownVersion && errors.Is(err, ErrCorrupt) {
				t.Error("a newer version is reported as corrupt")
			}
		})
	}
}

func TestPermissions(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	parent := t.TempDir()
	tests := []struct {
		name       string
		dir        string // under parent
		setup      func(dir string) error
		checkpoint bool // setup wrote a checkpoint
	}{
		{name: "created", dir: "new"},
		{name: "created with parents", dir: "deep/a/b"},
		{name: "existing too open", dir: "open", setup: func(dir string) error { return os.Mkdir(dir, 0o777) }},
		{name: "existing checkpoint too open", dir: "old", checkpoint: true, setup: func(dir string) error {
			if err := os.Mkdir(dir, 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, fileName), []byte(`{"version":1,"attachments":[]}`), 0o666)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(parent, tt.dir)
			if tt.setup != nil {
				if err := tt.setup(dir); err != nil {
					t.Fatal(err)
				}
			}
			s, err := Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			checkMode(t, dir, 0o700|os.ModeDir)
			if tt.checkpoint {
				checkMode(t, s.Path(), 0o600)
			}
			if err := s.Save([]Attachment{attachment("n", "c1", "eth0")}); err != nil {
				t.Fatal(err)
			}
			checkMode(t, s.Path(), 0o600)
		})
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Mode(); got != want {
		t.Errorf("%s mode = %v, want %v", path, got, want)
	}
}

func TestOpenFailsOnFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path); err == nil {
		t.Error("Open of a regular file succeeded")
	}
}
