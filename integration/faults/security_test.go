package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const (
	checkToken = "chk-7d1e0c55a3b94f0f8e2a"
	adminToken = "adm-5b8f7a2c91e04d6bb3c7"
	fileToken  = "file-c0ffee2b7d8e4a1f9e6d"
)

// secureSluice runs sluice on the memory store with tokens from the config file and from a tokens file, logging
// at debug level, with short HTTP timeouts.
func secureSluice(t *testing.T, env ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("- {name: from-file, token: "+fileToken+", role: check}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, dir, `tokens:
  - {name: checker, token: `+checkToken+`, role: check}
  - {name: admin, token: `+adminToken+`, role: admin}
policies:
  - {name: two, limit: 2, window: 1h}
`)
	return startSluice(t, "sluice", cfg, append([]string{"SLUICE_TOKENS_FILE=" + tokens, "SLUICE_LOG_LEVEL=debug",
		"SLUICE_HTTP_READ_HEADER_TIMEOUT=1s", "SLUICE_HTTP_READ_TIMEOUT=2s", "SLUICE_HTTP_IDLE_TIMEOUT=2s"}, env...)...)
}

// closedWithin reports how long the server took to close conn (reads until EOF or error), at most limit.
func closedWithin(conn net.Conn, limit time.Duration) (time.Duration, []byte, bool) {
	start := time.Now()
	conn.SetReadDeadline(start.Add(limit))
	got, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return time.Since(start), got, false
	}
	return time.Since(start), got, true
}

// TestSlowClientsCannotHoldConnections: a client that trickles its headers (slowloris), one that trickles its
// body, and one that stays idle after a response are each cut off by the server's timeouts (read-header 1s, read
// 2s, idle 2s here; defaults 5s, 10s, 120s), and 200 slowloris connections at once do not stop other clients.
func TestSlowClientsCannotHoldConnections(t *testing.T) {
	p := secureSluice(t)
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	trickle := func(c net.Conn, s string, stop <-chan struct{}) {
		for i := 0; i < len(s); i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := c.Write([]byte{s[i]}); err != nil {
				return
			}
		}
	}

	// Headers one byte every 200ms: the read-header timeout (1s) ends it.
	c := dial()
	fmt.Fprint(c, "POST /v1/check HTTP/1.1\r\nHost: x\r\n")
	stop := make(chan struct{})
	go trickle(c, "X-Slow: "+strings.Repeat("a", 100)+"\r\n\r\n", stop)
	took, _, closed := closedWithin(c, 10*time.Second)
	close(stop)
	if !closed || took > 5*time.Second {
		t.Fatalf("slow headers: connection still open after %s", took)
	}
	t.Logf("slow headers (read_header_timeout 1s): closed after %s", took.Round(time.Millisecond))

	// Body one byte every 200ms: the read timeout (2s) ends it.
	c = dial()
	body := `{"policy":"two","key":"slow-body"}`
	fmt.Fprintf(c, "POST /v1/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", checkToken, len(body))
	stop = make(chan struct{})
	go trickle(c, body, stop)
	took, got, closed := closedWithin(c, 15*time.Second)
	close(stop)
	if !closed || took > 8*time.Second {
		t.Fatalf("slow body: connection still open after %s", took)
	}
	first, _, _ := strings.Cut(string(got), "\r\n")
	t.Logf("slow body (read_timeout 2s): answered %q and closed after %s", first, took.Round(time.Millisecond))

	// Idle after a response: the idle timeout (2s) ends it.
	c = dial()
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start := time.Now()
	c.SetReadDeadline(start.Add(15 * time.Second))
	_, err = br.ReadByte()
	if ne, ok := err.(net.Error); ok && ne.Timeout() || time.Since(start) > 8*time.Second {
		t.Fatalf("idle keep-alive connection still open after %s", time.Since(start))
	}
	t.Logf("idle keep-alive connection (idle_timeout 2s): closed after %s", time.Since(start).Round(time.Millisecond))

	// 200 slowloris connections at once; a normal client is still served, quickly.
	stop = make(chan struct{})
	var wg sync.WaitGroup
	for range 200 {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\n")
		wg.Add(1)
		go func() { defer wg.Done(); trickle(c, strings.Repeat("X-A: b\r\n", 50), stop) }()
	}
	cl := &http.Client{Timeout: 5 * time.Second}
	var worst time.Duration
	for i := range 20 {
		o := check(context.Background(), cl, p.base, checkToken, "two", fmt.Sprintf("busy-%d", i))
		if o.status != 200 {
			t.Fatalf("a normal check under 200 slowloris connections: %+v", o)
		}
		worst = max(worst, o.took)
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("200 slowloris connections held open: 20 normal checks answered, slowest %s", worst.Round(time.Millisecond))
}

// TestHeaderAndBodyLimits: headers above 16 KiB (MaxHeaderBytes) get 431 from the server, bodies above
// http.max_body_bytes get 413 problem+json whether they declare their length or stream it chunked.
func TestHeaderAndBodyLimits(t *testing.T) {
	p := secureSluice(t, "SLUICE_HTTP_MAX_BODY_BYTES=2048")
	cl := &http.Client{Timeout: 10 * time.Second}
	for _, size := range []int{32 << 10, 1 << 20} { // net/http allows 4 KiB of slack over MaxHeaderBytes (16 KiB)
		req, _ := http.NewRequest("GET", p.base+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("h", size))
		resp, err := cl.Do(req)
		if err != nil {
			// A server may also cut a huge header off mid-stream; that is a refusal too.
			t.Logf("%d-byte header: %v", size, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("%d-byte header: %d, want 431", size, resp.StatusCode)
		}
	}
	big := `{"policy":"two","key":"` + strings.Repeat("k", 4096) + `"}`
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(big)
		if chunked {
			body = io.MultiReader(strings.NewReader(big)) // unknown length: sent chunked
		}
		req, _ := http.NewRequest("POST", p.base+"/v1/check", body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+checkToken)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%d-byte body (chunked %v): %d %s", len(big), chunked, resp.StatusCode, b)
		}
	}
}

// TestUnusualKeysStoredExactlyNeverInHeaders: keys with control characters, bidi overrides, combining marks,
// emoji, invalid-looking escapes and CR LF header injections are stored exactly (two keys that differ only in
// Unicode normalisation are two keys), come back byte for byte in JSON bodies, and never appear in a response
// header, through /v1/check, /v1/authorize (query string) and the peek endpoint (path).
func TestUnusualKeysStoredExactlyNeverInHeaders(t *testing.T) {
	p := secureSluice(t)
	keys := []string{
		"a\x00b", "\r\nSet-Cookie: sid=1", "tab\tkey", "\x1b[31mred", "\x7f", "\u202eevil\u202c", "caf\u00e9", "cafe\u0301",
		"🔑🗝️", "%2F..%2F", "   ", "tenant:42/user:7?x=1#f", strings.Repeat("é", 256), "\ufeffbom", "line\u2028sep",
	}
	cl := &http.Client{Timeout: 10 * time.Second}
	ctx := context.Background()
	noKeyInHeaders := func(what, key string, h http.Header) {
		t.Helper()
		for name, vs := range h {
			for _, v := range vs {
				if strings.Contains(v, key) && strings.TrimSpace(key) != "" {
					t.Fatalf("%s: header %s: %q holds the key %q", what, name, v, key)
				}
				for i := 0; i < len(v); i++ {
					if c := v[i]; c < 0x20 && c != '\t' || c >= 0x7f {
						t.Fatalf("%s: header %s: %q holds byte %#x", what, name, v, c)
					}
				}
			}
		}
	}
	do := func(method, path, body string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, p.base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+checkToken)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for _, key := range keys {
		// One check through /v1/check, one through /v1/authorize: two units used.
		o := check(ctx, cl, p.base, checkToken, "two", key)
		if o.status != 200 || !o.allowed {
			t.Fatalf("check %q: %+v", key, o)
		}
		resp, body := do("POST", "/v1/check", jsonString(map[string]any{"policy": "two", "key": key, "cost": 0}))
		noKeyInHeaders("POST /v1/check", key, resp.Header)
		if !strings.Contains(body, `"key":`+jsonString(key)) {
			t.Fatalf("check %q: the body does not return the key exactly: %s", key, body)
		}
		resp, _ = do("GET", "/v1/authorize?policy=two&key="+url.QueryEscape(key), "")
		noKeyInHeaders("GET /v1/authorize", key, resp.Header)
		if resp.StatusCode != 204 {
			t.Fatalf("authorize %q: %d", key, resp.StatusCode)
		}
		resp, _ = do("GET", "/v1/authorize?policy=two&key="+url.QueryEscape(key), "")
		noKeyInHeaders("GET /v1/authorize (429)", key, resp.Header)
		if resp.StatusCode != 429 {
			t.Fatalf("third use of %q: %d, want 429: the key was not stored exactly", key, resp.StatusCode)
		}
		resp, body = do("GET", "/v1/policies/two/keys/"+url.PathEscape(key), "")
		noKeyInHeaders("GET /v1/policies/two/keys/{key}", key, resp.Header)
		if resp.StatusCode != 200 || !strings.Contains(body, `"remaining":0`) || !strings.Contains(body, `"key":`+jsonString(key)) {
			t.Fatalf("peek %q: %d %s", key, resp.StatusCode, body)
		}
	}
}

// jsonString is v as the server's encoder writes it (encoding/json, HTML-safe escapes included).
func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestTokensAndSecretsNeverLogged runs a whole `sluice serve` at debug level with tokens from the config file and
// a tokens file, drives every kind of request (valid, wrong and near-miss tokens, a token in the query string,
// admin operations, bad bodies, 401/403/404/413/503 answers), stops it, and scans everything it wrote; then does
// the same for start-up failures (`sluice serve` and `sluice config check` with broken settings) and for a
// Postgres URL's password while the database is unreachable.
func TestTokensAndSecretsNeverLogged(t *testing.T) {
	const key = "user-4c1d9e-private"
	p := secureSluice(t)
	cl := &http.Client{Timeout: 10 * time.Second}
	send := func(method, path, token, body string) int {
		req, _ := http.NewRequest(method, p.base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	checkBody := `{"policy":"two","key":"` + key + `"}`
	for _, c := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"POST", "/v1/check", checkToken, checkBody, 200},
		{"POST", "/v1/check", fileToken, checkBody, 200},
		{"POST", "/v1/check", checkToken + "x", checkBody, 401},
		{"POST", "/v1/check", checkToken[:len(checkToken)-1], checkBody, 401},
		{"POST", "/v1/check", "", checkBody, 401},
		{"GET", "/v1/authorize?policy=two&key=" + key + "&token=" + adminToken, checkToken, "", 429},
		{"GET", "/v1/policies/two/keys/" + key, checkToken, "", 200},
		{"DELETE", "/v1/policies/two/keys/" + key, checkToken, "", 403},
		{"DELETE", "/v1/policies/two/keys/" + key, adminToken, "", 204},
		{"PUT", "/v1/policies/api-made", adminToken, `{"limit":3,"window":"1m"}`, 201},
		{"POST", "/v1/check", checkToken, `{"policy":"two","key":"` + key + `","token":"` + adminToken + `"}`, 400},
		{"POST", "/v1/check", checkToken, `{"policy":"nope","key":"` + key + `"}`, 404},
		{"POST", "/v1/check", checkToken, `{"policy":"two","key":"` + strings.Repeat(key, 5000) + `"}`, 413},
	} {
		if got := send(c.method, c.path, c.token, c.body); got != c.want {
			t.Fatalf("%s %s: %d, want %d", c.method, c.path, got, c.want)
		}
	}
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-p.done
	logText := p.logText()
	if !strings.Contains(logText, "level=DEBUG msg=request") {
		t.Fatalf("no debug access log: the scan would prove nothing:\n%s", logText)
	}
	for _, secret := range []string{checkToken, adminToken, fileToken, checkToken[:len(checkToken)-1], key} {
		if strings.Contains(logText, secret) {
			t.Errorf("the log of a whole run holds %q:\n%s", secret, logText)
		}
	}
	t.Logf("scanned %d log lines of a debug-level run: no token, near-miss token or key", strings.Count(logText, "\n"))

	// Start-up failures: the messages name the settings, never the secrets.
	dir := t.TempDir()
	const shortSecret = "short-secret-15"
	const dbPassword = "db-pa55word-9f8e7d"
	cfg := writeConfig(t, dir, `listen: 0.0.0.0:8080
tokens:
  - {name: a, token: `+shortSecret+`, role: check}
  - {name: b, token: `+checkToken+`, role: admin}
  - {name: c, token: `+checkToken+`, role: check}
`)
	tokensFile := filepath.Join(dir, "tokens.yaml")
	os.WriteFile(tokensFile, []byte("- {name: d, token: ["+adminToken+"], role: admin}\n"), 0o600)
	for _, args := range [][]string{{"serve", "-config", cfg}, {"config", "check", cfg}} {
		cmd := exec.Command(sluiceBin, args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "SLUICE_TOKENS_FILE=" + tokensFile,
			"SLUICE_DATABASE_URL=postgres://sluice:" + dbPassword + "@127.0.0.1:1/db", "SLUICE_STORE=postgres"}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("sluice %v accepted a broken config:\n%s", args, out)
		}
		for _, secret := range []string{shortSecret, checkToken, adminToken, dbPassword} {
			if strings.Contains(string(out), secret) {
				t.Errorf("sluice %v printed %q:\n%s", args, secret, out)
			}
		}
	}

	// A Postgres URL with a password, the database unreachable: checks fail (503) and the errors are logged at
	// warn level with pgx's own connection description, never the password.
	pg := startSluiceNoWait(t, "pg-down", writeConfig(t, t.TempDir(), "policies: [{name: two, limit: 2, window: 1h}]\n"),
		"SLUICE_STORE=postgres", "SLUICE_DATABASE_URL=postgres://sluice:"+dbPassword+"@127.0.0.1:1/db?sslmode=disable",
		"SLUICE_LOG_LEVEL=debug", "SLUICE_POSTGRES_STATEMENT_TIMEOUT=100ms")
	deadline := time.Now().Add(20 * time.Second)
	for {
		o := check(context.Background(), cl, pg.base, "", "two", key)
		if o.status == 503 {
			break
		}
		if time.Now().After(deadline) {
			pg.dumpLog(t)
			t.Fatalf("no 503 from sluice with its database unreachable: %+v", o)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pg.cmd.Process.Signal(os.Interrupt)
	<-pg.done
	if pgLog := pg.logText(); strings.Contains(pgLog, dbPassword) || !strings.Contains(pgLog, "store unavailable") {
		t.Errorf("log of a run with the database unreachable (want 'store unavailable', never the password):\n%s", pgLog)
	}
}

// TestChartDefaultsHoldNoSecret: the Helm chart's default values carry no usable secret. Every value whose name
// says it is secret (token, password, secret, URL) is empty or names an existing Secret; URLs hold no password.
// (The chart's helm-unittest suite, deploy/helm/sluice/tests/secrets_test.yaml, checks that the generated tokens
// and database password are random and kept across upgrades.)
func TestChartDefaultsHoldNoSecret(t *testing.T) {
	b, err := os.ReadFile("../../deploy/helm/sluice/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	checked := 0
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, vv := range x {
				walk(path+"."+k, vv)
			}
		case []any:
			for i, vv := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), vv)
			}
		case string:
			name := strings.ToLower(path[strings.LastIndexByte(path, '.')+1:])
			// passwordKey and the like name the key inside an existing Secret: a name, not a secret.
			secretKeyName := strings.HasSuffix(name, "key") && (strings.Contains(name, "password") || strings.Contains(name, "token"))
			secretish := !secretKeyName && (strings.Contains(name, "token") || strings.Contains(name, "password") || strings.Contains(name, "secret") && !strings.HasPrefix(name, "existing") || name == "url")
			if secretish {
				checked++
				if x != "" {
					t.Errorf("values.yaml %s has a default %q: a secret must be generated or come from an existing Secret", path, x)
				}
			}
			if u, err := url.Parse(x); err == nil && u.User != nil {
				if _, has := u.User.Password(); has {
					t.Errorf("values.yaml %s holds a URL with a password", path)
				}
			}
		}
	}
	walk("", values)
	if checked == 0 {
		t.Fatal("no secret-like value found in values.yaml: the walk checks nothing")
	}
	t.Logf("%d secret-like values in the chart's defaults, all empty", checked)
}
