package caddy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/integration/serveproc"
)

const checkToken = "caddy-check-token-0123456789"

// clientFrom returns an HTTP client whose connections come from the loopback address src, so Caddy sees it as
// {remote_host} (sluice's key in the example config).
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// seen is what the upstream app received: one entry per request, with the rate-limit headers forward_auth copied.
type seen struct {
	path, rateLimit, authorization string
}

func TestCaddyForwardAuth(t *testing.T) {
	caddy, err := exec.LookPath("caddy")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("caddy is not on PATH; scripts/test.d/16-caddy-install.sh installs it (CI=true: this test must run)")
		}
		t.Skip("caddy is not on PATH: run scripts/install-proxy.sh caddy (as root) to run this test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()

	// sluice: built from this tree, 3 requests per minute per client address, with a check token.
	bin := serveproc.Build(t, ctx, dir)
	cfg := filepath.Join(dir, "sluice.yaml")
	writeFile(t, cfg, "policies:\n  - {name: login, limit: 3, window: 1m}\n")
	writeFile(t, filepath.Join(dir, "tokens.yaml"), "- {name: caddy, token: "+checkToken+", role: check}\n")
	sluice := serveproc.Start(t, bin, dir, "sluice", cfg, "SLUICE_TOKENS_FILE="+filepath.Join(dir, "tokens.yaml"))
	sluice.WaitReady(t, ctx)

	// The upstream app records what reaches it.
	var mu sync.Mutex
	var hits []seen
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, seen{r.URL.Path, r.Header.Get("RateLimit"), r.Header.Get("Authorization")})
		mu.Unlock()
		fmt.Fprintf(w, "hello from the app: %s", r.URL.Path)
	}))
	t.Cleanup(app.Close)
	appHits := func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return append([]seen(nil), hits...)
	}

	// caddy: the README's snippet with this test's addresses, after global options that keep it inside dir: no
	// admin endpoint, no automatic HTTPS, storage (and the autosaved config, via XDG_*) under dir.
	example, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	caddyPort := serveproc.FreePort(t)
	site := strings.NewReplacer(
		"http://:8000 {", fmt.Sprintf("http://:%d {", caddyPort),
		"forward_auth 127.0.0.1:8080 {", "forward_auth "+strings.TrimPrefix(sluice.Base, "http://")+" {",
		"reverse_proxy 127.0.0.1:3000", "reverse_proxy "+strings.TrimPrefix(app.URL, "http://"),
		"SLUICE_CHECK_TOKEN", checkToken,
	).Replace(string(example))
	for _, placeholder := range []string{":8000 ", ":8080 ", ":3000", "SLUICE_CHECK_TOKEN"} {
		if strings.Contains(site, placeholder) {
			t.Fatalf("Caddyfile.example changed: %q was not replaced", placeholder)
		}
	}
	conf := fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n\tstorage file_system %s\n}\n\n%s", filepath.Join(dir, "data"), site)
	confPath := filepath.Join(dir, "Caddyfile")
	writeFile(t, confPath, conf)
	env := append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	validate := exec.CommandContext(ctx, caddy, "validate", "--config", confPath, "--adapter", "caddyfile")
	validate.Env = env
	if out, err := validate.CombinedOutput(); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, out)
	}
	caddyLog := filepath.Join(dir, "caddy.log")
	logf, err := os.Create(caddyLog)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(caddy, "run", "--config", confPath, "--adapter", "caddyfile")
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("caddy: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	logs := func() string {
		return "caddy log:\n" + readFile(caddyLog) + "\nsluice log:\n" + readFile(sluice.Log)
	}
	// Wait until caddy accepts connections (a connection alone sends no request, so it spends no unit).
	caddyAddr := fmt.Sprintf("127.0.0.1:%d", caddyPort)
	for deadline := time.Now().Add(15 * time.Second); ; {
		c, err := net.DialTimeout("tcp", caddyAddr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("caddy exited\n%s", logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not listen on %s: %v\n%s", caddyAddr, err, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	base := "http://" + caddyAddr

	get := func(c *http.Client, path string, header ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, logs())
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	// Client 127.0.0.3: three requests pass to the app, the fourth and fifth get sluice's 429. The client's own
	// Authorization header does not reach sluice (header_up replaces it with the check token), and reaches the app.
	client := clientFrom("127.0.0.3")
	for i := 1; i <= 3; i++ {
		resp, body := get(client, fmt.Sprintf("/page/%d", i), "Authorization", "Bearer the-apps-own-token")
		if resp.StatusCode != 200 || body != fmt.Sprintf("hello from the app: /page/%d", i) {
			t.Fatalf("request %d: %d %q\n%s", i, resp.StatusCode, body, logs())
		}
		want := fmt.Sprintf(`"login";r=%d;t=60`, 3-i)
		if got := resp.Header.Get("RateLimit"); got != want {
			t.Fatalf("request %d: RateLimit %q, want %q", i, got, want)
		}
		if got := resp.Header.Get("RateLimit-Policy"); got != `"login";q=3;w=60` {
			t.Fatalf("request %d: RateLimit-Policy %q", i, got)
		}
		if h := appHits(); len(h) != i || h[i-1].rateLimit != want || h[i-1].authorization != "Bearer the-apps-own-token" {
			t.Fatalf("request %d: the app saw %+v, want request %d with RateLimit %q and the client's Authorization", i, h, i, want)
		}
	}
	for i := 4; i <= 5; i++ {
		resp, body := get(client, fmt.Sprintf("/page/%d", i))
		if resp.StatusCode != 429 {
			t.Fatalf("request %d over the limit: %d %q, want 429\n%s", i, resp.StatusCode, body, logs())
		}
		ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 60 {
			t.Fatalf("request %d: Retry-After %q, want 1..60 seconds", i, resp.Header.Get("Retry-After"))
		}
		if resp.Header.Get("Content-Type") != "application/problem+json" ||
			!strings.Contains(body, `"type":"https://sluice.dev/problems/rate-limited"`) ||
			resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("RateLimit") != `"login";r=0;t=60` ||
			resp.Header.Get("RateLimit-Policy") != `"login";q=3;w=60` {
			t.Fatalf("request %d: 429 with %v %q", i, resp.Header, body)
		}
	}
	if h := appHits(); len(h) != 3 {
		t.Fatalf("the app saw %d requests, want 3: refused requests must not reach it: %+v", len(h), h)
	}

	// Another client address is another key, with its own count.
	if resp, body := get(clientFrom("127.0.0.4"), "/other"); resp.StatusCode != 200 || resp.Header.Get("RateLimit") != `"login";r=2;t=60` {
		t.Fatalf("another client: %d %v %q", resp.StatusCode, resp.Header, body)
	}

	// sluice gone: forward_auth cannot reach it, so Caddy answers 502 (fails closed), and the app sees nothing.
	_ = sluice.Cmd.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); !sluice.Exited(); {
		if time.Now().After(deadline) {
			t.Fatal("sluice did not stop")
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := len(appHits())
	if resp, body := get(clientFrom("127.0.0.5"), "/down"); resp.StatusCode != 502 || len(appHits()) != before {
		t.Fatalf("with sluice down: %d %q, app hits %d→%d; want 502 and no hit\n%s", resp.StatusCode, body, before, len(appHits()), logs())
	}
}
