package app

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for configuration: any file and any SLUICE_* value either loads into a configuration that passes
// validation, or fails with Problems (one line per problem, each naming a setting); never a panic, never another
// error type. Seeds: testdata/fuzz and the f.Add calls; scripts/test.d/25-fuzz.sh fuzzes each briefly.

func fuzzSeeds(f *testing.F) {
	f.Helper()
	sample, err := os.ReadFile("../config/sluice.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		string(sample),
		"",
		"listen: 0.0.0.0:8080\ntokens: [{name: a, token: 0123456789abcdef, role: admin}]\n",
		"store: postgress\n",
		"store: postgres\npostgres: {url: 'postgres://u:p@h/db', statement_timeout: 200ms, janitor_interval: 1m}\n",
		"policies: [{name: a, limit: 1, window: 1s}, {name: a, limit: 0, window: 0s, algorithm: x, failure_mode: y}]\n",
		"http: {max_body_bytes: 1023, read_header_timeout: -1s, idle_timeout: 11m}\n",
		"clock_offset: -3m\n",
		"policies:\n  - name: x\n    window: 366d2562047h\n",
		"log: [1, 2]\n",
		"- a\n- b\n",
		"a: &a [*a]\n",
		"tokens_file: /nonexistent\n",
		"memory: {max_keys: -1}\n---\nstore: x\n",
	} {
		f.Add([]byte(s), "SLUICE_STORE", "memory")
	}
	f.Add([]byte(""), "SLUICE_POSTGRES_STATEMENT_TIMEOUT", "366d2562047h")
	f.Add([]byte(""), "SLUICE_HTTP_MAX_BODY_BYTES", "99999999999999999999")
	f.Add([]byte(""), "SLUICE_MIGRATE_ON_START", "maybe")
	f.Add([]byte(""), "SLUICE_CLOCK_OFFSET", "--5m")
	f.Add([]byte(""), "SLUICE_LISTEN", "[::1]:0")
	f.Add([]byte(""), "SLUICE_POSTGRES_URL", "host=x port=notaport password=p")
	f.Add([]byte(""), "SLUICE_STOR", "postgres")
	f.Add([]byte(""), "SLUICE_PORT", "tcp://10.0.0.1:8080")
	f.Add([]byte("policies:\n  - &p {name: a, limit: 2.9, window: -1m}\n  - <<: *p\n    name: b\n    name: c\n"), "SLUICE_MEMORY_MAX_KEYS", "1.5")
	f.Add([]byte("tokens: [{token: '                '}, {name: a, token: 0123456789abcdef, role: check}, {name: a}]\n"), "SLUICE_DRAIN_TIMEOUT", "5s")
}

func FuzzLoad(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, yaml []byte, envName, envValue string) {
		if len(yaml) > 64<<10 {
			return
		}
		path := filepath.Join(t.TempDir(), "sluice.yaml")
		if err := os.WriteFile(path, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		// One environment variable, chosen by the fuzzer: a setting's, an alias, an unknown SLUICE_* name (refused)
		// or another name (ignored).
		cfg, _, err := Load(path, []string{envName + "=" + envValue})
		checkLoaded(t, cfg, err)
	})
}

// checkLoaded holds for every outcome of Load.
func checkLoaded(t *testing.T, cfg Config, err error) {
	t.Helper()
	if err != nil {
		var probs Problems
		if !errors.As(err, &probs) || len(probs) == 0 {
			t.Fatalf("Load failed with %T %v, want Problems", err, err)
		}
		for _, p := range probs {
			if strings.TrimSpace(p) == "" {
				t.Fatalf("an empty problem in %q", probs)
			}
		}
		return
	}
	// A loaded configuration is one that validation accepts, whatever the path that built it.
	again := &loader{origins: map[string]origin{}, bad: map[string]bool{}, renames: map[string]string{}}
	if again.validate(cfg); len(again.probs) > 0 {
		t.Fatalf("Load accepted a configuration that validate rejects: %q\n%+v", again.probs, cfg)
	}
	if cfg.Store != "memory" && cfg.Store != "postgres" {
		t.Fatalf("store %q accepted", cfg.Store)
	}
	for _, d := range []Duration{cfg.HTTP.ReadHeaderTimeout, cfg.HTTP.ReadTimeout, cfg.HTTP.IdleTimeout, cfg.HTTP.DrainTimeout, cfg.Postgres.StatementTimeout, cfg.Postgres.JanitorInterval} {
		if d <= 0 {
			t.Fatalf("a non-positive timeout was accepted: %+v", cfg)
		}
	}
	for _, p := range cfg.Policies {
		if p.Limit < 1 || time.Duration(p.Window) < time.Second || time.Duration(p.Window) > 31*24*time.Hour {
			t.Fatalf("policy %+v accepted", p)
		}
	}
}

// FuzzDurationRoundTrip: a Duration that reads back from YAML reads back to the same value after MarshalYAML.
func FuzzDurationRoundTrip(f *testing.F) {
	for _, s := range []string{"250ms", "5m", "7d", "-3m", "1d12h30m", "0s", "+1s", "366d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseSignedDuration(s)
		if err != nil {
			return
		}
		if s != "" && !strings.HasPrefix(s, "-") && d < 0 {
			t.Fatalf("%q parsed to a negative duration %s", s, d)
		}
		back, err := parseSignedDuration(Duration(d).String())
		if err != nil || back != d {
			if time.Duration(d).Abs() > 366*24*time.Hour {
				return // more days than the parser reads; FormatDuration writes them all
			}
			t.Fatalf("%q → %s → %q → %s, %v", s, d, Duration(d).String(), back, err)
		}
	})
}
