package app

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-dev/sluice/domain"
)

// UnmarshalYAML reads a duration string ("250ms", "5m", "7d").
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a duration such as 250ms, 30s, 5m or 7d", n.Line)
	}
	v, err := parseSignedDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back in the form it is read.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func (d Duration) String() string {
	if d < 0 {
		return "-" + domain.FormatDuration(-time.Duration(d))
	}
	return domain.FormatDuration(time.Duration(d))
}

// parseSignedDuration is domain.ParseDuration with an optional sign (for the test-only clock offset).
func parseSignedDuration(s string) (time.Duration, error) {
	neg := strings.HasPrefix(s, "-")
	d, err := domain.ParseDuration(strings.TrimLeft(s, "+-"))
	if neg {
		d = -d
	}
	return d, err
}

// Problems lists every configuration problem found, each naming the setting as the user wrote it (a YAML path
// or an environment variable) and the valid values.
type Problems []string

func (p Problems) Error() string {
	return "invalid configuration:\n  - " + strings.Join(p, "\n  - ")
}

// envSetting binds an environment variable to a setting.
type envSetting struct {
	name string // SLUICE_...
	path string // YAML path, for messages
	set  func(c *Config, v string) error
}

func durationSetter(f func(c *Config) *Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := parseSignedDuration(v)
		if err != nil {
			return err
		}
		*f(c) = Duration(d)
		return nil
	}
}

func intSetter(f func(c *Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", v)
		}
		*f(c) = n
		return nil
	}
}

// envSettings is the list of SLUICE_* overrides: the settings an operator sets per deployment. These names are
// part of the contract (the Helm chart and docs use them).
var envSettings = []envSetting{
	{"SLUICE_LISTEN", "listen", func(c *Config, v string) error { c.Listen = v; return nil }},
	{"SLUICE_STORE", "store", func(c *Config, v string) error { c.Store = v; return nil }},
	{"SLUICE_MEMORY_MAX_KEYS", "memory.max_keys", intSetter(func(c *Config) *int { return &c.Memory.MaxKeys })},
	{"SLUICE_DATABASE_URL", "postgres.url", func(c *Config, v string) error { c.Postgres.URL = v; return nil }},
	{"SLUICE_POSTGRES_MAX_CONNS", "postgres.max_conns", intSetter(func(c *Config) *int { return &c.Postgres.MaxConns })},
	{"SLUICE_POSTGRES_LANES", "postgres.lanes", intSetter(func(c *Config) *int { return &c.Postgres.Lanes })},
	{"SLUICE_POSTGRES_STATEMENT_TIMEOUT", "postgres.statement_timeout", durationSetter(func(c *Config) *Duration { return &c.Postgres.StatementTimeout })},
	{"SLUICE_JANITOR_INTERVAL", "postgres.janitor_interval", durationSetter(func(c *Config) *Duration { return &c.Postgres.JanitorInterval })},
	{"SLUICE_MIGRATE_ON_START", "postgres.migrate_on_start", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		c.Postgres.MigrateOnStart = b
		return nil
	}},
	{"SLUICE_LOG_LEVEL", "log.level", func(c *Config, v string) error { c.Log.Level = v; return nil }},
	{"SLUICE_LOG_FORMAT", "log.format", func(c *Config, v string) error { c.Log.Format = v; return nil }},
	{"SLUICE_TOKENS_FILE", "tokens_file", func(c *Config, v string) error { c.TokensFile = v; return nil }},
	{"SLUICE_HTTP_MAX_BODY_BYTES", "http.max_body_bytes", func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", v)
		}
		c.HTTP.MaxBodyBytes = n
		return nil
	}},
	{"SLUICE_HTTP_READ_HEADER_TIMEOUT", "http.read_header_timeout", durationSetter(func(c *Config) *Duration { return &c.HTTP.ReadHeaderTimeout })},
	{"SLUICE_HTTP_READ_TIMEOUT", "http.read_timeout", durationSetter(func(c *Config) *Duration { return &c.HTTP.ReadTimeout })},
	{"SLUICE_HTTP_IDLE_TIMEOUT", "http.idle_timeout", durationSetter(func(c *Config) *Duration { return &c.HTTP.IdleTimeout })},
	{"SLUICE_DRAIN_TIMEOUT", "http.drain_timeout", durationSetter(func(c *Config) *Duration { return &c.HTTP.DrainTimeout })},
	{"SLUICE_CLOCK_OFFSET", "clock_offset", durationSetter(func(c *Config) *Duration { return &c.ClockOffset })},
}

// Load reads the config file at path (none when empty), applies SLUICE_* overrides from env, loads the tokens
// file, and validates everything. The error is Problems listing every problem at once.
func Load(path string, env func(string) (string, bool)) (Config, error) {
	cfg := Defaults()
	var probs Problems
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, Problems{fmt.Sprintf("SLUICE_CONFIG: cannot read %s: %v", path, err)}
		}
		if err := decodeStrict(data, &cfg); err != nil {
			for _, msg := range yamlProblems(err) {
				probs = append(probs, path+": "+msg)
			}
			return cfg, probs
		}
	}
	source := map[string]string{} // YAML path → env var that set it, for messages
	for _, s := range envSettings {
		v, ok := env(s.name)
		if !ok {
			continue
		}
		if err := s.set(&cfg, v); err != nil {
			probs = append(probs, fmt.Sprintf("%s: %v", s.name, err))
			continue
		}
		source[s.path] = s.name + "=" + strconv.Quote(v)
	}
	if cfg.TokensFile != "" {
		toks, err := loadTokens(cfg.TokensFile)
		if err != nil {
			probs = append(probs, err.Error())
		}
		cfg.Tokens = append(cfg.Tokens, toks...)
	}
	probs = append(probs, validate(cfg, source)...)
	if len(probs) > 0 {
		return cfg, probs
	}
	return cfg, nil
}

// OSEnv reads the process environment.
func OSEnv(name string) (string, bool) { return os.LookupEnv(name) }

func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type app\.(\w+)`)

// yamlProblems rewrites yaml's errors in the user's terms: "unknown setting "postgress" (valid: ...)".
func yamlProblems(err error) []string {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if g := unknownField.FindStringSubmatch(m); g != nil {
			line, _, _ := strings.Cut(m, ":")
			m = fmt.Sprintf("%s: unknown setting %q (valid here: %s)", line, g[1], strings.Join(yamlFields(g[2]), ", "))
		}
		out = append(out, strings.TrimPrefix(m, "yaml: "))
	}
	return out
}

// yamlFields lists the YAML names of a config type's fields, for "valid here" hints.
func yamlFields(typeName string) []string {
	types := map[string]reflect.Type{
		"Config": reflect.TypeOf(Config{}), "MemoryConfig": reflect.TypeOf(MemoryConfig{}),
		"PostgresConfig": reflect.TypeOf(PostgresConfig{}), "LogConfig": reflect.TypeOf(LogConfig{}),
		"HTTPConfig": reflect.TypeOf(HTTPConfig{}), "TokenConfig": reflect.TypeOf(TokenConfig{}),
		"PolicyConfig": reflect.TypeOf(PolicyConfig{}),
	}
	t, ok := types[typeName]
	if !ok {
		return nil
	}
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" {
			names = append(names, strings.Split(tag, ",")[0])
		}
	}
	return names
}

func loadTokens(path string) ([]TokenConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens_file: cannot read %s: %v", path, err)
	}
	var toks []TokenConfig
	if err := decodeStrict(data, &toks); err != nil {
		return nil, fmt.Errorf("tokens_file %s: %s (want a YAML list of {name, token, role})", path, strings.Join(yamlProblems(err), "; "))
	}
	return toks, nil
}

// validate checks every setting and returns all problems. source maps a YAML path to the env var that set it.
func validate(c Config, source map[string]string) Problems {
	var p Problems
	name := func(path string) string {
		if s, ok := source[path]; ok {
			return s
		}
		return path
	}
	add := func(path, format string, args ...any) {
		p = append(p, name(path)+": "+fmt.Sprintf(format, args...))
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		add("listen", "want host:port such as 127.0.0.1:8080 or 0.0.0.0:8080, got %q", c.Listen)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		add("listen", "port must be 0-65535, got %q", port)
	}
	switch c.Store {
	case "memory", "postgres":
	default:
		add("store", "must be one of memory, postgres; got %q", c.Store)
	}
	if c.Memory.MaxKeys < 1 {
		add("memory.max_keys", "must be ≥ 1, got %d", c.Memory.MaxKeys)
	}
	if c.Store == "postgres" {
		if c.Postgres.URL == "" {
			add("postgres.url", "required when store is postgres (set SLUICE_DATABASE_URL to postgres://user:pass@host:5432/db)")
		} else if !strings.HasPrefix(c.Postgres.URL, "postgres://") && !strings.HasPrefix(c.Postgres.URL, "postgresql://") && !strings.Contains(c.Postgres.URL, "=") {
			add("postgres.url", "want a postgres:// URL or a key=value connection string")
		}
	}
	if c.Postgres.MaxConns < 1 || c.Postgres.MaxConns > 1000 {
		add("postgres.max_conns", "must be 1 to 1000, got %d", c.Postgres.MaxConns)
	}
	if c.Postgres.Lanes < 0 || (c.Postgres.MaxConns >= 1 && c.Postgres.Lanes > c.Postgres.MaxConns) {
		add("postgres.lanes", "must be 0 (automatic: min(%d, max_conns)) to max_conns (%d), got %d", DefaultLanes, c.Postgres.MaxConns, c.Postgres.Lanes)
	}
	if st := time.Duration(c.Postgres.StatementTimeout); st < time.Millisecond || st > time.Minute {
		add("postgres.statement_timeout", "must be between 1ms and 1m, got %s", c.Postgres.StatementTimeout)
	}
	if ji := time.Duration(c.Postgres.JanitorInterval); ji < time.Minute {
		add("postgres.janitor_interval", "must be at least 1m (default 5m), got %s", c.Postgres.JanitorInterval)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be one of debug, info, warn, error; got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "must be one of text, json; got %q", c.Log.Format)
	}
	if c.HTTP.MaxBodyBytes < 1024 || c.HTTP.MaxBodyBytes > 16<<20 {
		add("http.max_body_bytes", "must be 1024 to 16777216, got %d", c.HTTP.MaxBodyBytes)
	}
	for _, d := range []struct {
		path string
		v    Duration
	}{{"http.read_header_timeout", c.HTTP.ReadHeaderTimeout}, {"http.read_timeout", c.HTTP.ReadTimeout}, {"http.idle_timeout", c.HTTP.IdleTimeout}, {"http.drain_timeout", c.HTTP.DrainTimeout}} {
		if d.v <= 0 || time.Duration(d.v) > 10*time.Minute {
			add(d.path, "must be between 1ms and 10m, got %s", d.v)
		}
	}
	seenTok := map[string]bool{}
	for i, t := range c.Tokens {
		at := fmt.Sprintf("tokens[%d]", i)
		if t.Role != "check" && t.Role != "admin" {
			add(at+".role", "must be one of check, admin; got %q", t.Role)
		}
		if len(t.Token) < 16 {
			add(at+".token", "must be at least 16 characters (use a random secret)")
		}
		if seenTok[t.Token] && t.Token != "" {
			add(at+".token", "the same secret appears twice")
		}
		seenTok[t.Token] = true
	}
	if len(c.Tokens) == 0 && err == nil && !isLoopback(host) {
		add("listen", "%q is not a loopback address and no tokens are configured: set tokens or tokens_file (SLUICE_TOKENS_FILE), or listen on 127.0.0.1", c.Listen)
	}
	validateRLS(c, add)
	policies := make([]domain.Policy, len(c.Policies))
	for i, pc := range c.Policies {
		policies[i] = pc.domain()
	}
	if _, err := domain.ConfigPolicies(policies); err != nil {
		var ve *domain.ValidationError
		if errors.As(err, &ve) {
			for _, f := range ve.Fields {
				p = append(p, f.Field+": "+f.Detail)
			}
		}
	}
	return p
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// domain converts a config policy.
func (pc PolicyConfig) domain() domain.Policy {
	return domain.Policy{
		Name:        pc.Name,
		Limit:       pc.Limit,
		Window:      time.Duration(pc.Window),
		Algorithm:   domain.Algorithm(pc.Algorithm),
		FailureMode: domain.FailureMode(pc.FailureMode),
		Shadow:      pc.Shadow,
		Source:      domain.SourceConfig,
	}
}
