// Package console serves the operator's console at /ui: one page of plain HTML, CSS and JavaScript embedded in the
// binary (no build step, nothing fetched from elsewhere, so it works offline). The page holds no data: it asks for
// a bearer token, keeps it in the tab's sessionStorage, and calls the /v1 API and /metrics of the same origin with
// it, so the API's roles apply as they are (a check-role token sees what it may read, an admin token changes
// policies and resets keys). The assets themselves are public, like /openapi.yaml: they hold no secret.
//
// Every answer carries a strict Content-Security-Policy (Policy): scripts, styles, images and requests from this
// origin only, no inline script or style, no framing.
package console

import (
	"embed"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// Policy is the Content-Security-Policy of every answer: only the console's own files run and style the page, it
// talks to its own origin only, no other site may frame it (clickjacking an admin token's buttons), no form
// submits anywhere (the page sends everything with fetch), and the DOM's HTML sinks (innerHTML and the like) are
// refused (Trusted Types): a key is client-chosen text, and the page only ever sets text.
const Policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"

// Prefix is the path the console is served under; Handler answers the paths that start with it, and /ui itself
// (redirected to /ui/).
const Prefix = "/ui/"

// types are the content types of the embedded files, by extension, fixed here rather than read from the
// machine's MIME tables, which differ between systems.
var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Owns reports whether the console answers the request path p (/ui and everything under /ui/).
func Owns(p string) bool { return p == "/ui" || strings.HasPrefix(p, Prefix) }

// Handler serves GET and HEAD of /ui/ (index.html) and of the files in assets/ under /ui/; /ui redirects to /ui/.
// Any other path under /ui/ is 404, any other method 405.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", Policy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if r.URL.Path == "/ui" {
			http.Redirect(w, r, Prefix, http.StatusMovedPermanently)
			return
		}
		name := strings.TrimPrefix(r.URL.Path, Prefix)
		if name == "" {
			name = "index.html"
		}
		ct, known := types[path.Ext(name)]
		body, err := assets.ReadFile("assets/" + name)
		if !known || strings.Contains(name, "/") || err != nil {
			http.NotFound(w, r)
			return
		}
		h.Set("Content-Type", ct)
		// The files change with the binary: a browser revalidates each time (cheap, a handful of small files),
		// so an upgrade never runs an old script against a new API.
		h.Set("Cache-Control", "no-cache")
		if r.Method == http.MethodGet {
			_, _ = w.Write(body)
		}
	})
}
