package cniconf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
)

// PluginType is the "type" of podwall's entry: the plugin binary's name.
const PluginType = "podwall"

// The plugin's defaults (plugin/config.go), written into the entry so that
// an operator reading the conflist sees them.
const (
	DefaultSocket  = "/run/podwall/podwall.sock"
	DefaultTimeout = 10 * time.Second
)

// SupportedCNIVersions are the cniVersions the podwall plugin speaks. A
// conflist of another version is refused: the runtime would fail every ADD.
var SupportedCNIVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// ErrNotUnderstood is wrapped by the errors about configurations podwall
// cannot chain into: not JSON, no plugins, an unsupported cniVersion, ...
var ErrNotUnderstood = errors.New("not a CNI network configuration podwall can chain into")

// Entry is podwall's plugin entry.
type Entry struct {
	// Socket is podwalld's unix socket; "" means DefaultSocket.
	Socket string
	// FailOpen lets ADD succeed when podwalld is unreachable.
	FailOpen bool
	// Timeout bounds each call to podwalld; 0 means DefaultTimeout.
	Timeout time.Duration
}

// entryJSON is the entry as written: the field order is the key order.
type entryJSON struct {
	Type     string `json:"type"`
	Socket   string `json:"socket"`
	FailOpen bool   `json:"failOpen"`
	Timeout  string `json:"timeout"`
}

func (e Entry) json() entryJSON {
	out := entryJSON{Type: PluginType, Socket: e.Socket, FailOpen: e.FailOpen, Timeout: e.Timeout.String()}
	if out.Socket == "" {
		out.Socket = DefaultSocket
	}
	if e.Timeout <= 0 {
		out.Timeout = DefaultTimeout.String()
	}
	return out
}

// confList is where the parts of a conflist are in its text.
type confList struct {
	cniVersion string
	name       string
	// pluginsOpen is the offset of the plugins list's '['; -1 if none.
	pluginsOpen int
	plugins     []pluginSpan
}

// pluginSpan is one element of the plugins list: data[start:end].
type pluginSpan struct {
	start, end int
	typ        string
}

// index returns the index of the first plugin of type typ, or -1.
func (cl *confList) index(typ string) int {
	return slices.IndexFunc(cl.plugins, func(p pluginSpan) bool { return p.typ == typ })
}

// parseConfList finds the top-level keys cniVersion, name and plugins of a
// JSON object and the extent of each element of plugins. It checks only the
// structure; check says whether podwall can chain into it.
func parseConfList(data []byte) (*confList, error) {
	var probe any
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("%w: invalid JSON: %w", ErrNotUnderstood, err)
	}
	if _, ok := probe.(map[string]any); !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrNotUnderstood)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // '{'
		return nil, fmt.Errorf("%w: %w", ErrNotUnderstood, err)
	}
	cl := &confList{pluginsOpen: -1}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotUnderstood, err)
		}
		key, _ := tok.(string)
		switch key {
		case "plugins":
			if cl.pluginsOpen >= 0 {
				return nil, fmt.Errorf("%w: two \"plugins\" keys", ErrNotUnderstood)
			}
			if err := cl.parsePlugins(dec, data); err != nil {
				return nil, err
			}
		case "cniVersion", "name":
			var s string
			if err := dec.Decode(&s); err != nil {
				return nil, fmt.Errorf("%w: %q is not a string", ErrNotUnderstood, key)
			}
			if key == "name" {
				cl.name = s
			} else {
				cl.cniVersion = s
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, fmt.Errorf("%w: %w", ErrNotUnderstood, err)
			}
		}
	}
	return cl, nil
}

func (cl *confList) parsePlugins(dec *json.Decoder, data []byte) error {
	tok, err := dec.Token()
	if d, ok := tok.(json.Delim); err != nil || !ok || d != '[' {
		return fmt.Errorf("%w: \"plugins\" is not a list", ErrNotUnderstood)
	}
	cl.pluginsOpen = int(dec.InputOffset()) - 1
	for i := 0; dec.More(); i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("%w: plugin %d: %w", ErrNotUnderstood, i, err)
		}
		end := int(dec.InputOffset())
		start := end - len(raw)
		if start < 0 || !bytes.Equal(data[start:end], raw) {
			return fmt.Errorf("%w: plugin %d: cannot locate it in the text", ErrNotUnderstood, i)
		}
		var p struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(raw, &p); err != nil || raw[0] != '{' {
			return fmt.Errorf("%w: plugin %d is not an object with a string \"type\"", ErrNotUnderstood, i)
		}
		cl.plugins = append(cl.plugins, pluginSpan{start: start, end: end, typ: p.Type})
	}
	if _, err := dec.Token(); err != nil { // ']'
		return fmt.Errorf("%w: %w", ErrNotUnderstood, err)
	}
	return nil
}

// check says whether podwall can chain into the list: it needs a name, a
// cniVersion the plugin speaks and a first plugin with a type.
func (cl *confList) check() error {
	switch {
	case cl.pluginsOpen < 0:
		return fmt.Errorf("%w: no \"plugins\" list", ErrNotUnderstood)
	case cl.name == "":
		return fmt.Errorf("%w: no \"name\"", ErrNotUnderstood)
	case cl.cniVersion == "":
		return fmt.Errorf("%w: no \"cniVersion\"", ErrNotUnderstood)
	case !slices.Contains(SupportedCNIVersions, cl.cniVersion):
		return fmt.Errorf("%w: cniVersion %q: the podwall plugin speaks %s (changing the version would change how the runtime calls every plugin of the chain: do it with the ENI plugin's vendor)",
			ErrNotUnderstood, cl.cniVersion, strings.Join(SupportedCNIVersions, ", "))
	case len(cl.plugins) == 0:
		return fmt.Errorf("%w: the plugins list is empty: no plugin to chain after", ErrNotUnderstood)
	case cl.plugins[0].typ == "":
		return fmt.Errorf("%w: the first plugin has no \"type\"", ErrNotUnderstood)
	}
	return nil
}

// Contains reports whether the conflist holds a podwall entry.
func Contains(conflist []byte) (bool, error) {
	cl, err := parseConfList(conflist)
	if err != nil {
		return false, err
	}
	if cl.pluginsOpen < 0 {
		return false, fmt.Errorf("%w: no \"plugins\" list", ErrNotUnderstood)
	}
	return cl.index(PluginType) >= 0, nil
}

// Patch returns the conflist with podwall's entry right after the first
// plugin, and every other byte as it was. A conflist that already holds
// podwall entries has them replaced by e at that place, so patching twice
// gives the same bytes as patching once. The result is checked to load with
// libcni, as the runtime loads it.
func Patch(conflist []byte, e Entry) ([]byte, error) {
	base, err := Unpatch(conflist)
	if err != nil {
		return nil, err
	}
	cl, err := parseConfList(base)
	if err != nil {
		return nil, err
	}
	if err := cl.check(); err != nil {
		return nil, err
	}
	at := cl.plugins[0].end
	insert, err := cl.renderInsertion(base, e)
	if err != nil {
		return nil, err
	}
	out := slices.Concat(base[:at], insert, base[at:])
	if _, err := libcni.ConfListFromBytes(out); err != nil {
		return nil, fmt.Errorf("%w: libcni does not load the patched list: %w", ErrNotUnderstood, err)
	}
	return out, nil
}

// renderInsertion returns the separator and podwall's entry, laid out like
// the first plugin: on a new line with the same indentation when the list
// is one plugin per line, indented with the same unit when the first plugin
// spans several lines, compact otherwise.
func (cl *confList) renderInsertion(data []byte, e Entry) ([]byte, error) {
	first := cl.plugins[0]
	lead := string(data[cl.pluginsOpen+1 : first.start]) // whitespace before the first plugin
	newline := "\n"
	if strings.Contains(lead, "\r\n") {
		newline = "\r\n"
	}
	sep, elemIndent := ","+lead, ""
	if i := strings.LastIndexByte(lead, '\n'); i >= 0 {
		elemIndent = lead[i+1:]
		sep = "," + newline + elemIndent
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	raw := data[first.start:first.end]
	if nl := bytes.IndexByte(raw, '\n'); nl >= 0 {
		rest := raw[nl+1:]
		inner := string(rest[:len(rest)-len(bytes.TrimLeft(rest, " \t"))])
		unit := "  "
		if strings.HasPrefix(inner, elemIndent) && len(inner) > len(elemIndent) {
			unit = inner[len(elemIndent):]
		}
		enc.SetIndent(elemIndent, unit)
	}
	if err := enc.Encode(e.json()); err != nil {
		return nil, err
	}
	entry := strings.TrimSuffix(buf.String(), "\n")
	if newline != "\n" {
		entry = strings.ReplaceAll(entry, "\n", newline)
	}
	return []byte(sep + entry), nil
}

// Unpatch returns the conflist without its podwall entries: each is cut
// out with the separator before it, so Unpatch(Patch(x)) is x byte for
// byte. A conflist without podwall entries is returned as it is.
func Unpatch(conflist []byte) ([]byte, error) {
	out := conflist
	for {
		cl, err := parseConfList(out)
		if err != nil {
			return nil, err
		}
		if cl.pluginsOpen < 0 {
			return nil, fmt.Errorf("%w: no \"plugins\" list", ErrNotUnderstood)
		}
		i := cl.index(PluginType)
		if i < 0 {
			return out, nil
		}
		var from, to int
		switch {
		case i > 0:
			from, to = cl.plugins[i-1].end, cl.plugins[i].end
		case len(cl.plugins) > 1:
			from, to = cl.plugins[0].start, cl.plugins[1].start
		default:
			from, to = cl.plugins[0].start, cl.plugins[0].end
		}
		out = slices.Concat(out[:from], out[to:])
	}
}

// Convert returns the conflist equivalent to a single-plugin .conf file, as
// libcni's ConfListFromConf builds it in memory: the list's cniVersion and
// name are the .conf's, and its only plugin is the whole .conf object (key
// order and values kept; re-indented).
func Convert(conf []byte) ([]byte, error) {
	var c struct {
		CNIVersion string          `json:"cniVersion"`
		Name       string          `json:"name"`
		Type       string          `json:"type"`
		Plugins    json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(conf, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotUnderstood, err)
	}
	switch {
	case c.Plugins != nil:
		return nil, fmt.Errorf("%w: a single-plugin config with a \"plugins\" list (runtimes read a .conf or .json as one plugin; name it .conflist)", ErrNotUnderstood)
	case c.Type == "":
		return nil, fmt.Errorf("%w: no \"type\"", ErrNotUnderstood)
	}
	var plugin bytes.Buffer
	if err := json.Indent(&plugin, bytes.TrimSpace(conf), "    ", "  "); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotUnderstood, err)
	}
	version, _ := json.Marshal(c.CNIVersion)
	name, _ := json.Marshal(c.Name)
	out := fmt.Appendf(nil, "{\n  \"cniVersion\": %s,\n  \"name\": %s,\n  \"plugins\": [\n    %s\n  ]\n}\n", version, name, plugin.Bytes())
	cl, err := parseConfList(out)
	if err != nil {
		return nil, err
	}
	if err := cl.check(); err != nil {
		return nil, err
	}
	return out, nil
}
