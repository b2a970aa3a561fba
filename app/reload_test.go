package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

const (
	reloadTokenA = "token-a-0123456789abcdef"
	reloadTokenB = "token-b-0123456789abcdef"
)

// rewrite replaces path's contents at once (a new file renamed over it, as a ConfigMap update or an editor's save
// does): a watcher's tick that races the rewrite reads the old file or the new one, never a truncated one.
func rewrite(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func reloadConfig(limit string, extra string) string {
	return "listen: 127.0.0.1:0\nreload_interval: 0s\ntokens_file: TOKENS\npolicies:\n  - {name: p, limit: " + limit + ", window: 1h}\n" + extra
}

// post sends a check with token and returns the status and body.
func post(t *testing.T, addr, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/check", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the text of /metrics.
func metricsText(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestSIGHUPReloads: SIGHUP no longer kills sluice (Go's default); it reloads the config file, its tokens file and
// the policies, keeping the memory store's counters; a bad file keeps everything in force, logged and counted;
// a setting that needs a restart is named.
func TestSIGHUPReloads(t *testing.T) {
	dir := t.TempDir()
	cfgPath, tokPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "tokens.yaml")
	rewrite(t, tokPath, "- {name: a, token: "+reloadTokenA+", role: admin}\n")
	rewrite(t, cfgPath, strings.Replace(reloadConfig("2", ""), "TOKENS", tokPath, 1))
	cfg, _, err := Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	log := newLogger(LogConfig{Level: "info", Format: "text"}, &syncWriter{w: &logs})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, testBuild(t), log, func(a string) { addrs <- a }) }()
	var addr string
	select {
	case addr = <-addrs:
	case err := <-done:
		t.Fatal(err)
	}
	check := `{"policy":"p","key":"k"}`
	for i := range 2 {
		if code, body := post(t, addr, reloadTokenA, check); code != 200 || !strings.Contains(body, `"allowed":true`) {
			t.Fatalf("check %d: %d %s", i, code, body)
		}
	}
	hup := func(want string) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(10 * time.Second)
		for !strings.Contains(metricsText(t, addr), want) {
			select {
			case err := <-done:
				t.Fatalf("sluice stopped on SIGHUP: %v", err)
			case <-deadline:
				t.Fatalf("no %q after SIGHUP; log:\n%s", want, logs.String())
			case <-time.After(10 * time.Millisecond): // waiting for the signal's reload, not for time to pass
			}
		}
	}

	// Limit 3, a new token in place of the old one, debug logging, and a listen address that needs a restart.
	rewrite(t, tokPath, "- {name: b, token: "+reloadTokenB+", role: admin}\n")
	rewrite(t, cfgPath, strings.Replace(strings.Replace(reloadConfig("3", "log: {level: debug}\n"), "TOKENS", tokPath, 1), "127.0.0.1:0", "127.0.0.1:1", 1))
	hup(`sluice_config_reloads_total{result="ok"} 1`)
	if code, _ := post(t, addr, reloadTokenA, check); code != 401 {
		t.Fatalf("the replaced token still authenticates: %d", code)
	}
	for i, want := range []string{`"allowed":true`, `"allowed":false`} { // two units still count: one more
		if code, body := post(t, addr, reloadTokenB, check); code != 200 || !strings.Contains(body, want) {
			t.Fatalf("after the reload, check %d: %d %s, want %s", i, code, body, want)
		}
	}
	if !strings.Contains(logs.String(), "configuration reloaded") || !strings.Contains(logs.String(), "settings=[listen]") {
		t.Fatalf("the reload's log does not name the change and the restart-only setting:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Fatalf("log.level: debug did not take effect:\n%s", logs.String())
	}

	// A bad file: nothing changes.
	rewrite(t, cfgPath, strings.Replace(reloadConfig("-1", ""), "TOKENS", tokPath, 1))
	hup(`sluice_config_reloads_total{result="invalid"} 1`)
	if code, body := post(t, addr, reloadTokenB, check); code != 200 || !strings.Contains(body, `"allowed":false`) || !strings.Contains(body, `"limit":3`) {
		t.Fatalf("after a refused reload: %d %s", code, body)
	}
	if !strings.Contains(logs.String(), "configuration reload refused") || !strings.Contains(logs.String(), "policies[0].limit") {
		t.Fatalf("the refused reload's log does not say why:\n%s", logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// counted is the reload counter's value for result.
func counted(t *testing.T, c *prometheus.CounterVec, result string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// A changed file reloads, with no signal, at the tick of the reload interval that reads it the same as the tick
// before; an unchanged one does not reload.
func TestFileChangeReloads(t *testing.T) {
	dir := t.TempDir()
	cfgPath, tokPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "tokens.yaml")
	rewrite(t, tokPath, "- {name: a, token: "+reloadTokenA+", role: check}\n")
	rewrite(t, cfgPath, strings.Replace(reloadConfig("2", ""), "TOKENS", tokPath, 1))
	cfg, _, err := Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC))
	ps := make([]domain.Policy, len(cfg.Policies))
	for i, p := range cfg.Policies {
		ps[i] = p.domain()
	}
	lc, err := domain.NewPolicyLifecycle(ps, memory.NewPolicies(clock), clock, domain.LifecycleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tokens := newTokenSet(cfg)
	r := &reloader{policies: lc, tokens: tokens, log: slog.New(slog.DiscardHandler), running: cfg,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "reloads"}, []string{"result"})}
	ctx := context.Background()
	r.settle()
	step := func() { r.poll(ctx); r.poll(ctx) } // two ticks of the reload interval

	step()
	if n := counted(t, r.reloads, "ok"); n != 0 {
		t.Fatalf("an unchanged file reloaded (%v)", n)
	}
	// A Secret update: the tokens file is replaced through a symlink swap.
	next := filepath.Join(dir, "tokens-2.yaml")
	rewrite(t, next, "- {name: b, token: "+reloadTokenB+", role: check}\n")
	link := filepath.Join(dir, "tokens-link.yaml")
	if err := os.Symlink(next, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link, tokPath); err != nil {
		t.Fatal(err)
	}
	step()
	if _, ok := tokens.Role("Bearer " + reloadTokenB); !ok {
		t.Fatal("the swapped tokens file was not reloaded")
	}
	if _, ok := tokens.Role("Bearer " + reloadTokenA); ok {
		t.Fatal("the old token still authenticates")
	}
	rewrite(t, cfgPath, strings.Replace(reloadConfig("9", "  - {name: q, limit: 1, window: 1m}\n"), "TOKENS", tokPath, 1))
	step()
	if p, err := lc.Get(ctx, "p"); err != nil || p.Limit != 9 || !lc.IsConfig("q") {
		t.Fatalf("config file change: p %+v %v, q config %v", p, err, lc.IsConfig("q"))
	}
	if n := counted(t, r.reloads, "ok"); n != 2 {
		t.Fatalf("reloads ok %v, want 2", n)
	}

	// A file written in place (truncated, then written: os.WriteFile, many tools) and read between the two: the
	// empty file, a valid configuration with no policies, is not taken; the whole one is, once it reads the same at
	// two ticks in a row. (This is how CI once saw every policy vanish for a tick: 404s under load.)
	if err := os.WriteFile(cfgPath, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r.poll(ctx)
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(reloadConfig("4", ""), "TOKENS", tokPath, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	r.poll(ctx)
	if n := counted(t, r.reloads, "ok"); n != 2 || !lc.IsConfig("q") {
		t.Fatalf("a torn read was reloaded: reloads ok %v, q config %v", n, lc.IsConfig("q"))
	}
	step()
	if p, err := lc.Get(ctx, "p"); err != nil || p.Limit != 4 || lc.IsConfig("q") {
		t.Fatalf("the settled file: p %+v %v, q config %v", p, err, lc.IsConfig("q"))
	}
	if n := counted(t, r.reloads, "ok"); n != 3 {
		t.Fatalf("reloads ok %v, want 3", n)
	}
	// A config policy's overrides reload with it.
	rewrite(t, cfgPath, strings.Replace(strings.Replace(reloadConfig("4", ""), "TOKENS", tokPath, 1), "window: 1h}", `window: 1h, overrides: [{match: "vip:*", limit: 50}]}`, 1))
	step()
	if p, err := lc.Get(ctx, "p"); err != nil || lc.ForKey(p, "vip:1").Limit != 50 || lc.ForKey(p, "guest").Limit != 4 {
		t.Fatalf("a reloaded override: %v", err)
	}
}
