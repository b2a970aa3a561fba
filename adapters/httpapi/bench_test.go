package httpapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-dev/sluice/adapters/httpapi"
	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/adapters/tracing"
	"github.com/sluice-dev/sluice/domain"
)

// BenchmarkHandlerCheckTracing is BenchmarkHandlerCheck's nop-observer path with tracing set up as app sets it
// up, in one run so the ratios compare like with like:
//   - off: no TracerProvider and the bare store, which is what app wires when tracing is off (today's path);
//   - noop-provider: the handler's otelhttp span and the store decorator (adapters/tracing) over OpenTelemetry's
//     no-op provider: what the wrappers themselves cost when nothing records;
//   - sdk-unsampled: the SDK's provider with a sampler that drops every trace;
//   - sdk-sampled: the SDK's provider recording every span into a batch processor whose exporter discards them
//     (tracetest.NewNoopExporter): tracing on, less the network.
func BenchmarkHandlerCheckTracing(b *testing.B) {
	for _, mode := range []string{"off", "noop-provider", "sdk-unsampled", "sdk-sampled"} {
		b.Run(mode, func(b *testing.B) {
			clock := domain.SystemClock{}
			var store domain.BucketStore = memory.New(clock, memory.Options{})
			var tp trace.TracerProvider
			switch mode {
			case "noop-provider":
				tp = noop.NewTracerProvider()
			case "sdk-unsampled":
				p := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
				b.Cleanup(func() { _ = p.Shutdown(context.Background()) })
				tp = p
			case "sdk-sampled":
				p := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = p.Shutdown(context.Background()) })
				tp = p
			}
			if tp != nil {
				store = tracing.New(store, tp, tracing.Options{Store: "memory"})
			}
			lim, err := domain.NewService([]domain.Policy{{Name: "bench", Limit: 1_000_000_000, Window: time.Hour}},
				memory.NewPolicies(clock), store, domain.NopObserver{}, clock)
			if err != nil {
				b.Fatal(err)
			}
			benchCheck(b, httpapi.NewHandler(httpapi.Options{Limiter: lim, Store: "memory", TracerProvider: tp}))
		})
	}
}

// benchCheck sends POST /v1/check to h in a loop, uniform over 10,000 keys, without the network.
func benchCheck(b *testing.B, h http.Handler) {
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
}

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
			benchCheck(b, httpapi.NewHandler(httpapi.Options{Limiter: lim, Store: "memory"}))
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
