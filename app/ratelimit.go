package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// The ratelimit drop-in: the sluice binary started as `ratelimit` (argv[0]'s base name, e.g. the image's
// /bin/ratelimit, which Envoy Gateway runs) with no arguments serves with envoyproxy/ratelimit's environment
// variables instead of a sluice config. ratelimitVars is the one table of those variables: each becomes a SLUICE_*
// variable that Load reads as if the operator had set it (so every rule and message of Load holds, the message
// naming the original variable), or is ignored with the reason (a start-up warning when it is set to something
// sluice does not do), or refused with the reason (a start-up error) when ignoring it would change what the
// operator asked for. docs/envoy.md shows the same table (TestRatelimitVarsDocumented).
//
// In this mode the HTTP listener (HOST:PORT, default 0.0.0.0:8080) serves only GET /healthcheck (envoyproxy/
// ratelimit's probe) and sluice's public probe and metrics routes (probesOnly in wire.go), never the check or
// admin API, so it needs no bearer tokens on a non-loopback address.

// ratelimitVar is one of envoyproxy/ratelimit's variables.
type ratelimitVar struct {
	name string
	def  string // envoyproxy/ratelimit's default, used when the variable is unset or empty ("" when none)
	// apply turns the value (or the default) into SLUICE_* variables, warnings or problems; it is not called when
	// both are empty.
	apply func(t *ratelimitEnv, name, v string)
}

// ratelimitVars lists envoyproxy/ratelimit's variables (src/settings/settings.go) with what sluice makes of them.
// Variables that look like its settings but are not listed draw a warning (ratelimitLooking).
var ratelimitVars = []ratelimitVar{
	// Listeners.
	{name: "HOST", def: "0.0.0.0", apply: consumedBy("PORT")},
	{name: "PORT", def: "8080", apply: func(t *ratelimitEnv, _, v string) {
		t.set("SLUICE_LISTEN", net.JoinHostPort(t.get("HOST"), v), "HOST:PORT", t.given("HOST") || t.given("PORT"), false)
	}},
	{name: "GRPC_HOST", def: "0.0.0.0", apply: consumedBy("GRPC_PORT")},
	{name: "GRPC_PORT", def: "8081", apply: func(t *ratelimitEnv, _, v string) {
		t.set("SLUICE_RLS_LISTEN", net.JoinHostPort(t.get("GRPC_HOST"), v), "GRPC_HOST:GRPC_PORT", t.given("GRPC_HOST") || t.given("GRPC_PORT"), false)
	}},
	{name: "GRPC_UDS", apply: refused("sluice's RLS listener is TCP, on GRPC_HOST:GRPC_PORT")},
	{name: "DEBUG_HOST", apply: ignored("sluice has no debug listener (its metrics are at /metrics on HOST:PORT)")},
	{name: "DEBUG_PORT", apply: ignored("sluice has no debug listener (its metrics are at /metrics on HOST:PORT)")},
	{name: "GRPC_MAX_CONNECTION_AGE", apply: ignored("sluice recycles RLS connections after a fixed hour, with a minute of grace (adapters/envoyrls/server.go)")},
	{name: "GRPC_MAX_CONNECTION_AGE_GRACE", apply: ignored("sluice recycles RLS connections after a fixed hour, with a minute of grace (adapters/envoyrls/server.go)")},

	// TLS of the RLS listener: as envoyproxy/ratelimit, the files count only with GRPC_SERVER_USE_TLS=true.
	{name: "GRPC_SERVER_USE_TLS", def: "false", apply: boolean(nil)},
	{name: "GRPC_SERVER_TLS_CERT", apply: when("GRPC_SERVER_USE_TLS", "SLUICE_RLS_TLS_CERT_FILE")},
	{name: "GRPC_SERVER_TLS_KEY", apply: when("GRPC_SERVER_USE_TLS", "SLUICE_RLS_TLS_KEY_FILE")},
	{name: "GRPC_CLIENT_TLS_CACERT", apply: clientCA},
	{name: "GRPC_SERVER_TLS_CA_CERT", apply: clientCA}, // the name Envoy Gateway sets
	{name: "GRPC_CLIENT_TLS_SAN", apply: refused("sluice verifies a client certificate by its CA only, not by a SAN: unset it")},

	// Logging.
	{name: "LOG_LEVEL", apply: func(t *ratelimitEnv, name, v string) {
		lv := strings.ToLower(v)
		switch lv {
		case "trace":
			lv = "debug"
		case "warning":
			lv = "warn"
		case "fatal", "panic":
			lv = "error"
		}
		t.set("SLUICE_LOG_LEVEL", lv, name, true, false)
	}},
	{name: "LOG_FORMAT", apply: func(t *ratelimitEnv, name, v string) {
		t.set("SLUICE_LOG_FORMAT", strings.ToLower(v), name, true, false)
	}},

	// Where the rules come from.
	{name: "CONFIG_TYPE", def: "FILE", apply: func(t *ratelimitEnv, name, v string) {
		if v != "FILE" && v != "GRPC_XDS_SOTW" {
			t.fail("%s=%q: sluice takes FILE (the files under RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY) or GRPC_XDS_SOTW (pushed by an xDS management server)", name, v)
		}
	}},
	{name: "RUNTIME_ROOT", def: "/srv/runtime_data/current", apply: consumedBy("RUNTIME_APPDIRECTORY")},
	{name: "RUNTIME_SUBDIRECTORY", apply: consumedBy("RUNTIME_APPDIRECTORY")},
	{name: "RUNTIME_APPDIRECTORY", def: "config", apply: func(t *ratelimitEnv, _, v string) {
		if t.mode() != "FILE" {
			return // unused with xDS, as in envoyproxy/ratelimit (Envoy Gateway sets them anyway)
		}
		dir := path.Join(t.get("RUNTIME_ROOT"), t.get("RUNTIME_SUBDIRECTORY"), v)
		t.set("SLUICE_RLS_CONFIG_DIR", dir, "RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY", true, false)
	}},
	{name: "RUNTIME_IGNOREDOTFILES", apply: ignoredUnless("true", "sluice always skips files whose names start with '.'")},
	{name: "RUNTIME_WATCH_ROOT", apply: quiet}, // sluice reads the directory again every rls.reload_interval
	{name: "FORCE_START_WITHOUT_INITIAL_CONFIG", apply: ignoredUnless("true", "sluice serves before the first xDS version arrives (every descriptor is then unlimited), as with true")},
	{name: "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED", apply: refusedUnless("false", "sluice's /healthcheck does not wait for a config")},
	{name: "MERGE_DOMAIN_CONFIG", apply: refusedUnless("false", "sluice refuses a domain defined twice")},
	{name: "CONFIG_GRPC_XDS_NODE_ID", def: "default", apply: xds("SLUICE_RLS_XDS_NODE_ID")},
	{name: "CONFIG_GRPC_XDS_SERVER_URL", def: "localhost:18000", apply: xds("SLUICE_RLS_XDS_SERVER")},
	{name: "CONFIG_GRPC_XDS_NODE_METADATA", apply: refused("sluice's xDS node carries no metadata")},
	{name: "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS", apply: refused("sluice's xDS client sends no extra headers")},
	{name: "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL", apply: ignored("sluice's xDS client retries with its own backoff")},
	{name: "CONFIG_GRPC_XDS_SERVER_USE_TLS", def: "false", apply: boolean(func(t *ratelimitEnv, name string, on bool) {
		if on && t.mode() == "GRPC_XDS_SOTW" && !t.given("CONFIG_GRPC_XDS_SERVER_TLS_CACERT") {
			t.fail("%s=true without CONFIG_GRPC_XDS_SERVER_TLS_CACERT: sluice verifies the xDS server with a CA file; set it", name)
		}
	})},
	{name: "CONFIG_GRPC_XDS_SERVER_TLS_CACERT", apply: xdsTLS("SLUICE_RLS_XDS_CA_FILE")},
	{name: "CONFIG_GRPC_XDS_CLIENT_TLS_CERT", apply: xdsTLS("SLUICE_RLS_XDS_CERT_FILE")},
	{name: "CONFIG_GRPC_XDS_CLIENT_TLS_KEY", apply: xdsTLS("SLUICE_RLS_XDS_KEY_FILE")},
	{name: "CONFIG_GRPC_XDS_SERVER_TLS_SAN", apply: xdsTLS("SLUICE_RLS_XDS_SERVER_NAME")},
	{name: "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", apply: ignored("sluice's xDS client retries with its own backoff")},
	{name: "XDS_CLIENT_BACKOFF_MAX_INTERVAL", apply: ignored("sluice's xDS client retries with its own backoff")},
	{name: "XDS_CLIENT_BACKOFF_RANDOM_FACTOR", apply: ignored("sluice's xDS client retries with its own backoff")},
	{name: "XDS_CLIENT_BACKOFF_JITTER", apply: ignored("sluice's xDS client retries with its own backoff")},
	{name: "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES", apply: ignored("sluice's xDS client keeps gRPC's message size limit")},

	// Decisions.
	{name: "SHADOW_MODE", apply: boolSetting("SLUICE_RLS_SHADOW")},
	{name: "LIMIT_RESPONSE_HEADERS_ENABLED", apply: boolSetting("SLUICE_RLS_RESPONSE_HEADERS")},
	{name: "LIMIT_LIMIT_HEADER", apply: ignored("sluice's response headers are RateLimit-Policy, RateLimit and Retry-After")},
	{name: "LIMIT_REMAINING_HEADER", apply: ignored("sluice's response headers are RateLimit-Policy, RateLimit and Retry-After")},
	{name: "LIMIT_RESET_HEADER", apply: ignored("sluice's response headers are RateLimit-Policy, RateLimit and Retry-After")},
	{name: "QUOTA_MODE", apply: refusedUnless("false", "sluice has no quota mode")},
	{name: "RESPONSE_DYNAMIC_METADATA", apply: ignoredUnless("false", "sluice adds no dynamic metadata to its answers")},
	{name: "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT", apply: ignoredUnless("true", "sluice never counts a denied request, as with true")},
	{name: "LOCAL_CACHE_SIZE_IN_BYTES", apply: func(t *ratelimitEnv, name, v string) {
		if v != "0" {
			ignored("sluice has no over-limit cache: every check goes to the store")(t, name, v)
		}
	}},
	{name: "NEAR_LIMIT_RATIO", apply: ignored("sluice has no near-limit statistics")},
	{name: "EXPIRATION_JITTER_MAX_SECONDS", apply: ignored("sluice's keys expire with their window")},

	// The store: Redis when REDIS_URL is set, else this process's memory.
	{name: "BACKEND_TYPE", def: "redis", apply: func(t *ratelimitEnv, name, v string) {
		if v != "redis" {
			t.fail("%s=%q: sluice's shared store here is redis (REDIS_URL); unset it or set it to redis", name, v)
		}
	}},
	{name: "REDIS_URL", apply: redisURL},
	{name: "REDIS_SOCKET_TYPE", def: "unix", apply: consumedBy("REDIS_URL")},
	{name: "REDIS_TYPE", def: "SINGLE", apply: consumedBy("REDIS_URL")},
	{name: "REDIS_AUTH", apply: func(t *ratelimitEnv, name, v string) {
		user, pass, ok := strings.Cut(v, ":")
		if !ok {
			user, pass = "", v
		}
		if user != "" {
			t.set("SLUICE_REDIS_USERNAME", user, name, true, true)
		}
		t.set("SLUICE_REDIS_PASSWORD", pass, name, true, true)
	}},
	{name: "REDIS_TLS", apply: boolSetting("SLUICE_REDIS_TLS")},
	// As envoyproxy/ratelimit, the files count only with REDIS_TLS=true (Envoy Gateway's CertificateRef).
	{name: "REDIS_TLS_CLIENT_CERT", apply: when("REDIS_TLS", "SLUICE_REDIS_TLS_CERT_FILE")},
	{name: "REDIS_TLS_CLIENT_KEY", apply: when("REDIS_TLS", "SLUICE_REDIS_TLS_KEY_FILE")},
	{name: "REDIS_TLS_CACERT", apply: when("REDIS_TLS", "SLUICE_REDIS_TLS_CA_FILE")},
	{name: "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION", apply: refusedUnless("false", "sluice always verifies Redis's name")},
	{name: "REDIS_SENTINEL_AUTH", apply: refused("sluice authenticates to Sentinels with REDIS_AUTH's credentials only")},
	{name: "REDIS_TIMEOUT", apply: copyTo("SLUICE_REDIS_TIMEOUT", false)},
	{name: "CACHE_KEY_PREFIX", apply: copyTo("SLUICE_REDIS_PREFIX", false)},
	{name: "REDIS_POOL_SIZE", apply: ignored("sluice sizes its Redis connections itself (redis.lanes)")},
	{name: "REDIS_PIPELINE_WINDOW", apply: ignored("sluice batches the checks that arrive meanwhile itself (redis.lanes)")},
	{name: "REDIS_PIPELINE_LIMIT", apply: ignored("sluice batches the checks that arrive meanwhile itself (redis.lanes)")},
	{name: "REDIS_CLUSTER_PIPELINE_PARALLELISM", apply: ignored("sluice's cluster client pipelines by itself")},
	{name: "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION", apply: ignored("sluice's readiness asks Redis itself")},
	{name: "REDIS_POOL_ON_EMPTY_BEHAVIOR", apply: ignored("sluice sizes its Redis connections itself")},
	{name: "REDIS_POOL_ON_EMPTY_WAIT_DURATION", apply: ignored("sluice sizes its Redis connections itself")},
	{name: "REDIS_STARTUP_INITIAL_INTERVAL", apply: ignored("sluice's start-up waits up to 10s for Redis, then fails (and Kubernetes restarts it)")},
	{name: "REDIS_STARTUP_MAX_INTERVAL", apply: ignored("sluice's start-up waits up to 10s for Redis, then fails (and Kubernetes restarts it)")},
	{name: "REDIS_STARTUP_MAX_ELAPSED_TIME", apply: ignored("sluice's start-up waits up to 10s for Redis, then fails (and Kubernetes restarts it)")},
	{name: "REDIS_PERSECOND", apply: refusedUnless("false", "sluice keeps every limit in one store")},

	// Statistics and tracing: sluice's metrics are Prometheus's, at /metrics on HOST:PORT.
	{name: "USE_STATSD", apply: ignoredUnless("false", "sluice has no statsd output: its metrics are at /metrics on HOST:PORT")},
	{name: "STATSD_HOST", apply: ignored("sluice has no statsd output")},
	{name: "STATSD_PORT", apply: ignored("sluice has no statsd output")},
	{name: "USE_DOG_STATSD", apply: ignoredUnless("false", "sluice has no statsd output")},
	{name: "USE_DOG_STATSD_MOGRIFIERS", apply: ignored("sluice has no statsd output")},
	{name: "EXTRA_TAGS", apply: ignored("sluice has no statsd output")},
	{name: "STATS_FLUSH_INTERVAL", apply: ignored("sluice has no statsd output")},
	{name: "DISABLE_STATS", apply: ignoredUnless("false", "sluice's metrics are always at /metrics on HOST:PORT")},
	{name: "USE_PROMETHEUS", def: "false", apply: boolean(usePrometheus)},
	{name: "PROMETHEUS_ADDR", def: ":9090", apply: consumedBy("USE_PROMETHEUS")},
	{name: "PROMETHEUS_PATH", def: "/metrics", apply: consumedBy("USE_PROMETHEUS")},
	{name: "PROMETHEUS_MAPPER_YAML", apply: ignored("sluice's metrics keep their own names (sluice_*)")},
	{name: "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS", apply: ignored("sluice's durations are in seconds")},
	// Tracing: envoyproxy/ratelimit's switch and protocol become the OTEL_* variables sluice reads (tracing.go); the
	// endpoint is OTEL_EXPORTER_OTLP_ENDPOINT in both, and the OTEL_* variables sluice honours pass as they are.
	{name: "TRACING_ENABLED", apply: boolean(func(t *ratelimitEnv, name string, on bool) {
		if on {
			t.set("OTEL_TRACES_EXPORTER", "otlp", name, true, false)
		}
	})},
	{name: "TRACING_EXPORTER_PROTOCOL", apply: func(t *ratelimitEnv, name, v string) {
		switch v {
		case "http":
			t.set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf", name, true, false)
		case "grpc":
			t.set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc", name, true, false)
		default:
			t.fail("%s=%q: want http or grpc", name, v)
		}
	}},
	{name: "TRACING_SERVICE_NAME", apply: ignored("set OTEL_SERVICE_NAME")},
	{name: "TRACING_SERVICE_NAMESPACE", apply: ignored("set OTEL_RESOURCE_ATTRIBUTES=service.namespace=...")},
	{name: "TRACING_SERVICE_INSTANCE_ID", apply: ignored("set OTEL_RESOURCE_ATTRIBUTES=service.instance.id=...")},
	{name: "TRACING_SAMPLING_RATE", apply: ignored("set OTEL_TRACES_SAMPLER=parentbased_traceidratio and OTEL_TRACES_SAMPLER_ARG")},
}

// ratelimitLooking matches the names of envoyproxy/ratelimit's variables (and its families'): such a variable
// that ratelimitVars does not list draws a warning.
var ratelimitLooking = regexp.MustCompile(`^(REDIS|CONFIG_GRPC_XDS|XDS_CLIENT|GRPC|RUNTIME|STATSD|PROMETHEUS|TRACING|OTEL|MEMCACHE|LIMIT|LOG|DEBUG|USE|CACHE|BACKEND)_`)

// kubernetesLink matches the variables Kubernetes adds for each Service (REDIS_SERVICE_HOST, REDIS_PORT_6379_TCP,
// ...): not settings.
var kubernetesLink = regexp.MustCompile(`_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$`)

// ratelimitEnv is one translation of an environment.
type ratelimitEnv struct {
	env      map[string]string
	known    map[string]ratelimitVar
	out      map[string]string  // SLUICE_* variable → value
	shown    map[string]shownAs // SLUICE_* variable → how messages name it
	explicit map[string]bool    // SLUICE_* variables set from a variable given (not only from defaults)
	probs    []string
	warns    []string
	// metricsListen and metricsPath are where USE_PROMETHEUS serves /metrics too ("" when off).
	metricsListen, metricsPath string
	// environ is the environment with the SLUICE_* entries made, for Load.
	environ []string
}

// shownAs is how Load's messages name a SLUICE_* variable made from envoyproxy/ratelimit's.
type shownAs struct {
	name, value string
	secret      bool
}

func (t *ratelimitEnv) given(name string) bool { return t.env[name] != "" }

// get is a variable's value, or envoyproxy/ratelimit's default.
func (t *ratelimitEnv) get(name string) string {
	if v := t.env[name]; v != "" {
		return v
	}
	return t.known[name].def
}

func (t *ratelimitEnv) mode() string { return t.get("CONFIG_TYPE") }

func (t *ratelimitEnv) flag(name string) bool {
	on, _ := strconv.ParseBool(t.get(name))
	return on
}

// set makes sluiceVar=value, which Load's messages name from (the variable it came from, shown as written, or a
// combination such as "HOST:PORT", shown with value); explicit when a variable given (not only a default) decided
// it. A secret value is never shown.
func (t *ratelimitEnv) set(sluiceVar, value, from string, explicit, secret bool) {
	t.out[sluiceVar] = value
	shown := value
	if orig, ok := t.env[from]; ok {
		shown = orig // one variable: show it as written (LOG_LEVEL="WARNING", not "warn")
	}
	t.shown[sluiceVar] = shownAs{name: from, value: shown, secret: secret}
	t.explicit[sluiceVar] = t.explicit[sluiceVar] || explicit
}

func (t *ratelimitEnv) fail(format string, args ...any) {
	t.probs = append(t.probs, fmt.Sprintf(format, args...))
}

func (t *ratelimitEnv) warn(format string, args ...any) {
	t.warns = append(t.warns, fmt.Sprintf(format, args...))
}

// consumedBy marks a variable read by another one's row.
func consumedBy(string) func(*ratelimitEnv, string, string) { return quiet }

func quiet(*ratelimitEnv, string, string) {}

// copyTo copies the value to a SLUICE_* variable.
func copyTo(sluiceVar string, secret bool) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) { t.set(sluiceVar, v, name, true, secret) }
}

// boolean checks a true/false value (strconv.ParseBool's forms, as envoyproxy/ratelimit reads them) and hands it
// to then.
func boolean(then func(t *ratelimitEnv, name string, on bool)) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) {
		on, err := strconv.ParseBool(v)
		if err != nil {
			t.fail("%s=%q: want true or false", name, v)
			return
		}
		if then != nil {
			then(t, name, on)
		}
	}
}

func boolSetting(sluiceVar string) func(*ratelimitEnv, string, string) {
	return boolean(func(t *ratelimitEnv, name string, on bool) {
		t.set(sluiceVar, strconv.FormatBool(on), name, true, false)
	})
}

// ignored warns that a variable given is not used.
func ignored(why string) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) { t.warn("%s=%q: ignored: %s", name, v, why) }
}

// ignoredUnless warns unless the value is ok (what sluice does anyway).
func ignoredUnless(ok, why string) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) {
		if badBool(t, name, v, ok) {
			return
		}
		if !sameValue(v, ok) {
			t.warn("%s=%q: ignored: %s", name, v, why)
		}
	}
}

// refused is a start-up error: honouring the variable is beyond sluice, and ignoring it would change what the
// operator asked for.
func refused(why string) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) {
		t.fail("%s is set: sluice cannot honour it (%s); unset it", name, why)
	}
}

// refusedUnless is refused unless the value is ok (what sluice does anyway).
func refusedUnless(ok, why string) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) {
		if badBool(t, name, v, ok) {
			return
		}
		if !sameValue(v, ok) {
			t.fail("%s=%q: sluice cannot honour it (%s); unset it or set it to %s", name, v, why, ok)
		}
	}
}

// badBool reports (as a problem) a value that is not a boolean where ok is one.
func badBool(t *ratelimitEnv, name, v, ok string) bool {
	if _, err := strconv.ParseBool(ok); err != nil {
		return false
	}
	if _, err := strconv.ParseBool(v); err != nil {
		t.fail("%s=%q: want true or false", name, v)
		return true
	}
	return false
}

// sameValue compares two values as envoyproxy/ratelimit reads them: booleans by meaning, the rest as text.
func sameValue(v, want string) bool {
	a, errA := strconv.ParseBool(v)
	b, errB := strconv.ParseBool(want)
	if errA == nil && errB == nil {
		return a == b
	}
	return strings.EqualFold(v, want)
}

// when copies the value to sluiceVar when the boolean variable gate is true, and warns that it is ignored
// otherwise (envoyproxy/ratelimit ignores it too).
func when(gate, sluiceVar string) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) {
		if !t.flag(gate) {
			t.warn("%s=%q: ignored: %s is not true (as in envoyproxy/ratelimit)", name, v, gate)
			return
		}
		t.set(sluiceVar, v, name, true, false)
	}
}

// clientCA is GRPC_CLIENT_TLS_CACERT (envoyproxy/ratelimit's name) or GRPC_SERVER_TLS_CA_CERT (the name Envoy
// Gateway sets): the CA of the client certificates the RLS listener requires (mTLS).
func clientCA(t *ratelimitEnv, name, v string) {
	if other := "GRPC_CLIENT_TLS_CACERT"; name != other && t.given(other) {
		if t.env[other] != v {
			t.fail("GRPC_CLIENT_TLS_CACERT=%q and GRPC_SERVER_TLS_CA_CERT=%q name different files for the one client CA: unset one", t.env[other], v)
		}
		return
	}
	when("GRPC_SERVER_USE_TLS", "SLUICE_RLS_TLS_CLIENT_CA_FILE")(t, name, v)
}

// xds copies the value when CONFIG_TYPE is GRPC_XDS_SOTW, and warns that it is ignored otherwise.
func xds(sluiceVar string) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) {
		if t.mode() != "GRPC_XDS_SOTW" {
			if t.given(name) {
				t.warn("%s=%q: ignored: CONFIG_TYPE is not GRPC_XDS_SOTW", name, v)
			}
			return
		}
		t.set(sluiceVar, v, name, t.given(name), false)
	}
}

// xdsTLS is xds gated by CONFIG_GRPC_XDS_SERVER_USE_TLS.
func xdsTLS(sluiceVar string) func(*ratelimitEnv, string, string) {
	return func(t *ratelimitEnv, name, v string) {
		if t.mode() == "GRPC_XDS_SOTW" && !t.flag("CONFIG_GRPC_XDS_SERVER_USE_TLS") {
			t.warn("%s=%q: ignored: CONFIG_GRPC_XDS_SERVER_USE_TLS is not true (as in envoyproxy/ratelimit)", name, v)
			return
		}
		xds(sluiceVar)(t, name, v)
	}
}

// usePrometheus is USE_PROMETHEUS: when true, /metrics is served on PROMETHEUS_ADDR at PROMETHEUS_PATH too (Envoy
// Gateway's pod annotations point Prometheus there); otherwise those two are ignored, with a warning when given.
func usePrometheus(t *ratelimitEnv, _ string, on bool) {
	if !on {
		for _, v := range []string{"PROMETHEUS_ADDR", "PROMETHEUS_PATH"} {
			if t.given(v) {
				t.warn("%s=%q: ignored: USE_PROMETHEUS is not true (as in envoyproxy/ratelimit)", v, t.env[v])
			}
		}
		return
	}
	addr, path := t.get("PROMETHEUS_ADDR"), t.get("PROMETHEUS_PATH")
	if _, port, err := net.SplitHostPort(addr); err != nil {
		t.fail("PROMETHEUS_ADDR=%q: want host:port or :port, such as :19001", addr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		t.fail("PROMETHEUS_ADDR=%q: the port must be 0-65535", addr)
	}
	if !strings.HasPrefix(path, "/") {
		t.fail("PROMETHEUS_PATH=%q: want a path starting with /, such as /metrics", path)
	}
	t.metricsListen, t.metricsPath = addr, path
}

// redisURL reads REDIS_URL by REDIS_TYPE as envoyproxy/ratelimit does: SINGLE "host:port", CLUSTER
// "host:port,host:port,...", SENTINEL "master,sentinel:port,..."; an address may be redis://[user:password@]host:port.
func redisURL(t *ratelimitEnv, name, v string) {
	if st := t.get("REDIS_SOCKET_TYPE"); st != "tcp" {
		t.fail("REDIS_SOCKET_TYPE=%q: sluice connects to Redis over TCP: set REDIS_SOCKET_TYPE=tcp and REDIS_URL to host:port", st)
		return
	}
	parts := strings.Split(v, ",")
	typ := strings.ToUpper(t.get("REDIS_TYPE"))
	var master string
	switch typ {
	case "SINGLE":
		if len(parts) != 1 {
			t.fail("REDIS_URL: REDIS_TYPE=SINGLE takes one host:port, got %d addresses (set REDIS_TYPE=CLUSTER or SENTINEL for several)", len(parts))
			return
		}
	case "CLUSTER":
	case "SENTINEL":
		if len(parts) < 2 {
			t.fail("REDIS_URL: REDIS_TYPE=SENTINEL takes <master name>,<sentinel host:port>,...")
			return
		}
		master, parts = parts[0], parts[1:]
	default:
		t.fail("REDIS_TYPE=%q: want SINGLE, CLUSTER or SENTINEL", t.get("REDIS_TYPE"))
		return
	}
	secret := strings.Contains(v, "@")
	var addrs []string
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if strings.HasPrefix(p, "redis://") {
			u, err := url.Parse(p)
			if err != nil || u.Host == "" {
				t.fail("REDIS_URL: want host:port or redis://[user:password@]host:port (the value is not shown: it may hold a password)")
				return
			}
			if u.User != nil {
				if t.given("REDIS_AUTH") {
					t.fail("REDIS_URL holds credentials and REDIS_AUTH is set: give them once")
					return
				}
				if u.User.Username() != "" {
					t.set("SLUICE_REDIS_USERNAME", u.User.Username(), name, true, true)
				}
				if pw, ok := u.User.Password(); ok {
					t.set("SLUICE_REDIS_PASSWORD", pw, name, true, true)
				}
			}
			p = u.Host
		}
		addrs = append(addrs, p)
	}
	t.set("SLUICE_STORE", "redis", name, true, secret)
	t.set("SLUICE_REDIS_ADDRS", strings.Join(addrs, ","), name, true, secret)
	if master != "" {
		t.set("SLUICE_REDIS_MASTER_SET", master, name, true, secret)
	}
}

// checkRLSAuth refuses, in envoyproxy/ratelimit's terms, an RLS listener beyond loopback without client
// certificates (validateRLS's rule, whose message names sluice's settings), unless the operator's own sluice
// settings (SLUICE_TOKENS_FILE, a config file) may authenticate. When it refuses, or CONFIG_TYPE is not valid, the
// rls.* settings are not passed on: that one problem is reported, and Load's about the front end would repeat it.
func (t *ratelimitEnv) checkRLSAuth() {
	listen, ok := t.out["SLUICE_RLS_LISTEN"]
	if !ok || t.env["SLUICE_RLS_LISTEN"] != "" {
		return
	}
	if m := t.mode(); m != "FILE" && m != "GRPC_XDS_SOTW" {
		t.dropRLS()
		return
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil || isLoopback(host) || t.out["SLUICE_RLS_TLS_CLIENT_CA_FILE"] != "" ||
		t.env["SLUICE_RLS_TLS_CLIENT_CA_FILE"] != "" || t.env["SLUICE_TOKENS_FILE"] != "" || t.env[configVariable] != "" {
		return
	}
	t.fail("GRPC_HOST:GRPC_PORT=%q: the RLS listener faces the network, so sluice requires client certificates: set GRPC_SERVER_USE_TLS=true with GRPC_SERVER_TLS_CERT, GRPC_SERVER_TLS_KEY and GRPC_CLIENT_TLS_CACERT (or GRPC_SERVER_TLS_CA_CERT, as Envoy Gateway does); or listen on GRPC_HOST=127.0.0.1; or give bearer tokens (SLUICE_TOKENS_FILE)", listen)
	t.dropRLS()
}

// dropRLS takes back the rls.* settings made.
func (t *ratelimitEnv) dropRLS() {
	for k := range t.out {
		if strings.HasPrefix(k, envName("rls.")) {
			delete(t.out, k)
			delete(t.shown, k)
		}
	}
}

// translateRatelimit turns envoyproxy/ratelimit's variables of environ into SLUICE_* entries appended to
// environ. A SLUICE_* variable the operator set wins over one made from a default, and is refused with one made
// from a variable given, if they differ. shown names, for Load's messages, the variables each entry came from.
func translateRatelimit(environ []string) *ratelimitEnv {
	t := &ratelimitEnv{env: environMap(environ), known: map[string]ratelimitVar{}, out: map[string]string{}, shown: map[string]shownAs{}, explicit: map[string]bool{}}
	for _, r := range ratelimitVars {
		t.known[r.name] = r
	}
	for _, r := range ratelimitVars {
		if v := t.get(r.name); v != "" {
			r.apply(t, r.name, v)
		}
	}
	t.checkRLSAuth()
	for _, k := range sortedKeys(t.env) {
		if _, ok := t.known[k]; !ok && ratelimitLooking.MatchString(k) && !kubernetesLink.MatchString(k) && !knownOTelVariable(k) {
			t.warn("%s: ignored: not one of envoyproxy/ratelimit's variables that sluice knows (see docs/envoy.md)", k)
		}
	}
	if t.out["SLUICE_STORE"] == "" && t.env["SLUICE_STORE"] == "" {
		t.warn("no REDIS_URL: the limits are counted in this process's memory (store memory), so run one replica")
	}
	out := slices.Clone(environ)
	for _, k := range sortedKeys(t.out) {
		own, set := t.env[k]
		switch {
		case !set:
			out = append(out, k+"="+t.out[k])
		case t.explicit[k] && own != t.out[k]:
			from := t.shown[k]
			if from.secret {
				t.fail("%s and %s are both set, to different values: unset one", k, from.name)
			} else {
				t.fail("%s=%q and %s=%q are both set, to different values: unset one", k, own, from.name, from.value)
			}
			delete(t.shown, k)
		default:
			delete(t.shown, k) // the operator's own variable: Load names it
		}
	}
	slices.Sort(t.warns)
	t.environ = out
	return t
}

// LoadRatelimit is Load for the ratelimit drop-in: the config file at path (SLUICE_CONFIG, usually none) and
// environ's SLUICE_* variables, with envoyproxy/ratelimit's variables translated by ratelimitVars.
func LoadRatelimit(path string, environ []string) (Config, []string, error) {
	t := translateRatelimit(environ)
	cfg, more, err := load(path, t.environ, loadOptions{shown: t.shown, ratelimit: true})
	cfg.metricsListen, cfg.metricsPath = t.metricsListen, t.metricsPath
	if len(t.probs) > 0 {
		all := Problems(t.probs)
		if ps, ok := err.(Problems); ok {
			all = append(all, ps...)
		} else if err != nil {
			all = append(all, err.Error())
		}
		return cfg, nil, all
	}
	if err != nil {
		return cfg, nil, err
	}
	return cfg, append(t.warns, more...), nil
}

// ratelimitCommand serves as the ratelimit drop-in until SIGTERM or SIGINT.
func ratelimitCommand(stderr io.Writer, build Build) error {
	cfg, warnings, err := LoadRatelimit(os.Getenv(configVariable), os.Environ())
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	for _, w := range warnings {
		log.Warn("configuration: " + w)
	}
	log.Info("sluice serving as envoyproxy/ratelimit: its variables are read (docs/envoy.md); the HTTP listener serves only /healthcheck, /healthz, /healthz/store, /readyz and /metrics",
		"metrics_listen", cfg.metricsListen, "metrics_path", cfg.metricsPath)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return Run(ctx, cfg, build, log, nil)
}
