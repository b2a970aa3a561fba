// Package serveproc runs real `sluice serve` processes for the multi-replica tests of the stores
// (adapters/postgres, adapters/redis) and the churn test (integration/churn): build the binary once, start
// replicas on free loopback ports with the environment a test gives them, wait for /readyz, send checks (single
// or batched) and policy changes, and stop them with SIGTERM when the test ends. What each test adds is only its
// store's settings.
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
	Allowed      bool   `json:"allowed"`
	Limit        int64  `json:"limit"`
	Remaining    int64  `json:"remaining"`
	RetryAfterMs int64  `json:"retry_after_ms"`
	Override     string `json:"override"`
}

// StatusError is a request answered with another status than the ones its method expects.
type StatusError struct {
	Op   string // "PUT /v1/policies/p"; empty means POST /v1/check
	Code int
	Body string
}

func (e *StatusError) Error() string {
	op := e.Op
	if op == "" {
		op = "POST /v1/check"
	}
	return fmt.Sprintf("%s: %d %s", op, e.Code, e.Body)
}

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

// Send sends method path with body (JSON-encoded when not nil) and returns the answer's status and body. It is
// the admin and batch counterpart of Check, for tests that change policies while checks run (integration/churn).
func (p *Proc) Send(ctx context.Context, c *http.Client, method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.Base+path, r)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// PolicySpec is the body of PUT /v1/policies/{name} that the replica tests send.
type PolicySpec struct {
	Limit     int64  `json:"limit"`
	Window    string `json:"window"`
	Algorithm string `json:"algorithm,omitempty"`
}

// PutPolicy sends PUT /v1/policies/{name} and returns the status: 201 created, 200 replaced.
func (p *Proc) PutPolicy(ctx context.Context, c *http.Client, name string, spec PolicySpec) (int, error) {
	code, b, err := p.Send(ctx, c, http.MethodPut, "/v1/policies/"+name, spec)
	if err == nil && code != http.StatusOK && code != http.StatusCreated {
		err = &StatusError{Op: "PUT /v1/policies/" + name, Code: code, Body: string(b)}
	}
	return code, err
}

// DeletePolicy sends DELETE /v1/policies/{name} and returns the status: 204 deleted, 404 absent (not an error).
func (p *Proc) DeletePolicy(ctx context.Context, c *http.Client, name string) (int, error) {
	code, b, err := p.Send(ctx, c, http.MethodDelete, "/v1/policies/"+name, nil)
	if err == nil && code != http.StatusNoContent && code != http.StatusNotFound {
		err = &StatusError{Op: "DELETE /v1/policies/" + name, Code: code, Body: string(b)}
	}
	return code, err
}

// CheckRequest is one check of a POST /v1/checks batch.
type CheckRequest struct {
	Policy string `json:"policy"`
	Key    string `json:"key"`
	Cost   int    `json:"cost"`
}

// Batch is the part of a 200 answer to POST /v1/checks the replica tests read.
type Batch struct {
	Allowed   bool       `json:"allowed"`
	Decisions []Decision `json:"decisions"`
}

// Checks sends POST /v1/checks; an answer other than 200 is a *StatusError.
func (p *Proc) Checks(ctx context.Context, c *http.Client, checks []CheckRequest, atomic bool) (Batch, error) {
	code, b, err := p.Send(ctx, c, http.MethodPost, "/v1/checks", map[string]any{"checks": checks, "atomic": atomic})
	if err != nil {
		return Batch{}, err
	}
	if code != http.StatusOK {
		return Batch{}, &StatusError{Op: "POST /v1/checks", Code: code, Body: string(b)}
	}
	var out Batch
	if err := json.Unmarshal(b, &out); err != nil {
		return Batch{}, fmt.Errorf("POST /v1/checks: %w: %s", err, b)
	}
	return out, nil
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
