package app

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/domain"
)

// problemsOf loads path (or nothing) with env and returns the problems, failing the test if Load did not fail.
func problemsOf(t *testing.T, path string, env map[string]string) Problems {
	t.Helper()
	_, _, err := Load(path, envOf(env))
	var probs Problems
	if !errors.As(err, &probs) {
		t.Fatalf("want Problems, got %v", err)
	}
	return probs
}

func requireProblems(t *testing.T, probs Problems, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, w) }) {
			t.Errorf("missing %q in:\n%s", w, probs.Error())
		}
	}
}

// The example: three bad values, three problems, each named by its path and line with its valid values.
// (The old loader stopped at the first bad duration.)
func TestEveryBadValueIsReportedAtOnce(t *testing.T) {
	path := writeFile(t, "bad.yaml", "log:\n  level: loud\nhttp:\n  read_timeout: 10\n  idle_timeout: 2 minutes\n")
	probs := problemsOf(t, path, nil)
	want := Problems{
		`log.level (line 2): must be one of debug, info, warn, error; got "loud"`,
		`http.read_timeout (line 4): want a duration such as 250ms, 30s, 5m or 7d (1ms to 10m), got 10`,
		`http.idle_timeout (line 5): want a duration such as 250ms, 30s, 5m or 7d (1ms to 10m), got "2 minutes"`,
	}
	if !slices.Equal(probs, want) {
		t.Fatalf("got:\n%s\nwant:\n%s", probs.Error(), want.Error())
	}
}

// Type errors name the setting and its valid values; no Go type or go-yaml wording leaks.
func TestTypeErrorsNameTheSetting(t *testing.T) {
	path := writeFile(t, "types.yaml", `store: memory
memory:
  max_keys: lots
listen: {host: x}
log: [debug]
postgres:
  max_conns: [1]
  migrate_on_start: maybe
policies:
  name: x
tokens:
  - just-a-string
`)
	probs := problemsOf(t, path, nil)
	want := Problems{
		`memory.max_keys (line 3): want an integer ≥ 1, got "lots"`,
		`listen (line 4): want a string, got a mapping`,
		`log (line 5): want a mapping of settings (level, format), got a list`,
		`postgres.max_conns (line 7): want an integer from 1 to 1000, got a list`,
		`postgres.migrate_on_start (line 8): want true or false, got "maybe"`,
		`policies (line 9): want a list of mappings (name, limit, window, algorithm, resolution, period, time_zone, anchor, failure_mode, shadow, overrides), got a mapping`,
		`tokens[0] (line 12): want a mapping of settings (name, token, role), got "just-a-string"`,
	}
	if !slices.Equal(probs, want) {
		t.Fatalf("got:\n%s\nwant:\n%s", probs.Error(), want.Error())
	}
	for _, leak := range []string{"!!", "unmarshal", "int64", "string into", "yaml:"} {
		if strings.Contains(probs.Error(), leak) {
			t.Errorf("%q leaks into:\n%s", leak, probs.Error())
		}
	}
}

// A fraction is refused, never truncated (limit: 2.9 served 2 before), in the file and in the environment.
func TestFractionsAreRefused(t *testing.T) {
	path := writeFile(t, "frac.yaml", "memory: {max_keys: 1.5}\nhttp: {max_body_bytes: 1e5}\npolicies:\n  - {name: a, limit: 2.9, window: 1m}\n")
	probs := problemsOf(t, path, map[string]string{"SLUICE_POSTGRES_MAX_CONNS": "2.5"})
	requireProblems(t, probs,
		"memory.max_keys (line 1): want an integer ≥ 1, got 1.5",
		"http.max_body_bytes (line 2): want an integer from 1024 to 16777216, got 1e5",
		"policies[0].limit (line 4): want an integer, got 2.9",
		`SLUICE_POSTGRES_MAX_CONNS: want an integer from 1 to 1000, got "2.5"`)
	if len(probs) != 4 {
		t.Errorf("want exactly 4 problems (one per bad value), got:\n%s", probs.Error())
	}
	// Whole numbers in YAML's other spellings still read.
	cfg, _, err := Load(writeFile(t, "ok.yaml", "memory: {max_keys: 1_000}\npolicies: [{name: a, limit: 0x10, window: 1m}]\n"), nil)
	if err != nil || cfg.Memory.MaxKeys != 1000 || cfg.Policies[0].Limit != 16 {
		t.Fatalf("%v %+v", err, cfg)
	}
}

// window: -1m is reported as negative, not as "got 0s"; clock_offset (signed) may be negative.
func TestNegativeDurations(t *testing.T) {
	path := writeFile(t, "neg.yaml", "clock_offset: -1m\npolicies:\n  - name: a\n    limit: 1\n    window: -1m\n")
	probs := problemsOf(t, path, map[string]string{"SLUICE_HTTP_READ_TIMEOUT": "-5s"})
	want := Problems{`policies[0].window (line 5): must not be negative, got "-1m"`, `SLUICE_HTTP_READ_TIMEOUT: must not be negative, got "-5s"`}
	if !slices.Equal(probs, want) {
		t.Fatalf("got:\n%s\nwant:\n%s", probs.Error(), want.Error())
	}
}

func TestTokensAreChecked(t *testing.T) {
	tokensFile := writeFile(t, "tokens.yaml", "- {name: ci, token: 0123456789abcdef-file, role: check}\n- {token: '0123456789abcdef\n  ', role: check}\n")
	path := writeFile(t, "tok.yaml", `tokens:
  - {name: ci, token: "                ", role: admin}
  - {token: 0123456789abcdef0123, role: admin}
  - {name: "  ", token: 0123456789abcdef0124, role: check}
  - {name: ci, token: 0123456789abcdef0125, role: check}
tokens_file: `+tokensFile+"\n")
	probs := problemsOf(t, path, nil)
	want := Problems{
		"tokens[0].token (line 2): must be printable ASCII without spaces (it travels in an Authorization header; a trailing newline from a secret file?)",
		"tokens[1].name (line 3): required: a label for the token in logs, such as the client's name",
		"tokens[2].name (line 4): required: a label for the token in logs, such as the client's name",
		`tokens[3].name (line 5): duplicate token name "ci" (also tokens[0] (line 2))`,
		`tokens_file[0].name (` + tokensFile + ` line 1): duplicate token name "ci" (also tokens[0] (line 2))`,
		"tokens_file[1].name (" + tokensFile + " line 2): required: a label for the token in logs, such as the client's name",
		"tokens_file[1].token (" + tokensFile + " line 2): must be printable ASCII without spaces (it travels in an Authorization header; a trailing newline from a secret file?)",
	}
	if !slices.Equal(probs, want) {
		t.Fatalf("got:\n%s\nwant:\n%s", probs.Error(), want.Error())
	}
	if strings.Contains(probs.Error(), "0123456789abcdef") {
		t.Fatalf("a secret is shown:\n%s", probs.Error())
	}
}

// postgres.url goes through pgx's parser at load time, so `config check` refuses what start-up would; the value
// is never shown, as it may hold a password.
func TestPostgresURLIsParsed(t *testing.T) {
	path := writeFile(t, "pg.yaml", "store: postgres\npostgres:\n  url: \"host=x port=notaport password=hunter2\"\n")
	probs := problemsOf(t, path, nil)
	requireProblems(t, probs, "postgres.url (line 3): invalid port; want postgres://user:password@host:5432/db")
	for _, env := range []map[string]string{
		{"SLUICE_POSTGRES_URL": "postgres://u:hunter2@h:x/db"},
		{"SLUICE_DATABASE_URL": "postgres://u:hunter2@h/db?sslmode=bogus"},
		{"SLUICE_POSTGRES_URL": "postgres://u:hunter2@h/db?pool_max_conns=lots"},
	} {
		p := problemsOf(t, "", env)
		for name := range env {
			requireProblems(t, p, name+": ")
		}
		if strings.Contains(p.Error(), "hunter2") || len(p) != 1 {
			t.Errorf("%v: want one problem that hides the password, got:\n%s", env, p.Error())
		}
	}
	if strings.Contains(probs.Error(), "hunter2") {
		t.Fatalf("password shown:\n%s", probs.Error())
	}
	cfg, _, err := Load("", envOf(map[string]string{"SLUICE_STORE": "postgres", "SLUICE_POSTGRES_URL": "host=db port=5432 dbname=sluice"}))
	if err != nil || cfg.Postgres.URL != "host=db port=5432 dbname=sluice" {
		t.Fatalf("a key=value connection string: %v", err)
	}
}

// Every setting outside a list has the variable its YAML path implies, read by the same rule as the file.
func TestSettingsTable(t *testing.T) {
	names := map[string]string{}
	for _, s := range settingsTable {
		if want := "SLUICE_" + strings.ToUpper(strings.ReplaceAll(s.path, ".", "_")); s.env != want {
			t.Errorf("%s: variable %s, want %s", s.path, s.env, want)
		}
		for _, n := range append([]string{s.env}, s.aliases...) {
			if other, dup := names[n]; dup {
				t.Errorf("%s names both %s and %s", n, other, s.path)
			}
			names[n] = s.path
		}
	}
	for name, path := range map[string]string{
		"SLUICE_LISTEN": "listen", "SLUICE_STORE": "store", "SLUICE_MEMORY_MAX_KEYS": "memory.max_keys",
		"SLUICE_POSTGRES_URL": "postgres.url", "SLUICE_DATABASE_URL": "postgres.url",
		"SLUICE_POSTGRES_JANITOR_INTERVAL": "postgres.janitor_interval", "SLUICE_JANITOR_INTERVAL": "postgres.janitor_interval",
		"SLUICE_POSTGRES_MIGRATE_ON_START": "postgres.migrate_on_start", "SLUICE_MIGRATE_ON_START": "postgres.migrate_on_start",
		"SLUICE_HTTP_DRAIN_TIMEOUT": "http.drain_timeout", "SLUICE_DRAIN_TIMEOUT": "http.drain_timeout",
		"SLUICE_POSTGRES_MAX_CONNS": "postgres.max_conns", "SLUICE_POSTGRES_LANES": "postgres.lanes", "SLUICE_REDIS_LANES": "redis.lanes",
		"SLUICE_POSTGRES_STATEMENT_TIMEOUT": "postgres.statement_timeout", "SLUICE_LOG_LEVEL": "log.level",
		"SLUICE_LOG_FORMAT": "log.format", "SLUICE_TOKENS_FILE": "tokens_file", "SLUICE_HTTP_MAX_BODY_BYTES": "http.max_body_bytes",
		"SLUICE_HTTP_READ_HEADER_TIMEOUT": "http.read_header_timeout", "SLUICE_HTTP_READ_TIMEOUT": "http.read_timeout",
		"SLUICE_HTTP_IDLE_TIMEOUT": "http.idle_timeout", "SLUICE_CLOCK_OFFSET": "clock_offset",
	} {
		if names[name] != path {
			t.Errorf("%s sets %q, want %q", name, names[name], path)
		}
	}
}

// A field the table cannot read is a programming error caught at start-up, never a setting silently ignored.
func TestSettingsTableRefusesFieldsItCannotRead(t *testing.T) {
	for name, typ := range map[string]reflect.Type{
		"no yaml name": reflect.TypeOf(struct{ Listen string }{}),
		"inline": reflect.TypeOf(struct {
			LogConfig `yaml:",inline"`
		}{}),
		"a map": reflect.TypeOf(struct {
			M map[string]string `yaml:"m"`
		}{}),
		"a bad range": reflect.TypeOf(struct {
			N int `yaml:"n" range:"1-5"`
		}{}),
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: accepted", name)
				}
			}()
			buildSettings(typ, "", nil)
		}()
	}
	type redis struct {
		Addrs    []string `yaml:"addrs"`
		Password string   `yaml:"password" secret:"true"`
	}
	got := buildSettings(reflect.TypeOf(struct {
		Redis redis `yaml:"redis"`
	}{}), "", nil)
	if len(got) != 2 || got[0].env != "SLUICE_REDIS_ADDRS" || !got[1].rule.secret {
		t.Fatalf("%+v", got)
	}
	// A list of strings: a YAML list, or a comma-separated variable.
	var fromEnv []string
	if err := got[0].rule.parse(reflect.ValueOf(&fromEnv).Elem(), "a:1, b:2,,c:3", `"a:1, b:2,,c:3"`); err != nil || !slices.Equal(fromEnv, []string{"a:1", "b:2", "c:3"}) {
		t.Fatalf("%q %v", fromEnv, err)
	}
	var r struct {
		Redis redis `yaml:"redis"`
	}
	l := &loader{origins: map[string]origin{}, bad: map[string]bool{}, renames: map[string]string{}}
	l.decodeStruct(l.parseFile([]byte("redis:\n  addrs: [a:1, b:2]\n  password: [x]\n"), "r.yaml"), reflect.ValueOf(&r).Elem(), "")
	if !slices.Equal(r.Redis.Addrs, []string{"a:1", "b:2"}) || !slices.Equal(l.probs, Problems{"redis.password (line 3): want a string, got a list"}) {
		t.Fatalf("%+v %q", r, l.probs)
	}
}

// A value reads the same from the file and from the environment: the same rule parses and checks it, so the same
// value gives the same setting and the same problems (only the name differs: path and line, or the variable).
func TestFileAndEnvironmentReadValuesAlike(t *testing.T) {
	values := []string{"", "lots", "2.9", "-1m", "0", "1", "5", "17", "2000", "1m", "30s", "7d", "true", "no",
		"postgres", "debug", "json", "0.0.0.0:9", "[::1]:1", "host=x port=y", "a,b"}
	line := regexp.MustCompile(`^(\S+) \(line \d+\): `)
	for _, s := range settingsTable {
		for _, v := range values {
			keys := strings.Split(s.path, ".")
			var y strings.Builder
			for i, k := range keys {
				fmt.Fprintf(&y, "%s%s:", strings.Repeat("  ", i), k)
				if i < len(keys)-1 {
					y.WriteString("\n")
				}
			}
			fmt.Fprintf(&y, " %q\n", v)
			fromFile, _, fileErr := Load(writeFile(t, "v.yaml", y.String()), nil)
			fromEnv, _, envErr := Load("", []string{s.env + "=" + v})
			if f, e := fromFile.valueAt(s), fromEnv.valueAt(s); !reflect.DeepEqual(f, e) {
				t.Errorf("%s = %q: file reads %v, environment %v", s.path, v, f, e)
			}
			var fileProbs, envProbs Problems
			errors.As(fileErr, &fileProbs)
			errors.As(envErr, &envProbs)
			norm := func(ps Problems, fromFile bool) []string {
				var out []string
				for _, p := range ps {
					if fromFile {
						p = line.ReplaceAllStringFunc(p, func(m string) string { return line.FindStringSubmatch(m)[1] + ": " })
						p = strings.Replace(p, s.path+": ", "SETTING: ", 1)
					} else {
						p = strings.Replace(strings.Replace(p, s.env+"="+fmt.Sprintf("%q", v)+": ", "SETTING: ", 1), s.env+": ", "SETTING: ", 1)
					}
					out = append(out, p)
				}
				return out
			}
			if f, e := norm(fileProbs, true), norm(envProbs, false); !slices.Equal(f, e) {
				t.Errorf("%s = %q:\nfile:        %q\nenvironment: %q", s.path, v, f, e)
			}
		}
	}
}

func (c Config) valueAt(s setting) any { return reflect.ValueOf(c).FieldByIndex(s.index).Interface() }

// Unknown SLUICE_* variables are refused, naming the closest valid one; SLUICE_CONFIG, the repository's tool
// variables and Kubernetes service links are not settings and pass.
func TestUnknownVariablesAreRefused(t *testing.T) {
	probs := problemsOf(t, "", map[string]string{"SLUICE_STOR": "postgres", "SLUICE_POSTGRES_MAXCONNS": "4", "SLUICE_DATABASE_UR": "x"})
	requireProblems(t, probs, "SLUICE_STOR: not a sluice setting; did you mean SLUICE_STORE?",
		"SLUICE_POSTGRES_MAXCONNS: not a sluice setting; did you mean SLUICE_POSTGRES_MAX_CONNS?",
		"SLUICE_DATABASE_UR: not a sluice setting; did you mean SLUICE_DATABASE_URL?")
	if len(probs) != 3 {
		t.Errorf("want 3 problems, got:\n%s", probs.Error())
	}
	_, _, err := Load("", envOf(map[string]string{
		"SLUICE_CONFIG": "x.yaml", "SLUICE_TEST_DATABASE_URL": "postgres://x", "PATH": "/bin", "sluice_stor": "x",
		"SLUICE_PORT": "tcp://10.0.0.1:8080", "SLUICE_SERVICE_HOST": "10.0.0.1", "SLUICE_SERVICE_PORT_HTTP": "8080",
		"SLUICE_POSTGRESQL_PORT_5432_TCP_ADDR": "10.0.0.2", "SLUICE_PORT_8080_TCP": "tcp://10.0.0.1:8080",
	}))
	if err != nil {
		t.Fatal(err)
	}
}

// The old variable names keep working (design.md names some as contract); a name and its alias set to different
// values is an error, to the same value it is not.
func TestAliasesKeepWorking(t *testing.T) {
	cases := []struct{ name, alias, value string }{
		{"SLUICE_POSTGRES_URL", "SLUICE_DATABASE_URL", "postgres://u@h/db"},
		{"SLUICE_POSTGRES_JANITOR_INTERVAL", "SLUICE_JANITOR_INTERVAL", "2m"},
		{"SLUICE_POSTGRES_MIGRATE_ON_START", "SLUICE_MIGRATE_ON_START", "false"},
		{"SLUICE_HTTP_DRAIN_TIMEOUT", "SLUICE_DRAIN_TIMEOUT", "3s"},
	}
	for _, c := range cases {
		byName, _, err1 := Load("", []string{c.name + "=" + c.value})
		byAlias, _, err2 := Load("", []string{c.alias + "=" + c.value})
		both, _, err3 := Load("", []string{c.alias + "=" + c.value, c.name + "=" + c.value})
		if err1 != nil || err2 != nil || err3 != nil || !reflect.DeepEqual(byName, byAlias) || !reflect.DeepEqual(byName, both) || reflect.DeepEqual(byName, Defaults()) {
			t.Errorf("%s / %s = %s: %v %v %v", c.name, c.alias, c.value, err1, err2, err3)
		}
		probs := problemsOf(t, "", map[string]string{c.name: c.value, c.alias: "1h"})
		requireProblems(t, probs, c.name+" and "+c.alias+" are both set, to different values")
		if len(probs) != 1 {
			t.Errorf("want one problem, got:\n%s", probs.Error())
		}
	}
	// An alias names itself in messages, as the user wrote it.
	requireProblems(t, problemsOf(t, "", map[string]string{"SLUICE_JANITOR_INTERVAL": "30s"}),
		`SLUICE_JANITOR_INTERVAL="30s": must be at least 1m, got 30s`)
}

// Every SLUICE_* name the repository mentions (docs, chart, scripts, tests) is a setting's variable, an alias,
// SLUICE_CONFIG, a tool variable, or a Kubernetes service link: a renamed or misspelt variable in the docs fails.
// Every OTEL_* name is one sluice honours (otelVariables).
func TestEveryMentionedVariableIsKnown(t *testing.T) {
	known := map[string]bool{configVariable: true}
	for _, s := range settingsTable {
		known[s.env] = true
		for _, a := range s.aliases {
			known[a] = true
		}
	}
	mention := regexp.MustCompile(`SLUICE_[A-Z0-9_]*[A-Z0-9]`)
	otelMention := regexp.MustCompile(`\bOTEL_[A-Z0-9_]*[A-Z0-9]`)
	seen := 0
	err := filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == ".git" || n == "node_modules" || n == "testdata" || n == "dist" {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(p) {
		case ".go", ".md", ".yaml", ".yml", ".sh", ".tpl", ".txt", ".js", ".ts", ".json", ".example", "":
		default:
			return nil
		}
		if strings.HasSuffix(p, "_test.go") && (filepath.Base(filepath.Dir(p)) == "app" || p == filepath.Join("..", "main_test.go")) {
			return nil // the configuration's own tests name wrong variables on purpose
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, at := range otelMention.FindAllStringIndex(string(data), -1) {
			m := string(data[at[0]:at[1]])
			if knownOTelVariable(m) {
				continue
			}
			// A prefix such as OTEL_EXPORTER_OTLP_* names a family of them.
			if strings.HasPrefix(string(data[at[1]:]), "_*") && slices.ContainsFunc(otelVariables, func(v string) bool { return strings.HasPrefix(v, m+"_") }) {
				continue
			}
			t.Errorf("%s mentions %s, which sluice does not honour (otelVariables in app/tracing.go lists those it does)", p, m)
		}
		for _, m := range mention.FindAllString(string(data), -1) {
			seen++
			if known[m] || envProblem(m) == "" {
				continue
			}
			// A prefix such as SLUICE_POSTGRES_* names a family of settings.
			if i := strings.Index(string(data), m); i >= 0 && strings.HasPrefix(string(data)[i+len(m):], "_*") && slices.ContainsFunc(settingsTable, func(s setting) bool { return strings.HasPrefix(s.env, m+"_") }) {
				continue
			}
			// An example of the refusal itself ("SLUICE_STOR ... did you mean SLUICE_STORE?").
			if _, closest, _ := strings.Cut(envProblem(m), "did you mean "); strings.Contains(string(data), "did you mean "+strings.SplitN(closest, "?", 2)[0]) {
				continue
			}
			t.Errorf("%s mentions %s, which sluice refuses: %s", p, m, envProblem(m))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 50 {
		t.Fatalf("only %d mentions found: is the walk reading the repository?", seen)
	}
}

// A missing file is one problem among the others, not the end of the report.
func TestMissingFileIsOneProblem(t *testing.T) {
	probs := problemsOf(t, filepath.Join(t.TempDir(), "none.yaml"), map[string]string{"SLUICE_STOR": "x"})
	if len(probs) != 2 || !strings.HasPrefix(probs[0], "config file: open ") || !strings.HasPrefix(probs[1], "SLUICE_STOR: ") {
		t.Fatalf("%q", probs)
	}
}

// Duplicate keys are errors (the last one used to win silently); YAML merge keys work; one document per file.
func TestYAMLStructure(t *testing.T) {
	dup := writeFile(t, "dup.yaml", "log:\n  level: info\n  level: debug\n---\nstore: x\n")
	probs := problemsOf(t, dup, nil)
	want := Problems{"log.level (line 3): set twice (first at line 2)", dup + " (line 4): a second YAML document: sluice reads one document per file"}
	if !slices.Equal(probs, want) {
		t.Fatalf("got:\n%s\nwant:\n%s", probs.Error(), want.Error())
	}
	cfg, _, err := Load(writeFile(t, "merge.yaml", `base: &base {limit: 10, window: 1m, failure_mode: allow}
`), nil)
	if err == nil {
		t.Fatalf("an unknown top-level key was accepted: %+v", cfg)
	}
	cfg, _, err = Load(writeFile(t, "merge.yaml", `policies:
  - &base {name: a, limit: 10, window: 1m, failure_mode: allow}
  - <<: *base
    name: b
    limit: 20
`), nil)
	if err != nil || len(cfg.Policies) != 2 || !reflect.DeepEqual(cfg.Policies[1], PolicyConfig{Name: "b", Limit: 20, Window: Duration(time.Minute), FailureMode: "allow"}) {
		t.Fatalf("merge key: %v %+v", err, cfg.Policies)
	}
}

// resolution maps to domain.Policy.Resolution (sliding_window only); algorithm's valid values are the domain's.
func TestPolicyResolutionAndAlgorithms(t *testing.T) {
	var b strings.Builder
	b.WriteString("policies:\n")
	for _, a := range domain.Algorithms {
		fmt.Fprintf(&b, "  - {name: %s, limit: 10, window: 1m, algorithm: %s}\n", strings.ReplaceAll(string(a), "_", "-"), a)
	}
	b.WriteString("  - {name: fine, limit: 10, window: 1m, algorithm: sliding_window, resolution: 500ms}\n")
	cfg, _, err := Load(writeFile(t, "algo.yaml", b.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	last := cfg.Policies[len(cfg.Policies)-1].domain()
	if last.Resolution != 500*time.Millisecond || last.Algorithm != domain.SlidingWindow {
		t.Fatalf("%+v", last)
	}
	probs := problemsOf(t, writeFile(t, "res.yaml", `policies:
  - {name: a, limit: 10, window: 1m, resolution: 1s}
  - {name: b, limit: 10, window: 1m, algorithm: sliding_window, resolution: 2m}
  - {name: c, limit: 10, window: 1m, algorithm: leaky_bucket}
`), nil)
	want := Problems{
		"policies[0].resolution (line 2): applies to sliding_window only, not to sliding_log",
		"policies[1].resolution (line 3): must be a whole number of milliseconds from 1ms to the window (1m), got 2m",
		`policies[2].algorithm (line 4): must be one of ` + domain.AlgorithmNames() + `, got "leaky_bucket"`,
	}
	if !slices.Equal(probs, want) {
		t.Fatalf("got:\n%s\nwant:\n%s", probs.Error(), want.Error())
	}
}

// A sliding_log policy with a large limit is valid but draws a warning: its state grows with the limit.
func TestSlidingLogWithALargeLimitWarns(t *testing.T) {
	path := writeFile(t, "big.yaml", `policies:
  - {name: small, limit: 1000, window: 1m}
  - {name: big, limit: 5000, window: 1h}
  - {name: bounded, limit: 5000, window: 1h, algorithm: sliding_window}
  - {name: bucket, limit: 50000, window: 1h, algorithm: token_bucket}
`)
	_, warnings, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], `policies[1].limit (line 3): policy "big" is a sliding_log with limit 5000`) || !strings.Contains(warnings[0], "sliding_window") {
		t.Fatalf("warnings: %q", warnings)
	}
}

func TestCommandArgsAnywhere(t *testing.T) {
	t.Setenv("SLUICE_CONFIG", "")
	for _, c := range []struct {
		args  []string
		path  string
		words []string
	}{
		{[]string{"status", "-config", "f.yaml"}, "f.yaml", []string{"status"}},
		{[]string{"-config", "f.yaml", "status"}, "f.yaml", []string{"status"}},
		{[]string{"check", "-config=f.yaml", "g"}, "f.yaml", []string{"check", "g"}},
		{[]string{"up"}, "", []string{"up"}},
		{[]string{"--", "-config", "x"}, "", []string{"-config", "x"}},
	} {
		path, words, err := commandArgs("migrate", c.args)
		if err != nil || path != c.path || !slices.Equal(words, c.words) {
			t.Errorf("%q: path %q, words %q, %v; want %q %q", c.args, path, words, err, c.path, c.words)
		}
	}
	if _, _, err := commandArgs("migrate", []string{"status", "-bogus"}); err == nil {
		t.Error("an unknown flag was accepted")
	}
}

// metrics.top_denied_keys and metrics.key_label: bounded, named in the message with their valid values.
func TestTopDeniedKeysSettings(t *testing.T) {
	cfg, _, err := Load("", []string{"SLUICE_METRICS_TOP_DENIED_KEYS=5", "SLUICE_METRICS_KEY_LABEL=truncate"})
	if err != nil || cfg.Metrics.TopDeniedKeys != 5 || cfg.Metrics.KeyLabel != "truncate" {
		t.Fatalf("valid: %+v %v", cfg.Metrics, err)
	}
	for env, want := range map[string]string{
		"SLUICE_METRICS_TOP_DENIED_KEYS=65": "SLUICE_METRICS_TOP_DENIED_KEYS",
		"SLUICE_METRICS_KEY_LABEL=raw":      "hash, truncate",
	} {
		if _, _, err := Load("", []string{env}); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: %v, want a message naming %q", env, err, want)
		}
	}
}

// Overrides in the config file: read with their policies, checked with them (each problem named by its place), and
// an override's own window refused on a shared store.
func TestPolicyOverrides(t *testing.T) {
	cfg, _, err := Load(writeFile(t, "ov.yaml", `policies:
  - name: api
    limit: 100
    window: 1h
    overrides:
      - {match: "tenant:42:*", limit: 1000}
      - {match: "tenant:42:admin", limit: 5, window: 1m}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]domain.Override{"api": {{Match: "tenant:42:*", Limit: 1000}, {Match: "tenant:42:admin", Limit: 5, Window: time.Minute}}}
	if got := cfg.overrides(); !reflect.DeepEqual(got, want) {
		t.Fatalf("overrides %+v, want %+v", got, want)
	}
	probs := problemsOf(t, writeFile(t, "bad.yaml", `policies:
  - name: api
    limit: 100
    window: 1h
    overrides:
      - {match: "*", limit: 5}
      - {match: "a", limit: 0}
      - {match: "b", limit: 1}
      - {match: "b", limit: 2, window: 10ms}
`), nil)
	for _, w := range []string{"policies[0].overrides[0].match", "policies[0].overrides[1].limit", "policies[0].overrides[3].match", "policies[0].overrides[3].window"} {
		if !strings.Contains(probs.Error(), w) {
			t.Errorf("no problem names %s:\n%s", w, probs.Error())
		}
	}
	probs = problemsOf(t, writeFile(t, "shared.yaml", `store: redis
redis: {addrs: ["127.0.0.1:6379"]}
policies:
  - name: api
    limit: 100
    window: 1h
    overrides: [{match: "x", limit: 5, window: 1m}]
`), nil)
	if !strings.Contains(probs.Error(), "policies[0].overrides[0].window") || !strings.Contains(probs.Error(), "memory store") {
		t.Errorf("a windowed override on Redis:\n%s", probs.Error())
	}
}
