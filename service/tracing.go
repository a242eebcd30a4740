package service

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
)

// The app's own spans. The runtime points OpenTelemetry's standard
// variables at the service's sidecar (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT:
// its admin listener's /v1/traces), which sends what it gets to the
// control plane with the mesh's own spans; New then installs an
// OpenTelemetry tracer provider exporting there, so a handler's
//
//	ctx, span := otel.Tracer("orders").Start(ctx, "load order")
//	defer span.End()
//
// shows in `meshctl trace` under the sidecar's span of the call it
// serves, and calls made with that ctx hang under it in turn. The mesh
// decides which requests are traced: a span is recorded only when the
// request it serves is (the sampler is parentbased_always_off unless
// OTEL_TRACES_SAMPLER says otherwise).

// tracingEnabled reports whether the environment asks for the app's
// spans: an OTLP endpoint is set and the SDK is not turned off.
func tracingEnabled() bool {
	if os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return false
	}
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || os.Getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return true
}

// startTracing installs a tracer provider exporting to the endpoint the
// environment names (OTLP/HTTP, protobuf: spanExporter), service.name
// being name unless OTEL_SERVICE_NAME says otherwise; it returns the
// provider's shutdown, which flushes what waits.
func startTracing(ctx context.Context, name string) (func(context.Context) error, error) {
	if p := otlpEnv("PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, fmt.Errorf("OTLP protocol %q: the framework exports spans over http/protobuf "+
			"(for another, install your own tracer provider and pass service.NoTracing())", p)
	}
	exp, err := newSpanExporter()
	if err != nil {
		return nil, err
	}
	var attrs []attribute.KeyValue
	if name != "" {
		attrs = append(attrs, attribute.String("service.name", name))
	}
	// Later options win: the environment's service name over the
	// framework's.
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("the OpenTelemetry resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if os.Getenv("OTEL_TRACES_SAMPLER") == "" {
		// The mesh decides: record only what the sidecar records.
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}

// incomingTrace reads W3C trace context from a served call's metadata.
type incomingTrace struct{ ctx context.Context }

func (c incomingTrace) Get(k string) string { return incoming(c.ctx, k) }
func (incomingTrace) Set(string, string)    {}
func (incomingTrace) Keys() []string        { return []string{TraceHeader, TraceStateHeader} }

// withServedTrace returns ctx carrying, as OpenTelemetry's remote parent,
// the trace context the served call came with (the sidecar's span of
// it), so that spans the handler starts hang under it.
func withServedTrace(ctx context.Context) context.Context {
	if incoming(ctx, TraceHeader) == "" {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, incomingTrace{ctx})
}

// localTrace is the trace context of a span the app started and records
// in ctx (traceparent, tracestate), nil when there is none: calls made
// under it name it as their parent.
func localTrace(ctx context.Context) propagation.MapCarrier {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || sc.IsRemote() || !sc.IsSampled() {
		return nil
	}
	c := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, c)
	return c
}

// tracedStream is a served stream whose context carries the call's trace
// context for OpenTelemetry.
type tracedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s tracedStream) Context() context.Context { return s.ctx }
