package app

import (
	"time"
)

// Config is sluice's whole configuration: one YAML file (SLUICE_CONFIG) with SLUICE_* environment overrides for
// the settings an operator sets per deployment. The YAML names below are part of the contract: the Helm chart,
// the README and docs/operator.md use them. Unknown YAML keys are errors, so a typo never falls back to a default.
type Config struct {
	// Listen is host:port for the HTTP API (SLUICE_LISTEN). Without tokens it must be a loopback address.
	Listen string `yaml:"listen"`
	// Store selects the BucketStore adapter (SLUICE_STORE): "memory" (one replica) or "postgres" (any number).
	Store    string         `yaml:"store"`
	Memory   MemoryConfig   `yaml:"memory"`
	Postgres PostgresConfig `yaml:"postgres"`
	Log      LogConfig      `yaml:"log"`
	HTTP     HTTPConfig     `yaml:"http"`
	// Tokens are bearer tokens with roles. TokensFile (SLUICE_TOKENS_FILE) adds tokens from a YAML file holding a
	// list of the same shape, for Kubernetes secrets.
	Tokens     []TokenConfig `yaml:"tokens"`
	TokensFile string        `yaml:"tokens_file"`
	// Policies are read-only policies; policies created over the API live in the store.
	Policies []PolicyConfig `yaml:"policies"`
	// ClockOffset shifts this process's clock (SLUICE_CLOCK_OFFSET). Test-only: it exists so the multi-replica test
	// can skew replicas and show that the Postgres store decides with the database clock.
	ClockOffset Duration `yaml:"clock_offset"`
	// RLS is the Envoy Rate Limit Service front end (app/rls.go), off unless rls.listen is set.
	RLS RLSConfig `yaml:"rls"`
}

// MemoryConfig configures the in-memory store.
type MemoryConfig struct {
	// MaxKeys bounds live (policy, key) pairs (SLUICE_MEMORY_MAX_KEYS). When full of live keys, a new key's check
	// fails with a store error handled by the policy's failure_mode; a live key is never evicted.
	MaxKeys int `yaml:"max_keys"`
}

// PostgresConfig configures the Postgres store.
type PostgresConfig struct {
	URL      string `yaml:"url"`       // SLUICE_DATABASE_URL
	MaxConns int    `yaml:"max_conns"` // SLUICE_POSTGRES_MAX_CONNS
	// Lanes (SLUICE_POSTGRES_LANES) is how many calls a replica keeps in flight for checks: the coalescer's
	// lanes, each sending the checks that arrived meanwhile as one batch. 0 (the default) means
	// min(DefaultLanes, max_conns). Fewer lanes make bigger batches (fewer round trips and commits per check);
	// more lanes use more of a database with many cores.
	Lanes            int      `yaml:"lanes"`
	StatementTimeout Duration `yaml:"statement_timeout"` // SLUICE_POSTGRES_STATEMENT_TIMEOUT
	JanitorInterval  Duration `yaml:"janitor_interval"`  // SLUICE_JANITOR_INTERVAL, default 5m, minimum 1m
	MigrateOnStart   bool     `yaml:"migrate_on_start"`  // SLUICE_MIGRATE_ON_START
}

// LogConfig configures log/slog output.
type LogConfig struct {
	Level  string `yaml:"level"`  // SLUICE_LOG_LEVEL: debug, info, warn, error
	Format string `yaml:"format"` // SLUICE_LOG_FORMAT: text or json
}

// HTTPConfig holds the server's limits and timeouts.
type HTTPConfig struct {
	MaxBodyBytes      int64    `yaml:"max_body_bytes"`      // SLUICE_HTTP_MAX_BODY_BYTES
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"` // SLUICE_HTTP_READ_HEADER_TIMEOUT
	ReadTimeout       Duration `yaml:"read_timeout"`        // SLUICE_HTTP_READ_TIMEOUT
	IdleTimeout       Duration `yaml:"idle_timeout"`        // SLUICE_HTTP_IDLE_TIMEOUT
	// DrainTimeout bounds graceful shutdown after SIGTERM (SLUICE_DRAIN_TIMEOUT).
	DrainTimeout Duration `yaml:"drain_timeout"`
}

// TokenConfig is one bearer token. Role is "check" (check, checks, authorize, peek) or "admin" (everything).
type TokenConfig struct {
	Name  string `yaml:"name"`
	Token string `yaml:"token"`
	Role  string `yaml:"role"`
}

// PolicyConfig is a policy as written in the config file.
type PolicyConfig struct {
	Name        string   `yaml:"name"`
	Limit       int64    `yaml:"limit"`
	Window      Duration `yaml:"window"`
	Algorithm   string   `yaml:"algorithm"`
	FailureMode string   `yaml:"failure_mode"`
	Shadow      bool     `yaml:"shadow"`
}

// Duration is a time.Duration written as a Go duration string ("250ms", "5m") in YAML and environment variables.
// A day suffix is accepted too ("7d"), since windows of days are common.
type Duration time.Duration

// Defaults returns the configuration used when a setting is absent.
func Defaults() Config {
	return Config{
		Listen: "127.0.0.1:8080",
		Store:  "memory",
		Memory: MemoryConfig{MaxKeys: 1_000_000},
		Postgres: PostgresConfig{
			MaxConns:         16,
			StatementTimeout: Duration(250 * time.Millisecond),
			JanitorInterval:  Duration(5 * time.Minute),
			MigrateOnStart:   true,
		},
		Log: LogConfig{Level: "info", Format: "text"},
		HTTP: HTTPConfig{
			MaxBodyBytes:      64 << 10,
			ReadHeaderTimeout: Duration(5 * time.Second),
			ReadTimeout:       Duration(10 * time.Second),
			IdleTimeout:       Duration(120 * time.Second),
			DrainTimeout:      Duration(20 * time.Second),
		},
		RLS: rlsDefaults(),
	}
}
