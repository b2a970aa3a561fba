package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/adapters/console"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

func TestAssetsServedWithTheirTypesAndPolicy(t *testing.T) {
	h := console.Handler()
	for _, c := range []struct{ path, ctype, contains string }{
		{"/ui/", "text/html; charset=utf-8", `<script src="app.js" defer></script>`},
		{"/ui/index.html", "text/html; charset=utf-8", "<title>sluice console</title>"},
		{"/ui/app.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"/ui/style.css", "text/css; charset=utf-8", "body"},
		{"/ui/favicon.svg", "image/svg+xml", "<svg"},
	} {
		resp := get(t, h, http.MethodGet, c.path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d, want 200", c.path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != console.Policy {
			t.Errorf("GET %s: Content-Security-Policy %q, want %q", c.path, got, console.Policy)
		}
		if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q", c.path, got)
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s: the body lacks %q", c.path, c.contains)
		}
	}
}

// The policy allows nothing inline and nothing from elsewhere; the page keeps to it (no inline script or style, no
// URL of another origin), which the browser test (integration/console) confirms by running it.
func TestPolicyIsStrictAndThePageKeepsToIt(t *testing.T) {
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "require-trusted-types-for 'script'"} {
		if !strings.Contains(console.Policy, want) {
			t.Errorf("the policy lacks %q: %s", want, console.Policy)
		}
	}
	if strings.Contains(console.Policy, "unsafe") {
		t.Errorf("the policy allows something unsafe: %s", console.Policy)
	}
	h := console.Handler()
	for _, path := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		body, _ := io.ReadAll(get(t, h, http.MethodGet, path).Body)
		for _, bad := range []string{"<script>", "style=", "http://", "https://", "innerHTML", "eval("} {
			if bad == "http://" && strings.Contains(string(body), "http://www.w3.org/2000/svg") {
				continue // the SVG namespace name, never fetched
			}
			if strings.Contains(string(body), bad) {
				t.Errorf("%s holds %q", path, bad)
			}
		}
	}
}

func TestUnknownPathsAndMethods(t *testing.T) {
	h := console.Handler()
	for _, path := range []string{"/ui/nope.js", "/ui/nope", "/ui/assets/app.js", "/ui/../go.mod", "/ui/console.go"} {
		if resp := get(t, h, http.MethodGet, path); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	resp := get(t, h, http.MethodGet, "/ui")
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d to %q, want 301 to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp = get(t, h, http.MethodPost, "/ui/")
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /ui/: %d, Allow %q; want 405, GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp = get(t, h, http.MethodHead, "/ui/app.js")
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("HEAD /ui/app.js: %d with %d bytes, want 200 and no body", resp.StatusCode, len(body))
	}
}

func TestOwns(t *testing.T) {
	for p, want := range map[string]bool{"/ui": true, "/ui/": true, "/ui/app.js": true, "/uix": false, "/v1/ui": false, "/": false} {
		if got := console.Owns(p); got != want {
			t.Errorf("Owns(%q) = %v, want %v", p, got, want)
		}
	}
}
