package app

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// envoyGatewayEnv is the environment Envoy Gateway gives its rate-limit container
// (internal/infrastructure/kubernetes/ratelimit/resource.go: expectedRateLimitContainerEnv), with the Prometheus
// variables it adds by default and, with redis, its Redis backend's.
func envoyGatewayEnv(redis string) []string {
	env := []string{
		"RUNTIME_ROOT=/data",
		"RUNTIME_SUBDIRECTORY=ratelimit",
		"RUNTIME_IGNOREDOTFILES=true",
		"RUNTIME_WATCH_ROOT=false",
		"LOG_LEVEL=info",
		"USE_STATSD=false",
		"CONFIG_TYPE=GRPC_XDS_SOTW",
		"CONFIG_GRPC_XDS_SERVER_URL=envoy-gateway:18001",
		"CONFIG_GRPC_XDS_NODE_ID=envoy-ratelimit",
		"GRPC_SERVER_USE_TLS=true",
		"GRPC_SERVER_TLS_CERT=/certs/tls.crt",
		"GRPC_SERVER_TLS_KEY=/certs/tls.key",
		"GRPC_SERVER_TLS_CA_CERT=/certs/ca.crt",
		"CONFIG_GRPC_XDS_SERVER_USE_TLS=true",
		"CONFIG_GRPC_XDS_CLIENT_TLS_CERT=/certs/tls.crt",
		"CONFIG_GRPC_XDS_CLIENT_TLS_KEY=/certs/tls.key",
		"CONFIG_GRPC_XDS_SERVER_TLS_CACERT=/certs/ca.crt",
		"FORCE_START_WITHOUT_INITIAL_CONFIG=true",
	}
	if redis != "" {
		env = append(env, "REDIS_SOCKET_TYPE=tcp", "REDIS_URL="+redis)
	}
	return env
}

// TestRatelimitEnvoyGateway: Envoy Gateway's environment becomes sluice's settings: the RLS listener on
// 0.0.0.0:8081 with mTLS, the probe listener on 0.0.0.0:8080 (allowed without tokens: it serves only probes), xDS
// over mTLS with Envoy Gateway's node id, Redis when REDIS_URL is set.
func TestRatelimitEnvoyGateway(t *testing.T) {
	cfg, warnings, err := LoadRatelimit("", envoyGatewayEnv(""))
	if err != nil {
		t.Fatal(err)
	}
	want := RLSConfig{
		Listen: "0.0.0.0:8081",
		TLS:    RLSTLS{CertFile: "/certs/tls.crt", KeyFile: "/certs/tls.key", ClientCAFile: "/certs/ca.crt"},
		XDS:    RLSXDS{Server: "envoy-gateway:18001", NodeID: "envoy-ratelimit", CAFile: "/certs/ca.crt", CertFile: "/certs/tls.crt", KeyFile: "/certs/tls.key"},
	}
	got := cfg.RLS
	if got.Listen != want.Listen || got.TLS != want.TLS || got.XDS != want.XDS || got.ConfigDir != "" {
		t.Errorf("rls: got %+v, want %+v", got, want)
	}
	if cfg.Listen != "0.0.0.0:8080" || cfg.Store != "memory" || cfg.Log.Level != "info" || !cfg.ratelimit {
		t.Errorf("listen %q store %q log %q ratelimit %v", cfg.Listen, cfg.Store, cfg.Log.Level, cfg.ratelimit)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "no REDIS_URL") {
		t.Errorf("warnings: %q, want only the memory store's", warnings)
	}

	env := append(envoyGatewayEnv("redis.redis-system.svc.cluster.local:6379"),
		"USE_PROMETHEUS=true", "PROMETHEUS_ADDR=:19001", "PROMETHEUS_MAPPER_YAML=/etc/statsd-exporter/conf.yaml")
	cfg, warnings, err = LoadRatelimit("", env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store != "redis" || !slices.Equal(cfg.Redis.Addrs, []string{"redis.redis-system.svc.cluster.local:6379"}) {
		t.Errorf("redis: store %q addrs %q", cfg.Store, cfg.Redis.Addrs)
	}
	// USE_PROMETHEUS: /metrics on PROMETHEUS_ADDR too; the statsd-exporter mapping is not sluice's.
	if cfg.metricsListen != ":19001" || cfg.metricsPath != "/metrics" {
		t.Errorf("metrics listener %q path %q", cfg.metricsListen, cfg.metricsPath)
	}
	if len(warnings) != 1 || !strings.HasPrefix(warnings[0], "PROMETHEUS_MAPPER_YAML=") {
		t.Errorf("warnings: %q, want only PROMETHEUS_MAPPER_YAML's", warnings)
	}
	_, _, err = LoadRatelimit("", append(env, "PROMETHEUS_ADDR=19001"))
	if err == nil || !strings.Contains(err.Error(), `PROMETHEUS_ADDR="19001": want host:port or :port`) {
		t.Errorf("PROMETHEUS_ADDR without a colon: %v", err)
	}
	cfg, warnings, _ = LoadRatelimit("", append(env, "USE_PROMETHEUS=false"))
	if cfg.metricsListen != "" || !slices.ContainsFunc(warnings, func(w string) bool {
		return strings.Contains(w, "PROMETHEUS_ADDR=\":19001\": ignored: USE_PROMETHEUS is not true")
	}) {
		t.Errorf("USE_PROMETHEUS=false: metrics listener %q, warnings %q", cfg.metricsListen, warnings)
	}
}

// TestRatelimitVariables: each mapping of the table, and the messages naming the original variables.
func TestRatelimitVariables(t *testing.T) {
	base := envoyGatewayEnv("")
	load := func(extra ...string) (Config, []string, error) {
		env := slices.Clone(base)
		for _, kv := range extra {
			name, _, _ := strings.Cut(kv, "=")
			env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
			if strings.HasSuffix(kv, "=<unset>") {
				continue
			}
			env = append(env, kv)
		}
		return LoadRatelimit("", env)
	}
	ok := func(t *testing.T, extra ...string) (Config, []string) {
		t.Helper()
		cfg, w, err := load(extra...)
		if err != nil {
			t.Fatalf("%q: %v", extra, err)
		}
		return cfg, w
	}
	fails := func(t *testing.T, want string, extra ...string) {
		t.Helper()
		_, _, err := load(extra...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", extra, err, want)
		}
	}
	warns := func(t *testing.T, want string, extra ...string) {
		t.Helper()
		_, w := ok(t, extra...)
		if !slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("%q: warnings %q, want one containing %q", extra, w, want)
		}
	}

	t.Run("listeners", func(t *testing.T) {
		cfg, _ := ok(t, "HOST=127.0.0.1", "PORT=9090", "GRPC_HOST=10.0.0.1", "GRPC_PORT=9091")
		if cfg.Listen != "127.0.0.1:9090" || cfg.RLS.Listen != "10.0.0.1:9091" {
			t.Errorf("listen %q rls %q", cfg.Listen, cfg.RLS.Listen)
		}
		fails(t, `HOST:PORT="0.0.0.0:http": port must be 0-65535`, "PORT=http")
		fails(t, "GRPC_UDS is set: sluice cannot honour it", "GRPC_UDS=/tmp/rl.sock")
		// Without client authentication the RLS listener may not face the network: the message names the variables.
		fails(t, `GRPC_HOST:GRPC_PORT="0.0.0.0:8081": the RLS listener faces the network, so sluice requires client certificates: set GRPC_SERVER_USE_TLS=true`, "GRPC_SERVER_USE_TLS=false")
		// With the operator's tokens file, Load's own rule applies (tokens then authenticate the RLS calls).
		tokens := t.TempDir() + "/tokens.yaml"
		must(t, os.WriteFile(tokens, []byte("- {name: envoy, token: 0123456789abcdef0123, role: check}\n"), 0o600))
		ok(t, "GRPC_SERVER_USE_TLS=false", "SLUICE_TOKENS_FILE="+tokens)
		warns(t, "GRPC_SERVER_TLS_CERT=\"/certs/tls.crt\": ignored: GRPC_SERVER_USE_TLS is not true", "GRPC_SERVER_USE_TLS=false", "GRPC_HOST=127.0.0.1")
		fails(t, `GRPC_SERVER_USE_TLS="yes please": want true or false`, "GRPC_SERVER_USE_TLS=yes please")
		cfg, _ = ok(t, "GRPC_SERVER_TLS_CA_CERT=<unset>", "GRPC_CLIENT_TLS_CACERT=/certs/client-ca.crt")
		if cfg.RLS.TLS.ClientCAFile != "/certs/client-ca.crt" {
			t.Errorf("GRPC_CLIENT_TLS_CACERT: client_ca_file %q", cfg.RLS.TLS.ClientCAFile)
		}
		fails(t, "name different files for the one client CA", "GRPC_CLIENT_TLS_CACERT=/other/ca.crt")
		fails(t, "GRPC_CLIENT_TLS_SAN is set: sluice cannot honour it", "GRPC_CLIENT_TLS_SAN=envoy")
	})
	t.Run("config type", func(t *testing.T) {
		fails(t, `CONFIG_TYPE="GRPC_XDS_DELTA": sluice takes FILE`, "CONFIG_TYPE=GRPC_XDS_DELTA")
		dir := rlsDir(t, istioYAML)
		root, sub := dir[:strings.LastIndex(dir, "/")], dir[strings.LastIndex(dir, "/")+1:]
		cfg, w := ok(t, "CONFIG_TYPE=FILE", "RUNTIME_ROOT="+root, "RUNTIME_SUBDIRECTORY="+sub, "RUNTIME_APPDIRECTORY=.")
		if cfg.RLS.ConfigDir != dir || cfg.RLS.XDS.Server != "" {
			t.Errorf("FILE: config_dir %q xds %q", cfg.RLS.ConfigDir, cfg.RLS.XDS.Server)
		}
		if !slices.ContainsFunc(w, func(s string) bool {
			return strings.Contains(s, "CONFIG_GRPC_XDS_SERVER_URL=\"envoy-gateway:18001\": ignored: CONFIG_TYPE is not GRPC_XDS_SOTW")
		}) {
			t.Errorf("FILE: warnings %q", w)
		}
		// The default CONFIG_TYPE is FILE, in envoyproxy/ratelimit's default directory; a missing one is Load's error.
		fails(t, "/srv/runtime_data/current/config", "CONFIG_TYPE=<unset>", "RUNTIME_ROOT=<unset>", "RUNTIME_SUBDIRECTORY=<unset>")
		fails(t, "CONFIG_GRPC_XDS_SERVER_USE_TLS=true without CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "CONFIG_GRPC_XDS_SERVER_TLS_CACERT=<unset>")
		fails(t, "CONFIG_GRPC_XDS_NODE_METADATA is set", "CONFIG_GRPC_XDS_NODE_METADATA=a:b")
		fails(t, `HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED="true": sluice cannot honour it`, "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED=true")
		warns(t, "FORCE_START_WITHOUT_INITIAL_CONFIG=\"false\": ignored", "FORCE_START_WITHOUT_INITIAL_CONFIG=false")
	})
	t.Run("logging and decisions", func(t *testing.T) {
		cfg, _ := ok(t, "LOG_LEVEL=WARNING", "LOG_FORMAT=JSON", "SHADOW_MODE=true", "LIMIT_RESPONSE_HEADERS_ENABLED=1")
		if cfg.Log.Level != "warn" || cfg.Log.Format != "json" || !cfg.RLS.Shadow || !cfg.RLS.ResponseHeaders {
			t.Errorf("log %+v shadow %v headers %v", cfg.Log, cfg.RLS.Shadow, cfg.RLS.ResponseHeaders)
		}
		fails(t, `LOG_LEVEL="loud": must be one of debug, info, warn, error`, "LOG_LEVEL=loud")
		fails(t, `QUOTA_MODE="true": sluice cannot honour it`, "QUOTA_MODE=true")
		fails(t, `QUOTA_MODE="maybe": want true or false`, "QUOTA_MODE=maybe")
		ok(t, "QUOTA_MODE=0", "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT=T")
		warns(t, `LOCAL_CACHE_SIZE_IN_BYTES="1048576": ignored`, "LOCAL_CACHE_SIZE_IN_BYTES=1048576")
		warns(t, `LIMIT_RESET_HEADER="X-Reset": ignored`, "LIMIT_RESET_HEADER=X-Reset")
	})
	t.Run("redis", func(t *testing.T) {
		cfg, _ := ok(t, "REDIS_SOCKET_TYPE=tcp", "REDIS_TYPE=sentinel", "REDIS_URL=mymaster,10.0.0.1:26379,10.0.0.2:26379",
			"REDIS_AUTH=user:s3cret", "REDIS_TLS=true", "CACHE_KEY_PREFIX=eg:", "REDIS_TIMEOUT=2s")
		r := cfg.Redis
		if cfg.Store != "redis" || r.MasterSet != "mymaster" || !slices.Equal(r.Addrs, []string{"10.0.0.1:26379", "10.0.0.2:26379"}) ||
			r.Username != "user" || r.Password != "s3cret" || !r.TLS || r.Prefix != "eg:" || r.Timeout.String() != "2s" {
			t.Errorf("sentinel: store %q %+v", cfg.Store, r)
		}
		cfg, _ = ok(t, "REDIS_SOCKET_TYPE=tcp", "REDIS_TYPE=CLUSTER", "REDIS_URL=redis://:pw@a:6379,b:6379")
		if !slices.Equal(cfg.Redis.Addrs, []string{"a:6379", "b:6379"}) || cfg.Redis.Password != "pw" || cfg.Redis.MasterSet != "" {
			t.Errorf("cluster: %+v", cfg.Redis)
		}
		fails(t, `REDIS_SOCKET_TYPE="unix": sluice connects to Redis over TCP`, "REDIS_URL=/var/run/nutcracker/ratelimit.sock")
		fails(t, "REDIS_TYPE=SINGLE takes one host:port", "REDIS_SOCKET_TYPE=tcp", "REDIS_URL=a:1,b:2")
		fails(t, `REDIS_TYPE="RING": want SINGLE, CLUSTER or SENTINEL`, "REDIS_SOCKET_TYPE=tcp", "REDIS_TYPE=RING", "REDIS_URL=a:1")
		// Envoy Gateway's Redis TLS with a CertificateRef: the client certificate (and a CA, which it does not set).
		dir, _, files := tlsFiles(t)
		caFile := dir + "/ca.crt"
		cfg, _ = ok(t, "REDIS_SOCKET_TYPE=tcp", "REDIS_URL=a:1", "REDIS_TLS=true", "REDIS_TLS_CLIENT_CERT="+files.CertFile,
			"REDIS_TLS_CLIENT_KEY="+files.KeyFile, "REDIS_TLS_CACERT="+caFile)
		if r := cfg.Redis; !r.TLS || r.TLSCertFile != files.CertFile || r.TLSKeyFile != files.KeyFile || r.TLSCAFile != caFile {
			t.Errorf("redis tls: %+v", r)
		}
		warns(t, "REDIS_TLS_CACERT=\""+caFile+"\": ignored: REDIS_TLS is not true", "REDIS_SOCKET_TYPE=tcp", "REDIS_URL=a:1", "REDIS_TLS_CACERT="+caFile)
		fails(t, `REDIS_TLS_CACERT="/redis-certs/ca.crt": cannot read it`, "REDIS_SOCKET_TYPE=tcp", "REDIS_URL=a:1", "REDIS_TLS=true", "REDIS_TLS_CACERT=/redis-certs/ca.crt")
		fails(t, `BACKEND_TYPE="memcache"`, "BACKEND_TYPE=memcache")
		fails(t, `REDIS_TIMEOUT: want a duration such as 250ms, 30s, 5m or 7d (1ms to 1m), got "soon"`, "REDIS_SOCKET_TYPE=tcp", "REDIS_URL=a:1", "REDIS_TIMEOUT=soon")
		// A password is never shown.
		_, _, err := load("REDIS_SOCKET_TYPE=tcp", "REDIS_URL=redis://u:hunter2@a:1", "SLUICE_REDIS_ADDRS=b:1")
		if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "SLUICE_REDIS_ADDRS and REDIS_URL are both set") {
			t.Errorf("conflict with a secret: %v", err)
		}
	})
	t.Run("sluice variables", func(t *testing.T) {
		// The operator's SLUICE_* variables apply; one that disagrees with a variable given is refused.
		cfg, _ := ok(t, "SLUICE_RLS_ALGORITHM=sliding_window", "SLUICE_RLS_LISTEN=0.0.0.0:9000")
		if cfg.RLS.Algorithm != "sliding_window" || cfg.RLS.Listen != "0.0.0.0:9000" {
			t.Errorf("algorithm %q listen %q", cfg.RLS.Algorithm, cfg.RLS.Listen)
		}
		// The image's own SLUICE_LISTEN=0.0.0.0:8080 agrees with HOST:PORT's defaults.
		if cfg, _ := ok(t, "SLUICE_LISTEN=0.0.0.0:8080"); cfg.Listen != "0.0.0.0:8080" {
			t.Errorf("listen %q", cfg.Listen)
		}
		fails(t, `SLUICE_LISTEN="0.0.0.0:8080" and HOST:PORT="0.0.0.0:9090" are both set`, "SLUICE_LISTEN=0.0.0.0:8080", "PORT=9090")
		fails(t, `SLUICE_RLS_LISTEN="0.0.0.0:9000" and GRPC_HOST:GRPC_PORT="0.0.0.0:8081" are both set`, "SLUICE_RLS_LISTEN=0.0.0.0:9000", "GRPC_PORT=8081")
		fails(t, "SLUICE_RLS_ALGORITM: not a sluice setting", "SLUICE_RLS_ALGORITM=x")
	})
	t.Run("tracing", func(t *testing.T) {
		cfg, _ := ok(t)
		if cfg.traces.exporter != "" {
			t.Errorf("tracing on by default: %+v", cfg.traces)
		}
		cfg, w := ok(t, "TRACING_ENABLED=true", "TRACING_EXPORTER_PROTOCOL=grpc", "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317", "OTEL_SERVICE_NAME=rl")
		if cfg.traces != (traceEnv{exporter: "otlp", protocol: "grpc"}) {
			t.Errorf("TRACING_ENABLED=true, TRACING_EXPORTER_PROTOCOL=grpc: %+v", cfg.traces)
		}
		if slices.ContainsFunc(w, func(s string) bool { return strings.Contains(s, "OTEL_") || strings.Contains(s, "TRACING_") }) {
			t.Errorf("an OTEL_* variable sluice honours, or a tracing variable it translates, drew a warning: %q", w)
		}
		if cfg, _ := ok(t, "TRACING_ENABLED=false"); cfg.traces.exporter != "" {
			t.Errorf("TRACING_ENABLED=false: tracing on")
		}
		fails(t, `TRACING_EXPORTER_PROTOCOL="udp": want http or grpc`, "TRACING_EXPORTER_PROTOCOL=udp")
		fails(t, `OTEL_TRACES_EXPORTER="none" and TRACING_ENABLED="true" are both set`, "TRACING_ENABLED=true", "OTEL_TRACES_EXPORTER=none")
		warns(t, "TRACING_SAMPLING_RATE=\"0.1\": ignored: set OTEL_TRACES_SAMPLER", "TRACING_SAMPLING_RATE=0.1")
	})
	t.Run("unknown", func(t *testing.T) {
		warns(t, "REDIS_POOL_SIZ: ignored: not one of envoyproxy/ratelimit's variables", "REDIS_POOL_SIZ=10")
		_, w := ok(t, "REDIS_SERVICE_HOST=10.0.0.3", "REDIS_PORT_6379_TCP=tcp://10.0.0.3:6379", "HOME=/root")
		if slices.ContainsFunc(w, func(s string) bool {
			return strings.Contains(s, "REDIS_SERVICE_HOST") || strings.Contains(s, "HOME") || strings.Contains(s, "REDIS_PORT")
		}) {
			t.Errorf("a Kubernetes service link or an unrelated variable drew a warning: %q", w)
		}
	})
}

// TestRatelimitVarsDocumented: docs/envoy.md's table names every variable of ratelimitVars.
func TestRatelimitVarsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/envoy.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ratelimitVars {
		if !strings.Contains(string(doc), "`"+r.name+"`") {
			t.Errorf("docs/envoy.md does not name `%s`", r.name)
		}
	}
}

// TestProbesOnly: the drop-in's HTTP listener answers /healthcheck as /readyz decides and serves the public probe
// and metrics routes, never the checks or the admin API.
func TestProbesOnly(t *testing.T) {
	var notReady atomic.Bool
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			if notReady.Load() {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, `{"title":"not ready"}`)
				return
			}
			_, _ = io.WriteString(w, `{"status":"ok"}`)
		default:
			_, _ = io.WriteString(w, "api "+r.URL.Path)
		}
	})
	srv := httptest.NewServer(probesOnly(api))
	defer srv.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthcheck"); code != 200 || body != "OK" {
		t.Errorf("ready: %d %q", code, body)
	}
	notReady.Store(true)
	if code, body := get("/healthcheck"); code != 503 || !strings.Contains(body, "not ready") {
		t.Errorf("not ready: %d %q", code, body)
	}
	for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
		if code, _ := get(p); code == 404 {
			t.Errorf("%s: 404", p)
		}
	}
	for _, p := range []string{"/v1/check", "/v1/policies", "/openapi.yaml", "/"} {
		if code, body := get(p); code != 404 {
			t.Errorf("%s: %d %q, want 404", p, code, body)
		}
	}
}
