package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// result is a command's answer: the message for json and yaml, and its
// table printer (wide adds columns where the command has more to show).
type result struct {
	msg   proto.Message
	table func(w io.Writer, wide bool)
}

// render writes res in the output format: table, wide, json (protojson,
// every field present) or yaml (the same document as YAML).
func render(w io.Writer, output string, res result) error {
	switch output {
	case "json", "yaml":
		raw, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(res.msg)
		if err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		// protojson varies its whitespace on purpose from build to build;
		// scripts and diffs deserve one stable layout.
		var indented bytes.Buffer
		if err := json.Indent(&indented, raw, "", "  "); err != nil {
			return fmt.Errorf("encode json: %w", err)
		}
		b := indented.Bytes()
		if output == "yaml" {
			if b, err = yaml.JSONToYAML(b); err != nil {
				return fmt.Errorf("encode yaml: %w", err)
			}
			_, err = w.Write(b)
			return err
		}
		_, err = fmt.Fprintln(w, string(b))
		return err
	default:
		res.table(w, output == "wide")
		return nil
	}
}
