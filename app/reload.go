package app

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"

	"github.com/sluice-dev/sluice/adapters/bearer"
	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/domain"
)

// Live reload (issue 27). SIGHUP, and a change of the config file or the tokens file (read again every
// reload_interval, taken once it reads the same twice in a row; a Kubernetes ConfigMap or Secret volume swaps a
// symlink, which reading the path follows), load
// the whole configuration again with the same loader as start-up. A configuration that does not load keeps
// everything in force, is logged with every problem and counted (sluice_config_reloads_total{result="invalid"});
// `sluice config check` gives the same verdict. A good one replaces, at once:
//   - the config-file policies and their overrides (domain.PolicyLifecycle.InstallConfigWith: floors for changed
//     windows and algorithms;
//     the keys' state is untouched, so the memory store's counters survive), registered again with a shared
//     store together with the RLS policies in force (registrar);
//   - the tokens, shared by the HTTP API and the RLS listener (bearer.Set.Replace);
//   - log.level.
//
// Every other setting (listen addresses, the store, timeouts, the RLS source) keeps its running value until a
// restart, and a reload that changes one says so in a warning naming them.

// loggerLevels maps a logger newLogger built to the level a reload sets; a logger built elsewhere (tests, the
// bench) keeps its level.
var loggerLevels sync.Map // *slog.Logger → *slog.LevelVar

// liveSettings are the settings a reload applies; every other one needs a restart.
var liveSettings = map[string]bool{"policies": true, "tokens": true, "tokens_file": true, "log.level": true}

type reloader struct {
	policies *domain.PolicyLifecycle
	tokens   *bearer.Set
	level    *slog.LevelVar // nil: the logger's level does not change
	register *registrar     // registers the policies in force with a shared store
	log      *slog.Logger
	reloads  *prometheus.CounterVec

	mu      sync.Mutex
	running Config // the configuration in force: the start-up one with the live settings of the last reload

	// Used by the watch goroutine alone: the files' fingerprint when last loaded, and at the previous tick.
	seen, pending [32]byte
}

func newTokenSet(cfg Config) *bearer.Set { return bearer.New(httpapi.BearerTokens(httpTokens(cfg))) }

func httpTokens(cfg Config) []httpapi.Token {
	ts := make([]httpapi.Token, len(cfg.Tokens))
	for i, t := range cfg.Tokens {
		ts[i] = httpapi.Token{Name: t.Name, Secret: t.Token, Role: httpapi.Role(t.Role)}
	}
	return ts
}

// startReloader runs the reloader while the app runs.
func startReloader(lc fx.Lifecycle, cfg Config, policies *domain.PolicyLifecycle, tokens *bearer.Set, register *registrar,
	reg prometheus.Registerer, log *slog.Logger) error {
	r := &reloader{policies: policies, tokens: tokens, register: register, log: log, running: cfg,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_config_reloads_total",
			Help: "Configuration reloads (SIGHUP or a changed config or tokens file), by result: ok, or invalid (nothing changed).",
		}, []string{"result"})}
	if lv, ok := loggerLevels.Load(log); ok {
		r.level = lv.(*slog.LevelVar)
	}
	if err := reg.Register(r.reloads); err != nil {
		return err
	}
	r.reloads.WithLabelValues("ok")
	r.reloads.WithLabelValues("invalid")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			var tick <-chan time.Time
			if cfg.ReloadInterval > 0 {
				t := time.NewTicker(time.Duration(cfg.ReloadInterval))
				tick = t.C
				defer func() { go func() { <-done; t.Stop() }() }()
			}
			go func() {
				defer close(done)
				defer signal.Stop(hup)
				r.watch(ctx, hup, tick)
			}()
			return nil
		},
		OnStop: func(context.Context) error {
			cancel()
			<-done
			return nil
		},
	})
	return nil
}

// watch reloads on every signal from hup and calls poll at every tick (the reload interval; nil: never).
func (r *reloader) watch(ctx context.Context, hup <-chan os.Signal, tick <-chan time.Time) {
	r.settle()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload(ctx, "SIGHUP")
			r.settle()
		case <-tick:
			r.poll(ctx)
		}
	}
}

// settle records the files as they read now as loaded.
func (r *reloader) settle() {
	r.seen = r.fingerprint()
	r.pending = r.seen
}

// poll reloads when the files' contents changed and have settled: they read the same now as at the previous poll.
// A file written in place (an editor or a tool that truncates, then writes) can be read empty or half written; an
// empty config file is a valid one with no policies, so reloading the first new contents seen could drop every
// policy for an interval. The price is one interval more before a change takes effect; SIGHUP still reloads at
// once.
func (r *reloader) poll(ctx context.Context) {
	now := r.fingerprint()
	if now != r.seen && now == r.pending {
		r.seen = now
		r.reload(ctx, "file changed")
	}
	r.pending = now
}

// fingerprint digests the config file and the tokens file as they read now (an unreadable file digests its
// error, so a file that disappears and comes back is a change each time).
func (r *reloader) fingerprint() [32]byte {
	r.mu.Lock()
	files := []string{r.running.source, r.running.TokensFile}
	r.mu.Unlock()
	h := sha256.New()
	for _, f := range files {
		if f == "" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			data = []byte("error: " + err.Error())
		}
		h.Write([]byte(f))
		h.Write([]byte{0})
		h.Write(data)
		h.Write([]byte{0})
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// reload loads the configuration again and applies its live settings, or keeps everything when it does not load.
func (r *reloader) reload(ctx context.Context, cause string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	load := Load
	if r.running.ratelimit {
		load = LoadRatelimit
	}
	next, warnings, err := load(r.running.source, os.Environ())
	if err != nil {
		r.reloads.WithLabelValues("invalid").Inc()
		r.log.Error("configuration reload refused: everything in force is kept", "cause", cause, "file", r.running.source, "err", err)
		return
	}
	ps := make([]domain.Policy, len(next.Policies))
	for i, p := range next.Policies {
		ps[i] = p.domain()
	}
	before := r.policies.Config()
	installed, err := r.policies.InstallConfigWith(ps, next.overrides())
	if err != nil { // unreachable: Load checked the policies with the same rules
		r.reloads.WithLabelValues("invalid").Inc()
		r.log.Error("configuration reload refused: everything in force is kept", "cause", cause, "err", err)
		return
	}
	r.tokens.Replace(httpapi.BearerTokens(httpTokens(next)))
	if r.level != nil {
		var lv slog.Level
		_ = lv.UnmarshalText([]byte(next.Log.Level)) // validated by Load
		r.level.Set(lv)
	}
	restart := restartSettings(r.running, next)
	r.running.Policies, r.running.Tokens, r.running.TokensFile, r.running.Log.Level = next.Policies, next.Tokens, next.TokensFile, next.Log.Level
	r.reloads.WithLabelValues("ok").Inc()
	added, changed, removed := policyChanges(before, installed)
	r.log.Info("configuration reloaded", "cause", cause, "policies", len(installed), "added", added, "changed", changed,
		"removed", removed, "tokens", len(next.Tokens), "log_level", next.Log.Level)
	for _, w := range warnings {
		r.log.Warn("configuration: " + w)
	}
	if len(restart) > 0 {
		r.log.Warn("configuration reload: these settings change only with a restart; their running values stay in force", "settings", restart)
	}
	if r.register != nil {
		r.register.Kick()
	}
}

// policyChanges names the config policies a reload added, changed (any field) and removed.
func policyChanges(before, after []domain.Policy) (added, changed, removed []string) {
	old := make(map[string]domain.Policy, len(before))
	for _, p := range before {
		old[p.Name] = p
	}
	for _, p := range after {
		o, ok := old[p.Name]
		switch {
		case !ok:
			added = append(added, p.Name)
		case o != p:
			changed = append(changed, p.Name)
		}
		delete(old, p.Name)
	}
	for _, p := range before {
		if _, gone := old[p.Name]; gone {
			removed = append(removed, p.Name)
		}
	}
	return added, changed, removed
}

// restartSettings lists the settings (YAML paths) whose value differs between the running configuration and
// next, other than those a reload applies.
func restartSettings(running, next Config) []string {
	var out []string
	var walk func(a, b reflect.Value, prefix string)
	walk = func(a, b reflect.Value, prefix string) {
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			name := yamlName(t.Field(i))
			if name == "" {
				continue
			}
			path := prefix + name
			if liveSettings[path] {
				continue
			}
			fa, fb := a.Field(i), b.Field(i)
			if fa.Kind() == reflect.Struct && fa.Type() != durationType {
				walk(fa, fb, path+".")
				continue
			}
			if !reflect.DeepEqual(fa.Interface(), fb.Interface()) && !(isEmpty(fa) && isEmpty(fb)) {
				out = append(out, path)
			}
		}
	}
	walk(reflect.ValueOf(running), reflect.ValueOf(next), "")
	return out
}

// isEmpty: a nil or empty slice (YAML's "[]" and an absent key read alike).
func isEmpty(v reflect.Value) bool { return v.Kind() == reflect.Slice && v.Len() == 0 }
