package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/domain"
)

// BenchmarkHandlers is the floor's handler and sluice's (the whole HTTP handler of `sluice serve` on the memory
// store: routing, the strict decoder, validation, the decision, RateLimit headers, both Prometheus observers)
// answering the same POST /v1/check in process, without the network: how much of a decision's cost is the
// handler's own, which the load tool's end-to-end ratio cannot separate from the machine's noise. Uniform over
// 10,000 keys, every check an admission.
func BenchmarkHandlers(b *testing.B) {
	sluice := func(b *testing.B) http.Handler {
		reg := prometheus.NewRegistry()
		obs, err := metrics.NewObserver(reg)
		if err != nil {
			b.Fatal(err)
		}
		reqs, err := metrics.NewHTTP(reg)
		if err != nil {
			b.Fatal(err)
		}
		clock := domain.SystemClock{}
		lim, err := domain.NewService([]domain.Policy{{Name: benchPolicy, Limit: 1_000_000_000, Window: time.Hour, Algorithm: domain.SlidingWindow}},
			memory.NewPolicies(clock), memory.New(clock, memory.Options{}), obs, clock)
		if err != nil {
			b.Fatal(err)
		}
		return httpapi.NewHandler(httpapi.Options{Limiter: lim, Store: "memory", Gatherer: reg, Requests: reqs})
	}
	for _, c := range []struct {
		name string
		h    func(b *testing.B) http.Handler
	}{
		{"floor", func(*testing.B) http.Handler { return newFloorHandler(map[string]int64{benchPolicy: 1_000_000_000}) }},
		{"sluice", sluice},
	} {
		b.Run(c.name, func(b *testing.B) {
			h := c.h(b)
			bodies := make([][]byte, 10_000)
			for i := range bodies {
				bodies[i] = []byte(`{"policy":"` + benchPolicy + `","key":"` + strconv.Itoa(i) + `"}`)
			}
			rd := bytes.NewReader(nil)
			r := httptest.NewRequest(http.MethodPost, "/v1/check", nil)
			r.Header.Set("Content-Type", "application/json")
			w := &countingWriter{h: http.Header{}}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				rd.Reset(bodies[i%len(bodies)])
				r.Body, r.ContentLength = io.NopCloser(rd), rd.Size()
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, r)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
				i++
			}
			b.ReportMetric(float64(w.bytes)/float64(i), "body-bytes/op")
		})
	}
}

// countingWriter is a reusable http.ResponseWriter that keeps the status and counts body bytes.
type countingWriter struct {
	h      http.Header
	status int
	bytes  int
}

func (w *countingWriter) Header() http.Header { return w.h }
func (w *countingWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.bytes += len(p)
	return len(p), nil
}
func (w *countingWriter) WriteHeader(code int) { w.status = code }
