package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
)

// The chart's Grafana dashboard and Prometheus alerts (deploy/helm/sluice/files) must name only metrics that sluice
// serves: a renamed metric fails this test, not a dashboard in production. The served families are read from
// /metrics of `sluice serve` on the memory store (checks allowed, denied and failed over to failure_mode on a
// full store, a hold, an Envoy RLS request, the top denied keys on) and on a Redis store; every expression also
// parses (promtool check rules, on the alerts and on the dashboard's queries as recording rules).

const chartFiles = "../deploy/helm/sluice/files"

var metricName = regexp.MustCompile(`\bsluice_[a-z0-9_]+\b`)

// chartExpressions returns the PromQL expressions of the dashboard's panels and of the alert rules.
func chartExpressions(t *testing.T) (dashboard, alerts []string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartFiles, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			dashboard = append(dashboard, tg.Expr)
		}
	}
	raw, err = os.ReadFile(filepath.Join(chartFiles, "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Groups []struct {
			Rules []struct{ Expr string } `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &r); err != nil {
		t.Fatalf("prometheus-rules.yaml: %v", err)
	}
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			alerts = append(alerts, rule.Expr)
		}
	}
	if len(dashboard) < 10 || len(alerts) < 7 {
		t.Fatalf("read %d dashboard queries and %d alerts: the files lost their panels or rules", len(dashboard), len(alerts))
	}
	return dashboard, alerts
}

// family is the metric family a sample name belongs to (a histogram's _bucket, _sum and _count are its own).
func family(name string, served map[string]bool) string {
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && served[base] {
			return base
		}
	}
	return name
}

func TestDashboardAndAlertsNameServedMetrics(t *testing.T) {
	dashboard, alerts := chartExpressions(t)
	served := map[string]bool{}
	for name := range scrapeMemory(t) {
		served[name] = true
	}
	for name := range scrapeRedis(t) {
		served[name] = true
	}
	var missing []string
	for _, expr := range append(dashboard, alerts...) {
		for _, name := range metricName.FindAllString(expr, -1) {
			if !served[family(name, served)] {
				missing = append(missing, name+" (in "+expr+")")
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Fatalf("the chart's dashboard or alerts name metrics sluice does not serve:\n%s", strings.Join(missing, "\n"))
	}
	checkWithPromtool(t, dashboard)
}

// serve runs `sluice serve` with cfg until the test ends and returns its HTTP address.
func serve(t *testing.T, cfg Config) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	addrs := make(chan string, 1)
	go func() {
		done <- Run(ctx, cfg, testBuild(t), slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { addrs <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	select {
	case a := <-addrs:
		return a
	case err := <-done:
		t.Fatal(err)
		return ""
	}
}

func postJSON(t *testing.T, addr, path, body string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// scrape returns the families /metrics serves.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	return fams
}

func scrapeMemory(t *testing.T) map[string]*dto.MetricFamily {
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Memory.MaxKeys = 3
	cfg.Metrics.TopDeniedKeys = 5
	cfg.Policies = []PolicyConfig{
		{Name: "login", Limit: 1, Window: Duration(time.Minute)},
		{Name: "open", Limit: 1, Window: Duration(time.Minute), FailureMode: string(domain.FailAllow)},
	}
	cfg.RLS.Listen = freePort(t)
	cfg.RLS.ConfigDir = rlsDir(t, istioYAML)
	addr := serve(t, cfg)
	postJSON(t, addr, "/v1/check", `{"policy":"login","key":"a"}`)
	postJSON(t, addr, "/v1/check", `{"policy":"login","key":"a"}`) // denied
	postJSON(t, addr, "/v1/holds", `{"policy":"login","key":"b","amount":1}`)
	cc, err := grpc.NewClient(cfg.RLS.Listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	req := &rlsv3.RateLimitRequest{Domain: "ratelimit", Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "PATH", Value: "/productpage"}}}}}
	if _, err := rlsv3.NewRateLimitServiceClient(cc).ShouldRateLimit(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"c", "d", "e"} { // the store is full: failure_mode allow answers degraded
		postJSON(t, addr, "/v1/check", `{"policy":"open","key":"`+k+`"}`)
	}
	fams := scrape(t, addr)
	dec := fams["sluice_decisions_total"]
	if dec == nil || !strings.Contains(dec.String(), "degraded") || fams["sluice_memory_full_rejections_total"] == nil {
		t.Fatalf("the memory run did not fill the store (no degraded decision): %v", dec)
	}
	return fams
}

func scrapeRedis(t *testing.T) map[string]*dto.MetricFamily {
	srv := redistest.StartServer(t)
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Store = "redis"
	cfg.Redis.Addrs = []string{srv.Addr}
	cfg.Policies = []PolicyConfig{{Name: "login", Limit: 1, Window: Duration(time.Minute)}}
	addr := serve(t, cfg)
	postJSON(t, addr, "/v1/check", `{"policy":"login","key":"a"}`)
	return scrape(t, addr)
}

// checkWithPromtool parses the alert rules, and the dashboard's queries as recording rules, with Prometheus's
// promtool (scripts/test.d/18-promtool.sh installs it from Debian's prometheus package into the tools cache).
func checkWithPromtool(t *testing.T, dashboard []string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		cache := os.Getenv("SLUICE_TOOLS_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "sluice-tools")
		}
		bin = filepath.Join(cache, "promtool")
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("promtool not found (scripts/test.d/18-promtool.sh installs it): %v", err)
			}
			t.Skip("promtool not installed: run scripts/test.d/18-promtool.sh")
		}
	}
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, e := range dashboard {
		// Grafana's variables are not PromQL: give them values, as Grafana does before it sends a query.
		e = strings.NewReplacer("$__rate_interval", "5m", "$__range", "1h", "$job", ".*").Replace(e)
		rules = append(rules, rule{Record: "sluice:dashboard:query", Expr: e})
	}
	raw, err := yaml.Marshal(map[string]any{"groups": []map[string]any{{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	queries := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(queries, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "rules", filepath.Join(chartFiles, "prometheus-rules.yaml"), queries).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}
