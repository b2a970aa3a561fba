package app

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// rule is what a field's type and tags say about its values: how to read one from text (YAML or environment) and
// which values are valid. One rule serves both sources, so they can never disagree.
type rule struct {
	typ      reflect.Type
	min, max *int64 // bounds: the value for integers, nanoseconds for durations
	oneof    []string
	signed   bool // a Duration may be negative
	secret   bool // never shown in a message
}

var durationType = reflect.TypeOf(Duration(0))

// ruleOf reads a field's rule from its type and tags. It panics on a tag it cannot read or a type it cannot
// parse: a programming error that TestSettingsTable (and the first Load) catches.
func ruleOf(f reflect.StructField) rule {
	r := rule{typ: f.Type, signed: f.Tag.Get("signed") == "true", secret: f.Tag.Get("secret") == "true"}
	if o := f.Tag.Get("oneof"); o != "" {
		r.oneof = strings.Fields(o)
	}
	if rg, ok := f.Tag.Lookup("range"); ok {
		lo, hi, found := strings.Cut(rg, "..")
		if !found {
			panic(fmt.Sprintf("app: field %s: range %q: want MIN..MAX", f.Name, rg))
		}
		bound := func(s string) *int64 {
			if s == "" {
				return nil
			}
			var n int64
			var err error
			if f.Type == durationType {
				var d time.Duration
				d, err = parseSignedDuration(s)
				n = int64(d)
			} else {
				n, err = strconv.ParseInt(s, 10, 64)
			}
			if err != nil {
				panic(fmt.Sprintf("app: field %s: range %q: %v", f.Name, rg, err))
			}
			return &n
		}
		r.min, r.max = bound(lo), bound(hi)
	}
	switch f.Type.Kind() {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float64:
	case reflect.Slice:
		if f.Type.Elem().Kind() != reflect.String {
			panic(fmt.Sprintf("app: field %s: a list of %s is not a setting (lists of structs are walked, not parsed)", f.Name, f.Type.Elem()))
		}
	default:
		panic(fmt.Sprintf("app: field %s: type %s cannot be read from a value", f.Name, f.Type))
	}
	return r
}

// isList reports whether the rule's setting is a list of strings.
func (r rule) isList() bool { return r.typ.Kind() == reflect.Slice }

// want describes the valid values: "an integer ≥ 1", "a duration between 1ms and 1m such as ...", "one of a, b".
func (r rule) want() string {
	if r.typ == durationType {
		s := "a duration such as 250ms, 30s, 5m or 7d"
		switch {
		case r.min != nil && r.max != nil:
			s += fmt.Sprintf(" (%s to %s)", fmtDur(*r.min), fmtDur(*r.max))
		case r.min != nil:
			s += fmt.Sprintf(" (at least %s)", fmtDur(*r.min))
		}
		return s
	}
	switch r.typ.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		if len(r.oneof) > 0 {
			return "one of " + strings.Join(r.oneof, ", ")
		}
		return "a string"
	case reflect.Slice:
		return "a list of strings (in a variable: comma-separated)"
	case reflect.Float64:
		return "a number"
	}
	s := "an integer"
	switch {
	case r.min != nil && r.max != nil:
		s += fmt.Sprintf(" from %d to %d", *r.min, *r.max)
	case r.min != nil:
		s += fmt.Sprintf(" ≥ %d", *r.min)
	case r.max != nil:
		s += fmt.Sprintf(" ≤ %d", *r.max)
	}
	return s
}

func fmtDur(n int64) string { return Duration(n).String() }

// parse reads text into dst (a value of the rule's type). got is how to show the text in a message ("" for a
// secret). Errors read "want <valid values>, got <text>".
func (r rule) parse(dst reflect.Value, text, got string) error {
	fail := func(extra string) error {
		if got == "" {
			return fmt.Errorf("want %s%s", r.want(), extra)
		}
		return fmt.Errorf("want %s, got %s%s", r.want(), got, extra)
	}
	if r.typ == durationType {
		d, err := parseSignedDuration(strings.TrimSpace(text))
		if err != nil {
			return fail("")
		}
		if d < 0 && !r.signed {
			return fmt.Errorf("must not be negative, got %s", got)
		}
		dst.SetInt(int64(d))
		return nil
	}
	switch r.typ.Kind() {
	case reflect.String:
		dst.SetString(text)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(text))
		if err != nil {
			return fail("")
		}
		dst.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := parseInteger(text, r.typ.Bits())
		if err != nil {
			return fail("")
		}
		dst.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := parseInteger(text, 64)
		if err != nil || n < 0 || (r.typ.Bits() < 64 && n >= 1<<r.typ.Bits()) {
			return fail("")
		}
		dst.SetUint(uint64(n))
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(text), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fail("")
		}
		dst.SetFloat(f)
	case reflect.Slice:
		var items []string
		for _, s := range strings.Split(text, ",") {
			if s = strings.TrimSpace(s); s != "" {
				items = append(items, s)
			}
		}
		dst.Set(reflect.ValueOf(items).Convert(r.typ))
	}
	return nil
}

// parseInteger reads a whole number: decimal ("1000000", "1_000_000") or 0x/0o/0b prefixed. A fraction ("2.9"),
// an exponent ("1e3") or an out-of-range value is refused, never truncated.
func parseInteger(text string, bits int) (int64, error) {
	s := strings.TrimSpace(text)
	base := 10
	digits := strings.TrimLeft(s, "+-")
	if len(digits) > 1 && digits[0] == '0' && strings.ContainsRune("xXoObB", rune(digits[1])) {
		base = 0 // Go's prefixes; underscores allowed
	} else {
		s = strings.ReplaceAll(s, "_", "")
	}
	return strconv.ParseInt(s, base, bits)
}

// check reports why an already read value is outside the rule ("must be 1 to 1000, got 0"), or "".
func (r rule) check(v reflect.Value) string {
	if len(r.oneof) > 0 && !slices.Contains(r.oneof, v.String()) {
		return fmt.Sprintf("must be one of %s; got %q", strings.Join(r.oneof, ", "), v.String())
	}
	if r.min == nil && r.max == nil {
		return ""
	}
	var n int64
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n = v.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n = int64(min(v.Uint(), math.MaxInt64))
	default:
		return ""
	}
	tooLow, tooHigh := r.min != nil && n < *r.min, r.max != nil && n > *r.max
	if !tooLow && !tooHigh {
		return ""
	}
	if r.typ == durationType {
		switch {
		case r.min != nil && r.max != nil:
			return fmt.Sprintf("must be between %s and %s, got %s", fmtDur(*r.min), fmtDur(*r.max), fmtDur(n))
		case r.min != nil:
			return fmt.Sprintf("must be at least %s, got %s", fmtDur(*r.min), fmtDur(n))
		default:
			return fmt.Sprintf("must be at most %s, got %s", fmtDur(*r.max), fmtDur(n))
		}
	}
	switch {
	case r.min != nil && r.max != nil:
		return fmt.Sprintf("must be %d to %d, got %d", *r.min, *r.max, n)
	case r.min != nil:
		return fmt.Sprintf("must be ≥ %d, got %d", *r.min, n)
	default:
		return fmt.Sprintf("must be ≤ %d, got %d", *r.max, n)
	}
}

// setting is one value an operator can set in the YAML file and, under its derived name, in the environment:
// a field reachable from Config through nested structs (fields inside lists are YAML-only).
type setting struct {
	path    string   // YAML path: "postgres.janitor_interval"
	env     string   // SLUICE_POSTGRES_JANITOR_INTERVAL
	aliases []string // older variable names, still read: SLUICE_JANITOR_INTERVAL
	index   []int    // reflect field index from Config
	rule    rule
}

// envName derives a setting's variable from its YAML path.
func envName(path string) string {
	return "SLUICE_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(path))
}

// configVariable names the config file; commands read it, Load never sees it as a setting.
const configVariable = "SLUICE_CONFIG"

// settingsTable is every setting of Config, derived from its struct tags (see Config).
var settingsTable = buildSettings(reflect.TypeOf(Config{}), "", nil)

func buildSettings(t reflect.Type, prefix string, index []int) []setting {
	var out []setting
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		path := prefix + name
		idx := append(slices.Clone(index), i)
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			out = append(out, buildSettings(f.Type, path+".", idx)...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			checkListFields(f.Type.Elem()) // YAML only; its fields' rules still apply
		default:
			s := setting{path: path, env: envName(path), index: idx, rule: ruleOf(f)}
			if a := f.Tag.Get("alias"); a != "" {
				s.aliases = strings.Split(a, ",")
			}
			out = append(out, s)
		}
	}
	return out
}

// checkListFields reads the rules of a list element's fields so a bad tag panics at start-up, not at first use.
func checkListFields(t reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if yamlName(f) == "" {
			continue
		}
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			checkListFields(f.Type)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			checkListFields(f.Type.Elem())
		default:
			ruleOf(f)
		}
	}
}

// yamlName is a field's YAML key, or "" for a field that is not a setting (yaml:"-" or unexported). An exported
// field without a name (no yaml tag, or ",inline") panics: Load would silently ignore it.
func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	if name == "" {
		panic(fmt.Sprintf("app: config field %s has no yaml name: give it yaml:\"name\" (or yaml:\"-\" if it is not a setting)", f.Name))
	}
	return name
}

// yamlKeys lists the YAML keys of a struct type, for "valid here" hints.
func yamlKeys(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if n := yamlName(t.Field(i)); n != "" {
			names = append(names, n)
		}
	}
	return names
}

// toolVariables are SLUICE_* names that this repository's own tools and tests read (never the server): a test
// that starts sluice with its environment must not make it refuse to start. TestEveryMentionedVariableIsKnown
// keeps this list, the settings and the docs in step.
var toolVariables = []string{
	"SLUICE_TEST_DATABASE_URL", // adapters/postgres/pgtest: the test server
	"SLUICE_TEST_BE_MAIN",      // main_test.go: the test binary runs main
	"SLUICE_SOAK",              // integration/soak: duration
	"SLUICE_SOAK_OUT",          // integration/soak: samples directory
	"SLUICE_BIN",               // sdk/typescript tests: a prebuilt binary
	"SLUICE_TOOLS_CACHE",       // scripts: downloaded tools
	"SLUICE_CHART_TEST_BINARY", // scripts/test.d/40-chart.sh: a prebuilt binary
	"SLUICE_TOKEN",             // the SDK examples' client token
	"SLUICE_CHECK_TOKEN",       // integration/nginx, integration/caddy: placeholder in the example configs
	"SLUICE_BINARY",            // scripts/chart-bounds.sh: a prebuilt binary
	"SLUICE_URL",               // sdk/typescript/test/install.test.js: the server the installed package checks
	"SLUICE_TEST_CHURN_SEED",   // integration/churn: repeats a run's random choices

	"SLUICE_UPDATE_SCREENSHOTS", // integration/console: 1 rewrites the console's screenshots in docs/img

	// adapters/redis and its scripts
	"SLUICE_TEST_REDIS_ADDR",         // adapters/redis/redistest: the single test Redis
	"SLUICE_TEST_REDIS_CLUSTER",      // adapters/redis/redistest: the test cluster's seeds
	"SLUICE_TEST_REDIS_DIR",          // scripts/test.d/05-redis-up.sh: the test servers' directories
	"SLUICE_TEST_FAILOVER_ROUNDS",    // adapters/redis: rounds of TestMasterKilledUnderLoad
	"SLUICE_TEST_BENCH_REDIS",        // adapters/redis: TestSideBySide's duration per run
	"SLUICE_TEST_BENCH_REDIS_LANES",  // adapters/redis: TestSideBySide's extra redis.lanes values (comma-separated)
	"SLUICE_TEST_BENCH_REDIS_ROUNDS", // adapters/redis: TestSideBySide's rounds (default 10)
	"SLUICE_TEST_SCRIPT_TIME",        // adapters/redis: TestScriptTime's scripts to compare with decide.lua
	"SLUICE_TEST_HOLD_TIME",          // adapters/redis: TestHoldScriptTime runs when set
	"SLUICE_TEST_POLICY_COST",        // adapters/redis: TestPolicyCost runs when set
	"SLUICE_TEST_REDIS_SPEC_SEED",    // adapters/redis: TestConversionSpecModel's seed (replays a failure)
	"SLUICE_TEST_RATELIMIT_BIN",      // adapters/redis: a prebuilt envoyproxy/ratelimit service_cmd
}

// serviceLink matches the variables Kubernetes (and Docker links) add for a Service named sluice or sluice-*
// (SLUICE_PORT=tcp://..., SLUICE_SERVICE_HOST, SLUICE_POSTGRES_PORT_5432_TCP_ADDR, ...) unless the pod sets
// enableServiceLinks: false. They are not settings, and refusing them would make such a pod crash-loop.
var serviceLink = regexp.MustCompile(`^SLUICE(_[A-Z0-9]+)*_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$`)

// envProblem explains an unknown SLUICE_* variable, naming the closest valid one; "" if the name is not a
// setting's business (a tool's variable or a service link).
func envProblem(name string) string {
	if slices.Contains(toolVariables, name) || serviceLink.MatchString(name) {
		return ""
	}
	valid := []string{configVariable}
	for _, s := range settingsTable {
		valid = append(valid, s.env)
		valid = append(valid, s.aliases...)
	}
	best, bestD := "", math.MaxInt
	for _, v := range valid {
		if d := editDistance(name, v); d < bestD {
			best, bestD = v, d
		}
	}
	return fmt.Sprintf("%s: not a sluice setting; did you mean %s? (every setting's variable is SLUICE_ and its YAML path upper-cased, dots as underscores: see README.md)", name, best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// environMap reads "NAME=value" entries (as os.Environ gives them); later entries win, as in exec.Cmd.Env.
func environMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// sortedKeys returns m's keys in order, so messages come out the same every time.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
