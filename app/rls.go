package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/fx"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sluice-dev/sluice/adapters/bearer"
	"github.com/sluice-dev/sluice/adapters/envoyrls"
	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/domain"
)

// RLSConfig configures the Envoy Rate Limit Service front end (gRPC envoy.service.ratelimit.v3.RateLimitService on
// its own listener). Off unless Listen is set.
type RLSConfig struct {
	// Listen is host:port of the gRPC listener (SLUICE_RLS_LISTEN); empty (the default) turns the front end off.
	// Plain text is HTTP/2 with prior knowledge (h2c), what Envoy's gRPC client speaks; set TLS for TLS or mTLS.
	Listen string `yaml:"listen"`
	// ConfigDir is a directory of envoyproxy/ratelimit YAML config files (SLUICE_RLS_CONFIG_DIR), read as its
	// runtime reads them: every file of the directory and its subdirectories, names starting with '.' skipped.
	ConfigDir string `yaml:"config_dir"`
	// Files are envoyproxy/ratelimit config files written inside sluice's own config ({name, content}), loaded
	// with ConfigDir's files as if they were there; messages and file_algorithms call them "rls.files.<name>"
	// (lines count from the content's first line). They change with a restart.
	Files []RLSFile `yaml:"files"`
	// Algorithm of the policies made from the files (SLUICE_RLS_ALGORITHM): fixed_window (default, counting as
	// envoyproxy/ratelimit does) or any sluice algorithm.
	Algorithm string `yaml:"algorithm"`
	// FileAlgorithms chooses the algorithm per file ({file, algorithm}; file relative to ConfigDir, e.g.
	// "config.yaml", or "rls.files.<name>").
	FileAlgorithms []RLSFileAlgorithm `yaml:"file_algorithms"`
	// FailureMode of those policies (SLUICE_RLS_FAILURE_MODE): deny (default: a store failure answers gRPC
	// UNAVAILABLE, so Envoy's failure_mode_deny decides) or allow (answer OK, counted as degraded).
	FailureMode string `yaml:"failure_mode"`
	// Shadow puts every RLS policy in shadow mode (SLUICE_RLS_SHADOW; envoyproxy/ratelimit's SHADOW_MODE): decided
	// and counted, always answered OK, for running sluice beside the service it replaces before it enforces.
	Shadow bool `yaml:"shadow"`
	// ResponseHeaders adds RateLimit-Policy, RateLimit and (when denied) Retry-After of the most restrictive
	// descriptor to response_headers_to_add (SLUICE_RLS_RESPONSE_HEADERS).
	ResponseHeaders bool `yaml:"response_headers"`
	// ReloadInterval is how often ConfigDir is read again (SLUICE_RLS_RELOAD_INTERVAL, default 10s, 0 = never):
	// changed files take effect without a restart; a broken change is logged and the rules in force are kept.
	ReloadInterval Duration `yaml:"reload_interval"`
	// TLS: with TLS.ClientCAFile set, a client certificate signed by that CA authenticates a caller and no bearer
	// token is asked for; otherwise, when tokens are configured, every ShouldRateLimit needs `authorization: Bearer`.
	TLS RLSTLS `yaml:"tls"`
	// XDS takes the rules from an xDS management server instead of files (Envoy Gateway's push).
	XDS RLSXDS `yaml:"xds"`
}

// RLSXDS subscribes to RateLimitConfig resources over ADS State-of-the-World, as envoyproxy/ratelimit with
// CONFIG_TYPE=GRPC_XDS_SOTW. Until the first version arrives no descriptor has a limit (every request is OK).
type RLSXDS struct {
	// Server is host:port of the management server (SLUICE_RLS_XDS_SERVER; CONFIG_GRPC_XDS_SERVER_URL).
	Server string `yaml:"server"`
	// NodeID is the node id the server keys its snapshots by (CONFIG_GRPC_XDS_NODE_ID; default "default").
	NodeID string `yaml:"node_id"`
	// CAFile verifies the server (TLS when set); CertFile and KeyFile are this client's certificate (mTLS);
	// ServerName overrides the name verified (CONFIG_GRPC_XDS_SERVER_TLS_SAN).
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// RLSFile is an envoyproxy/ratelimit config file written inside sluice's config.
type RLSFile struct {
	Name    string `yaml:"name"`
	Content string `yaml:"content"` // the file's YAML, e.g. as a block scalar (content: |)
}

// RLSFileAlgorithm chooses the algorithm of one file's policies.
type RLSFileAlgorithm struct {
	File      string `yaml:"file"`
	Algorithm string `yaml:"algorithm"`
}

// RLSTLS names PEM files for the RLS listener: cert_file and key_file for TLS, client_ca_file for mTLS.
type RLSTLS struct {
	CertFile     string `yaml:"cert_file"`      // SLUICE_RLS_TLS_CERT_FILE
	KeyFile      string `yaml:"key_file"`       // SLUICE_RLS_TLS_KEY_FILE
	ClientCAFile string `yaml:"client_ca_file"` // SLUICE_RLS_TLS_CLIENT_CA_FILE
}

// rlsDefaults are the RLS settings when absent.
func rlsDefaults() RLSConfig {
	return RLSConfig{Algorithm: string(domain.FixedWindow), FailureMode: string(domain.FailDeny), ReloadInterval: Duration(10 * time.Second)}
}

func (c RLSConfig) withDefaults() RLSConfig {
	d := rlsDefaults()
	if c.Algorithm == "" {
		c.Algorithm = d.Algorithm
	}
	if c.FailureMode == "" {
		c.FailureMode = d.FailureMode
	}
	return c
}

func (c RLSConfig) loadOptions() envoyrls.LoadOptions {
	c = c.withDefaults()
	o := envoyrls.LoadOptions{Algorithm: domain.Algorithm(c.Algorithm), FailureMode: domain.FailureMode(c.FailureMode), Shadow: c.Shadow}
	if len(c.FileAlgorithms) > 0 {
		o.FileAlgorithms = map[string]domain.Algorithm{}
		for _, fa := range c.FileAlgorithms {
			o.FileAlgorithms[fa.File] = domain.Algorithm(fa.Algorithm)
		}
	}
	return o
}

// validateRLS checks the rls settings and loads the config directory, so a broken file stops start-up with
// everything else that is wrong. add is validate's reporter (it names the env var that set a path).
func validateRLS(c Config, add func(path, format string, args ...any)) {
	r := c.RLS.withDefaults()
	validAlg := func(a string) bool {
		for _, x := range domain.Algorithms {
			if string(x) == a {
				return true
			}
		}
		return false
	}
	if !validAlg(r.Algorithm) {
		add("rls.algorithm", "must be one of %s; got %q", domain.AlgorithmNames(), r.Algorithm)
	}
	seenFile := map[string]bool{}
	for i, fa := range r.FileAlgorithms {
		at := fmt.Sprintf("rls.file_algorithms[%d]", i)
		if !validAlg(fa.Algorithm) {
			add(at+".algorithm", "must be one of %s; got %q", domain.AlgorithmNames(), fa.Algorithm)
		}
		if seenFile[fa.File] {
			add(at+".file", "%q is named twice", fa.File)
		}
		seenFile[fa.File] = true
	}
	seenName := map[string]bool{}
	for i, f := range r.Files {
		at := fmt.Sprintf("rls.files[%d]", i)
		switch {
		case f.Name == "":
			add(at+".name", "required: the file's name in messages and file_algorithms")
		case seenName[f.Name]:
			add(at+".name", "%q is used twice", f.Name)
		}
		seenName[f.Name] = true
	}
	if r.FailureMode != "deny" && r.FailureMode != "allow" {
		add("rls.failure_mode", "must be one of deny, allow; got %q", r.FailureMode)
	}
	if r.ReloadInterval < 0 || (r.ReloadInterval > 0 && time.Duration(r.ReloadInterval) < time.Second) {
		add("rls.reload_interval", "must be 0 (never) or at least 1s, got %s", r.ReloadInterval)
	}
	if (r.TLS.CertFile == "") != (r.TLS.KeyFile == "") || (r.TLS.ClientCAFile != "" && r.TLS.CertFile == "") {
		add("rls.tls", "cert_file and key_file go together, and client_ca_file (mTLS) needs both")
	}
	if r.Listen == "" {
		if r.ConfigDir != "" {
			add("rls.listen", "is empty (the RLS front end is off) but rls.config_dir is set: set rls.listen (SLUICE_RLS_LISTEN) to host:port, e.g. 0.0.0.0:8081")
		}
		return
	}
	host, port, err := net.SplitHostPort(r.Listen)
	if err != nil || port == "" {
		add("rls.listen", "want host:port such as 127.0.0.1:8081 or 0.0.0.0:8081, got %q", r.Listen)
	} else if len(c.Tokens) == 0 && r.TLS.ClientCAFile == "" && !isLoopback(host) {
		add("rls.listen", "%q is not a loopback address and no client authentication is configured: set rls.tls.client_ca_file (mTLS), or tokens / tokens_file (SLUICE_TOKENS_FILE) and send authorization: Bearer metadata, or listen on 127.0.0.1", r.Listen)
	}
	if r.Listen == c.Listen {
		add("rls.listen", "must differ from listen (%s): the RLS front end has its own listener", c.Listen)
	}
	if r.XDS.Server != "" {
		if r.ConfigDir != "" || len(r.Files) > 0 {
			add("rls.xds.server", "the rules come from xDS or from files, not both: unset rls.config_dir and rls.files, or rls.xds.server")
		}
		if _, _, err := net.SplitHostPort(r.XDS.Server); err != nil {
			add("rls.xds.server", "want host:port of the xDS management server, got %q", r.XDS.Server)
		}
		if (r.XDS.CertFile == "") != (r.XDS.KeyFile == "") || (r.XDS.CertFile != "" && r.XDS.CAFile == "") {
			add("rls.xds", "cert_file and key_file go together and need ca_file (TLS to the server)")
		}
		return
	}
	if r.ConfigDir == "" && len(r.Files) == 0 {
		add("rls.listen", "is set but no config is: set rls.config_dir (SLUICE_RLS_CONFIG_DIR) to a directory of envoyproxy/ratelimit YAML files, rls.files, or rls.xds.server")
		return
	}
	if _, err := loadRLSRules(r, r.loadOptions()); err != nil {
		var ce *envoyrls.ConfigError
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				switch {
				case strings.HasPrefix(p, "rls.file_algorithms: "):
					add("rls.file_algorithms", "%s", strings.TrimPrefix(p, "rls.file_algorithms: "))
				case strings.HasPrefix(p, "rls.files."):
					add("rls.files", "%s", p) // "rls.files.<name>:<line of its content>: path: problem"
				default:
					add("rls.config_dir", "%s", p)
				}
			}
			return
		}
		add("rls.config_dir", "%v", err)
	}
}

// loadRLSRules loads the files of rls.config_dir and rls.files together.
func loadRLSRules(rc RLSConfig, opts envoyrls.LoadOptions) (*envoyrls.Rules, error) {
	if rc.XDS.Server != "" {
		return envoyrls.Load(nil, nil, opts) // none until the management server sends its first version
	}
	if len(rc.Files) == 0 {
		return envoyrls.LoadDir(rc.ConfigDir, opts)
	}
	var names []string
	contents := map[string][]byte{}
	if rc.ConfigDir != "" {
		var err error
		if names, contents, err = envoyrls.ReadDir(rc.ConfigDir); err != nil {
			return nil, err
		}
	}
	for _, f := range rc.Files {
		name := "rls.files." + f.Name
		names = append(names, name)
		contents[name] = []byte(f.Content)
	}
	return envoyrls.Load(names, contents, opts)
}

// RLSListening is the address the RLS listener bound ("" when off).
type RLSListening struct{ Addr string }

// rlsModule runs the RLS front end when rls.listen is set.
func rlsModule(cfg Config) fx.Option {
	if cfg.RLS.Listen == "" {
		return fx.Supply(&RLSListening{})
	}
	return fx.Module("rls", fx.Provide(newRLSServer), fx.Invoke(func(*RLSListening) {}))
}

func newRLSServer(lc fx.Lifecycle, cfg Config, lim domain.Limiter, policies *domain.PolicyLifecycle, registrar *registrar, tokens *bearer.Set, reg prometheus.Registerer, log *slog.Logger, tr *Tracing) (*RLSListening, error) {
	rc := cfg.RLS.withDefaults()
	obs, err := metrics.NewRLS(reg)
	if err != nil {
		return nil, err
	}
	opts := rc.loadOptions()
	rules, err := loadRLSRules(rc, opts)
	if err != nil {
		return nil, err
	}
	svc := envoyrls.NewService(lim, rules, envoyrls.ServiceOptions{
		Headers: rc.ResponseHeaders, Algorithm: opts.Algorithm, FailureMode: opts.FailureMode, Shadow: opts.Shadow,
		Policies: policies, Observer: obs,
		// Every rules set put in force goes to a shared store's registry, with the config policies (registrar).
		Installed: func([]domain.Policy) { registrar.Kick() },
	})
	// Who may call: with mTLS (client_ca_file) the verified client certificate is the authentication (Envoy
	// Gateway's and Istio's proxies present one; they cannot always add metadata); otherwise, with tokens
	// configured, a bearer token of either role in the authorization metadata.
	// The tokens are the HTTP API's set, which a reload replaces (reload.go): read at every call.
	var authorize envoyrls.Authorizer
	if rc.TLS.ClientCAFile == "" {
		// Both roles may check (the HTTP API's rule for /v1/check).
		authorize = func(a string) bool {
			if tokens.Len() == 0 {
				return true // no tokens: the loader allowed that only with loopback listeners
			}
			_, ok := tokens.Role(a)
			return ok
		}
	}
	so := envoyrls.ServerOptions{Authorize: authorize, Observer: obs, StatsHandler: rlsStats(tr)}
	if rc.TLS.CertFile != "" {
		// The HTTP listener's certificate files (tls.go): read again when they change, so cert-manager's rotation of
		// the RLS certificate (and of the client CA) is served without a restart.
		files, err := newCertFiles("rls.tls", HTTPTLS{CertFile: rc.TLS.CertFile, KeyFile: rc.TLS.KeyFile, ClientCAFile: rc.TLS.ClientCAFile}, log)
		if err != nil {
			return nil, err
		}
		so.TLSConfig = files.TLSConfig()
	}
	srv, err := envoyrls.NewServer(svc, so)
	if err != nil {
		return nil, err
	}
	l := &RLSListening{}
	served := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	reloaded := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			ln, err := net.Listen("tcp", rc.Listen)
			if err != nil {
				return fmt.Errorf("listen (rls.listen / SLUICE_RLS_LISTEN=%s): %w", rc.Listen, err)
			}
			l.Addr = ln.Addr().String()
			go func() {
				defer close(served)
				if err := srv.Serve(ln); err != nil {
					log.Error("rls server stopped", "err", err)
				}
			}()
			go func() {
				defer close(reloaded)
				if rc.XDS.Server != "" {
					runRLSXDS(ctx, svc, rc, opts, log)
					return
				}
				reloadRLS(ctx, svc, rc, opts, log)
			}()
			log.Info("sluice rls serving", "addr", l.Addr, "protocol", "envoy.service.ratelimit.v3", "tls", rc.TLS.CertFile != "",
				"mtls", rc.TLS.ClientCAFile != "", "config_dir", rc.ConfigDir, "files", strings.Join(rules.Files, ","),
				"policies", rules.Policies, "algorithm", rc.Algorithm, "shadow", rc.Shadow, "auth", rlsAuth(tokens.Len() > 0, rc.TLS.ClientCAFile != ""))
			return nil
		},
		OnStop: func(context.Context) error {
			cancel()
			<-reloaded
			// As the HTTP server: stop accepting, let calls in flight finish, bounded by the drain timeout.
			dctx, dcancel := context.WithTimeout(context.Background(), time.Duration(cfg.HTTP.DrainTimeout))
			defer dcancel()
			err := srv.Stop(dctx)
			<-served
			if err != nil {
				return fmt.Errorf("rls drain did not finish within %s: %w", cfg.HTTP.DrainTimeout, err)
			}
			return nil
		},
	})
	return l, nil
}

// runRLSXDS follows the xDS management server until ctx ends.
func runRLSXDS(ctx context.Context, svc *envoyrls.Service, rc RLSConfig, opts envoyrls.LoadOptions, log *slog.Logger) {
	creds := insecure.NewCredentials()
	x := rc.XDS
	if x.CAFile != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: x.ServerName}
		pem, err := os.ReadFile(x.CAFile)
		if err != nil {
			log.Error("rls xds: cannot read ca_file; not subscribing", "err", err)
			return
		}
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AppendCertsFromPEM(pem)
		if x.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(x.CertFile, x.KeyFile)
			if err != nil {
				log.Error("rls xds: cannot load cert_file/key_file; not subscribing", "err", err)
				return
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(cfg)
	}
	cc, err := grpc.NewClient(x.Server, grpc.WithTransportCredentials(creds))
	if err != nil {
		log.Error("rls xds: cannot dial; not subscribing", "server", x.Server, "err", err)
		return
	}
	defer cc.Close()
	node := x.NodeID
	if node == "" {
		node = "default"
	}
	log.Info("rls xds: subscribing", "server", x.Server, "node_id", node, "type", envoyrls.XDSTypeURL)
	_ = (&envoyrls.XDSClient{Conn: cc, NodeID: node, Service: svc, Load: opts, Log: log}).Run(ctx)
}

// reloadRLS calls rlsReload.once every reload_interval until ctx ends.
func reloadRLS(ctx context.Context, svc *envoyrls.Service, rc RLSConfig, opts envoyrls.LoadOptions, log *slog.Logger) {
	if rc.ReloadInterval <= 0 {
		return
	}
	t := time.NewTicker(time.Duration(rc.ReloadInterval))
	defer t.Stop()
	var r rlsReload
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.once(svc, rc, opts, log)
	}
}

// rlsReload remembers what the config directory read as at the previous tick.
type rlsReload struct {
	last string // the rules' fingerprint, or the load error, at the previous tick
}

// once reads the config directory again and swaps in the rules if the files changed and have settled: they read
// the same as at the previous call (their policies get floors and generations from the PolicyLifecycle:
// envoyrls.Service.SetRules). A file written in place can be read half written, which may still parse; a kubelet
// ConfigMap update (a symlink swap) never is, and takes effect one interval later for it. A broken directory that
// stays broken is logged and counted at every call and the rules in force are kept. It reports whether new rules
// took effect.
func (r *rlsReload) once(svc *envoyrls.Service, rc RLSConfig, opts envoyrls.LoadOptions, log *slog.Logger) bool {
	rules, err := loadRLSRules(rc, opts)
	var read string
	if err != nil {
		read = "error: " + err.Error()
	} else {
		read = rules.Fingerprint
	}
	last := r.last
	r.last = read
	if read != last && read != svc.Rules().Fingerprint {
		return false // changed since the previous call: not settled yet
	}
	if err != nil {
		log.Error("rls config reload failed; keeping the rules in force", "config_dir", rc.ConfigDir, "err", err)
		svc.Reloaded("files", false)
		return false
	}
	if rules.Fingerprint == svc.Rules().Fingerprint {
		return false
	}
	svc.SetRules(rules)
	svc.Reloaded("files", true)
	log.Info("rls config reloaded", "config_dir", rc.ConfigDir, "files", strings.Join(rules.Files, ","), "policies", rules.Policies)
	return true
}

func rlsAuth(tokens, mtls bool) string {
	switch {
	case mtls:
		return "mtls"
	case tokens:
		return "bearer"
	}
	return "none"
}
