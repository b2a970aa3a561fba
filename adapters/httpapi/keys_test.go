package httpapi_test

import (
	"net/url"
	"strings"
	"testing"
)

func TestGetKeyPeeksWithoutConsuming(t *testing.T) {
	e := newEnv(t)
	e.decision(check("login", "alice", 2))
	for range 10 {
		r := e.do("GET", "/v1/policies/login/keys/alice", nil)
		var d struct {
			Allowed   bool  `json:"allowed"`
			Remaining int64 `json:"remaining"`
			Limit     int64 `json:"limit"`
		}
		r.json(t, &d)
		// The state as a cost-1 check would see it: 5 - 2 - 1.
		if r.Status != 200 || !d.Allowed || d.Remaining != 2 || d.Limit != 5 {
			t.Fatalf("peek: %d %s", r.Status, r.Body)
		}
		if r.Header.Get("RateLimit-Policy") != `"login";q=5;w=60` || r.Header.Get("RateLimit") != `"login";r=2;t=60` {
			t.Fatalf("peek headers: %q %q", r.Header.Get("RateLimit-Policy"), r.Header.Get("RateLimit"))
		}
	}
	if d, _ := e.decision(check("login", "alice", 3)); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("peeks consumed: %+v", d)
	}
	// A full key peeks as denied, with the delay a cost-1 check would get.
	if d := e.peek("login", "alice"); d.Allowed || d.Remaining != 0 || d.RetryAfterMs != 60000 {
		t.Fatalf("peek at a full key: %+v", d)
	}
	// A key never seen has its whole quota.
	if d := e.peek("login", "nobody"); !d.Allowed || d.Remaining != 4 || d.Key != "nobody" {
		t.Fatalf("peek at a new key: %+v", d)
	}
}

func TestKeysAreOpaqueInPaths(t *testing.T) {
	e := newEnv(t)
	for _, key := range []string{
		"tenant/42/user",         // a slash travels as %2F
		"用户:42 ü",                // unicode and a space
		"100% sure?#frag&x=1",    // characters with meaning in URLs
		"a+b",                    // '+' is not a space in a path
		strings.Repeat("é", 256), // 512 bytes: the longest key
	} {
		t.Run(key[:min(len(key), 16)], func(t *testing.T) {
			e := e.in(t)
			esc := url.PathEscape(key)
			if strings.Contains(key, "/") && !strings.Contains(esc, "%2F") {
				t.Fatalf("escape %q", esc)
			}
			e.decision(check("login", key, 2))
			d := e.peek("login", esc)
			if d.Key != key || d.Remaining != 2 {
				t.Fatalf("GET %s: %+v, want key %q and remaining 2", esc, d, key)
			}
			// Authorize with the key in the query string sees the same state.
			if r := e.do("GET", authorizePath("login", key), nil); r.Status != 204 || r.Header.Get("RateLimit") != `"login";r=2;t=60` {
				t.Fatalf("authorize: %d %q", r.Status, r.Header.Get("RateLimit"))
			}
			if r := e.do("DELETE", "/v1/policies/login/keys/"+esc, nil); r.Status != 204 || len(r.Body) != 0 {
				t.Fatalf("DELETE %s: %d %s", esc, r.Status, r.Body)
			}
			if d := e.peek("login", esc); d.Remaining != 4 {
				t.Fatalf("after reset: %+v", d)
			}
		})
	}
	// The key of a path with a slash is not confused with a shorter key.
	e.decision(check("login", "tenant", 5))
	if d := e.peek("login", url.PathEscape("tenant/x")); d.Remaining != 4 {
		t.Fatalf("tenant/x shares state with tenant: %+v", d)
	}
}

func TestResetKey(t *testing.T) {
	e := newEnv(t)
	for range 5 {
		e.decision(check("login", "k"))
	}
	if d, _ := e.decision(check("login", "k")); d.Allowed {
		t.Fatal("sixth check admitted")
	}
	e.decision(check("fifty", "k", 7))
	if r := e.do("DELETE", "/v1/policies/login/keys/k", nil); r.Status != 204 {
		t.Fatalf("reset: %d %s", r.Status, r.Body)
	}
	if d, _ := e.decision(check("login", "k")); !d.Allowed || d.Remaining != 4 {
		t.Fatalf("after reset: %+v", d)
	}
	// Only that (policy, key) was reset.
	if d := e.peek("fifty", "k"); d.Remaining != 42 {
		t.Fatalf("reset touched another policy: %+v", d)
	}
	// Resetting a key that holds nothing is fine.
	if r := e.do("DELETE", "/v1/policies/login/keys/never-seen", nil); r.Status != 204 {
		t.Fatalf("reset of an unknown key: %d %s", r.Status, r.Body)
	}
}

func TestKeyEndpointsBadInput(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("k", 513)
	multibyte := strings.Repeat("é", 257) // 257 characters (valid for the schema's maxLength) but 514 bytes
	for _, method := range []string{"GET", "DELETE"} {
		t.Run(method, func(t *testing.T) {
			e := e.in(t)
			wantProblem(t, e.do(method, "/v1/policies/nope/keys/k", nil), 404, "not-found", "")
			wantProblem(t, e.do(method, "/v1/policies/Nope/keys/k", nil, invalidRequest()), 400, "validation", "name")
			wantProblem(t, e.do(method, "/v1/policies/login/keys/"+long, nil, invalidRequest()), 400, "validation", "key")
			wantProblem(t, e.do(method, "/v1/policies/login/keys/"+url.PathEscape(multibyte), nil), 400, "validation", "key")
			wantProblem(t, e.do(method, "/v1/policies/login/keys/%FF", nil, invalidRequest()), 400, "validation", "key")
		})
	}
}

// TestDotSegmentKeysInPaths: keys "." and ".." are path segments a URL parser removes, so clients send them as
// %2E; the server reads %2E as the dot (once: "%252E" is the three characters "%2E").
func TestDotSegmentKeysInPaths(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ key, path string }{{".", "%2E"}, {"..", "%2E%2E"}, {"..", ".%2E"}, {"%2E", "%252E"}, {"...", "..."}} {
		t.Run(c.path, func(t *testing.T) {
			e := e.in(t)
			e.do("DELETE", "/v1/policies/login/keys/"+c.path, nil)
			e.decision(check("login", c.key, 2))
			if d := e.peek("login", c.path); d.Key != c.key || d.Remaining != 2 {
				t.Fatalf("GET %s: %+v, want key %q and remaining 2", c.path, d, c.key)
			}
			if r := e.do("DELETE", "/v1/policies/login/keys/"+c.path, nil); r.Status != 204 {
				t.Fatalf("DELETE %s: %d %s", c.path, r.Status, r.Body)
			}
			if d := e.peek("login", c.path); d.Remaining != 4 {
				t.Fatalf("after reset %s: %+v", c.path, d)
			}
		})
	}
}

// TestKeysInTheQuery: /v1/policies/{name}/keys?key= peeks and resets any key, "." and ".." included (which
// WHATWG URL parsers drop from paths even as %2E), with the path form's answers.
func TestKeysInTheQuery(t *testing.T) {
	e := newEnv(t)
	for _, key := range []string{".", "..", "a&b=c", "tenant/42", "100%"} {
		t.Run(key, func(t *testing.T) {
			e := e.in(t)
			q := "/v1/policies/login/keys?" + url.Values{"key": {key}}.Encode()
			e.decision(check("login", key, 2))
			r := e.do("GET", q, nil)
			var d struct {
				Key       string `json:"key"`
				Remaining int64  `json:"remaining"`
			}
			r.json(t, &d)
			if r.Status != 200 || d.Key != key || d.Remaining != 2 || r.Header.Get("RateLimit") != `"login";r=2;t=60` {
				t.Fatalf("GET %s: %d %s %q", q, r.Status, r.Body, r.Header.Get("RateLimit"))
			}
			if r := e.do("DELETE", q, nil); r.Status != 204 {
				t.Fatalf("DELETE %s: %d %s", q, r.Status, r.Body)
			}
			if d := e.peek("login", strings.ReplaceAll(url.PathEscape(key), ".", "%2E")); d.Remaining != 4 {
				t.Fatalf("after reset: %+v", d)
			}
		})
	}
	wantProblem(t, e.do("GET", "/v1/policies/login/keys", nil, invalidRequest()), 400, "validation", "key")
	wantProblem(t, e.do("GET", "/v1/policies/nope/keys?key=k", nil), 404, "not-found", "")
}
