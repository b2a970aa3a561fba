package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/fx"
)

func testBuild(t *testing.T) Build {
	spec, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return Build{Version: "test", Spec: spec}
}

func TestWiringValidates(t *testing.T) {
	for _, store := range []string{"memory", "postgres", "redis"} {
		t.Run(store, func(t *testing.T) {
			cfg := Defaults()
			cfg.Store = store
			cfg.Postgres.URL = "postgres://postgres@127.0.0.1:1/none" // never dialled by ValidateApp
			cfg.Redis.Addrs = []string{"127.0.0.1:1"}
			if err := fx.ValidateApp(appOptions(cfg, testBuild(t), slog.New(slog.DiscardHandler))); err != nil {
				t.Fatalf("fx graph for store %s: %v", store, err)
			}
		})
	}
}

func TestRunServesAndStops(t *testing.T) {
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Policies = []PolicyConfig{{Name: "login", Limit: 2, Window: Duration(time.Minute)}}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	go func() { done <- Run(ctx, cfg, testBuild(t), log, func(a string) { addrs <- a }) }()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	for i, want := range []string{`"allowed":true`, `"allowed":true`, `"allowed":false`} {
		resp, err := http.Post("http://"+addr+"/v1/check", "application/json", strings.NewReader(`{"policy":"login","key":"k"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Fatalf("check %d: %s", i, body)
		}
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, fam := range []string{`sluice_decisions_total{outcome="allowed",policy="login"} 2`, `sluice_decisions_total{outcome="denied",policy="login"} 1`, "sluice_memory_keys 1", "sluice_store_duration_seconds_bucket", "go_goroutines"} {
		if !strings.Contains(string(metrics), fam) {
			t.Errorf("metrics lack %q", fam)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("stop: %v", err)
	}
	if !strings.Contains(logs.String(), "store=memory") || !strings.Contains(logs.String(), "run exactly one replica") {
		t.Fatalf("start-up log does not state the store and what it means:\n%s", logs.String())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// `sluice version` says which source and toolchain built the binary, and /metrics has the same in
// sluice_build_info.
func TestBuildVersionAndInfo(t *testing.T) {
	b := Build{Version: "devel", Revision: "1a2b3c4d", RevisionTime: "2026-12-07T15:00:00Z", Modified: true, GoVersion: "go1.26.8"}
	if got, want := b.String(), "sluice devel (revision 1a2b3c4d+dirty, 2026-12-07T15:00:00Z) go1.26.8"; got != want {
		t.Fatalf("version %q, want %q", got, want)
	}
	if got := (Build{Version: "v1.2.3", GoVersion: "go1.26.8"}).String(); got != "sluice v1.2.3 go1.26.8" {
		t.Fatalf("version without VCS stamp: %q", got)
	}
	reg := newRegistry(b)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_build_info" {
			continue
		}
		m := mf.GetMetric()[0]
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if m.GetGauge().GetValue() != 1 || labels["version"] != "devel" || labels["revision"] != "1a2b3c4d+dirty" || labels["goversion"] != "go1.26.8" {
			t.Fatalf("sluice_build_info %v = %v", labels, m.GetGauge().GetValue())
		}
		return
	}
	t.Fatal("no sluice_build_info in the registry")
}

// The console's files are public beside the API on the same listener, while the API keeps asking for a token:
// the page holds no data, it asks the API with the operator's token.
func TestConsoleServedBesideTheAPI(t *testing.T) {
	cfg := Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Tokens = []TokenConfig{{Name: "ops", Token: "console-admin-token-0123456789", Role: "admin"}}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, testBuild(t), slog.New(slog.DiscardHandler), func(a string) { addrs <- a })
	}()
	var base string
	select {
	case a := <-addrs:
		base = "http://" + a
	case err := <-done:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	for path, want := range map[string]int{"/ui/": 200, "/ui/app.js": 200, "/ui/nope": 404, "/v1/policies": 401} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without a token: %d, want %d", path, resp.StatusCode, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); strings.HasPrefix(path, "/ui/") && csp == "" {
			t.Errorf("GET %s: no Content-Security-Policy", path)
		}
	}
}
