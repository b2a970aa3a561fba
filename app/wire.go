package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/fx"
	"go.uber.org/fx/fxevent"

	"github.com/sluice-dev/sluice/adapters/bearer"
	"github.com/sluice-dev/sluice/adapters/console"
	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/adapters/topkeys"
	"github.com/sluice-dev/sluice/domain"
)

// Build carries what the main package knows: the version, the source revision and toolchain it was built from
// (from the binary's build information), and the OpenAPI document it embeds.
type Build struct {
	// Version is the module version (`go install module@version`), or "devel" for a build from a checkout.
	Version string
	// Revision is the VCS revision `go build` stamped in a Git checkout ("" when unknown), RevisionTime its
	// commit time, and Modified whether the work tree had uncommitted changes.
	Revision     string
	RevisionTime string
	Modified     bool
	// GoVersion is the toolchain that built the binary.
	GoVersion string
	Spec      []byte
}

// String is what `sluice version` prints: "sluice devel (revision 1a2b3c4+dirty, 2026-12-07T15:00:00Z) go1.26.8".
func (b Build) String() string {
	s := "sluice " + b.Version
	if b.Revision != "" {
		rev := b.Revision
		if b.Modified {
			rev += "+dirty"
		}
		s += " (revision " + rev
		if b.RevisionTime != "" {
			s += ", " + b.RevisionTime
		}
		s += ")"
	}
	if b.GoVersion != "" {
		s += " " + b.GoVersion
	}
	return s
}

// Listening is the address the HTTP server bound (useful when the port is 0).
type Listening struct{ Addr string }

// appOptions is the whole fx graph for `sluice serve`. The store module is chosen from cfg.Store, so the memory
// store builds no database pool at all.
func appOptions(cfg Config, build Build, log *slog.Logger) fx.Option {
	return fx.Options(
		fx.WithLogger(func() fxevent.Logger {
			l := &fxevent.SlogLogger{Logger: log}
			l.UseLogLevel(slog.LevelDebug)
			return l
		}),
		fx.StopTimeout(time.Duration(cfg.HTTP.DrainTimeout)+10*time.Second),
		fx.Supply(cfg, build, log),
		fx.Provide(
			fx.Annotate(newRegistry, fx.As(new(prometheus.Registerer)), fx.As(new(prometheus.Gatherer))),
			newClock,
			newTracing,
			newObserver,
			newLifecycle,
			newLimiter,
			newTokenSet,
			newRegistrar,
			newHTTPServer,
		),
		storeModule(cfg),
		rlsModule(cfg),
		fx.Invoke(func(*Listening) {}),
		fx.Invoke(startReloader),
	)
}

// storeModule returns the module of the configured store (storeDrivers; validation ran before, so the name is
// known; memory otherwise).
func storeModule(cfg Config) fx.Option {
	if d, ok := storeDriverNamed(cfg.Store); ok {
		return d.Module(cfg)
	}
	return memoryModule(cfg)
}

func memoryModule(cfg Config) fx.Option {
	return fx.Module("store.memory",
		fx.Supply(rlsRegistry(nil)),
		fx.Provide(func(clock domain.Clock, reg prometheus.Registerer, lc fx.Lifecycle) (domain.BucketStore, domain.PolicyStore, error) {
			s := memory.New(clock, memory.Options{MaxKeys: cfg.Memory.MaxKeys})
			err := errors.Join(
				reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Name: "sluice_memory_keys", Help: "Live (policy, key) pairs held by the memory store.",
				}, func() float64 { return float64(s.Keys()) })),
				reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
					Name: "sluice_memory_max_keys", Help: "The memory store's bound (memory.max_keys).",
				}, func() float64 { return float64(s.MaxKeys()) })),
				reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
					Name: "sluice_memory_full_rejections_total", Help: "New keys refused because every slot held a live key (handled by failure_mode).",
				}, func() float64 { return float64(s.FullRejections()) })),
			)
			if err != nil {
				return nil, nil, err
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			lc.Append(fx.Hook{
				OnStart: func(context.Context) error {
					go func() { defer close(done); s.RunSweeper(ctx, 10*time.Second) }()
					return nil
				},
				OnStop: func(context.Context) error { cancel(); <-done; return nil },
			})
			return s, s.Policies(), nil
		}),
	)
}

func newRegistry(build Build) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(build))
	return reg
}

// buildInfo is the sluice_build_info gauge: always 1, its labels say which build is running (the usual
// Prometheus idiom, so a dashboard can join it or show a rollout's progress).
func buildInfo(b Build) prometheus.Collector {
	rev := b.Revision
	if rev != "" && b.Modified {
		rev += "+dirty"
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "sluice_build_info",
		Help:        "The running build: version, VCS revision and Go version (always 1).",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": rev, "goversion": b.GoVersion},
	})
	g.Set(1)
	return g
}

func newClock(cfg Config) domain.Clock {
	return domain.SystemClock{Offset: time.Duration(cfg.ClockOffset)}
}

// newObserver is the metrics observer behind the top-keys tracker (adapters/topkeys): every decision is counted by
// policy and outcome in /metrics, and by key in fixed memory for GET /v1/policies/{name}/top.
func newObserver(cfg Config, reg prometheus.Registerer, clock domain.Clock) (domain.Observer, *topkeys.Tracker, error) {
	m, err := metrics.NewObserver(reg)
	if err != nil {
		return nil, nil, err
	}
	t := topkeys.New(m, clock, topkeys.Options{})
	if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sluice_topkeys_uncounted_total",
		Help: "Decisions the top keys did not count because they already tracked their maximum number of policies (1024).",
	}, func() float64 { return float64(t.Dropped()) })); err != nil {
		return nil, nil, err
	}
	if n := cfg.Metrics.TopDeniedKeys; n > 0 {
		label := metrics.HashedKey
		if cfg.Metrics.KeyLabel == "truncate" {
			label = metrics.TruncatedKey
		}
		if err := metrics.NewTopDeniedKeys(reg, t, n, label); err != nil {
			return nil, nil, err
		}
	}
	return t, t, nil
}

// newLifecycle is the one owner of config, API and RLS policies; the store's driver row says whether replicas
// share the store (domain.LifecycleOptions.SharedStore).
func newLifecycle(cfg Config, policies domain.PolicyStore, clock domain.Clock) (*domain.PolicyLifecycle, error) {
	ps := make([]domain.Policy, len(cfg.Policies))
	for i, p := range cfg.Policies {
		ps[i] = p.domain()
	}
	d, _ := storeDriverNamed(cfg.Store)
	l, err := domain.NewPolicyLifecycle(ps, policies, clock, domain.LifecycleOptions{SharedStore: d.Shared})
	if err != nil {
		return nil, err
	}
	if ovs := cfg.overrides(); ovs != nil {
		if _, err := l.InstallConfigWith(ps, ovs); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// newLimiter decides with the store, wrapped in a span per call when tracing is on (tracedStore).
func newLimiter(cfg Config, l *domain.PolicyLifecycle, store domain.BucketStore, obs domain.Observer, clock domain.Clock, t *Tracing) domain.Limiter {
	return domain.NewServiceWith(l, tracedStore(store, t, cfg), obs, clock)
}

func newHTTPServer(lc fx.Lifecycle, cfg Config, build Build, lim domain.Limiter, tokens *bearer.Set, top *topkeys.Tracker, log *slog.Logger, gatherer prometheus.Gatherer, reg prometheus.Registerer, tr *Tracing) (*Listening, error) {
	requests, err := metrics.NewHTTP(reg)
	if err != nil {
		return nil, err
	}
	api := httpapi.NewHandler(httpapi.Options{
		Limiter: lim, Spec: build.Spec, Store: cfg.Store, TokenSet: tokens, TopKeys: top,
		MaxBodyBytes: cfg.HTTP.MaxBodyBytes, Logger: log, Gatherer: gatherer, Requests: requests,
		TracerProvider: tr.Provider, Propagator: tr.Propagator,
	})
	handler := withConsole(api)
	if cfg.ratelimit {
		handler = probesOnly(api)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: time.Duration(cfg.HTTP.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(cfg.HTTP.ReadTimeout),
		WriteTimeout:      time.Duration(cfg.HTTP.ReadTimeout) + 10*time.Second,
		IdleTimeout:       time.Duration(cfg.HTTP.IdleTimeout),
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if cfg.HTTP.TLS.CertFile != "" {
		files, err := newCertFiles("http.tls", cfg.HTTP.TLS, log)
		if err != nil {
			return nil, err
		}
		srv.TLSConfig = files.TLSConfig()
	}
	// The ratelimit drop-in's USE_PROMETHEUS: /metrics on a listener of its own too.
	var metricsSrv *http.Server
	metricsServed := make(chan struct{})
	if cfg.metricsListen != "" {
		metricsSrv = &http.Server{
			Handler:           metricsOnly(api, cfg.metricsPath),
			ReadHeaderTimeout: time.Duration(cfg.HTTP.ReadHeaderTimeout),
			ReadTimeout:       time.Duration(cfg.HTTP.ReadTimeout),
			WriteTimeout:      time.Duration(cfg.HTTP.ReadTimeout) + 10*time.Second,
			IdleTimeout:       time.Duration(cfg.HTTP.IdleTimeout),
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	} else {
		close(metricsServed)
	}
	l := &Listening{}
	served := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(ctx context.Context) error {
			ln, err := net.Listen("tcp", cfg.Listen)
			if err != nil {
				return fmt.Errorf("listen (SLUICE_LISTEN=%s): %w", cfg.Listen, err)
			}
			if metricsSrv != nil {
				mln, err := net.Listen("tcp", cfg.metricsListen)
				if err != nil {
					ln.Close()
					return fmt.Errorf("listen (PROMETHEUS_ADDR=%s): %w", cfg.metricsListen, err)
				}
				go func() {
					defer close(metricsServed)
					if err := metricsSrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
						log.Error("metrics server stopped", "err", err)
					}
				}()
				log.Info("sluice metrics serving", "addr", mln.Addr().String(), "path", cfg.metricsPath)
			}
			l.Addr = ln.Addr().String()
			serve, https := srv.Serve, srv.TLSConfig != nil
			if https {
				serve = func(ln net.Listener) error { return srv.ServeTLS(ln, "", "") } // the certificate is in TLSConfig
			}
			go func() {
				defer close(served)
				if err := serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					log.Error("http server stopped", "err", err)
				}
			}()
			d, _ := storeDriverNamed(cfg.Store)
			log.Info("sluice serving", "addr", l.Addr, "store", cfg.Store, "shared", d.Shared, "atomic_across_keys", d.AtomicAcrossKeys,
				"replicas", d.Replicas, "policies", len(cfg.Policies), "auth", tokens.Len() > 0,
				"tls", https, "client_certs", cfg.HTTP.TLS.ClientCAFile != "", "version", build.Version)
			return nil
		},
		OnStop: func(context.Context) error {
			// Stop accepting, let in-flight requests finish, bounded by the drain timeout.
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.HTTP.DrainTimeout))
			defer cancel()
			err := srv.Shutdown(ctx)
			if metricsSrv != nil {
				err = errors.Join(err, metricsSrv.Shutdown(ctx))
			}
			<-served
			<-metricsServed
			if err != nil {
				return fmt.Errorf("drain did not finish within %s: %w", cfg.HTTP.DrainTimeout, err)
			}
			log.Info("drained and stopped")
			return nil
		},
	})
	return l, nil
}

// newLogger builds the process logger from cfg, at a level a reload may change (loggerLevels).
func newLogger(cfg LogConfig, w interface{ Write([]byte) (int, error) }) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	lv := new(slog.LevelVar)
	lv.Set(level)
	opts := &slog.HandlerOptions{Level: lv}
	var log *slog.Logger
	if cfg.Format == "json" {
		log = slog.New(slog.NewJSONHandler(w, opts))
	} else {
		log = slog.New(slog.NewTextHandler(w, opts))
	}
	loggerLevels.Store(log, lv)
	return log
}

// Run starts sluice with cfg and serves until ctx ends, then drains and stops. ready, when set, is called with
// the bound address once the server accepts connections.
func Run(ctx context.Context, cfg Config, build Build, log *slog.Logger, ready func(addr string)) error {
	var l *Listening
	app := fx.New(appOptions(cfg, build, log), fx.Populate(&l))
	if err := app.Err(); err != nil {
		return err
	}
	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		return err
	}
	if ready != nil {
		ready(l.Addr)
	}
	<-ctx.Done()
	log.Info("shutting down: draining in-flight requests", "drain_timeout", cfg.HTTP.DrainTimeout)
	stopCtx, cancel2 := context.WithTimeout(context.Background(), time.Duration(cfg.HTTP.DrainTimeout)+10*time.Second)
	defer cancel2()
	return app.Stop(stopCtx)
}

// probesOnly is the HTTP listener of the ratelimit drop-in (ratelimit.go): envoyproxy/ratelimit's /healthcheck,
// and the API's public /healthz, /healthz/store, /readyz and /metrics routes as the API serves them; every other
// path is 404. The checks and the policy admin API are not served, so this listener may face the network without
// bearer tokens.
//
// /healthcheck answers as /readyz decides (the same handler is asked, so the request is logged and counted as
// /readyz): 200 "OK" when ready, as envoyproxy/ratelimit answers, else 503 with /readyz's problem document.
func probesOnly(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	for _, p := range []string{"/healthz", "/healthz/store", "/readyz", "/metrics"} {
		mux.Handle(p, api)
	}
	mux.HandleFunc("/healthcheck", func(w http.ResponseWriter, r *http.Request) {
		ask := r.Clone(r.Context())
		ask.Method, ask.URL.Path, ask.URL.RawQuery, ask.Body = http.MethodGet, "/readyz", "", http.NoBody
		rec := &recorded{header: http.Header{}, code: http.StatusOK}
		api.ServeHTTP(rec, ask)
		if rec.code == http.StatusOK {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("OK"))
			return
		}
		w.Header().Set("Content-Type", rec.header.Get("Content-Type"))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(rec.body.Bytes())
	})
	mux.Handle("/", http.NotFoundHandler())
	return mux
}

// withConsole serves the console (adapters/console) at /ui beside the API on the same listener. Its files are
// public, as /openapi.yaml is; what it shows it asks the API for, with the operator's token, so the API's roles
// decide. Everything else goes to the API untouched (no second ServeMux: the API's own routing, 404s and request
// metrics stay as they are).
func withConsole(api http.Handler) http.Handler {
	ui := console.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if console.Owns(r.URL.Path) {
			ui.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// metricsOnly serves the API's /metrics at path, and nothing else (404).
func metricsOnly(api http.Handler, path string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.NotFound(w, r)
			return
		}
		ask := r.Clone(r.Context())
		ask.URL.Path, ask.URL.RawPath = "/metrics", ""
		api.ServeHTTP(w, ask)
	})
}

// recorded keeps a response in memory (probesOnly asks /readyz through it).
type recorded struct {
	header http.Header
	code   int
	body   bytes.Buffer
	wrote  bool
}

func (r *recorded) Header() http.Header { return r.header }

func (r *recorded) WriteHeader(code int) {
	if !r.wrote {
		r.code, r.wrote = code, true
	}
}

func (r *recorded) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}
