package tracing_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/adapters/tracing"
	"github.com/sluice-dev/sluice/domain"
)

// BenchmarkDecide is one Decide on the memory store, uniform over 10,000 keys: bare (what app wires with tracing
// off), through the decorator over the no-op provider, and through it over the SDK recording every span into a
// batch processor whose exporter discards them (tracing on, less the network), with and without the key hash.
func BenchmarkDecide(b *testing.B) {
	for _, mode := range []string{"bare", "noop-provider", "sdk-sampled", "sdk-sampled-key-hash"} {
		b.Run(mode, func(b *testing.B) {
			clock := domain.SystemClock{}
			var store domain.BucketStore = memory.New(clock, memory.Options{})
			var tp trace.TracerProvider
			o := tracing.Options{Store: "memory"}
			switch mode {
			case "noop-provider":
				tp = noop.NewTracerProvider()
			case "sdk-sampled-key-hash":
				o.KeyAttr = metrics.HashedKey
				fallthrough
			case "sdk-sampled":
				p := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = p.Shutdown(context.Background()) })
				tp = p
			}
			if tp != nil {
				store = tracing.New(store, tp, o)
			}
			keys := make([]string, 10_000)
			for i := range keys {
				keys[i] = strconv.Itoa(i)
			}
			r := domain.BucketRequest{Policy: "bench", Rule: domain.Rule{Algorithm: domain.TokenBucket, Limit: 1_000_000_000, Window: time.Hour}, Cost: 1}
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r.Key = keys[i%len(keys)]
				if _, err := store.Decide(ctx, r); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
