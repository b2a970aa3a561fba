package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3filter"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// Fuzz targets for request decoding: arbitrary bodies, query strings, paths and Authorization headers go through
// the whole handler (httpapi.NewHandler over a memory store, as served). Every answer must be one the contract
// allows: never a 500; a 2xx that openapi.yaml validates (a decision, a policy, a list); otherwise
// application/problem+json whose status matches the response. No response header may carry a control character
// or a byte outside ASCII (keys and other client input are never echoed into headers). Seeds: the f.Add calls
// and testdata/fuzz; scripts/test.d/25-fuzz.sh fuzzes each target for a few seconds.

const (
	fuzzCheckToken = "fuzz-check-token-0123456789"
	fuzzAdminToken = "fuzz-admin-token-0123456789"
)

var (
	fuzzOnce    sync.Once
	fuzzHandler http.Handler
	fuzzClock   *clocktest.Clock
	fuzzMu      sync.Mutex // the fake clock moves between requests
)

func fuzzTarget(t testing.TB) http.Handler {
	fuzzOnce.Do(func() {
		fuzzClock = clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		store := memory.New(fuzzClock, memory.Options{MaxKeys: 500})
		lim, err := domain.NewService(testPolicies, memory.NewPolicies(fuzzClock), store, nil, fuzzClock)
		if err != nil {
			panic(err)
		}
		specBytes, err := os.ReadFile("../../openapi.yaml")
		if err != nil {
			panic(err)
		}
		fuzzHandler = httpapi.NewHandler(httpapi.Options{
			Limiter: lim, Spec: specBytes, Store: "memory", MaxBodyBytes: 4096,
			Tokens: []httpapi.Token{{Name: "c", Secret: fuzzCheckToken, Role: httpapi.RoleCheck}, {Name: "a", Secret: fuzzAdminToken, Role: httpapi.RoleAdmin}},
		})
	})
	spec(t) // loads the contract once; fails the test if openapi.yaml is broken
	return fuzzHandler
}

// serveRaw parses a request as the server would read it off the wire (a target the HTTP parser refuses never
// reaches the handler: the server answers 400 itself) and checks the answer.
func serveRaw(t *testing.T, method, target, auth, ctype string, body []byte) {
	t.Helper()
	h := fuzzTarget(t)
	var raw bytes.Buffer
	raw.WriteString(method + " " + target + " HTTP/1.1\r\nHost: sluice\r\n")
	if auth != "" {
		raw.WriteString("Authorization: " + auth + "\r\n")
	}
	if ctype != "" {
		raw.WriteString("Content-Type: " + ctype + "\r\n")
	}
	raw.WriteString("Content-Length: " + itoa(len(body)) + "\r\n\r\n")
	raw.Write(body)
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw.Bytes())))
	if err != nil {
		return
	}
	req.RemoteAddr = "127.0.0.1:1"
	fuzzMu.Lock()
	fuzzClock.Advance(37 * time.Millisecond)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fuzzMu.Unlock()
	checkAnswer(t, method, target, body, req.Header, rec)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func checkAnswer(t *testing.T, method, target string, body []byte, reqHeader http.Header, rec *httptest.ResponseRecorder) {
	t.Helper()
	res := rec.Result()
	out := rec.Body.Bytes()
	if res.StatusCode >= 500 && res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("%s %q body %q: status %d: %s", method, target, body, res.StatusCode, out)
	}
	for name, vs := range res.Header {
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if c := v[i]; c < 0x20 && c != '\t' || c >= 0x7f {
					t.Fatalf("%s %q: response header %s: %q carries byte %#x", method, target, name, v, c)
				}
			}
		}
	}
	ct := res.Header.Get("Content-Type")
	switch {
	case res.StatusCode == http.StatusMovedPermanently || res.StatusCode == http.StatusTemporaryRedirect || res.StatusCode == http.StatusPermanentRedirect:
		// net/http's ServeMux cleans paths ("//", "/./"); its redirect is checked for headers above.
		return
	case res.StatusCode == http.StatusNoContent:
		if len(out) != 0 {
			t.Fatalf("%s %q: 204 with a body %q", method, target, out)
		}
	case res.StatusCode >= 200 && res.StatusCode < 300:
		if !strings.HasPrefix(ct, "application/json") && !strings.HasPrefix(ct, "text/plain") && !strings.HasPrefix(ct, "application/yaml") {
			t.Fatalf("%s %q: %d with Content-Type %q", method, target, res.StatusCode, ct)
		}
	default:
		if ct != "application/problem+json" {
			t.Fatalf("%s %q body %q: %d with Content-Type %q: %s", method, target, body, res.StatusCode, ct, out)
		}
		var p struct {
			Type   string `json:"type"`
			Status int    `json:"status"`
		}
		if err := json.Unmarshal(out, &p); err != nil || p.Status != res.StatusCode || !strings.HasPrefix(p.Type, "https://sluice.dev/problems/") {
			t.Fatalf("%s %q: problem %q does not match status %d (%v)", method, target, out, res.StatusCode, err)
		}
	}
	// Every answer to a route of the contract must validate against openapi.yaml.
	_, router := spec(t)
	vreq, err := http.NewRequest(method, target, bytes.NewReader(body))
	if err != nil {
		return
	}
	vreq.Header = reqHeader.Clone()
	route, params, err := router.FindRoute(vreq)
	if err != nil {
		return // outside the spec: the problem+json check above is all that applies
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: vreq, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: res.StatusCode, Header: res.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(out)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Fatalf("%s %q body %q: response %d breaks openapi.yaml: %v\n%s", method, target, body, res.StatusCode, err, out)
	}
}

func FuzzCheckBody(f *testing.F) {
	for _, s := range []string{
		`{"policy":"login","key":"k"}`, `{"policy":"login","key":"k","cost":0}`, `{"policy":"login","key":"k","cost":5}`,
		`{"policy":"login","key":"k","cost":6}`, `{"policy":"login","key":"k","cost":-1}`, `{"policy":"login","key":"k","cost":1e3}`,
		`{"policy":"login","key":"k","cost":9223372036854775807}`, `{"policy":"login","key":"k","cost":18446744073709551616}`,
		`{"policy":"login","key":""}`, `{"policy":"Login!","key":"k"}`, `{"policy":"nope","key":"k"}`, `{"policy":"soft","key":"\u0000\r\n"}`,
		`{"policy":"trial","key":"\ud800"}`, `{"policy":"login","key":"k","cots":2}`, `{"policy":"login"}`, `{}`, `[]`, `null`, `{"policy":"login","key":"k"} {}`,
		`{"policy":"login","key":"k","policy":"one"}`, `{"policy":"login","key":"` + strings.Repeat("é", 300) + `"}`, `{"policy":`,
	} {
		f.Add([]byte(s), "application/json")
	}
	f.Add([]byte(`policy=login`), "text/plain")
	f.Add([]byte(`{"policy":"login","key":"k"}`), "application/json; charset=utf-8")
	f.Add([]byte(`{"policy":"login","key":"k"}`), "")
	f.Fuzz(func(t *testing.T, body []byte, ctype string) {
		serveRaw(t, "POST", "/v1/check", "Bearer "+fuzzCheckToken, ctype, body)
	})
}

func FuzzChecksBody(f *testing.F) {
	for _, s := range []string{
		`{"checks":[{"policy":"login","key":"a"},{"policy":"fifty","key":"a","cost":3}],"atomic":true}`,
		`{"checks":[{"policy":"one","key":"x"},{"policy":"one","key":"x"}],"atomic":false}`,
		`{"checks":[]}`, `{"checks":null}`, `{"checks":[{}]}`, `{"checks":[{"policy":"login","key":"k","cost":99}],"atomic":"yes"}`,
		`{"checks":[{"policy":"trial","key":"t"},{"policy":"login","key":"t"}],"atomic":true}`, `{"atomic":true}`,
		`{"checks":[` + strings.Repeat(`{"policy":"fifty","key":"k"},`, 100) + `{"policy":"fifty","key":"k"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		serveRaw(t, "POST", "/v1/checks", "Bearer "+fuzzCheckToken, "application/json", body)
	})
}

func FuzzPolicyBody(f *testing.F) {
	for _, c := range []struct{ name, body string }{
		{"api-1", `{"limit":10,"window":"1m"}`},
		{"api-2", `{"limit":10,"window":"1d12h","algorithm":"sliding_log","failure_mode":"allow","shadow":true}`},
		{"api-3", `{"limit":0,"window":"0s"}`}, {"api-4", `{"limit":1,"window":"32d"}`}, {"api-5", `{"limit":1,"window":"366d2562047h"}`},
		{"login", `{"limit":1,"window":"1m"}`}, {"Bad%20Name", `{"limit":1,"window":"1m"}`}, {"api-6", `{"limit":1,"window":"1m","x":1}`},
		{"api-7", `{"limit":1,"window":"1500us"}`}, {"api-8", `{"limit":1.5,"window":"1m"}`}, {"api-9", `{"window":"1m"}`},
	} {
		f.Add(c.name, []byte(c.body))
	}
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		serveRaw(t, "PUT", "/v1/policies/"+name, "Bearer "+fuzzAdminToken, "application/json", body)
	})
}

func FuzzAuthorizeQuery(f *testing.F) {
	for _, q := range []string{
		"policy=login&key=k", "policy=login&key=k&cost=0", "policy=login&key=k&cost=-1", "policy=login&key=k&cost=x",
		"policy=login", "key=k", "", "policy=login&key=%00%0d%0aX-Evil:%201", "policy=login&key=%ff", "policy=login&policy=one&key=k",
		"policy=login&key=k&cost=99999999999999999999", "policy=login&key=" + strings.Repeat("k", 600), "policy=login&key=%E2%80%AEevil",
		"policy=login&key=k&extra=1", "policy=%zz&key=k",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		serveRaw(t, "GET", "/v1/authorize?"+query, "Bearer "+fuzzCheckToken, "", nil)
	})
}

// FuzzPath covers the routes with path parameters (peek and reset of a key, get and delete of a policy) with any
// path and method, and the router's answers to paths outside the contract.
func FuzzPath(f *testing.F) {
	for _, c := range []struct{ method, path string }{
		{"GET", "/v1/policies/login/keys/k"}, {"DELETE", "/v1/policies/login/keys/k"}, {"GET", "/v1/policies/login/keys/%00%0a"},
		{"GET", "/v1/policies/login/keys/a%2Fb"}, {"GET", "/v1/policies/login/keys/"}, {"GET", "/v1/policies/nope/keys/k"},
		{"GET", "/v1/policies/login"}, {"DELETE", "/v1/policies/login"}, {"GET", "/v1/policies"}, {"POST", "/v1/policies/login/keys/k"},
		{"GET", "/v1/policies/login/keys/" + strings.Repeat("%C3%A9", 300)}, {"GET", "/v1//policies/../check"}, {"PATCH", "/healthz"},
		{"GET", "/readyz"}, {"GET", "/metrics"}, {"GET", "/openapi.yaml"}, {"GET", "/v2/x"},
	} {
		f.Add(c.method, c.path, "Bearer "+fuzzAdminToken)
	}
	f.Add("GET", "/v1/policies/login/keys/k", "Bearer "+fuzzCheckToken)
	f.Add("DELETE", "/v1/policies/login/keys/k", "Bearer "+fuzzCheckToken)
	f.Add("GET", "/v1/policies/login/keys/k", "")
	f.Add("GET", "/v1/policies/login/keys/k", "bearer  "+fuzzAdminToken+" ")
	f.Add("GET", "/v1/policies/login/keys/k", "Basic "+fuzzAdminToken)
	f.Fuzz(func(t *testing.T, method, path, auth string) {
		switch method {
		case "GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS":
		default:
			method = "GET"
		}
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		var body []byte
		ctype := ""
		if method == "PUT" || method == "POST" || method == "PATCH" {
			body, ctype = []byte(`{"limit":3,"window":"1m"}`), "application/json"
		}
		serveRaw(t, method, path, auth, ctype, body)
	})
}
