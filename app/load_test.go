package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/domain"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// envOf is an environment ("NAME=value" entries, as os.Environ gives them).
func envOf(kv map[string]string) []string {
	var env []string
	for k, v := range kv {
		env = append(env, k+"="+v)
	}
	return env
}

func TestSampleConfigIsValid(t *testing.T) {
	cfg, _, err := Load("../config/sluice.yaml", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store != "memory" || cfg.Listen != "127.0.0.1:8080" || len(cfg.Policies) != 3 {
		t.Fatalf("%+v", cfg)
	}
	if cfg.Policies[2].Window != Duration(24*time.Hour) {
		t.Fatalf("7d-style windows: %v", cfg.Policies[2].Window)
	}
}

func TestDefaultsWithoutAFile(t *testing.T) {
	cfg, _, err := Load("", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store != "memory" || cfg.Postgres.JanitorInterval != Duration(5*time.Minute) {
		t.Fatalf("%+v", cfg)
	}
}

func TestEnvOverrides(t *testing.T) {
	tokens := writeFile(t, "tokens.yaml", "- {name: ci, token: 0123456789abcdef0123, role: admin}\n")
	cfg, _, err := Load("", envOf(map[string]string{
		"SLUICE_LISTEN": "0.0.0.0:9090", "SLUICE_STORE": "postgres", "SLUICE_DATABASE_URL": "postgres://u@h/db",
		"SLUICE_JANITOR_INTERVAL": "2m", "SLUICE_TOKENS_FILE": tokens, "SLUICE_LOG_FORMAT": "json",
		"SLUICE_POSTGRES_STATEMENT_TIMEOUT": "100ms", "SLUICE_MIGRATE_ON_START": "false", "SLUICE_CLOCK_OFFSET": "-3m",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen != "0.0.0.0:9090" || cfg.Store != "postgres" || cfg.Postgres.URL != "postgres://u@h/db" ||
		cfg.Postgres.JanitorInterval != Duration(2*time.Minute) || len(cfg.Tokens) != 1 || cfg.Log.Format != "json" ||
		cfg.Postgres.StatementTimeout != Duration(100*time.Millisecond) || cfg.Postgres.MigrateOnStart ||
		cfg.ClockOffset != Duration(-3*time.Minute) {
		t.Fatalf("%+v", cfg)
	}
}

// Every problem is reported at once, each naming the setting as the user wrote it and the valid values.
func TestValidationReportsEveryProblem(t *testing.T) {
	path := writeFile(t, "bad.yaml", `
listen: 0.0.0.0:8080
log: {level: loud, format: xml}
postgres: {janitor_interval: 30s, max_conns: 0}
tokens:
  - {name: a, token: short, role: root}
policies:
  - {name: Login, limit: 0, window: 0s}
  - {name: api, limit: 1, window: 40d, failure_mode: open, algorithm: leaky}
  - {name: api, limit: 1, window: 1m}
`)
	_, _, err := Load(path, envOf(map[string]string{"SLUICE_STORE": "postgress"}))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`SLUICE_STORE="postgress": must be one of memory, postgres, redis; got "postgress"`,
		"log.level (line 3): must be one of debug, info, warn, error",
		"log.format (line 3): must be one of text, json",
		"postgres.janitor_interval (line 4): must be at least 1m",
		"postgres.max_conns (line 4): must be 1 to 1000",
		"tokens[0].role (line 6): must be one of check, admin",
		"tokens[0].token (line 6): must be at least 16 characters",
		"policies[0].name (line 8): must match",
		"policies[0].limit (line 8): must be an integer from 1 to 9007199254740991",
		"policies[0].window (line 8): must be between 1s and 31d",
		"policies[1].window (line 9): must be between 1s and 31d, got 40d",
		"policies[1].failure_mode (line 9): must be one of [deny allow]",
		"policies[1].algorithm (line 9): must be one of " + domain.AlgorithmNames(),
		`policies[2].name (line 10): duplicate policy name "api"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	// A non-loopback listen with no tokens is refused only when tokens are absent; here one (invalid) is set.
	if strings.Contains(msg, "not a loopback address") {
		t.Errorf("loopback rule fired with a token configured:\n%s", msg)
	}
}

func TestUnknownKeysFail(t *testing.T) {
	path := writeFile(t, "typo.yaml", "store: memory\npostgress:\n  url: x\nmemory:\n  max_key: 5\n")
	_, _, err := Load(path, envOf(nil))
	if err == nil {
		t.Fatal("typo accepted")
	}
	for _, want := range []string{`postgress (line 2): unknown setting "postgress"`, `memory.max_key (line 5): unknown setting "max_key"`, "valid here: max_keys", "valid here: listen, store"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%s", want, err)
		}
	}
}

func TestNoTokensOnlyOnLoopback(t *testing.T) {
	for listen, ok := range map[string]bool{"127.0.0.1:8080": true, "localhost:8080": true, "[::1]:8080": true, "0.0.0.0:8080": false, ":8080": false, "10.1.2.3:80": false} {
		_, _, err := Load("", envOf(map[string]string{"SLUICE_LISTEN": listen}))
		if ok != (err == nil) {
			t.Errorf("listen %s: err = %v", listen, err)
		}
		if err != nil && !strings.Contains(err.Error(), "SLUICE_TOKENS_FILE") {
			t.Errorf("listen %s: the message should name the setting to fix: %v", listen, err)
		}
	}
}

func TestBadEnvValues(t *testing.T) {
	_, _, err := Load("", envOf(map[string]string{"SLUICE_JANITOR_INTERVAL": "soon", "SLUICE_MEMORY_MAX_KEYS": "many", "SLUICE_MIGRATE_ON_START": "yes please"}))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`SLUICE_JANITOR_INTERVAL: want a duration such as 250ms, 30s, 5m or 7d (at least 1m), got "soon"`, `SLUICE_MEMORY_MAX_KEYS: want an integer ≥ 1, got "many"`, `SLUICE_MIGRATE_ON_START: want true or false, got "yes please"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%s", want, err)
		}
	}
}

func TestPostgresNeedsURL(t *testing.T) {
	_, _, err := Load("", envOf(map[string]string{"SLUICE_STORE": "postgres"}))
	if err == nil || !strings.Contains(err.Error(), "postgres.url: required when store is postgres (set it, or SLUICE_POSTGRES_URL)") {
		t.Fatalf("got %v", err)
	}
}

// postgres.lanes: 0 picks min(DefaultLanes, max_conns); an explicit count must fit in the pool.
func TestPostgresLanes(t *testing.T) {
	for _, c := range []struct{ lanes, maxConns, want int }{
		{0, 16, DefaultLanes}, {0, 2, 2}, {0, 1, 1}, {8, 16, 8}, {16, 16, 16},
	} {
		if got := (PostgresConfig{Lanes: c.lanes, MaxConns: c.maxConns}).lanes(); got != c.want {
			t.Errorf("lanes %d, max_conns %d: %d lanes, want %d", c.lanes, c.maxConns, got, c.want)
		}
	}
	cfg, _, err := Load("", envOf(map[string]string{"SLUICE_POSTGRES_LANES": "8"}))
	if err != nil || cfg.Postgres.Lanes != 8 {
		t.Fatalf("SLUICE_POSTGRES_LANES=8: lanes %d, err %v", cfg.Postgres.Lanes, err)
	}
	for _, v := range []string{"17", "-1"} {
		_, _, err := Load("", envOf(map[string]string{"SLUICE_POSTGRES_LANES": v}))
		if want := `SLUICE_POSTGRES_LANES="` + v + `": must be 0 (automatic: min(4, max_conns)) to max_conns (16), got ` + v; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SLUICE_POSTGRES_LANES=%s: %v", v, err)
		}
	}
}
