package httpapi_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/sluice-dev/sluice/api"
)

// TestMain runs the package's tests, then TestEveryOperationIsTested: every operation in openapi.yaml must have
// been exercised through the contract harness (doContract) by some test. Coverage is collected across all tests,
// so the check runs after them, and only when the whole suite ran (no -run, -skip or -list), so that running a
// subset does not fail spuriously.
func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 || !fullRun() {
		os.Exit(code)
	}
	os.Exit(everyOperationIsTested())
}

func fullRun() bool {
	for _, name := range []string{"test.run", "test.skip", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			return false
		}
	}
	return true
}

// everyOperationIsTested reports, like a test, whether every operation in the spec was exercised, and with -v
// lists the statuses each operation was seen answering.
func everyOperationIsTested() int {
	doc, err := api.GetSpec()
	if err != nil {
		fmt.Printf("--- FAIL: TestEveryOperationIsTested\n    openapi.yaml: %v\n", err)
		return 1
	}
	var ops []string
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			ops = append(ops, op.OperationID)
		}
	}
	sort.Strings(ops)
	covered := coveredOps()
	var missing []string
	var report strings.Builder
	for _, op := range ops {
		statuses := make([]int, 0, len(covered[op]))
		for s := range covered[op] {
			statuses = append(statuses, s)
		}
		sort.Ints(statuses)
		fmt.Fprintf(&report, "    %-14s %v\n", op, statuses)
		if len(statuses) == 0 {
			missing = append(missing, op)
		}
	}
	if len(missing) > 0 {
		fmt.Printf("--- FAIL: TestEveryOperationIsTested\n    operations in openapi.yaml that no test exercised through the contract harness: %s\n%s",
			strings.Join(missing, ", "), report.String())
		fmt.Println("FAIL")
		return 1
	}
	if testing.Verbose() {
		fmt.Printf("--- PASS: TestEveryOperationIsTested\n    %d operations, statuses seen:\n%s", len(ops), report.String())
	}
	return 0
}

// TestSpecIsValid validates openapi.yaml as written (not only the copy embedded in the generated code), and the
// rules every operation of this API follows: an operationId, a problem+json default response, and 401/403 on
// every operation that needs a token.
func TestSpecIsValid(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("../../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	embedded, _ := spec(t)
	if len(embedded.Paths.Map()) != len(doc.Paths.Map()) {
		t.Fatalf("the generated code embeds %d paths, openapi.yaml has %d: run go generate ./...", len(embedded.Paths.Map()), len(doc.Paths.Map()))
	}
	seen := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			where := method + " " + path
			if op.OperationID == "" || seen[op.OperationID] {
				t.Errorf("%s: missing or duplicate operationId %q", where, op.OperationID)
			}
			seen[op.OperationID] = true
			def := op.Responses.Default()
			if def == nil || def.Value.Content.Get("application/problem+json") == nil {
				t.Errorf("%s: no default problem+json response", where)
			}
			public := op.Security != nil && len(*op.Security) == 0
			if public != !strings.HasPrefix(path, "/v1/") {
				t.Errorf("%s: public=%v; only non-/v1 endpoints are public", where, public)
			}
			if !public {
				for _, status := range []int{401, 403} {
					if op.Responses.Status(status) == nil {
						t.Errorf("%s: needs a token but declares no %d", where, status)
					}
				}
			}
		}
	}
	if ops := operations(t); len(ops) != len(seen) {
		t.Fatalf("harness sees %d operations, openapi.yaml has %d", len(ops), len(seen))
	}
}
