package httpapi

import (
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/adapters/bearer"
	"github.com/sluice-dev/sluice/adapters/topkeys"
	"github.com/sluice-dev/sluice/api"
	"github.com/sluice-dev/sluice/domain"
)

// Options configure the HTTP handler.
type Options struct {
	Limiter domain.Limiter
	// Spec is the openapi.yaml served at /openapi.yaml.
	Spec []byte
	// Store names the store for /healthz and /readyz ("memory" or "postgres").
	Store string
	// Tokens enable bearer authentication; none means every request is allowed (loopback only, enforced by app).
	Tokens []Token
	// TopKeys reports a policy's top keys on this replica (GET /v1/policies/{name}/top); nil: none are counted.
	TopKeys TopKeys
	// TokenSet, when set, is used instead of Tokens: the app shares it with the RLS listener and replaces its
	// tokens on a reload (bearer.Set.Replace, with BearerTokens).
	TokenSet *bearer.Set
	// MaxBodyBytes bounds request bodies (413 beyond); ≤ 0 means 64 KiB.
	MaxBodyBytes int64
	Logger       *slog.Logger
	Gatherer     prometheus.Gatherer
	// Requests, when set, records every answered request (adapters/metrics.HTTP).
	Requests RequestObserver
	// TracerProvider, when set, puts every request in a server span (otelhttp, see traced) that continues the W3C
	// trace context Propagator reads from the request (nil: propagation.TraceContext). nil (tracing off): no span
	// and no cost.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// generatedCheck (tests only) serves POST /v1/check with the generated strict handler instead of
	// directCheck, so a test can compare the two.
	generatedCheck bool
}

// TopKeys reports up to n keys of a policy with the most decisions by by and the interval the counts cover
// (adapters/topkeys.Tracker).
type TopKeys interface {
	Top(policy string, by topkeys.By, n int) ([]topkeys.Entry, time.Duration)
}

// RequestObserver records one answered request. route is the route template of openapi.yaml (e.g.
// /v1/policies/{name}/keys/{key}) or "unmatched", never the raw path, which holds keys.
type RequestObserver interface {
	Request(method, route string, code int, d time.Duration)
}

// NewHandler returns the whole HTTP surface: the generated routes with sluice's handlers, each behind the query
// check, authentication and body limits, one catch-all for what matches no route, and around them the request
// metrics and the access log, and around everything the request's span when tracing is on.
func NewHandler(o Options) http.Handler {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 64 << 10
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Gatherer == nil {
		o.Gatherer = prometheus.NewRegistry()
	}
	log := o.Logger
	unavailable := newLogLimiter(time.Second)
	srv := &server{lim: o.Limiter, spec: o.Spec, store: api.HealthStore(o.Store), top: o.TopKeys, log: log, unavailable: unavailable}
	respondError := func(w http.ResponseWriter, r *http.Request, err error) {
		k, fields := classify(err)
		switch k {
		case kindInternal:
			log.Error("request failed", "method", r.Method, "path", redactPath(r.URL.Path), "err", err)
		case kindUnavailable:
			// At most one line per second (the first at once), with the count of those left out: an outage
			// fails every check, and must not flood the log pipeline too.
			if ok, suppressed := unavailable.admit(); ok {
				log.Warn("store unavailable", "method", r.Method, "path", redactPath(r.URL.Path), "err", err, "suppressed", suppressed)
			}
		}
		writeProblem(w, problem(k, detailFor(k, err), fields))
	}
	requestError := func(w http.ResponseWriter, r *http.Request, err error) { respondError(w, r, decodeError(err)) }
	var strict api.ServerInterface = api.NewStrictHandlerWithOptions(srv, nil, api.StrictHTTPServerOptions{
		RequestErrorHandlerFunc:  requestError,
		ResponseErrorHandlerFunc: respondError,
	})
	if !o.generatedCheck {
		strict = directCheck{ServerInterface: strict, srv: srv, requestError: requestError, responseError: respondError}
	}
	strict = promMetrics{ServerInterface: strict, h: promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
		ErrorLog: promLog{log}, ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true,
	})}
	mux := http.NewServeMux()
	auth := &authenticator{tokens: o.TokenSet}
	if auth.tokens == nil {
		auth.tokens = bearer.New(BearerTokens(o.Tokens))
	}
	routed := func(pattern string, h http.Handler) http.Handler {
		return checkRoute(pattern, auth.middleware(pattern, limitBody(o.MaxBodyBytes, h)))
	}
	api.HandlerWithOptions(strict, api.StdHTTPServerOptions{
		BaseRouter: routeMux{mux, routed},
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			respondError(w, r, paramError(r, err))
		},
	})
	mux.Handle("/", unmatched(mux))
	h := accessLog(log, observe(o.Requests, mux))
	if o.TracerProvider != nil {
		prop := o.Propagator
		if prop == nil {
			prop = propagation.TraceContext{}
		}
		h = traced(o.TracerProvider, prop, mux, h)
	}
	return h
}

// promMetrics serves GET /metrics with promhttp (content negotiation: text or OpenMetrics; gzip when asked; a
// collector that fails is logged and left out while the others are served) in place of the strict handler's
// Metrics. Authentication, the access log and the request metrics wrap it as every route.
type promMetrics struct {
	api.ServerInterface
	h http.Handler
}

// Metrics implements api.ServerInterface for GET /metrics.
func (m promMetrics) Metrics(w http.ResponseWriter, r *http.Request) { m.h.ServeHTTP(w, r) }

// promLog is promhttp's error log: a gather error is logged at error level (the scrape still answers).
type promLog struct{ log *slog.Logger }

func (l promLog) Println(v ...any) { l.log.Error("metrics: " + fmt.Sprint(v...)) }

// routeMux registers every generated route on the ServeMux behind wrap, so what must run after routing and
// before the generated code binds parameters (the query check, authentication, the body limits) runs only for
// a route of openapi.yaml, and the request is routed once.
// It offers only what api.ServeMux asks for, so the generated code has no way to register a route around the
// chain.
type routeMux struct {
	mux  *http.ServeMux
	wrap func(pattern string, h http.Handler) http.Handler
}

func (m routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.mux.Handle(pattern, m.wrap(pattern, http.HandlerFunc(h)))
}

func (m routeMux) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }

// Requests are routed before anything else looks at them, so that an unknown path is a 404 and a known path
// with the wrong method a 405 with Allow, whatever the token or the body (a check-role token on an unknown path
// used to get 403, POST /healthz 415): the ServeMux sends what matches no route of openapi.yaml to unmatched,
// and each route's own chain starts with checkRoute. HEAD /v1/authorize is a 405 too: net/http would answer it
// with the GET handler, spending a unit, and HEAD must not change state; a peek is GET
// /v1/policies/{name}/keys/{key}. checkRoute also refuses query strings that are not valid percent-encoding
// (url.Query drops such pairs silently, so "key=%zz" read as a missing key). observe records every request by
// its route template.

// unmatched answers a request that matches no route: 405 with Allow when another method would match, else 404.
func unmatched(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allow := allowedMethods(mux, r); len(allow) > 0 {
			methodNotAllowed(w, r, allow)
			return
		}
		writeProblem(w, problem(kindNoRoute, "no endpoint "+r.Method+" "+redactPath(r.URL.Path)+"; see /openapi.yaml", nil))
	})
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request, allow []string) {
	w.Header().Set("Allow", strings.Join(allow, ", "))
	writeProblem(w, problem(kindMethodNotAll, r.Method+" is not allowed on "+redactPath(r.URL.Path)+"; allowed: "+strings.Join(allow, ", "), nil))
}

const authorizePattern = "GET /v1/authorize"

// checkRoute is the start of every route's chain: HEAD of /v1/authorize and malformed query strings are refused.
func checkRoute(pattern string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if pattern == authorizePattern && r.Method == http.MethodHead {
			methodNotAllowed(w, r, []string{http.MethodGet})
			return
		}
		if r.URL.RawQuery != "" {
			if err := checkQuery(r.URL.RawQuery); err != nil {
				writeProblem(w, problem(kindValidation, err.Error(), err.(*domain.ValidationError).Fields))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// observe records each answered request with its route template (the ServeMux sets r.Pattern when it routes):
// "unmatched" for what no route serves, HEAD /v1/authorize included.
func observe(obs RequestObserver, next http.Handler) http.Handler {
	if obs == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		tmpl := "unmatched"
		if _, p, ok := strings.Cut(r.Pattern, " "); ok && !(r.Pattern == authorizePattern && r.Method == http.MethodHead) {
			tmpl = p
		}
		obs.Request(r.Method, tmpl, sw.status, time.Since(start))
	})
}

// allowedMethods lists the methods a route of openapi.yaml serves on r's path (HEAD is implied by GET and not
// listed; "/" is unmatched's own pattern).
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := *r
		probe.Method = m
		if _, p := mux.Handler(&probe); p != "" && p != "/" {
			out = append(out, m)
		}
	}
	return out
}

// checkQuery reports every query parameter whose name or value is not valid percent-encoding.
func checkQuery(raw string) error {
	ve := &domain.ValidationError{}
	for pair := range strings.SplitSeq(raw, "&") {
		name, value, _ := strings.Cut(pair, "=")
		n, err := url.QueryUnescape(name)
		if err != nil {
			ve.Add("query", "a parameter name is not valid percent-encoding (write a literal % as %25)")
			continue
		}
		if _, err := url.QueryUnescape(value); err != nil {
			ve.Add(n, "is not valid percent-encoding: every % must start %XX with two hex digits (write a literal % as %25)")
		}
	}
	return ve.Err()
}

// paramError names the query or path parameter that failed to bind, in plain words.
func paramError(r *http.Request, err error) error {
	var inv *api.InvalidParamFormatError
	var req *api.RequiredParamError
	switch {
	case errors.As(err, &inv):
		if inv.ParamName == "cost" {
			return domain.Invalid(inv.ParamName, "must be an integer from 0 to 9007199254740991 (2^53-1), got "+strconv.Quote(r.URL.Query().Get("cost")))
		}
		return domain.Invalid(inv.ParamName, "invalid value")
	case errors.As(err, &req):
		return domain.Invalid(req.ParamName, "is required")
	}
	return &malformedError{msg: err.Error()}
}

// limitBody bounds bodies and requires JSON on requests that carry one.
func limitBody(maxBytes int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch {
			if r.ContentLength > maxBytes {
				writeProblem(w, problem(kindTooLarge, "the body is "+strconv.FormatInt(r.ContentLength, 10)+" bytes; the limit is "+strconv.FormatInt(maxBytes, 10), nil))
				return
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" && !isJSONMediaType(ct) {
				writeProblem(w, problem(kindMediaType, "send Content-Type: application/json", nil))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxBytes)
		}
		next.ServeHTTP(w, r)
	})
}

// isJSONMediaType reports whether ct is application/json with parameters or in another spelling (the exact
// string, what every client sends, is checked first without parsing).
func isJSONMediaType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// statusWriter records the status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// accessLog logs one line per request at debug level: method, path, route, status, duration. It never logs the
// query string, headers or body, which hold keys and tokens, nor the path of a request that matched no route
// (a key or a token typed into a wrong path would be logged as is): the path of a route is logged with its key
// redacted, an unmatched one not at all (route "unmatched").
func accessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !log.Enabled(r.Context(), slog.LevelDebug) {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		path, route := "", "unmatched"
		if _, p, ok := strings.Cut(r.Pattern, " "); ok && p != "/" {
			path, route = redactPath(r.URL.Path), p
		}
		log.Debug("request", "method", r.Method, "path", path, "route", route, "status", sw.status, "duration", time.Since(start))
	})
}

// redactPath hides the key of /v1/policies/{name}/keys/{key} and the handle of /v1/holds/{id} (which encodes a
// key).
func redactPath(p string) string {
	const prefix, holds = "/v1/policies/", "/v1/holds/"
	if len(p) > len(prefix) && p[:len(prefix)] == prefix {
		rest := p[len(prefix):]
		for i := 0; i+6 <= len(rest); i++ {
			if rest[i:i+6] == "/keys/" {
				return prefix + rest[:i+6] + "…"
			}
		}
	}
	if len(p) > len(holds) && p[:len(holds)] == holds {
		rest := p[len(holds):]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			return holds + "…" + rest[i:]
		}
		return holds + "…"
	}
	return p
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
