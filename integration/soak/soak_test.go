// Package soak runs `sluice serve` (the real binary) at a steady, bounded load for a while and samples what must
// stay flat: resident memory, goroutines, heap, the memory store's key count (bounded by max_keys) and, on
// Postgres, the table's row count (bounded by the janitor) and the pool's connections.
//
// SLUICE_SOAK sets the duration per store (e.g. SLUICE_SOAK=10m); unset, each store runs a 10 s smoke of the same
// code. SLUICE_SOAK_OUT names a directory for the samples (soak-memory.csv, soak-postgres.csv).
//
//	SLUICE_SOAK=10m go test -run TestSoak -timeout 30m -v ./integration/soak
package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
)

const (
	clients       = 20
	ratePerClient = 25               // requests per second per client: 500/s in all
	newKeysPerS   = 50               // the key space moves on: old keys go idle and must be dropped
	window        = 10 * time.Second // short, so idle keys empty quickly
	maxKeys       = 2000             // memory store bound, a few times the live set (~600 keys)
)

func duration(t *testing.T) time.Duration {
	v := os.Getenv("SLUICE_SOAK")
	if v == "" {
		return 10 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("SLUICE_SOAK=%q: %v", v, err)
	}
	return d
}

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-soak-")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "sluice")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build sluice: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type sample struct {
	At         time.Duration
	RSSKiB     int64
	Goroutines float64
	HeapInuse  float64
	Keys       float64 // memory: sluice_memory_keys; postgres: rows in sluice_buckets
	Conns      int64   // postgres: sluice's connections in pg_stat_activity
	Requests   int64
	Errors     int64
}

func TestSoakMemory(t *testing.T) {
	d := duration(t)
	p := start(t, "SLUICE_STORE=memory", fmt.Sprintf("SLUICE_MEMORY_MAX_KEYS=%d", maxKeys))
	samples := soak(t, p, d, func(s *sample, m map[string]float64) {
		s.Keys = m["sluice_memory_keys"]
		if s.Keys > maxKeys {
			t.Errorf("at %s the memory store holds %.0f keys, above max_keys %d", s.At, s.Keys, maxKeys)
		}
	})
	report(t, "memory", samples)
	m := scrape(t, p)
	t.Logf("memory store: full rejections %.0f (new keys refused while every slot was live)", m["sluice_memory_full_rejections_total"])
}

func TestSoakPostgres(t *testing.T) {
	d := duration(t)
	url := pgtest.NewDatabase(t) // the shared server: nothing here stops it
	p := start(t, "SLUICE_STORE=postgres", "SLUICE_DATABASE_URL="+url, "SLUICE_JANITOR_INTERVAL=1m", "SLUICE_MIGRATE_ON_START=false",
		"SLUICE_POSTGRES_MAX_CONNS=8", "SLUICE_POSTGRES_STATEMENT_TIMEOUT=2s")
	ctx := context.Background()
	db, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	samples := soak(t, p, d, func(s *sample, _ map[string]float64) {
		var rows int64
		if err := db.QueryRow(ctx, "SELECT count(*) FROM sluice_buckets").Scan(&rows); err != nil {
			t.Errorf("count rows: %v", err)
		}
		s.Keys = float64(rows)
		if err := db.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sluice' AND datname = current_database()").Scan(&s.Conns); err != nil {
			t.Errorf("count connections: %v", err)
		}
		if s.Conns > 8 {
			t.Errorf("at %s sluice holds %d connections, above max_conns 8", s.At, s.Conns)
		}
	})
	report(t, "postgres", samples)
	m := scrape(t, p)
	deleted := m["sluice_janitor_rows_deleted_total"]
	t.Logf("postgres: janitor deleted %.0f rows", deleted)
	if d >= 3*time.Minute {
		// The janitor runs every 1m (jittered): by now it has swept at least once, and rows of idle keys stay
		// bounded by what arrives between two sweeps, not by the run's length.
		if deleted == 0 {
			t.Error("the janitor deleted nothing in a run of 3 minutes or more")
		}
		bound := float64(newKeysPerS) * 200 // 50 new keys/s × (2 sweep intervals + jitter + one window), rounded up
		for _, s := range samples {
			if s.Keys > bound {
				t.Errorf("at %s the table holds %.0f rows, above %0.f", s.At, s.Keys, bound)
			}
		}
	}
}

type proc struct {
	cmd  *exec.Cmd
	base string
	log  string
	done chan struct{}
}

func start(t *testing.T, env ...string) *proc {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("policies:\n  - {name: soak, limit: 20, window: "+window.String()+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	p := &proc{base: "http://" + addr, log: filepath.Join(dir, "sluice.log"), done: make(chan struct{})}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, "serve")
	p.cmd.Env = append(append(os.Environ(), "SLUICE_CONFIG="+cfg, "SLUICE_LISTEN="+addr, "SLUICE_LOG_LEVEL=info"), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("sluice log:\n%s", tail(string(b), 30))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("sluice not ready within 30s:\n%s", tail(string(b), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// soak drives the steady load for d and samples every d/60 (at least 1 s, at most 10 s).
func soak(t *testing.T, p *proc, d time.Duration, extra func(*sample, map[string]float64)) []sample {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var requests, errors atomic.Int64
	var firstErr atomic.Value
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	begin := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			tick := time.NewTicker(time.Second / ratePerClient)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				// Keys born in the last 12 s: each lives about one window, then goes idle for good.
				sec := int(time.Since(begin).Seconds())
				key := "soak-" + strconv.Itoa(sec*newKeysPerS+rng.IntN(12*newKeysPerS)-11*newKeysPerS)
				body, _ := json.Marshal(map[string]any{"policy": "soak", "key": key})
				resp, err := client.Post(p.base+"/v1/check", "application/json", bytes.NewReader(body))
				requests.Add(1)
				if err != nil {
					if ctx.Err() == nil {
						errors.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errors.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, b))
				}
			}
		}()
	}
	every := min(max(d/60, time.Second), 10*time.Second)
	var samples []sample
	take := func() {
		m := scrape(t, p)
		s := sample{At: time.Since(begin).Round(time.Second), RSSKiB: rss(t, p.cmd.Process.Pid), Goroutines: m["go_goroutines"],
			HeapInuse: m["go_memstats_heap_inuse_bytes"], Requests: requests.Load(), Errors: errors.Load()}
		extra(&s, m)
		samples = append(samples, s)
	}
	take()
	tick := time.NewTicker(every)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			take()
		}
	}
	tick.Stop()
	wg.Wait()
	take()
	if e := errors.Load(); e > 0 {
		t.Errorf("%d of %d requests failed; first: %v", e, requests.Load(), firstErr.Load())
	}
	return samples
}

// report logs the samples, writes them as CSV, and checks that memory and goroutines are flat: the last third
// of the run may not sit well above the first third (generous bounds: the point is "no growth with time", and a
// leak over minutes of 500 req/s with 30,000 distinct keys would be far larger).
func report(t *testing.T, name string, ss []sample) {
	t.Helper()
	var csv strings.Builder
	csv.WriteString("seconds,rss_kib,goroutines,heap_inuse_bytes,keys_or_rows,pg_conns,requests,errors\n")
	for _, s := range ss {
		fmt.Fprintf(&csv, "%.0f,%d,%.0f,%.0f,%.0f,%d,%d,%d\n", s.At.Seconds(), s.RSSKiB, s.Goroutines, s.HeapInuse, s.Keys, s.Conns, s.Requests, s.Errors)
	}
	t.Logf("%s soak samples:\n%s", name, csv.String())
	if dir := os.Getenv("SLUICE_SOAK_OUT"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "soak-"+name+".csv"), []byte(csv.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	if len(ss) < 6 {
		return
	}
	third := len(ss) / 3
	maxOf := func(part []sample, f func(sample) float64) float64 {
		m := 0.0
		for _, s := range part {
			m = max(m, f(s))
		}
		return m
	}
	// The first sample is before any load: start the comparison at the second.
	early, late := ss[1:1+third], ss[len(ss)-third:]
	for _, c := range []struct {
		what  string
		f     func(sample) float64
		slack float64
	}{
		{"resident memory (KiB)", func(s sample) float64 { return float64(s.RSSKiB) }, 32 << 10},
		{"heap in use (bytes)", func(s sample) float64 { return s.HeapInuse }, 32 << 20},
		{"goroutines", func(s sample) float64 { return s.Goroutines }, 40},
	} {
		e, l := maxOf(early, c.f), maxOf(late, c.f)
		t.Logf("%s: %s peak %.0f in the first third, %.0f in the last third", name, c.what, e, l)
		if l > 1.5*e+c.slack {
			t.Errorf("%s: %s grew from %.0f to %.0f over the run", name, c.what, e, l)
		}
	}
}

func scrape(t *testing.T, p *proc) map[string]float64 {
	t.Helper()
	resp, err := http.Get(p.base + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = v
		}
	}
	return m
}

func rss(t *testing.T, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
