package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-dev/sluice/domain"
)

// TestAlgorithmTableAcrossRuntimes holds every place outside Go that names the algorithms to domain's algorithm
// table (domain.Algorithms is derived from it): the OpenAPI enum (and so the generated server and SDKs), the
// TypeScript SDK's schema, the Helm chart's values schema (policies and the RLS front end), and the names the SQL
// runtime accepts (sluice_step's dispatch, sluice_hold). The SQL and Lua steps are also held to it by behaviour: the
// conformance suite (domain/storetest) runs every algorithm of the table on every store, and an algorithm a store
// does not know is StatusInvalidRule there, never a default.
func TestAlgorithmTableAcrossRuntimes(t *testing.T) {
	want := make([]string, len(domain.Algorithms))
	for i, a := range domain.Algorithms {
		want[i] = string(a)
		if a.Code() == 0 {
			t.Fatalf("%s: no code in the table", a)
		}
	}
	sorted := slices.Sorted(slices.Values(want))

	var spec struct {
		Components struct {
			Schemas map[string]struct {
				Enum []string `yaml:"enum"`
			} `yaml:"schemas"`
		} `yaml:"components"`
	}
	readYAML(t, "openapi.yaml", &spec)
	if got := spec.Components.Schemas["Algorithm"].Enum; !slices.Equal(got, want) {
		t.Errorf("openapi.yaml Algorithm enum %v, want %v (the table's order)", got, want)
	}

	ts, err := os.ReadFile("sdk/typescript/src/schema.d.ts")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*Algorithm: ((?:"[a-z_]+"(?: \| )?)+);`).FindSubmatch(ts)
	if m == nil {
		t.Fatal("sdk/typescript/src/schema.d.ts: no Algorithm union")
	}
	if got := strings.Split(strings.ReplaceAll(string(m[1]), `"`, ""), " | "); !slices.Equal(got, want) {
		t.Errorf("TypeScript Algorithm %v, want %v", got, want)
	}

	raw, err := os.ReadFile("deploy/helm/sluice/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	found := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if k == "algorithm" {
					if obj, ok := c.(map[string]any); ok {
						var got []string
						for _, e := range obj["enum"].([]any) {
							got = append(got, e.(string))
						}
						found++
						if !slices.Equal(slices.Sorted(slices.Values(got)), sorted) {
							t.Errorf("values.schema.json %s.algorithm enum %v, want %v", path, got, want)
						}
					}
				}
				walk(path+"."+k, c)
			}
		case []any:
			for _, c := range v {
				walk(path+"[]", c)
			}
		}
	}
	walk("", schema)
	if found < 2 {
		t.Errorf("values.schema.json: %d algorithm enums found, want the policies' and the RLS front end's", found)
	}

	// The SQL runtime: the algorithms sluice_step (the one dispatch of the Postgres store) accepts in a rule (its
	// first CASE p_alg; any other is refused), and those sluice_hold accepts. Their behaviour is held to the domain
	// by adapters/postgres (TestAlgorithmDispatchMatchesTheDomain, the conformance suite).
	dispatch, err := os.ReadFile("migrations/functions/30_dispatch.sql")
	if err != nil {
		t.Fatal(err)
	}
	step := regexp.MustCompile(`(?s)CREATE OR REPLACE FUNCTION sluice_step\(.*?CASE p_alg\n(.*?)END CASE;`).FindSubmatch(dispatch)
	if step == nil {
		t.Fatal("migrations/functions/30_dispatch.sql: no CASE p_alg in sluice_step")
	}
	var sqlNames []string
	for _, when := range regexp.MustCompile(`WHEN ('[a-z_]+'(?:, '[a-z_]+')*) THEN`).FindAllSubmatch(step[1], -1) {
		for _, n := range strings.Split(string(when[1]), ", ") {
			sqlNames = append(sqlNames, strings.Trim(n, "'"))
		}
	}
	if got := slices.Sorted(slices.Values(sqlNames)); !slices.Equal(got, sorted) {
		t.Errorf("sluice_step (30_dispatch.sql) accepts %v, want %v", got, sorted)
	}
	holds, err := os.ReadFile("migrations/functions/35_holds.sql")
	if err != nil {
		t.Fatal(err)
	}
	in := regexp.MustCompile(`v_alg NOT IN \(([^)]*)\)`).FindSubmatch(holds)
	if in == nil {
		t.Fatal("migrations/functions/35_holds.sql: no algorithm list in sluice_hold")
	}
	var holdNames []string
	for _, n := range strings.Split(string(in[1]), ",") {
		holdNames = append(holdNames, strings.Trim(strings.TrimSpace(n), "'"))
	}
	if got := slices.Sorted(slices.Values(holdNames)); !slices.Equal(got, sorted) {
		t.Errorf("sluice_hold (35_holds.sql) accepts %v, want %v", got, sorted)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
