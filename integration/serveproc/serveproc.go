// Package serveproc runs real `sluice serve` processes for the multi-replica tests of the stores
// (adapters/postgres, adapters/redis): build the binary once, start replicas on free loopback ports with the
// environment a test gives them, wait for /readyz, send checks, and stop them with SIGTERM when the test ends.
// What each test adds is only its store's settings.
package serveproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Build builds the repository's root package (the sluice binary) into dir and returns its path.
func Build(t testing.TB, ctx context.Context, dir string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("serveproc: cannot locate the repository")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	bin := filepath.Join(dir, "sluice")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build sluice: %v\n%s", err, out)
	}
	return bin
}

// FreePort returns a loopback port nothing listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Proc is one `sluice serve` process.
type Proc struct {
	Name string
	Base string // http://127.0.0.1:port
	Log  string // its stdout and stderr
	Cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// Start runs `bin serve` with the config file cfg on a free port, with the process environment plus env (the
// store's settings), its output in dir/name.log; the test's cleanup sends SIGTERM and waits (killing it after
// 10 s).
func Start(t testing.TB, bin, dir, name, cfg string, env ...string) *Proc {
	t.Helper()
	port := FreePort(t)
	p := &Proc{Name: name, Base: fmt.Sprintf("http://127.0.0.1:%d", port), Log: filepath.Join(dir, name+".log")}
	logf, err := os.Create(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	p.Cmd = exec.Command(bin, "serve")
	p.Cmd.Env = append(os.Environ(), "SLUICE_CONFIG="+cfg, fmt.Sprintf("SLUICE_LISTEN=127.0.0.1:%d", port), "SLUICE_LOG_LEVEL=info")
	p.Cmd.Env = append(p.Cmd.Env, env...)
	p.Cmd.Stdout, p.Cmd.Stderr = logf, logf
	if err := p.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func() { p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.Cmd.Process.Kill()
			<-p.done
		}
		logf.Close()
	})
	return p
}

// WaitReady polls /readyz until it answers 200; the test fails if ctx ends or the process exits first.
func (p *Proc) WaitReady(t testing.TB, ctx context.Context) {
	t.Helper()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.Base+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if ctx.Err() != nil {
			p.DumpLog(t)
			t.Fatalf("%s never became ready", p.Name)
		}
		select {
		case <-p.done:
			p.DumpLog(t)
			t.Fatalf("%s exited before it was ready", p.Name)
		case <-time.After(50 * time.Millisecond): // a process starting, not a clock
		}
	}
}

// DumpLog logs the last 30 lines of the process's output.
func (p *Proc) DumpLog(t testing.TB) {
	b, _ := os.ReadFile(p.Log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	t.Logf("--- %s log (last %d lines) ---\n%s", p.Name, len(lines), strings.Join(lines, "\n"))
}

// Decision is the part of a 200 answer the replica tests read.
type Decision struct {
	Allowed      bool  `json:"allowed"`
	Remaining    int64 `json:"remaining"`
	RetryAfterMs int64 `json:"retry_after_ms"`
}

// StatusError is a check answered with another status than 200.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return fmt.Sprintf("POST /v1/check: %d %s", e.Code, e.Body) }

// Check sends POST /v1/check; an answer other than 200 is a *StatusError.
func (p *Proc) Check(ctx context.Context, c *http.Client, policy, key string, cost int) (Decision, error) {
	body, _ := json.Marshal(map[string]any{"policy": policy, "key": key, "cost": cost})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Base+"/v1/check", bytes.NewReader(body))
	if err != nil {
		return Decision{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return Decision{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return Decision{}, &StatusError{Code: resp.StatusCode, Body: string(b)}
	}
	var d Decision
	if err := json.Unmarshal(b, &d); err != nil {
		return Decision{}, fmt.Errorf("POST /v1/check: %w: %s", err, b)
	}
	return d, nil
}
