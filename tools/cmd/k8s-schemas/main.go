// Command k8s-schemas turns the Kubernetes OpenAPI v3 documents shipped in the k8s.io/kubernetes module
// (api/openapi-spec/v3/*.json) into standalone JSON schemas that kubeconform reads offline, one file per
// group/version/kind, laid out as OUT/<group-or-v1>/<version>/<kind>.json so that kubeconform can find them with
//
//	-schema-location 'OUT/{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json'
//
// (for the core group, kubeconform's .Group is "v1", so core kinds land in OUT/v1/v1/).
//
// With -strict (the default) every object schema that lists properties and says nothing about extra ones gets
// "additionalProperties": false, so a misspelt field fails validation instead of being ignored. That is what
// kubeconform's own published "-strict" schemas do.
//
// It also writes a schema for the prometheus-operator ServiceMonitor, derived by reflection from the
// monitoring/v1 Go types (see servicemonitor.go), since no CRD manifest is reachable offline here.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	spec := flag.String("spec", "", "directory holding the OpenAPI v3 documents (k8s.io/kubernetes api/openapi-spec/v3)")
	out := flag.String("out", "", "output directory")
	strict := flag.Bool("strict", true, "forbid properties a schema does not list")
	flag.Parse()
	if *spec == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: k8s-schemas -spec DIR -out DIR")
		os.Exit(2)
	}
	n, err := convert(*spec, *out, *strict)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s-schemas:", err)
		os.Exit(1)
	}
	m, err := writeServiceMonitor(*out, *strict)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s-schemas:", err)
		os.Exit(1)
	}
	fmt.Printf("k8s-schemas: wrote %d schemas to %s\n", n+m, *out)
}

type gvk struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// convert reads every document, merges their component schemas and writes one standalone schema per kind.
func convert(specDir, outDir string, strict bool) (int, error) {
	files, err := filepath.Glob(filepath.Join(specDir, "*.json"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 {
		return 0, fmt.Errorf("no *.json under %s", specDir)
	}
	all := map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		var doc struct {
			Components struct {
				Schemas map[string]any `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return 0, fmt.Errorf("%s: %w", f, err)
		}
		for name, s := range doc.Components.Schemas {
			all[name] = s
		}
	}
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	sort.Strings(names)
	written := 0
	for _, name := range names {
		s := all[name].(map[string]any)
		raw, ok := s["x-kubernetes-group-version-kind"]
		if !ok {
			continue
		}
		b, _ := json.Marshal(raw)
		var kinds []gvk
		if err := json.Unmarshal(b, &kinds); err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		schema := standalone(name, all, strict)
		for _, k := range kinds {
			if strings.HasSuffix(k.Kind, "List") || k.Kind == "WatchEvent" || k.Kind == "DeleteOptions" || k.Kind == "Status" {
				continue // shared meta types, listed under every group; not something a chart renders
			}
			if err := writeSchema(outDir, k, schema); err != nil {
				return 0, err
			}
			written++
		}
	}
	return written, nil
}

// standalone returns the schema named root with every schema it references copied into "definitions".
func standalone(root string, all map[string]any, strict bool) map[string]any {
	defs := map[string]any{}
	var visit func(string)
	visit = func(name string) {
		if _, done := defs[name]; done {
			return
		}
		src, ok := all[name]
		if !ok {
			defs[name] = map[string]any{} // unknown reference: accept anything rather than fail to compile
			return
		}
		defs[name] = nil // mark before descending, for recursive types
		defs[name] = rewrite(src, strict, visit)
	}
	top := rewrite(all[root], strict, visit)
	m := top.(map[string]any)
	m["$schema"] = "http://json-schema.org/draft-07/schema#"
	if len(defs) > 0 {
		m["definitions"] = defs
	}
	return m
}

const refPrefix = "#/components/schemas/"

// rewrite deep-copies an OpenAPI schema into JSON Schema: refs point into "definitions", and with strict every
// object with properties forbids unlisted ones.
func rewrite(v any, strict bool, visit func(string)) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			switch k {
			case "$ref":
				name := strings.TrimPrefix(val.(string), refPrefix)
				visit(name)
				out[k] = "#/definitions/" + name
			case "properties", "patternProperties", "definitions":
				props := map[string]any{}
				for pk, pv := range val.(map[string]any) {
					props[pk] = rewrite(pv, strict, visit)
				}
				out[k] = props
			case "x-kubernetes-group-version-kind", "description", "x-kubernetes-validations", "example":
				// not needed for validation (and keep the files small); the GVK is in the file's path
				if k == "x-kubernetes-group-version-kind" {
					out[k] = val
				}
			default:
				out[k] = rewrite(val, strict, visit)
			}
		}
		if strict {
			if _, hasProps := out["properties"]; hasProps {
				if _, set := out["additionalProperties"]; !set {
					if pu, _ := t["x-kubernetes-preserve-unknown-fields"].(bool); !pu {
						out["additionalProperties"] = false
					}
				}
			}
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = rewrite(e, strict, visit)
		}
		return out
	default:
		return v
	}
}

func writeSchema(outDir string, k gvk, schema map[string]any) error {
	group := k.Group
	if group == "" {
		group = "v1" // kubeconform's .Group is the first part of apiVersion: "v1" for the core group
	}
	dir := filepath.Join(outDir, group, k.Version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(schema)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, strings.ToLower(k.Kind)+".json"), b, 0o644)
}
