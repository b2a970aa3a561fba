package httpapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traced puts every request in a server span (otelhttp): the W3C trace context of the request's headers is
// continued (prop), the span is named by the route ("POST /v1/check") and carries http.route. otelhttp records the
// request's path as url.path, and paths hold keys (/v1/policies/{name}/keys/{key}) and hold handles (/v1/holds/{id},
// which encode a key): otelhttp is shown a copy of the request whose path is redactPath's (the access log's), or no
// path at all when it matches no route (a token pasted into a wrong path stays out of traces as out of the log),
// and the handlers get the request as it came. otelhttp records no query string, header or body. The probes and
// /metrics are not traced (notProbe).
func traced(tp trace.TracerProvider, prop propagation.TextMapPropagator, mux *http.ServeMux, next http.Handler) http.Handler {
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// r is otelhttp's own copy of the shown request, with the span's context: give it back the real URL.
		if u, ok := r.Context().Value(realURL{}).(*url.URL); ok {
			r.URL = u
		}
		next.ServeHTTP(w, r)
	})
	h := otelhttp.NewHandler(inner, "sluice", otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(prop),
		otelhttp.WithSpanNameFormatter(spanName), otelhttp.WithFilter(notProbe))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		shown := r.WithContext(context.WithValue(r.Context(), realURL{}, r.URL))
		u := *r.URL
		u.Path, u.RawPath, u.RawQuery = "", "", ""
		if _, pattern := mux.Handler(r); pattern != "" && pattern != "/" {
			u.Path = redactPath(r.URL.Path)
			if !(pattern == authorizePattern && r.Method == http.MethodHead) {
				shown.Pattern = pattern // otelhttp names the span and sets http.route from it
			}
		}
		shown.URL = &u
		h.ServeHTTP(w, shown)
	})
}

// notProbe leaves the probes and the scrape out of traces: Kubernetes and Prometheus call them every few seconds
// on every replica, and a root span each would bury the requests worth tracing.
func notProbe(r *http.Request) bool {
	switch r.URL.Path {
	case "/healthz", "/healthz/store", "/readyz", "/metrics":
		return false
	}
	return true
}

// realURL is the context key of the URL traced hides from otelhttp.
type realURL struct{}

// spanName is the method and the route template ("POST /v1/check"); the method alone for what matches no route
// (the ServeMux's pattern "/" is unmatched's), and "HTTP" for a method that is not one of HTTP's (a client's
// made-up method would otherwise name spans at will).
func spanName(_ string, r *http.Request) string {
	m := r.Method
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodOptions, http.MethodConnect, http.MethodTrace:
	default:
		m = "HTTP"
	}
	if _, route, ok := strings.Cut(r.Pattern, " "); ok && route != "/" {
		return m + " " + route
	}
	return m
}
