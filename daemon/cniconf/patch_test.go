package cniconf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPatchLayout: the entry goes right after the first plugin, laid out
// like it, and nothing else moves.
func TestPatchLayout(t *testing.T) {
	tests := []struct {
		name, in, want string
		entry          Entry
	}{
		{
			name: "compact",
			in:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"portmap"}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"podwall","socket":"/run/podwall/podwall.sock","failOpen":false,"timeout":"10s"},{"type":"portmap"}]}`,
		},
		{
			name: "spaced single line",
			in:   `{"cniVersion": "1.0.0", "name": "n", "plugins": [ {"type": "ptp"} ]}`,
			want: `{"cniVersion": "1.0.0", "name": "n", "plugins": [ {"type": "ptp"}, {"type":"podwall","socket":"/run/podwall/podwall.sock","failOpen":false,"timeout":"10s"} ]}`,
		},
		{
			name: "tabs, one plugin",
			in:   "{\n\t\"cniVersion\": \"0.4.0\",\n\t\"name\": \"n\",\n\t\"plugins\": [\n\t\t{\n\t\t\t\"type\": \"ptp\"\n\t\t}\n\t]\n}\n",
			want: "{\n\t\"cniVersion\": \"0.4.0\",\n\t\"name\": \"n\",\n\t\"plugins\": [\n\t\t{\n\t\t\t\"type\": \"ptp\"\n\t\t},\n\t\t{\n\t\t\t\"type\": \"podwall\",\n\t\t\t\"socket\": \"/run/podwall/podwall.sock\",\n\t\t\t\"failOpen\": false,\n\t\t\t\"timeout\": \"10s\"\n\t\t}\n\t]\n}\n",
		},
		{
			name:  "CRLF, options",
			in:    "{\r\n  \"cniVersion\": \"1.1.0\",\r\n  \"name\": \"n\",\r\n  \"plugins\": [\r\n    {\r\n      \"type\": \"ptp\"\r\n    }\r\n  ]\r\n}\r\n",
			entry: Entry{Socket: "/var/run/pw.sock", FailOpen: true, Timeout: 3 * time.Second},
			want:  "{\r\n  \"cniVersion\": \"1.1.0\",\r\n  \"name\": \"n\",\r\n  \"plugins\": [\r\n    {\r\n      \"type\": \"ptp\"\r\n    },\r\n    {\r\n      \"type\": \"podwall\",\r\n      \"socket\": \"/var/run/pw.sock\",\r\n      \"failOpen\": true,\r\n      \"timeout\": \"3s\"\r\n    }\r\n  ]\r\n}\r\n",
		},
		{
			name: "podwall first and last is moved after the first plugin",
			in:   `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"podwall"},{"type":"ptp"},{"type":"podwall","failOpen":true}]}`,
			want: `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"},{"type":"podwall","socket":"/run/podwall/podwall.sock","failOpen":false,"timeout":"10s"}]}`,
		},
		{
			name: "plugins before other keys, unicode and numbers kept as written",
			in:   `{"plugins":[{"type":"ptp","mtu":1.50e3,"x":"\u00e9"}],"name":"n","cniVersion":"1.0.0","z":[1,2]}`,
			want: `{"plugins":[{"type":"ptp","mtu":1.50e3,"x":"\u00e9"},{"type":"podwall","socket":"/run/podwall/podwall.sock","failOpen":false,"timeout":"10s"}],"name":"n","cniVersion":"1.0.0","z":[1,2]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Patch([]byte(tt.in), tt.entry)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Patch:\n%q\nwant:\n%q", got, tt.want)
			}
			again, err := Patch(got, tt.entry)
			if err != nil || string(again) != string(got) {
				t.Errorf("Patch is not idempotent: %v\n%q", err, again)
			}
			if !strings.Contains(tt.in, PluginType) {
				back, err := Unpatch(got)
				if err != nil || string(back) != tt.in {
					t.Errorf("Unpatch(Patch(x)) != x: %v\n%q", err, back)
				}
			}
		})
	}
}

// TestPatchRefuses: what podwall cannot chain into is refused with
// ErrNotUnderstood and a message saying why.
func TestPatchRefuses(t *testing.T) {
	tests := []struct{ name, in, why string }{
		{"empty file", ``, "invalid JSON"},
		{"truncated", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}`, "invalid JSON"},
		{"trailing garbage", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}]} x`, "invalid JSON"},
		{"array", `[{"type":"ptp"}]`, "not a JSON object"},
		{"single plugin conf", `{"cniVersion":"1.0.0","name":"n","type":"ptp"}`, `no "plugins" list`},
		{"plugins not a list", `{"cniVersion":"1.0.0","name":"n","plugins":{"type":"ptp"}}`, `"plugins" is not a list`},
		{"plugin not an object", `{"cniVersion":"1.0.0","name":"n","plugins":["ptp"]}`, "plugin 0 is not an object"},
		{"type not a string", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":5}]}`, "plugin 0 is not an object"},
		{"empty plugins", `{"cniVersion":"1.0.0","name":"n","plugins":[]}`, "empty"},
		{"only podwall", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"podwall"}]}`, "empty"},
		{"no type", `{"cniVersion":"1.0.0","name":"n","plugins":[{"mtu":1500}]}`, `first plugin has no "type"`},
		{"no name", `{"cniVersion":"1.0.0","plugins":[{"type":"ptp"}]}`, `no "name"`},
		{"no version", `{"name":"n","plugins":[{"type":"ptp"}]}`, `no "cniVersion"`},
		{"old version", `{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"ptp"}]}`, `cniVersion "0.2.0"`},
		{"future version", `{"cniVersion":"2.0.0","name":"n","plugins":[{"type":"ptp"}]}`, `cniVersion "2.0.0"`},
		{"two plugins keys", `{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"ptp"}],"plugins":[]}`, `two "plugins" keys`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Patch([]byte(tt.in), Entry{})
			if !errors.Is(err, ErrNotUnderstood) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("Patch = %q, %v; want ErrNotUnderstood saying %q", out, err, tt.why)
			}
		})
	}
}

// TestConvert: a .conf becomes a one-plugin list holding the whole .conf.
func TestConvert(t *testing.T) {
	in := []byte("{\"cniVersion\": \"1.0.0\", \"name\": \"mynet\", \"type\": \"ptp\", \"ipam\": {\"type\": \"host-local\"}}\n")
	got, err := Convert(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "cniVersion": "1.0.0",
  "name": "mynet",
  "plugins": [
    {
      "cniVersion": "1.0.0",
      "name": "mynet",
      "type": "ptp",
      "ipam": {
        "type": "host-local"
      }
    }
  ]
}
`
	if string(got) != want {
		t.Errorf("Convert:\n%s\nwant:\n%s", got, want)
	}
	for _, bad := range []string{`{"cniVersion": "1.0.0", "name": "n"}`, `{"cniVersion": "1.0.0", "name": "n", "type": "ptp", "plugins": []}`, `{`, `{"cniVersion": "0.2.0", "name": "n", "type": "ptp"}`} {
		if _, err := Convert([]byte(bad)); !errors.Is(err, ErrNotUnderstood) {
			t.Errorf("Convert(%s) = %v, want ErrNotUnderstood", bad, err)
		}
	}
}

// TestUnpatchRoundTripRealWorld: for every real-world conflist podwall can
// patch, Unpatch(Patch(x)) is x byte for byte.
func TestUnpatchRoundTripRealWorld(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(realWorld, "*", "*.conflist"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no real-world conflists: %v", err)
	}
	patched := 0
	for _, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if has, err := Contains(in); err != nil || has {
			continue
		}
		out, err := Patch(in, Entry{})
		if err != nil {
			continue // refusals are TestInstallRealWorld's
		}
		patched++
		back, err := Unpatch(out)
		if err != nil || string(back) != string(in) {
			t.Errorf("%s: Unpatch(Patch(x)) != x: %v\n%s", f, err, back)
		}
	}
	if patched < 4 {
		t.Errorf("only %d real-world conflists patched", patched)
	}
}
