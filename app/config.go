package app

import (
	"time"
)

// Config is sluice's whole configuration: one YAML file (SLUICE_CONFIG) with SLUICE_* environment overrides. The
// YAML names below are part of the contract: the Helm chart, the README and docs/operator.md use them. Unknown
// YAML keys and unknown SLUICE_* variables are errors, so a typo never falls back to a default.
//
// The struct tags are the one table of settings; load.go and settings.go derive everything else from them:
//   - yaml:"name" names the setting in the file; its path is the chain of names ("postgres.janitor_interval").
//   - Every setting that is not inside a list (tokens, policies) can also be set by an environment variable
//     named after its path: SLUICE_ + the path upper-cased, dots as underscores (SLUICE_POSTGRES_JANITOR_INTERVAL).
//   - alias:"NAME[,NAME]" keeps older variable names working (alias:"SLUICE_DATABASE_URL" on postgres.url);
//     setting a name and its alias to different values is an error.
//   - range:"MIN..MAX" (either side may be empty) bounds an integer or a duration; oneof:"a b c" lists a string's
//     valid values; signed:"true" lets a duration be negative; secret:"true" keeps a value out of every message.
//
// The same parser reads a value from YAML and from the environment, and the same checks run on it, so a message
// names the setting as the user wrote it (a YAML path with its line, or a variable) with its valid values.
// Adding a setting is one field with these tags (and its default in Defaults, and a line in the README table);
// checks that involve two settings, or the domain, go in validate (load.go). Supported field types: string,
// bool, the integer types, float64, Duration, []string (a YAML list, or a comma-separated variable), a nested
// struct of settings, and a slice of structs (YAML only).
type Config struct {
	// Listen is host:port for the HTTP API. Without tokens it must be a loopback address (except in the ratelimit
	// drop-in, whose HTTP listener serves only the probe and metrics routes).
	Listen string `yaml:"listen"`
	// Store selects the BucketStore adapter: "memory" (one replica), "postgres" or "redis" (any number); the
	// drivers are the table in stores.go (TestStoreDriversMatchTheSetting keeps oneof equal to it).
	Store    string         `yaml:"store" oneof:"memory postgres redis"`
	Memory   MemoryConfig   `yaml:"memory"`
	Postgres PostgresConfig `yaml:"postgres"`
	Redis    RedisConfig    `yaml:"redis"`
	Log      LogConfig      `yaml:"log"`
	HTTP     HTTPConfig     `yaml:"http"`
	// Tokens are bearer tokens with roles. TokensFile adds tokens from a YAML file holding a list of the same
	// shape, for Kubernetes secrets.
	Tokens     []TokenConfig `yaml:"tokens"`
	TokensFile string        `yaml:"tokens_file"`
	// Policies are read-only policies; policies created over the API live in the store.
	Policies []PolicyConfig `yaml:"policies"`
	// ClockOffset shifts this process's clock. Test-only: it exists so the multi-replica test can skew replicas
	// and show that the Postgres store decides with the database clock.
	ClockOffset Duration `yaml:"clock_offset" signed:"true"`
	// RLS is the Envoy Rate Limit Service front end (app/rls.go), off unless rls.listen is set.
	RLS RLSConfig `yaml:"rls"`
	// Metrics holds the optional metric families (MetricsConfig).
	Metrics MetricsConfig `yaml:"metrics"`
	// Tracing holds the trace settings that are sluice's own (TracingConfig); whether traces are exported, and
	// where, is the standard OTEL_* variables' business (tracing.go).
	Tracing TracingConfig `yaml:"tracing"`
	// ReloadInterval is how often the config file and the tokens file are read again (SLUICE_RELOAD_INTERVAL,
	// default 10s, 0 = only on SIGHUP): a change reloads policies, tokens and the log level (reload.go).
	ReloadInterval Duration `yaml:"reload_interval" range:"0s.."`

	// source is the config file Load read (empty: none), which a reload reads again.
	source string
	// ratelimit is set by LoadRatelimit (the `ratelimit` drop-in, ratelimit.go): the settings came from
	// envoyproxy/ratelimit's variables too (a reload translates them again), and the HTTP listener serves only the
	// probe and metrics routes (probesOnly), so it needs no tokens beyond loopback.
	ratelimit bool
	// traces is what the OTEL_* variables said about trace export when the configuration was loaded (tracing.go).
	traces traceEnv
	// metricsListen and metricsPath (the drop-in's USE_PROMETHEUS, PROMETHEUS_ADDR, PROMETHEUS_PATH): when set,
	// /metrics is served on a listener of its own too, at that path.
	metricsListen, metricsPath string
}

// MemoryConfig configures the in-memory store.
type MemoryConfig struct {
	// MaxKeys bounds live (policy, key) pairs. When full of live keys, a new key's check fails with a store error
	// handled by the policy's failure_mode; a live key is never evicted.
	MaxKeys int `yaml:"max_keys" range:"1.."`
}

// PostgresConfig configures the Postgres store.
type PostgresConfig struct {
	// URL is a postgres:// URL or a key=value connection string, checked with pgx's parser at load time.
	URL      string `yaml:"url" alias:"SLUICE_DATABASE_URL" secret:"true"`
	MaxConns int    `yaml:"max_conns" range:"1..1000"`
	// Lanes is how many calls a replica keeps in flight for checks: the coalescer's lanes, each sending the
	// checks that arrived meanwhile as one batch. 0 (the default) means min(DefaultLanes, max_conns). Fewer lanes
	// make bigger batches (fewer round trips and commits per check); more lanes use more of a database with many
	// cores. Its bound depends on max_conns, so validate checks it.
	Lanes            int      `yaml:"lanes"`
	StatementTimeout Duration `yaml:"statement_timeout" range:"1ms..1m"`
	JanitorInterval  Duration `yaml:"janitor_interval" range:"1m.." alias:"SLUICE_JANITOR_INTERVAL"`
	MigrateOnStart   bool     `yaml:"migrate_on_start" alias:"SLUICE_MIGRATE_ON_START"`
}

// RedisConfig configures the Redis store (store: redis; see adapters/redis and docs/operator.md).
type RedisConfig struct {
	// Addrs are host:port seeds (SLUICE_REDIS_ADDRS, comma-separated): one Redis, any nodes of a Redis Cluster (the
	// client asks them whether they are one), or the Sentinels when master_set is set.
	Addrs    []string `yaml:"addrs"`
	Username string   `yaml:"username"`               // SLUICE_REDIS_USERNAME (ACL user; empty: default)
	Password string   `yaml:"password" secret:"true"` // SLUICE_REDIS_PASSWORD (the chart reads it from a Secret)
	// TLS (SLUICE_REDIS_TLS) connects with TLS, verifying the server with the system's roots. Setting any of
	// TLSCAFile, TLSCertFile and TLSKeyFile implies TLS (redis.tls may stay false). TLSCAFile (PEM) replaces the
	// system's roots; TLSCertFile and TLSKeyFile (PEM, both or neither) are the client certificate that managed
	// Redis services ask for. The files are read at start-up (a restart takes rotated files).
	TLS         bool   `yaml:"tls"`
	TLSCAFile   string `yaml:"tls_ca_file"`   // SLUICE_REDIS_TLS_CA_FILE
	TLSCertFile string `yaml:"tls_cert_file"` // SLUICE_REDIS_TLS_CERT_FILE
	TLSKeyFile  string `yaml:"tls_key_file"`  // SLUICE_REDIS_TLS_KEY_FILE
	// MasterSet (SLUICE_REDIS_MASTER_SET) names the Sentinel master set: addrs are then Sentinels.
	MasterSet string `yaml:"master_set"`
	// Prefix (SLUICE_REDIS_PREFIX) is put in every key, so several deployments can share one Redis.
	Prefix  string   `yaml:"prefix"`
	Timeout Duration `yaml:"timeout" range:"1ms..1m"` // SLUICE_REDIS_TIMEOUT: bound of one decision call
	// WaitReplicas (SLUICE_REDIS_WAIT_REPLICAS): when > 0, a decision that recorded units waits (Redis WAIT) for
	// that many replicas to acknowledge it, at most wait_timeout. It narrows what a failover loses; replication
	// stays asynchronous (docs/reliability.md).
	WaitReplicas int      `yaml:"wait_replicas" range:"0..16"`
	WaitTimeout  Duration `yaml:"wait_timeout" range:"1ms..10s"` // SLUICE_REDIS_WAIT_TIMEOUT
	// PolicyRefresh (SLUICE_REDIS_POLICY_REFRESH) is how often a replica re-reads its copy of the API policies
	// (listings, failure_mode; decisions use the policy in Redis) and checks the policies' epoch for data loss.
	PolicyRefresh Duration `yaml:"policy_refresh" range:"10ms..1m"`
	// Lanes (SLUICE_REDIS_LANES) is how many script calls a replica keeps in flight for checks on a single Redis
	// or a Sentinel-managed one: the coalescer's lanes, each sending the checks that arrived meanwhile as one
	// script call. 0 (the default) means DefaultRedisLanes there; on a Redis Cluster checks are never laned (a
	// script runs on one slot), each is its own call and the client pipelines them.
	Lanes int `yaml:"lanes" range:"0..256"`
}

// MetricsConfig configures the optional metric families.
type MetricsConfig struct {
	// TopDeniedKeys (SLUICE_METRICS_TOP_DENIED_KEYS) exports sluice_top_denied_keys{policy, key}: each policy's
	// n keys with the most denials (0, the default: off; at most 64). Keys are unbounded; these series are not.
	TopDeniedKeys int `yaml:"top_denied_keys" range:"0..64"`
	// KeyLabel (SLUICE_METRICS_KEY_LABEL) is what that metric's key label holds: hash (default: the first 16
	// hex digits of the key's SHA-256, the same on every replica) or truncate (the key's first 32 bytes).
	KeyLabel string `yaml:"key_label" oneof:"hash truncate"`
}

// TracingConfig configures the spans sluice exports when tracing is on (OTEL_TRACES_EXPORTER=otlp, see tracing.go).
type TracingConfig struct {
	// KeyHash (SLUICE_TRACING_KEY_HASH) adds sluice.key_hash to the store spans: the first 16 hex digits of the
	// key's SHA-256, as metrics.key_label: hash writes it. Off by default: spans carry no trace of the key.
	KeyHash bool `yaml:"key_hash"`
}

// LogConfig configures log/slog output.
type LogConfig struct {
	Level  string `yaml:"level" oneof:"debug info warn error"`
	Format string `yaml:"format" oneof:"text json"`
}

// HTTPConfig holds the server's limits and timeouts.
type HTTPConfig struct {
	MaxBodyBytes      int64    `yaml:"max_body_bytes" range:"1024..16777216"`
	ReadHeaderTimeout Duration `yaml:"read_header_timeout" range:"1ms..10m"`
	ReadTimeout       Duration `yaml:"read_timeout" range:"1ms..10m"`
	IdleTimeout       Duration `yaml:"idle_timeout" range:"1ms..10m"`
	// DrainTimeout bounds graceful shutdown after SIGTERM.
	DrainTimeout Duration `yaml:"drain_timeout" range:"1ms..10m" alias:"SLUICE_DRAIN_TIMEOUT"`
	// TLS makes the listener speak HTTPS (app/tls.go): off unless cert_file and key_file are set.
	TLS HTTPTLS `yaml:"tls"`
}

// HTTPTLS names PEM files for the HTTP listener: cert_file and key_file (both or neither) for HTTPS, and
// client_ca_file to require and verify client certificates (mTLS; bearer tokens are still required off loopback).
// The files are read again when they change, so a certificate rotated in place is served without a restart.
type HTTPTLS struct {
	CertFile     string `yaml:"cert_file"`      // SLUICE_HTTP_TLS_CERT_FILE: the certificate chain, leaf first
	KeyFile      string `yaml:"key_file"`       // SLUICE_HTTP_TLS_KEY_FILE
	ClientCAFile string `yaml:"client_ca_file"` // SLUICE_HTTP_TLS_CLIENT_CA_FILE
}

// TokenConfig is one bearer token. Role is "check" (check, checks, authorize, peek) or "admin" (everything).
// Name labels the token in logs; the secret is never shown.
type TokenConfig struct {
	Name  string `yaml:"name"`
	Token string `yaml:"token" secret:"true"`
	Role  string `yaml:"role" oneof:"check admin"`
}

// PolicyConfig is a policy as written in the config file. domain.Policy's validation checks its values (the
// valid algorithms are domain.Algorithms).
type PolicyConfig struct {
	Name      string   `yaml:"name"`
	Limit     int64    `yaml:"limit"`
	Window    Duration `yaml:"window"`
	Algorithm string   `yaml:"algorithm"`
	// Resolution is sliding_window's bucket width (default window/60); other algorithms have none.
	Resolution Duration `yaml:"resolution"`
	// Period counts per calendar period (day, week or month) instead of a window: fixed_window only (the
	// default algorithm then), with TimeZone (an IANA name, default UTC) and Anchor (RFC 3339, whole seconds;
	// default midnight of Monday 2001-01-01 in the zone). Give a window or a period, not both.
	Period      string `yaml:"period"`
	TimeZone    string `yaml:"time_zone"`
	Anchor      string `yaml:"anchor"`
	FailureMode string `yaml:"failure_mode"`
	Shadow      bool   `yaml:"shadow"`
	// Overrides give some keys another limit (and, on the memory store, window): an exact key, or a prefix
	// followed by "*"; the exact one first, then the longest prefix (domain/override.go).
	Overrides []OverrideConfig `yaml:"overrides"`
}

// OverrideConfig is one override of a config policy.
type OverrideConfig struct {
	Match  string   `yaml:"match"`
	Limit  int64    `yaml:"limit"`
	Window Duration `yaml:"window"`
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
		Redis: RedisConfig{
			Timeout:       Duration(250 * time.Millisecond),
			WaitTimeout:   Duration(50 * time.Millisecond),
			PolicyRefresh: Duration(time.Second),
		},
		Log: LogConfig{Level: "info", Format: "text"},
		HTTP: HTTPConfig{
			MaxBodyBytes:      64 << 10,
			ReadHeaderTimeout: Duration(5 * time.Second),
			ReadTimeout:       Duration(10 * time.Second),
			IdleTimeout:       Duration(120 * time.Second),
			DrainTimeout:      Duration(20 * time.Second),
		},
		RLS:            rlsDefaults(),
		ReloadInterval: Duration(10 * time.Second),
		Metrics:        MetricsConfig{KeyLabel: "hash"},
	}
}
