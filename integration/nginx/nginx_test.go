package nginx

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
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const checkToken = "nginx-check-token-0123456789"

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// start runs cmd until the test ends, then stops it with SIGTERM (SIGKILL after 10 s).
func start(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd.Path, err)
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
}

// waitHTTP polls url until it answers at all (any status), or fails the test after 15 s.
func waitHTTP(t *testing.T, url string, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer: %v\n%s", url, err, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// clientFrom returns an HTTP client whose connections come from the loopback address src, so nginx sees it as
// $remote_addr (sluice's key in the example config).
func clientFrom(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}}
}

func TestNginxAuthRequest(t *testing.T) {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("nginx is not on PATH; scripts/test.d/15-nginx-install.sh installs it (CI=true: this test must run)")
		}
		t.Skip("nginx is not on PATH: run scripts/install-proxy.sh nginx (as root) to run this test")
	}
	dir := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}

	// sluice: built from this tree, 3 requests per minute per client address, with a check token.
	bin := filepath.Join(dir, "sluice")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	writeFile(t, filepath.Join(dir, "sluice.yaml"), "log:\n  level: warn\npolicies:\n  - {name: login, limit: 3, window: 1m}\n")
	writeFile(t, filepath.Join(dir, "tokens.yaml"), "- {name: nginx, token: "+checkToken+", role: check}\n")
	sluicePort := freePort(t)
	sluiceLog := filepath.Join(dir, "sluice.log")
	logf, err := os.Create(sluiceLog)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	sluice := exec.Command(bin, "serve", "-config", filepath.Join(dir, "sluice.yaml"))
	sluice.Env = append(os.Environ(), "SLUICE_LISTEN=127.0.0.1:"+strconv.Itoa(sluicePort), "SLUICE_TOKENS_FILE="+filepath.Join(dir, "tokens.yaml"))
	sluice.Stdout, sluice.Stderr = logf, logf
	start(t, sluice)
	waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/readyz", sluicePort), func() string { return readFile(sluiceLog) })

	// The upstream app counts what reaches it.
	var hits atomic.Int64
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		fmt.Fprintf(w, "hello from the app: %s", r.URL.Path)
	}))
	t.Cleanup(app.Close)

	// nginx: the README's snippet with this test's addresses, in a minimal main config kept inside dir.
	example, err := os.ReadFile("nginx.conf.example")
	if err != nil {
		t.Fatal(err)
	}
	nginxPort := freePort(t)
	snippet := strings.NewReplacer(
		"listen 127.0.0.1:8000;", fmt.Sprintf("listen 127.0.0.1:%d;", nginxPort),
		"server 127.0.0.1:8080;", fmt.Sprintf("server 127.0.0.1:%d;", sluicePort),
		"server 127.0.0.1:3000;", "server "+strings.TrimPrefix(app.URL, "http://")+";",
		"SLUICE_CHECK_TOKEN", checkToken,
	).Replace(string(example))
	for _, placeholder := range []string{":8000;", ":8080;", ":3000;", "SLUICE_CHECK_TOKEN"} {
		if strings.Contains(snippet, placeholder) {
			t.Fatalf("nginx.conf.example changed: %q was not replaced", placeholder)
		}
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 64; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
%[2]s
}
`, dir, snippet)
	confPath := filepath.Join(dir, "nginx.conf")
	writeFile(t, confPath, conf)
	errorLog := filepath.Join(dir, "error.log")
	if out, err := exec.Command(nginx, "-t", "-p", dir, "-e", errorLog, "-c", confPath).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	ng := exec.Command(nginx, "-p", dir, "-e", errorLog, "-c", confPath)
	ng.Stdout, ng.Stderr = os.Stderr, os.Stderr
	start(t, ng)
	base := fmt.Sprintf("http://127.0.0.1:%d", nginxPort)
	waitHTTP(t, base+"/_nginx_up", func() string { return readFile(errorLog) })
	hits.Store(0) // the readiness probe itself passed through (and took one unit from 127.0.0.1)
	logs := func() string {
		return "nginx error.log:\n" + readFile(errorLog) + "\nsluice log:\n" + readFile(sluiceLog)
	}

	get := func(c *http.Client, path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, logs())
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}

	// Client 127.0.0.3: three requests pass to the app, the fourth is refused by nginx with 429.
	client := clientFrom("127.0.0.3")
	for i := 1; i <= 3; i++ {
		resp, body := get(client, fmt.Sprintf("/page/%d", i))
		if resp.StatusCode != 200 || body != fmt.Sprintf("hello from the app: /page/%d", i) {
			t.Fatalf("request %d: %d %q\n%s", i, resp.StatusCode, body, logs())
		}
		if got, want := resp.Header.Get("RateLimit"), fmt.Sprintf(`"login";r=%d;t=60`, 3-i); got != want {
			t.Fatalf("request %d: RateLimit %q, want %q", i, got, want)
		}
		if got := resp.Header.Get("RateLimit-Policy"); got != `"login";q=3;w=60` {
			t.Fatalf("request %d: RateLimit-Policy %q", i, got)
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
		if resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(body, `"status":429`) ||
			resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("RateLimit") != `"login";r=0;t=60` {
			t.Fatalf("request %d: 429 with %v %q", i, resp.Header, body)
		}
	}
	if n := hits.Load(); n != 3 {
		t.Fatalf("the app saw %d requests, want 3: refused requests must not reach it", n)
	}

	// Another client address is another key.
	if resp, body := get(clientFrom("127.0.0.4"), "/other"); resp.StatusCode != 200 {
		t.Fatalf("another client: %d %q", resp.StatusCode, body)
	}

	// sluice gone: nginx fails closed with 503, and the app sees nothing.
	_ = sluice.Process.Signal(syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", sluicePort), 200*time.Millisecond); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sluice did not stop")
		}
		time.Sleep(50 * time.Millisecond)
	}
	before := hits.Load()
	if resp, body := get(clientFrom("127.0.0.5"), "/down"); resp.StatusCode != 503 || hits.Load() != before {
		t.Fatalf("with sluice down: %d %q, app hits %d→%d; want 503 and no hit", resp.StatusCode, body, before, hits.Load())
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
