package checkpoint

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	atts := []Attachment{attachment("podnet", "c2", "eth0"), attachment("podnet", "c1", "eth0")}
	if err := s.Save(atts); err != nil {
		t.Fatal(err)
	}
	// A temp file of a Save in progress is left alone.
	temp := filepath.Join(dir, tempPrefix+"inflight")
	if err := os.WriteFile(temp, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(s.Path())
	if err != nil {
		t.Fatalf("ReadFile: %v", err)
	}
	want, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ReadFile = %+v, want what Load reads, %+v", got, want)
	}
	if _, err := os.Stat(temp); err != nil {
		t.Errorf("ReadFile touched the state dir: %v", err)
	}

	tests := []struct {
		name    string
		content string // "" means no file
		wantErr error
	}{
		{"missing", "", fs.ErrNotExist},
		{"corrupt", `{"version": 1, "attachments": [`, ErrCorrupt},
		{"newer", `{"version": 2, "attachments": []}`, ErrUnknownVersion},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), fileName)
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := ReadFile(path); !errors.Is(err, tc.wantErr) {
				t.Errorf("ReadFile = %v, want an error wrapping %v", err, tc.wantErr)
			}
		})
	}
}
