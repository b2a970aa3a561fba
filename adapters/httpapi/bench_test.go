package httpapi_test

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

// BenchmarkHandlerCheck is POST /v1/check through the whole handler (middleware, generated routing and strict
// handler, JSON in and out, headers, Prometheus metrics) over the memory store, without the network: what sluice's
// HTTP layer costs per decision beyond net/http's own connection handling. Uniform over 10,000 keys.
func BenchmarkHandlerCheck(b *testing.B) {
	for _, withMetrics := range []bool{false, true} {
		name := "nop-observer"
		if withMetrics {
			name = "prometheus"
		}
		b.Run(name, func(b *testing.B) {
			clock := domain.SystemClock{}
			var obs domain.Observer = domain.NopObserver{}
			if withMetrics {
				o, err := metrics.NewObserver(prometheus.NewRegistry())
				if err != nil {
					b.Fatal(err)
				}
				obs = o
			}
			lim, err := domain.NewService([]domain.Policy{{Name: "bench", Limit: 1_000_000_000, Window: time.Hour}},
				memory.NewPolicies(clock), memory.New(clock, memory.Options{}), obs, clock)
			if err != nil {
				b.Fatal(err)
			}
			h := httpapi.NewHandler(httpapi.Options{Limiter: lim, Store: "memory"})
			bodies := make([][]byte, 10_000)
			for i := range bodies {
				bodies[i] = []byte(`{"policy":"bench","key":"` + strconv.Itoa(i) + `"}`)
			}
			w := &discardWriter{h: http.Header{}}
			rd := bytes.NewReader(nil)
			body := io.NopCloser(rd)
			// One request reused, as net/http's server would hand a fresh one: only the body is replaced.
			r := httptest.NewRequest(http.MethodPost, "/v1/check", nil)
			r.Header.Set("Content-Type", "application/json")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				rd.Reset(bodies[i%len(bodies)])
				r.Body = body
				r.ContentLength = rd.Size()
				clear(w.h)
				w.status = 0
				h.ServeHTTP(w, r)
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
				i++
			}
		})
	}
}

// discardWriter is a reusable http.ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(p), nil
}
func (w *discardWriter) WriteHeader(code int) { w.status = code }
