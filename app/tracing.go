package app

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/fx"
	"google.golang.org/grpc/stats"

	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/adapters/tracing"
	"github.com/sluice-dev/sluice/domain"
)

// Tracing is off unless OTEL_TRACES_EXPORTER=otlp. The OpenTelemetry specification makes otlp the default of an
// unset OTEL_TRACES_EXPORTER; sluice keeps tracing off then, so a deployment that sets nothing pays nothing and
// sends nothing anywhere: the HTTP handler, the RLS server and the store are not wrapped at all (tracingOf).
//
// With it on, spans go to an OTLP exporter that the standard variables configure: OTEL_EXPORTER_OTLP_PROTOCOL
// (or _TRACES_PROTOCOL: http/protobuf, the default, or grpc), OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT),
// _HEADERS, _TIMEOUT, _COMPRESSION, _INSECURE and the TLS files, which the exporter itself reads; the sampler is
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on), the batching OTEL_BSP_*; the
// resource is service.name sluice and service.version, overridden by OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES. Trace context travels as W3C traceparent/tracestate (propagation.TraceContext), in
// HTTP headers and gRPC metadata. OTEL_SDK_DISABLED=true turns tracing off whatever the exporter says.

// traceEnv is what the OTEL_* variables say about trace export, read by Load (readTraceEnv).
type traceEnv struct {
	// exporter is "otlp" when tracing is on, "" when off.
	exporter string
	// protocol is the OTLP protocol: "http/protobuf" or "grpc".
	protocol string
}

// otelVariables are the OTEL_* variables sluice (through the OpenTelemetry SDK and exporter) honours. The docs
// may mention no other (TestEveryMentionedVariableIsKnown).
var otelVariables = []string{
	"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
	"OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
	"OTEL_EXPORTER_OTLP_COMPRESSION", "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
	"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
	"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
	"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
	"OTEL_EXPORTER_OTLP_CLIENT_KEY", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
}

// readTraceEnv reads the variables that decide whether and how traces are exported; a value sluice cannot honour
// is a problem naming the variable and the valid values (start-up stops, as for a SLUICE_* setting).
func readTraceEnv(env map[string]string) (traceEnv, []string) {
	var probs []string
	switch v := strings.TrimSpace(env["OTEL_SDK_DISABLED"]); strings.ToLower(v) {
	case "", "false":
	case "true":
		return traceEnv{}, nil
	default:
		probs = append(probs, fmt.Sprintf("OTEL_SDK_DISABLED=%q: want true or false", v))
	}
	var t traceEnv
	switch v := strings.TrimSpace(env["OTEL_TRACES_EXPORTER"]); v {
	case "", "none":
	case "otlp":
		t.exporter = "otlp"
	default:
		probs = append(probs, fmt.Sprintf("OTEL_TRACES_EXPORTER=%q: want otlp (export spans over OTLP) or none (the default: no tracing)", v))
	}
	name, v := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
	if v == "" {
		name, v = "OTEL_EXPORTER_OTLP_PROTOCOL", env["OTEL_EXPORTER_OTLP_PROTOCOL"]
	}
	switch v = strings.TrimSpace(v); v {
	case "", "http/protobuf":
		t.protocol = "http/protobuf"
	case "grpc":
		t.protocol = "grpc"
	default:
		probs = append(probs, fmt.Sprintf("%s=%q: want http/protobuf (the default) or grpc", name, v))
	}
	return t, probs
}

// Tracing is the process's tracer provider and propagator; a nil Provider means tracing is off, and nothing is
// wrapped.
type Tracing struct {
	Provider   trace.TracerProvider
	Propagator propagation.TextMapPropagator
}

// newTracing builds the SDK's tracer provider with the OTLP exporter when cfg says tracing is on (a Tracing with
// no Provider otherwise). Stopping the app flushes the spans still batched (bounded by the stop's deadline).
func newTracing(lc fx.Lifecycle, cfg Config, build Build, log *slog.Logger) (*Tracing, error) {
	if cfg.traces.exporter == "" {
		return &Tracing{}, nil
	}
	ctx := context.Background()
	var exp sdktrace.SpanExporter
	var err error
	if cfg.traces.protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: the OTLP exporter (OTEL_EXPORTER_OTLP_*): %w", err)
	}
	// Later sources win: OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over sluice's own.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(attribute.String("service.name", "sluice"), attribute.String("service.version", build.Version)),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	// An export that fails (the collector is down) is logged, not printed by the standard logger.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: export failed", "err", err) }))
	lc.Append(fx.Hook{OnStop: tp.Shutdown})
	log.Info("tracing on", "exporter", "otlp", "protocol", cfg.traces.protocol, "key_hash", cfg.Tracing.KeyHash)
	return &Tracing{Provider: tp, Propagator: propagation.TraceContext{}}, nil
}

// tracedStore wraps the store the limiter decides with in a span per call (adapters/tracing) when tracing is on;
// it returns store itself when off.
func tracedStore(store domain.BucketStore, t *Tracing, cfg Config) domain.BucketStore {
	if t == nil || t.Provider == nil {
		return store
	}
	o := tracing.Options{Store: cfg.Store}
	if cfg.Tracing.KeyHash {
		o.KeyAttr = metrics.HashedKey // the hash of metrics.key_label: hash, so a trace and a metric name a key alike
	}
	return tracing.New(store, t.Provider, o)
}

// rlsStats is the RLS server's gRPC stats handler: otelgrpc's server handler when tracing is on (health checks
// are not traced: a probe every few seconds would fill the traces with nothing), nil when off.
func rlsStats(t *Tracing) stats.Handler {
	if t == nil || t.Provider == nil {
		return nil
	}
	return otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(t.Provider), otelgrpc.WithPropagators(t.Propagator),
		otelgrpc.WithFilter(func(info *stats.RPCTagInfo) bool { return !strings.HasPrefix(info.FullMethodName, "/grpc.health.v1.") }))
}

// knownOTelVariable reports whether sluice honours the OTEL_* variable name.
func knownOTelVariable(name string) bool { return slices.Contains(otelVariables, name) }
