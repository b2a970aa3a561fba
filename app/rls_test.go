package app

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
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
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/sluice-dev/sluice/adapters/envoyrls"
	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func rlsDir(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

const istioYAML = "domain: ratelimit\ndescriptors:\n  - key: PATH\n    value: /productpage\n    rate_limit: {unit: minute, requests_per_unit: 1}\n"

func TestRLSWiringValidates(t *testing.T) {
	cfg := Defaults()
	cfg.RLS.Listen = "127.0.0.1:0"
	cfg.RLS.ConfigDir = rlsDir(t, istioYAML)
	if err := fx.ValidateApp(appOptions(cfg, testBuild(t), slog.New(slog.DiscardHandler))); err != nil {
		t.Fatal(err)
	}
}

// TestRLSServesAndStops: `sluice serve` with rls.listen answers ShouldRateLimit (with a token when tokens are
// configured) and the health service, and stops with the HTTP server.
func TestRLSServesAndStops(t *testing.T) {
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Tokens = []TokenConfig{{Name: "envoy", Token: "0123456789abcdef-check", Role: "check"}}
	cfg.RLS.Listen = freePort(t)
	cfg.RLS.ConfigDir = rlsDir(t, istioYAML)
	cfg.RLS.ResponseHeaders = true
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan string, 1)
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	go func() { done <- Run(ctx, cfg, testBuild(t), log, func(a string) { ready <- a }) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(cfg.RLS.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hr, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
	req := &rlsv3.RateLimitRequest{Domain: "ratelimit", Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "PATH", Value: "/productpage"}}}}}
	rctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer 0123456789abcdef-check")
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		resp, err := rlsv3.NewRateLimitServiceClient(cc).ShouldRateLimit(rctx, req)
		if err != nil || resp.OverallCode != want {
			t.Fatalf("call %d: %v %v, want %s", i, resp, err, want)
		}
		if i == 1 && len(resp.ResponseHeadersToAdd) != 3 {
			t.Errorf("denied: headers %v, want RateLimit-Policy, RateLimit, Retry-After", resp.ResponseHeadersToAdd)
		}
	}
	if _, err := rlsv3.NewRateLimitServiceClient(cc).ShouldRateLimit(context.Background(), req); err == nil {
		t.Error("served without a token")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !regexp.MustCompile(`sluice rls serving" addr=127.0.0.1:\d+ .*files=config.yaml policies=1 algorithm=fixed_window shadow=false auth=bearer`).MatchString(logs.String()) {
		t.Errorf("start-up log lacks the rls line:\n%s", logs.String())
	}
}

// TestRLSValidation: rls settings and the config files' problems are reported at start-up with the rest, each
// naming its setting (the variable when one set it), file and YAML path.
func TestRLSValidation(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "sluice.yaml")
	dir := rlsDir(t, "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: year, requests_per_unit: 1}\n")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("rls:\n  algorithm: leaky\n  failure_mode: open\n  file_algorithms: [{file: nope.yaml, algorithm: sliding_log}]\n")
	_, _, err := Load(cfgPath, []string{"SLUICE_RLS_LISTEN=0.0.0.0:8081", "SLUICE_RLS_CONFIG_DIR=" + dir})
	got := fmt.Sprint(err)
	for _, want := range []string{
		`rls.algorithm (line 2): must be one of ` + domain.AlgorithmNames() + `; got "leaky"`,
		`rls.failure_mode (line 3): must be one of deny, allow; got "open"`,
		`SLUICE_RLS_LISTEN="0.0.0.0:8081": "0.0.0.0:8081" is not a loopback address and no client authentication is configured`,
		"config.yaml:4: descriptors[0].rate_limit.unit: YEAR (365 days)",
		`no config file "nope.yaml"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	write("rls:\n  listen: 127.0.0.1:8081\n")
	if _, _, err := Load(cfgPath, nil); err == nil || !strings.Contains(err.Error(), "rls.listen (line 2): is set but no config is: set rls.config_dir") {
		t.Errorf("no config_dir: %v", err)
	}
}

// TestRLSInlineFiles: envoyproxy/ratelimit files written inside sluice's own config load with the directory's,
// and their problems name the file and the line of its content.
func TestRLSInlineFiles(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sluice.yaml")
	write := func(s string) {
		if err := os.WriteFile(cfgPath, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("rls:\n  listen: 127.0.0.1:18081\n  config_dir: " + rlsDir(t, istioYAML) + "\n  files:\n    - name: contour\n      content: |\n        domain: contour\n        descriptors:\n          - key: generic_key\n            value: foo\n            rate_limit: {unit: minute, requests_per_unit: 2}\n")
	cfg, _, err := Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := loadRLSRules(cfg.RLS, cfg.RLS.loadOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !rules.HasDomain("ratelimit") || !rules.HasDomain("contour") || rules.Policies != 2 {
		t.Errorf("rules: files %v, %d policies", rules.Files, rules.Policies)
	}
	write("rls:\n  listen: 127.0.0.1:18081\n  files:\n    - name: contour\n      content: |\n        domain: contour\n        descriptors:\n          - key: generic_key\n            rate_limit: {unit: fortnight, requests_per_unit: 2}\n")
	_, _, err = Load(cfgPath, nil)
	if err == nil || !strings.Contains(err.Error(), "rls.files.contour:4: descriptors[0].rate_limit.unit: must be one of") {
		t.Errorf("inline problem: %v", err)
	}
}

// TestRLSReload: a ConfigMap-style update (the ..data link swapped to a new directory) takes effect at the next
// reload; a broken update is refused and the rules in force stay; an unchanged directory is not reloaded.
func TestRLSReload(t *testing.T) {
	dir := t.TempDir()
	version := func(name, yaml string) {
		d := filepath.Join(dir, name)
		must(t, os.Mkdir(d, 0o755))
		must(t, os.WriteFile(filepath.Join(d, "config.yaml"), []byte(yaml), 0o644))
		tmp := filepath.Join(dir, "..data_tmp")
		must(t, os.Symlink(name, tmp))
		must(t, os.Rename(tmp, filepath.Join(dir, "..data"))) // atomic swap, as kubelet does
	}
	version("..v1", istioYAML)
	must(t, os.Symlink("..data/config.yaml", filepath.Join(dir, "config.yaml")))
	rc := RLSConfig{ConfigDir: dir}.withDefaults()
	opts := rc.loadOptions()
	rules, err := loadRLSRules(rc, opts)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	obs, err := metrics.NewRLS(reg)
	if err != nil {
		t.Fatal(err)
	}
	svc := envoyrls.NewService(nil, rules, envoyrls.ServiceOptions{Observer: obs})
	log := slog.New(slog.DiscardHandler)
	var r rlsReload
	if r.once(svc, rc, opts, log) {
		t.Error("reloaded an unchanged directory")
	}
	// A change takes effect once the directory reads the same twice in a row: a file written in place and read half
	// written is not taken.
	version("..v2", strings.Replace(istioYAML, "domain: ratelimit", "domain: v2", 1))
	if r.once(svc, rc, opts, log) || svc.Rules().HasDomain("v2") {
		t.Error("a change took effect before it had settled")
	}
	if !r.once(svc, rc, opts, log) || !svc.Rules().HasDomain("v2") {
		t.Error("the swapped ConfigMap did not take effect")
	}
	version("..v3", "domain: v3\ndescriptors:\n  - key: a\n    rate_limit: {unit: year, requests_per_unit: 1}\n")
	for range 2 { // read broken twice: settled, so counted as a failed reload
		if r.once(svc, rc, opts, log) || !svc.Rules().HasDomain("v2") {
			t.Error("a broken update replaced the rules in force")
		}
	}
	// Both reloads are counted: a broken ConfigMap shows in /metrics, not only in the log (issue 27).
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := ""
			for _, l := range m.GetLabel() {
				labels += l.GetName() + "=" + l.GetValue() + " "
			}
			got[mf.GetName()+" "+labels] = m.GetCounter().GetValue()
		}
	}
	if got["sluice_rls_reloads_total result=failed source=files "] != 1 || got["sluice_rls_reloads_total result=ok source=files "] != 1 {
		t.Errorf("reload counters %v", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRLSFromXDS: with rls.xds.server, `sluice serve` takes its rules from the management server (Envoy Gateway's
// push) and answers by them once the first version arrives; files are then refused alongside.
func TestRLSFromXDS(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	snapshots := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, xdsserver.NewServer(ctx, snapshots, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()
	rc := &rlsconf.RateLimitConfig{Name: "istio", Domain: "ratelimit", Descriptors: []*rlsconf.RateLimitDescriptor{
		{Key: "PATH", Value: "/productpage", RateLimit: &rlsconf.RateLimitPolicy{Unit: rlsconf.RateLimitUnit_MINUTE, RequestsPerUnit: 1}},
	}}
	snap, err := cache.NewSnapshot("1", map[resource.Type][]types.Resource{resource.RateLimitConfigType: {rc}})
	if err != nil {
		t.Fatal(err)
	}
	if err := snapshots.SetSnapshot(ctx, "sluice-test", snap); err != nil {
		t.Fatal(err)
	}

	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.RLS.Listen = freePort(t)
	cfg.RLS.XDS = RLSXDS{Server: ln.Addr().String(), NodeID: "sluice-test"}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- Run(runCtx, cfg, testBuild(t), slog.New(slog.DiscardHandler), func(a string) { ready <- a })
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(cfg.RLS.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	req := &rlsv3.RateLimitRequest{Domain: "ratelimit", Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "PATH", Value: "/productpage"}}}}}
	// The push is asynchronous: ask until a status carries the pushed limit (a decision is then recorded).
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := rlsv3.NewRateLimitServiceClient(cc).ShouldRateLimit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Statuses[0].CurrentLimit != nil {
			if resp.OverallCode != rlsv3.RateLimitResponse_OK || resp.Statuses[0].CurrentLimit.RequestsPerUnit != 1 {
				t.Fatalf("first limited answer: %v", resp)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the xDS config never took effect")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp, err := rlsv3.NewRateLimitServiceClient(cc).ShouldRateLimit(context.Background(), req); err != nil || resp.OverallCode != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Errorf("second request: %v %v, want OVER_LIMIT (1 per minute)", resp, err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("stop: %v", err)
	}

	cfg.RLS.ConfigDir = rlsDir(t, istioYAML)
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	must(t, os.WriteFile(path, []byte("rls:\n  listen: 127.0.0.1:8081\n  config_dir: "+cfg.RLS.ConfigDir+"\n  xds: {server: 127.0.0.1:18000}\n"), 0o644))
	if _, _, err := Load(path, nil); err == nil || !strings.Contains(err.Error(), "the rules come from xDS or from files, not both") {
		t.Errorf("files and xds together: %v", err)
	}
}

// TestRegistrar: the config and RLS policies in force reach the shared store's registry together, at start and
// after each kick; while the store cannot answer the registrar retries, and each try reads what is in force then,
// so a set installed meanwhile is the one registered.
func TestRegistrar(t *testing.T) {
	got := make(chan []domain.Policy)
	proceed := make(chan struct{})
	fail := true
	registry := rlsRegistry(func(ctx context.Context, ps []domain.Policy) error {
		got <- ps
		<-proceed // the test changes what is in force before this try answers
		if fail {
			fail = false
			return fmt.Errorf("store down")
		}
		return nil
	})
	lc, err := domain.NewPolicyLifecycle([]domain.Policy{{Name: "cfg", Limit: 1, Window: time.Minute}}, nil, clocktest.New(time.Unix(1_700_000_000, 0)), domain.LifecycleOptions{SharedStore: true})
	if err != nil {
		t.Fatal(err)
	}
	r := &registrar{registry: registry, policies: lc, log: slog.New(slog.DiscardHandler), kick: make(chan struct{}, 1), base: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.run(ctx) }()
	names := func(ps []domain.Policy) string {
		var n []string
		for _, p := range ps {
			n = append(n, p.Name)
		}
		return strings.Join(n, ",")
	}
	lc.InstallRLS([]domain.Policy{{Name: "rls.a", Limit: 1, Window: time.Minute}})
	r.Kick()
	if ps := <-got; names(ps) != "cfg,rls.a" {
		t.Fatalf("first registration: %s", names(ps))
	}
	// That try fails; a newer RLS set is installed before it answers: the retry registers the newer one.
	lc.InstallRLS([]domain.Policy{{Name: "rls.b", Limit: 1, Window: time.Minute}})
	proceed <- struct{}{}
	if ps := <-got; names(ps) != "cfg,rls.b" {
		t.Fatalf("retry after a failure: %s, want cfg,rls.b", names(ps))
	}
	proceed <- struct{}{}
	if _, err := lc.InstallConfig([]domain.Policy{{Name: "cfg2", Limit: 2, Window: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	r.Kick()
	if ps := <-got; names(ps) != "cfg2,rls.b" {
		t.Fatalf("after a config reload: %s", names(ps))
	}
	proceed <- struct{}{}
	cancel()
	<-done
}
