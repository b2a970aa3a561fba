package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 255, 256, 257, 1000, 65_535, 1 << 20, 123_456_789, 1 << 40, 1<<63 + 12345} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d, out of range", v, i)
		}
		lo, hi := histBounds(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if v >= 256 && float64(hi-lo) > float64(lo)/128 {
			t.Fatalf("bucket %d = [%d, %d] wider than 1/128", i, lo, hi)
		}
	}
	// Buckets are contiguous and increasing.
	for i := 1; i < histBuckets; i++ {
		plo, phi := histBounds(i - 1)
		lo, _ := histBounds(i)
		if lo != phi+1 || lo <= plo {
			t.Fatalf("bucket %d starts at %d; bucket %d ends at %d", i, lo, i-1, phi)
		}
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h hist
	// 1..10000 µs, shuffled: p50 is 5000 µs and p99 9900 µs, within the buckets' 0.8%.
	vals := rand.Perm(10_000)
	for _, v := range vals {
		h.record(time.Duration(v+1) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5000 * time.Microsecond}, {0.99, 9900 * time.Microsecond}, {1, 10_000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d > 0.008 || d < -0.008 {
			t.Errorf("quantile(%v) = %v, want %v ± 0.8%%", c.q, got, c.want)
		}
	}
	var other hist
	other.record(time.Second)
	h.merge(&other)
	if h.n != 10_001 || h.quantile(1) != time.Second {
		t.Fatalf("after merge: n %d, max %v", h.n, h.quantile(1))
	}
	var empty hist
	if empty.quantile(0.5) != 0 || empty.mean() != 0 {
		t.Fatal("empty histogram")
	}
}

func TestRoundTrip(t *testing.T) {
	answer := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 27\r\n\r\n{\"allowed\":true,\"limit\":10}" +
		"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"allowed\":false}" +
		"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"
	br := bufio.NewReader(strings.NewReader(answer))
	var sent bytes.Buffer
	req := checkRequest("127.0.0.1:1", "p", "k")
	if ok, err := roundTrip(&sent, br, req); err != nil || !ok {
		t.Fatalf("first: %v %v", ok, err)
	}
	if ok, err := roundTrip(&sent, br, req); err != nil || ok {
		t.Fatalf("second: %v %v", ok, err)
	}
	if _, err := roundTrip(&sent, br, req); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("third: %v, want a 503 error", err)
	}
	if !bytes.HasPrefix(sent.Bytes(), []byte("POST /v1/check HTTP/1.1\r\n")) || !bytes.HasSuffix(req, []byte(`{"policy":"p","key":"k"}`)) {
		t.Fatalf("request: %q", req)
	}
}

func TestRequireLoopback(t *testing.T) {
	for _, a := range []string{"127.0.0.1:80", "127.1.2.3:80", "[::1]:80", "localhost:80"} {
		if err := requireLoopback(a); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for _, a := range []string{"10.0.0.1:80", "192.168.1.1:80", "8.8.8.8:53", "example.com:80", "nonsense"} {
		if err := requireLoopback(a); err == nil {
			t.Errorf("%s accepted", a)
		}
	}
}

// TestStatementMatchesStore: the pgbench statement is the store's Decide query with pgbench variables.
func TestStatementMatchesStore(t *testing.T) {
	src, err := os.ReadFile("../../adapters/postgres/queries/decide.sql")
	if err != nil {
		t.Skip("the Postgres store's queries are not in this tree:", err)
	}
	m := regexp.MustCompile(`(?s)-- name: DecideBatch :one\n(.*?;)`).FindSubmatch(src)
	if m == nil {
		t.Fatal("no DecideBatch query in decide.sql")
	}
	var lines []string
	for _, l := range strings.Split(string(m[1]), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	store := strings.Join(lines, "\n")
	store = regexp.MustCompile(`sqlc\.narg\(\w+\)`).ReplaceAllString(store, "NULL")
	// One check: each array parameter is a one-element array of a pgbench variable.
	store = regexp.MustCompile(`@(\w+)::(\w+)\[\]`).ReplaceAllString(store, "ARRAY[:$1::$2]")
	store = regexp.MustCompile(`@(\w+)`).ReplaceAllString(store, ":$1")
	norm := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	if norm(store) != norm(decideStatement) {
		t.Fatalf("pgbench statement out of step with the store's query:\nstore:   %s\npgbench: %s", norm(store), norm(decideStatement))
	}
	if !strings.HasPrefix(pgbenchScript("uniform", 10), `\set keys random(1, 10)`) {
		t.Fatal(pgbenchScript("uniform", 10))
	}
}

// TestLoadAgainstFloor: a short run of the load generator against the floor, in process.
func TestLoadAgainstFloor(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: newFloorHandler(map[string]int64{benchPolicy: 50}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	var measured, stopped bool
	res, err := runLoad(loadSpec{
		addr: addr, conns: 4, warmup: 0, duration: 200 * time.Millisecond,
		requests:  [][]byte{checkRequest(addr, benchPolicy, "a"), checkRequest(addr, benchPolicy, "b")},
		onMeasure: func() { measured = true }, onStop: func() { stopped = true },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.errors != 0 || res.decisions == 0 || !measured || !stopped {
		t.Fatalf("decisions %d, errors %d (%v), hooks %v %v", res.decisions, res.errors, res.firstErr, measured, stopped)
	}
	if res.allowed > 100 { // two keys of limit 50
		t.Fatalf("floor admitted %d, want at most 100", res.allowed)
	}
	if res.lat.n != res.decisions || res.lat.quantile(0.99) <= 0 || res.rate() <= 0 {
		t.Fatalf("latencies %d for %d decisions", res.lat.n, res.decisions)
	}
	if _, err := runLoad(loadSpec{addr: "10.1.2.3:80", conns: 1, duration: time.Millisecond}); err == nil {
		t.Fatal("load sent to a non-loopback address")
	}
}

// rounds alternates which of the pair goes first, keeps every row, and reports the median of the per-round ratios.
func TestRoundsAlternateAndTakeTheMedian(t *testing.T) {
	var order []string
	baseRates := []float64{100, 100, 100}
	sluiceRates := []float64{90, 50, 120} // ratios 0.9, 0.5, 1.2: median 0.9
	baseline := func(i int) (row, error) {
		order = append(order, "b")
		return row{target: "floor", rate: baseRates[i], p50: time.Millisecond, p99: 4 * time.Millisecond}, nil
	}
	sl := func(i int) (row, error) {
		order = append(order, "s")
		return row{target: "sluice", rate: sluiceRates[i], p50: 2 * time.Millisecond, p99: 6 * time.Millisecond}, nil
	}
	rows, line, err := rounds(3, "memory uniform sluice/floor", baseline, sl)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ""); got != "bssbbs" {
		t.Fatalf("order %s, want bssbbs (the first of the pair alternates)", got)
	}
	if len(rows) != 6 {
		t.Fatalf("%d rows, want 6", len(rows))
	}
	want := "memory uniform sluice/floor: decisions/s 0.90×, p50 2.00×, p99 1.50× (median of 3 rounds; decisions/s per round: 0.90, 0.50, 1.20)"
	if line != want {
		t.Fatalf("got  %s\nwant %s", line, want)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Fatalf("median of 1..4 = %v, want 2.5", m)
	}
}

// TestProcessCPU: the CPU time read from /proc grows while this process works, so the rows' server CPU per
// decision measures what the server used.
func TestProcessCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	before := processCPU(os.Getpid())
	x := 0
	for processCPU(os.Getpid()) < before+50*time.Millisecond {
		for i := range 1_000_000 {
			x += i
		}
	}
	if before <= 0 || x == 0 {
		t.Fatalf("processCPU before the work = %v", before)
	}
	if got := processCPU(1 << 30); got != 0 {
		t.Fatalf("processCPU of a pid that does not exist = %v, want 0", got)
	}
}

// TestMain lets this test binary serve as the tool's children (startChild re-executes os.Executable).
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "-child" {
		if err := child(os.Args[2], os.Args[3:]); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestSlicedAgainstFloor: with -slices both servers (real child processes: the floor and sluice on the memory
// store) stay up, every pair measures each once, and the line reports the median of the pairs' ratios.
func TestSlicedAgainstFloor(t *testing.T) {
	o := options{duration: 150 * time.Millisecond, conns: 4, keys: 50, rounds: 1, slices: 3, shapes: []string{"uniform"},
		window: time.Hour, pgWindow: time.Second, algorithm: "sliding_window", limit: 1000, fill: 0.5}
	var out strings.Builder
	rows, ratios, err := runAgainstFloor(context.Background(), o, &out, "memory", nil, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rows) != 2 || rows[0].target != "floor" || rows[1].target != "sluice" {
		t.Fatalf("rows %+v", rows)
	}
	for _, r := range rows {
		if r.rate <= 0 || r.errors != 0 || r.allowedPct <= 0 {
			t.Fatalf("row %+v", r)
		}
	}
	if len(ratios) != 1 || !strings.Contains(ratios[0], "median of 3 interleaved pairs") || strings.Count(out.String(), " pair ") != 3 {
		t.Fatalf("ratios %q\noutput:\n%s", ratios, out.String())
	}
}
