package envoyrls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	xdsserver "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	rlsconf "github.com/envoyproxy/go-control-plane/ratelimit/config/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/sluice-dev/sluice/adapters/redis/redistest"
)

// TestDropInForEnvoyGateway runs the sluice binary as Envoy Gateway runs its rate-limit container: the command
// /bin/ratelimit (here a symlink named ratelimit), Envoy Gateway's environment (internal/infrastructure/kubernetes/
// ratelimit/resource.go, with its default Prometheus telemetry) and its certificates (made here: one CA, as Envoy Gateway's certgen makes), against a
// go-control-plane xDS server in this process that requires the client certificate as Envoy Gateway's does. Only
// what a test must change differs: the xDS server's address, the certificates' directory (/certs in the pod), and
// PORT, GRPC_PORT and PROMETHEUS_ADDR's port (free ports instead of 8080, 8081 and 19001; HOST and GRPC_HOST stay
// 0.0.0.0). It checks that GET /healthcheck answers 200 "OK", that the HTTP listener serves nothing else of the API,
// that /metrics answers there and on PROMETHEUS_ADDR, and that
// ShouldRateLimit over mTLS decides by the pushed config; on the memory store, and on Redis (REDIS_URL) when the
// test Redis is up.
func TestDropInForEnvoyGateway(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ratelimit := filepath.Join(dir, "ratelimit")
	if err := os.Symlink(bin, ratelimit); err != nil {
		t.Fatal(err)
	}

	certs := filepath.Join(dir, "certs")
	if err := os.Mkdir(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, caKey := newCert(t, nil, nil, "envoy-gateway ca", true)
	rl, rlKey := newCert(t, ca, caKey, "envoy-ratelimit", false)
	eg, egKey := newCert(t, ca, caKey, "envoy-gateway", false)
	envoy, envoyKey := newCert(t, ca, caKey, "envoy", false)
	writePEM(t, filepath.Join(certs, "ca.crt"), "CERTIFICATE", ca.Raw)
	writePEM(t, filepath.Join(certs, "tls.crt"), "CERTIFICATE", rl.Raw)
	writeKey(t, filepath.Join(certs, "tls.key"), rlKey)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	keyPair := func(c *x509.Certificate, k any) tls.Certificate {
		return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k, Leaf: c}
	}

	// Envoy Gateway's xDS server for the rate-limit service: mTLS, snapshots for node envoy-ratelimit.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snapshots := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{keyPair(eg, egKey)}, ClientCAs: roots, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xdsserver.NewServer(ctx, snapshots, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	const domain, route = "default/eg/http", "httproute/default/backend/rule/0/match/0"
	rc := &rlsconf.RateLimitConfig{Name: domain, Domain: domain, Descriptors: []*rlsconf.RateLimitDescriptor{{
		Key: route, Value: route,
		RateLimit: &rlsconf.RateLimitPolicy{Unit: rlsconf.RateLimitUnit_MINUTE, RequestsPerUnit: 1},
	}}}
	snap, err := cache.NewSnapshot("1", map[resource.Type][]types.Resource{resource.RateLimitConfigType: {rc}})
	if err != nil {
		t.Fatal(err)
	}
	if err := snapshots.SetSnapshot(ctx, "envoy-ratelimit", snap); err != nil {
		t.Fatal(err)
	}

	run := func(t *testing.T, redisEnv []string, wantWarnings []string) {
		ports := freePorts(t, 3)
		env := []string{
			"RUNTIME_ROOT=/data",
			"RUNTIME_SUBDIRECTORY=ratelimit",
			"RUNTIME_IGNOREDOTFILES=true",
			"RUNTIME_WATCH_ROOT=false",
			"LOG_LEVEL=info",
			"USE_STATSD=false",
			"CONFIG_TYPE=GRPC_XDS_SOTW",
			"CONFIG_GRPC_XDS_SERVER_URL=" + ln.Addr().String(),
			"CONFIG_GRPC_XDS_NODE_ID=envoy-ratelimit",
			"GRPC_SERVER_USE_TLS=true",
			"GRPC_SERVER_TLS_CERT=" + certs + "/tls.crt",
			"GRPC_SERVER_TLS_KEY=" + certs + "/tls.key",
			"GRPC_SERVER_TLS_CA_CERT=" + certs + "/ca.crt",
			"CONFIG_GRPC_XDS_SERVER_USE_TLS=true",
			"CONFIG_GRPC_XDS_CLIENT_TLS_CERT=" + certs + "/tls.crt",
			"CONFIG_GRPC_XDS_CLIENT_TLS_KEY=" + certs + "/tls.key",
			"CONFIG_GRPC_XDS_SERVER_TLS_CACERT=" + certs + "/ca.crt",
			"FORCE_START_WITHOUT_INITIAL_CONFIG=true",
			"USE_PROMETHEUS=true", // Envoy Gateway's default telemetry (PROMETHEUS_ADDR=:19001 there)
			fmt.Sprintf("PROMETHEUS_ADDR=:%d", ports[2]),
			"PROMETHEUS_MAPPER_YAML=/etc/statsd-exporter/conf.yaml",
			fmt.Sprintf("PORT=%d", ports[0]),
			fmt.Sprintf("GRPC_PORT=%d", ports[1]),
		}
		logs := filepath.Join(t.TempDir(), "ratelimit.log")
		cmd := exec.Command(ratelimit)
		cmd.Env = append(env, redisEnv...)
		start(t, cmd, logs)
		showLogs := func() string { b, _ := os.ReadFile(logs); return string(b) }

		base := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body, err := httpGet(base + "/healthcheck")
			if err == nil && code == 200 && body == "OK" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/healthcheck: %d %q %v\n%s", code, body, err, showLogs())
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, p := range []string{"/v1/check", "/v1/policies"} {
			if code, _, err := httpGet(base + p); err != nil || code != 404 {
				t.Errorf("GET %s on the probe listener: %d %v, want 404 (only probes are served)", p, code, err)
			}
		}
		for _, u := range []string{base + "/metrics", fmt.Sprintf("http://127.0.0.1:%d/metrics", ports[2])} {
			if code, body, err := httpGet(u); err != nil || code != 200 || !strings.Contains(body, "sluice_build_info") {
				t.Errorf("GET %s: %d %v", u, code, err)
			}
		}

		rlsAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
		dial := func(certs ...tls.Certificate) *grpc.ClientConn {
			cc, err := grpc.NewClient(rlsAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
				RootCAs: roots, Certificates: certs, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12,
			})))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cc.Close() })
			return cc
		}
		req := &rlsv3.RateLimitRequest{Domain: domain, Descriptors: []*rlcommon.RateLimitDescriptor{{
			Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: route, Value: route}},
		}}}
		client := rlsv3.NewRateLimitServiceClient(dial(keyPair(envoy, envoyKey)))
		// The push is asynchronous: ask until an answer carries the pushed limit (that check was then counted).
		deadline = time.Now().Add(30 * time.Second)
		for {
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := client.ShouldRateLimit(cctx, req)
			ccancel()
			if err != nil {
				t.Fatalf("ShouldRateLimit with Envoy's client certificate: %v\n%s", err, showLogs())
			}
			if resp.Statuses[0].CurrentLimit != nil {
				if resp.OverallCode != rlsv3.RateLimitResponse_OK || resp.Statuses[0].CurrentLimit.RequestsPerUnit != 1 {
					t.Fatalf("first limited answer: %v", resp)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the pushed config never took effect\n%s", showLogs())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp, err := client.ShouldRateLimit(context.Background(), req); err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
			t.Errorf("second request: %v %v, want OVER_LIMIT (1 per minute)", resp, err)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		if _, err := rlsv3.NewRateLimitServiceClient(dial()).ShouldRateLimit(cctx, req); err == nil {
			t.Error("answered without a client certificate: the RLS listener must require mTLS (GRPC_SERVER_TLS_CA_CERT)")
		}

		var warnings []string
		for _, line := range strings.Split(showLogs(), "\n") {
			if strings.Contains(line, "configuration: ") {
				warnings = append(warnings, line)
			}
		}
		if len(warnings) != len(wantWarnings) {
			t.Errorf("start-up warnings: %q, want %d (%q)", warnings, len(wantWarnings), wantWarnings)
		}
		for i, w := range wantWarnings {
			if i < len(warnings) && !strings.Contains(warnings[i], w) {
				t.Errorf("warning %d: %q, want it to contain %q", i, warnings[i], w)
			}
		}
	}

	t.Run("memory", func(t *testing.T) { run(t, nil, []string{"PROMETHEUS_MAPPER_YAML", "no REDIS_URL"}) })
	t.Run("redis", func(t *testing.T) {
		addr := redistest.SingleAddr(t)
		// CACHE_KEY_PREFIX (envoyproxy/ratelimit's key prefix, sluice's redis.prefix) keeps this run's keys apart
		// from other tests' on the shared Redis; Envoy Gateway does not set it.
		run(t, []string{"REDIS_SOCKET_TYPE=tcp", "REDIS_URL=" + addr, "CACHE_KEY_PREFIX=" + redistest.Prefix()}, []string{"PROMETHEUS_MAPPER_YAML"})
	})
}

func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
